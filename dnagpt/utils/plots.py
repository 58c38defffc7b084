"""Figures without pyplot, so that importing or running our code never selects a matplotlib backend.

A ``matplotlib.figure.Figure`` built directly belongs to no global registry: it needs no backend (``savefig`` renders
PNG with Agg by itself), no ``close`` (it is garbage like any object) and no lock (two threads may draw at once). A
program that imports us keeps the backend it chose.
"""

from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

__all__ = ["save_figure", "subplots"]

_FIGURE_KEYS = ("figsize", "dpi", "layout")


def subplots(nrows: int = 1, ncols: int = 1, **kwargs: Any) -> tuple[Figure, Any]:
    """``(figure, axes)`` as ``pyplot.subplots`` returns them, minus pyplot.

    ``figsize``, ``dpi`` and ``layout`` go to the figure, anything else (``sharex``, ``squeeze``...) to the grid.
    """
    fig = Figure(**{k: v for k, v in kwargs.items() if k in _FIGURE_KEYS})
    return fig, fig.subplots(nrows, ncols, **{k: v for k, v in kwargs.items() if k not in _FIGURE_KEYS})


def save_figure(fig: Figure, path: str | Path, dpi: float | str = "figure") -> Path:
    """Write ``fig`` to ``path`` (format from the suffix), creating the parent directory; return the path.

    A figure without a layout engine of its own (``layout="constrained"``) is laid out with ``tight_layout`` first, at
    the figure's dpi, so the saved picture does not depend on the ``dpi`` it is written at.
    """
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path

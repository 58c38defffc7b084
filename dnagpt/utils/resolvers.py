"""OmegaConf resolvers used by the configs.

- ``${dnagpt.resources:NAME}`` is the absolute path of ``dnagpt/resources/NAME``, the real data excerpts shipped inside
  the package, found with ``importlib.resources`` wherever the package is installed (a clone, an editable install,
  site-packages). Configs can then name bundled files without a project-root environment variable and whatever
  directory a run is launched from. They are only read: pyfastx writes no index next to them (dnagpt.data.fasta), and
  caches and outputs go under ``paths.*`` (the launch directory). Pure.
- ``${dnagpt.sweep_file:NAME}`` is ``<hydra sweep dir>/NAME`` inside a job of a Hydra multirun (``-m``) and null
  otherwise: a file that every job of a sweep writes to, e.g. the one table of a temperature sweep. It reads Hydra's
  run state, which is why it lives here, in the Hydra layer: the objects it configures receive a plain path or None.
"""

from importlib.resources import files
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf

# a directory on disk (wheels install unzipped): pyfastx, gzip and numpy read the files by path
RESOURCES_DIR = Path(str(files("dnagpt") / "resources"))


def resource_path(name: str = "") -> str:
    """Absolute path of a bundled resource (it need not exist: the caller reports a missing file with context).

    >>> resource_path("bundled").endswith("dnagpt/resources/bundled")
    True
    """
    return str(RESOURCES_DIR / name) if name else str(RESOURCES_DIR)


def in_multirun() -> bool:
    """Whether this process runs a job of a Hydra multirun (False outside Hydra, e.g. in a library caller)."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def sweep_file(name: str) -> str | None:
    """``<sweep dir>/name`` inside a multirun job, else None (a single run has no sweep to collect)."""
    return str(Path(HydraConfig.get().sweep.dir) / name) if in_multirun() else None


def negate(value: bool) -> bool:
    """``${dnagpt.not:${.offline}}``: OmegaConf has no "not" (W&B's log_model follows offline).

    >>> negate(False)
    True
    """
    return not value


def register_resolvers() -> None:
    """Idempotent, so every entry point and test may call it."""
    resolvers = (("dnagpt.resources", resource_path), ("dnagpt.sweep_file", sweep_file), ("dnagpt.not", negate))
    for name, resolver in resolvers:
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)

"""The errors the program anticipates, and the one boundary at the entry points that reports them.

Every anticipated failure raises a ``DnagptError`` whose message is one paragraph naming what is wrong and where (the
file and line, the column or field, the config key) and what is allowed. ``error_boundary`` (used by ``train.py``,
``evaluate.py`` and the other commands) prints that paragraph and exits with status 1, without a traceback: the message
says everything and a stack would bury it. Anything else is a bug and keeps its traceback. ``HYDRA_FULL_ERROR=1`` shows
the traceback of our errors too. Library callers and tests get the exceptions themselves.

The types subclass ``ValueError`` (and ``FileNotFoundError`` for a missing file), so callers that catch the builtins
still do. They live at the bottom of the package so every layer can raise them without an upward import.
"""

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class DnagptError(Exception):
    """An anticipated error: the message is one paragraph naming the file/line/field/key and what is allowed."""

    label = "Error"  # how the entry points introduce the message

    def report(self) -> str:
        """The one paragraph a user sees: ``Input error: <file>, line 3: ...``."""
        return f"{self.label}: {self}"


class ConfigError(DnagptError, ValueError):
    """A configuration that cannot run."""

    label = "Configuration error"


def where(path: str | Path | None = None, line: int | None = None, field: str | None = None) -> str:
    """``file, line 3, column 'label'``: the place an input error names (each part only when known).

    >>> where("a.tsv", 3, "label")
    "a.tsv, line 3, column 'label'"
    """
    parts = [str(path)] if path is not None else []
    parts += [f"line {line}"] if line is not None else []
    parts += [f"column {field!r}"] if field is not None else []
    return ", ".join(parts)


class InputError(DnagptError, ValueError):
    """A malformed input file or value: the message starts with :func:`where` it is."""

    label = "Input error"

    def __init__(
        self, message: str, path: str | Path | None = None, line: int | None = None, field: str | None = None
    ) -> None:
        place = where(path, line, field)
        super().__init__(f"{place}: {message}" if place else message)
        self.path, self.line, self.field = path, line, field


class MissingFileError(ConfigError, FileNotFoundError):
    """An input file or directory that does not exist; the message names the config key or argument pointing at it
    (hence a ``ConfigError``), and callers that catch ``FileNotFoundError`` still do."""

    label = "Input error"


class CheckpointError(InputError, ConfigError):
    """A file that is not a usable checkpoint for this run: truncated, not ours, or of another vocabulary. Also a
    ``ConfigError``: the file is always named by a config key (``ckpt_path=``, ``init_from=``), which the message gives."""

    label = "Checkpoint error"


@contextmanager
def error_boundary() -> Iterator[None]:
    """For entry points only: a ``DnagptError`` ends the program with its paragraph on stderr and exit status 1."""
    try:
        yield
    except DnagptError as err:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        sys.exit(err.report())

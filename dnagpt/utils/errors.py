"""A configuration the program refuses, and how the entry points report it.

``ConfigError`` lives here, at the bottom of the package, so that both ``dnagpt.config_checks`` (which raises it) and
``task_wrapper`` (which must not log it with a traceback) can name it without an upward import.
"""

import sys
from collections.abc import Iterator
from contextlib import contextmanager


class ConfigError(ValueError):
    """A configuration that cannot run; the message is one paragraph naming the key(s), the value and what is allowed."""


@contextmanager
def exit_on_config_error() -> Iterator[None]:
    """For entry points only: a ConfigError ends the program with its paragraph on stderr and exit status 1, without a
    traceback (the message says everything; a stack would bury it). Library callers and tests get the exception."""
    try:
        yield
    except ConfigError as err:
        sys.exit(f"Configuration error: {err}")

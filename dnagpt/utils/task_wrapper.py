"""Run a pipeline function so that a failure is logged with its cause and W&B runs always finish.

Sweeps go on after a failed trial: the W&B run of the failed trial is closed instead of blocking the next one.
"""

import functools
import sys
from collections.abc import Callable
from typing import Any

from dnagpt.utils.errors import DnagptError
from dnagpt.utils.pylogger import RankedLogger

log = RankedLogger(__name__)


def task_wrapper(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        failed = True
        try:
            result = fn(*args, **kwargs)
            failed = False
            return result
        except Exception as err:
            if not isinstance(err, DnagptError):  # an anticipated error is one paragraph; the entry point prints it
                log.exception(f"{fn.__name__} failed: {err}")
            raise
        finally:
            wandb = sys.modules.get("wandb")  # only a run that imported W&B can have a W&B run to close
            if wandb is not None and wandb.run is not None:
                wandb.finish(exit_code=1 if failed else 0)  # a failed trial shows as failed in the W&B UI

    return wrapped

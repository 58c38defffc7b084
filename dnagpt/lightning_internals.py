"""Every private Lightning attribute the project relies on, in one place, with the versions it is tested against.

Lightning has public hooks for almost all we do. Where it has none, we reach into its internals here and nowhere else, so
an upgrade that moves one breaks this module and ``tests/test_lightning_internals.py`` (which touches each accessor),
not a training run halfway through:

- ``ModelCheckpoint``: its step trigger, its deferral of a step save to the end of validation, its writer of
  ``last.ckpt`` and the metrics it monitors (``ModelCheckpoint`` and ``PreemptionCheckpoint`` build on them);
- the fit loop's batch counters and step budget (when a validation follows this batch; ending a run at this step);
- the CSV logger's writer: its start-up hook deletes an existing ``metrics.csv``; ``ResumableCSVLogger`` replaces it;
- the list of precision flags Lightning accepts (checked before anything is built);
- whether a LightningModule is attached to a Trainer (``module.trainer`` raises when it is not).
"""

from collections.abc import Callable
from typing import Any, get_args

import lightning
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from packaging.version import Version

from dnagpt.utils.pylogger import RankedLogger

log = RankedLogger(__name__)

TESTED_VERSIONS = ("2.5.0", "2.7.0")  # [lowest, highest) Lightning release these accessors are tested against


def version_is_tested(version: str = lightning.__version__) -> bool:
    low, high = (Version(v) for v in TESTED_VERSIONS)
    return low <= Version(version) < high


def warn_if_untested() -> None:
    if not version_is_tested():
        log.warning(
            f"lightning {lightning.__version__} is outside the range dnagpt is tested with "
            f"({TESTED_VERSIONS[0]} <= version < {TESTED_VERSIONS[1]}); if resuming or checkpointing misbehaves, see "
            "dnagpt/lightning_internals.py"
        )


# ---- precision ------------------------------------------------------------------------------------------------------
def precision_choices() -> list[Any]:
    """The ``precision`` values a Trainer accepts, from Lightning's own type."""
    from lightning.fabric.connector import _PRECISION_INPUT

    return [v for literal in get_args(_PRECISION_INPUT) for v in get_args(literal)]


# ---- ModelCheckpoint ------------------------------------------------------------------------------------------------
def step_trigger(ckpt: ModelCheckpoint) -> int:
    """``every_n_train_steps`` as the callback holds it (0 when saving is not step-triggered)."""
    return ckpt._every_n_train_steps


def defer_save_to_validation_end(ckpt: ModelCheckpoint) -> None:
    """Let the callback's ``on_validation_end`` take this step's save (Lightning's own deferral)."""
    ckpt._defer_save_until_validation = True


def save_last(ckpt: ModelCheckpoint, trainer: Trainer) -> None:
    """Write ``last.ckpt`` through the callback, so its bookkeeping knows the file holds this step."""
    ckpt._save_last_checkpoint(trainer, ckpt._monitor_candidates(trainer))


# ---- fit loop -------------------------------------------------------------------------------------------------------
def validation_follows(trainer: Trainer) -> bool:
    """Whether Lightning validates right after the current training batch (its rule for batch-counted schedules, the
    kind our configs use; a time-based ``val_check_interval`` counts as no)."""
    every, n_epochs = trainer.val_check_batch, trainer.check_val_every_n_epoch
    if not trainer.enable_validation or every is None or every == float("inf"):
        return False
    if n_epochs is not None and (trainer.current_epoch + 1) % n_epochs:
        return False
    loop = trainer.fit_loop.epoch_loop
    return (loop.total_batch_idx if n_epochs is None else loop.batch_idx) % int(every) == int(every) - 1


def end_run_at_current_step(trainer: Trainer) -> None:
    """End fitting as if ``max_steps`` were the current step: a validation due now still runs."""
    trainer.fit_loop.epoch_loop.max_steps = trainer.global_step


# ---- LightningModule ------------------------------------------------------------------------------------------------
def attached_trainer(module: LightningModule) -> Trainer | None:
    return module._trainer


# ---- CSV logger -----------------------------------------------------------------------------------------------------
class KeepingExperimentWriter(ExperimentWriter):
    """Lightning's CSV writer, whose start-up hook (it deletes an existing ``metrics.csv``) calls ``on_start``."""

    def _check_log_dir_exists(self) -> None:  # called by the base __init__
        self.on_start()

    def on_start(self) -> None:
        raise NotImplementedError

    @property
    def fs(self) -> Any:
        """The writer's fsspec filesystem (local or remote)."""
        return self._fs


def cached_experiment(logger: CSVLogger, build: Callable[[], Any]) -> Any:
    """``logger.experiment`` as Lightning caches it, built by ``build`` the first time (log directory created)."""
    if logger._experiment is None:
        logger._fs.makedirs(logger.root_dir, exist_ok=True)
        logger._experiment = build()
    return logger._experiment


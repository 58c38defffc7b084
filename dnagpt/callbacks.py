"""Callbacks of our own: the loss-curve picture a person looks at after a run and the checkpoint a preempted job leaves
behind (the pre-training yardsticks are in ``dnagpt.tasks.yardsticks``)."""

import signal
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import Checkpoint, ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_only

from dnagpt.lightning_internals import end_run_at_current_step, save_last, validation_follows
from dnagpt.utils.plots import save_figure, subplots
from dnagpt.utils.pylogger import RankedLogger

log = RankedLogger(__name__)


class LossCurvePlot(Callback):
    """Records logged losses during fitting and writes one PNG of them at the end, one panel per group of keys.

    Independent of the logger (CSV, W&B or none), so every run leaves the same picture beside its checkpoints.
    ``train/*`` keys are read after every training step, the other keys after every validation; keys a run never
    logs are simply absent from the picture.
    """

    DEFAULT_PANELS = {  # one set for every task: each run shows the panels whose keys it logs
        "loss": ["train/loss", "val/loss"],
        "token loss (nats)": ["train/token_loss", "val/token_loss", "val/order0_ce"],
        "bits per base": ["val/bits_per_base", "val/markov_bits_per_base", "val/order0_bits_per_base"],
        "validation AUROC": ["val/auroc"],
        "validation R²": ["val/r2", "val/pearson_r2"],
    }

    def __init__(self, path: str | Path, panels: dict[str, list[str]] | None = None) -> None:
        self.path = Path(path)
        self.panels = {title: list(keys) for title, keys in (panels or self.DEFAULT_PANELS).items()}
        self.series: dict[str, list[tuple[int, float]]] = {}

    def _record(self, trainer: Trainer, train: bool) -> None:
        for keys in self.panels.values():
            for key in keys:
                if key.startswith("train/") == train and key in trainer.callback_metrics:
                    self.series.setdefault(key, []).append((trainer.global_step, float(trainer.callback_metrics[key])))

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx) -> None:
        self._record(trainer, train=True)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            self._record(trainer, train=False)

    def state_dict(self) -> dict:
        return {"series": self.series}  # a resumed run continues the same curves

    def load_state_dict(self, state_dict: dict) -> None:
        self.series = {k: list(v) for k, v in state_dict["series"].items()}

    @rank_zero_only
    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        panels = {t: [k for k in keys if self.series.get(k)] for t, keys in self.panels.items()}
        panels = {t: keys for t, keys in panels.items() if keys}
        if not panels:
            return
        fig, axes = subplots(1, len(panels), figsize=(6.5 * len(panels), 4), dpi=120, squeeze=False)
        for ax, (title, keys) in zip(axes[0], panels.items(), strict=True):
            for key in keys:
                steps, values = (np.asarray(v) for v in zip(*self.series[key], strict=True))
                if key.startswith("train/"):
                    window = max(1, len(values) // 50)
                    line, = ax.plot(steps, values, lw=0.6, alpha=0.3)
                    smooth = np.convolve(values, np.ones(window) / window, mode="valid")
                    ax.plot(steps[window - 1:], smooth, lw=1.5, color=line.get_color(), label=f"{key} (mean of {window})")
                elif "order0" in key:
                    ax.plot(steps, values, "--", color="grey", label=f"{key} (unigram yardstick)")
                elif "markov" in key:
                    ax.plot(steps, values, ":", color="black", label=f"{key} (order-k Markov yardstick)")
                else:
                    ax.plot(steps, values, "o-", ms=4, label=key)
            ax.set_title(title)
            ax.set_xlabel("optimizer step")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        save_figure(fig, self.path)


def preempted_step(trainer: Trainer) -> int | None:
    """The step at which a ``PreemptionCheckpoint`` ended ``trainer``'s run; ``None`` when the run was not preempted."""
    steps = [cb.preempted_at for cb in trainer.callbacks if isinstance(cb, PreemptionCheckpoint)]
    return next((step for step in steps if step is not None), None)


class PreemptionCheckpoint(Checkpoint):
    """On SIGTERM or SIGUSR1 (what SLURM sends before a time limit with ``--signal=USR1@90``), save ``last.ckpt`` at
    the end of the current training batch and end the run cleanly; ``ckpt_path=auto`` then continues it exactly.

    - The handlers are installed when training starts, over Lightning's own (its SIGTERM handler ends the run at the
      next batch without a checkpoint; its SLURM auto-requeue handler saves from inside the handler, in the middle of a
      step), and removed when training ends. A handler the process had before the run is called once the checkpoint is
      written. The handler only sets a flag: all the work happens at the batch boundary.
    - The flag is reduced over ranks at every batch end that completes an optimizer step (never between the
      micro-batches of one step under gradient accumulation), so a signal to any rank stops every rank at the same step.
    - The run ends as if ``max_steps`` were this step: a validation due at this step still runs, and the checkpoint is
      then written after it (from before it, the resumed run would skip that validation: Lightning assumes a checkpoint
      from the end of a batch was followed by its validation). ``pipeline.train`` skips the test split.
    - A ``Checkpoint`` subclass, so Lightning calls it after every other callback and the saved state includes their
      updates for this batch. It must come after the run's ``ModelCheckpoint``, which stays ``trainer.checkpoint_callback``.
    """

    def __init__(self, dirpath: str | Path, signals: Sequence[str] = ("SIGTERM", "SIGUSR1")) -> None:
        self.dirpath = Path(dirpath)
        unknown = [name for name in signals if name not in signal.Signals.__members__]
        if unknown:
            raise ValueError(f"callbacks.preemption.signals: unknown signal(s) {unknown} (e.g. SIGTERM, SIGUSR1)")
        self.signals = [signal.Signals[name] for name in signals]
        self.preempted_at: int | None = None
        self._saved = False
        self._step_at_batch_start = -1
        self._received: signal.Signals | None = None
        self._before_run: dict[signal.Signals, Any] = {}  # the process's own handlers: called after the checkpoint
        self._replaced: dict[signal.Signals, Any] = {}  # what on_train_start replaced (Lightning's): put back at the end

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if trainer.checkpoint_callback is self:
            raise ValueError(
                "callbacks.preemption (PreemptionCheckpoint) needs the run's ModelCheckpoint before it in the callbacks; "
                "set callbacks.preemption=null to run without either"
            )
        self._before_run = {s: signal.getsignal(s) for s in self.signals}  # before Lightning installs its own

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.preempted_at, self._saved, self._received = None, False, None
        if threading.current_thread() is not threading.main_thread():
            log.warning("training runs outside the main thread: SIGTERM and SIGUSR1 will not save a checkpoint")
            return
        self._replaced = {s: signal.signal(s, self._on_signal) for s in self.signals}

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._received = signal.Signals(signum)

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch, batch_idx) -> None:
        self._step_at_batch_start = trainer.global_step

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx) -> None:
        if self.preempted_at is not None:
            return
        if trainer.global_step == self._step_at_batch_start:
            return  # between the micro-batches of one optimizer step (gradient accumulation): wait for the step to end
        if not trainer.strategy.reduce_boolean_decision(self._received is not None, all=False):
            return
        self.preempted_at = trainer.global_step
        end_run_at_current_step(trainer)  # as an uninterrupted run would at max_steps
        if not validation_follows(trainer):
            self._checkpoint(trainer)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.preempted_at == trainer.global_step and not self._saved and not trainer.sanity_checking:
            self._checkpoint(trainer)

    def _checkpoint(self, trainer: Trainer) -> None:
        path = self._save_last(trainer)
        self._saved = True
        cause = self._received.name if self._received is not None else "a signal to another rank"
        log.warning(f"{cause}: saved {path}; preempted at step {trainer.global_step}; resume with ckpt_path=auto")
        previous = self._before_run.get(self._received) if self._received is not None else None
        if callable(previous):
            previous(self._received, None)

    def _save_last(self, trainer: Trainer) -> Path:
        """Write last.ckpt through the run's ModelCheckpoint when it keeps one, so that its bookkeeping knows the file
        holds this step: otherwise, when the run stops here, its ``on_train_end`` overwrites it with the end-of-training
        state (an ended epoch, which a map-style loader would not resume mid-way)."""
        ckpt = trainer.checkpoint_callback
        if isinstance(ckpt, ModelCheckpoint) and ckpt.save_last is True and not ckpt.save_weights_only:
            save_last(ckpt, trainer)
            return Path(ckpt.last_model_path)
        path = self.dirpath / "last.ckpt"
        trainer.save_checkpoint(path, weights_only=False)
        return path

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.preempted_at is not None and not self._saved:  # a validation was expected and did not come
            self._checkpoint(trainer)
        self._restore()

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._restore()

    def _restore(self) -> None:
        for s, handler in self._replaced.items():
            if signal.getsignal(s) == self._on_signal and handler is not None:
                signal.signal(s, handler)
        self._replaced = {}

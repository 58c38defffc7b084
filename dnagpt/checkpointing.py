"""Checkpoints that survive being killed: atomic writes, validation before a resume, and what an exact resume needs.

- ``AtomicCheckpointIO`` (every trainer config's ``plugins``) writes each checkpoint to ``.<name>.partial`` beside its
  target, fsyncs it and renames it over the target, so a kill during a save leaves the previous ``last.ckpt`` whole.
  Lightning's own writer goes through an fsspec transaction whose temporary file lives in the system temp directory:
  renaming it into the run directory is a copy (not atomic) whenever the two are on different filesystems, and nothing
  is fsynced. A kill mid-save can still leave one ``.<name>.partial`` behind; it is never read and the next save of that
  name replaces it.
- ``check_checkpoint`` loads a file (memory-mapped, so only the pickled structure is read) and says why it is not a
  checkpoint of ours; ``find_resume_checkpoint`` is what ``ckpt_path=auto`` resumes from: ``last.ckpt`` when it is sound,
  else the valid checkpoint with the highest ``global_step`` in the same directory.
- ``ExactResume`` (a default callback) restores what Lightning does not checkpoint. The RNG: torch is reseeded at every
  training batch from ``(seed, rank, global_step, batch_idx)``. A saved generator state would not do: validation and the
  re-created DataLoader draw from the global generator between the save and the next batch, differently in a resumed
  run; dropout masks that are a function of the step are the same whether or not the run was interrupted. And the
  callback metrics, without which ModelCheckpoint defers its saves after a resume (see the class).
"""

import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint as LightningModelCheckpoint
from torchmetrics import Metric

from dnagpt.tasks.base import CKPT_KEY
from dnagpt.utils.pylogger import RankedLogger

log = RankedLogger(__name__)

LAST = "last.ckpt"
METRICS_KEY, METRIC_STATES_KEY = "callback_metrics", "metric_states"  # ExactResume's entries in a checkpoint


class CorruptCheckpointError(ValueError):
    """A checkpoint file that is truncated, not a checkpoint, or not one of this project."""


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; once the caller has written it, fsync it and rename it onto ``path``.

    On an exception the temporary file is removed and ``path`` is untouched. The directory is fsynced after the rename
    (best effort: some network filesystems refuse it) so the new name itself survives a power loss.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    try:
        yield partial
        with open(partial, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    with suppress(OSError):
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local saves are atomic (see the module docstring); remote paths keep Lightning's."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None) -> None:
        if storage_options is not None or not isinstance(get_filesystem(path), LocalFileSystem):
            return super().save_checkpoint(checkpoint, path, storage_options)
        with atomic_path(path) as partial:
            torch.save(checkpoint, partial)


def _load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except RuntimeError as err:
        if "mmap" not in str(err):  # only zip-format files can be memory-mapped; a legacy .pth is read in full
            raise
    return torch.load(path, map_location="cpu", weights_only=False)


def check_checkpoint(path: str | Path, lightning: bool = True) -> int | None:
    """The ``global_step`` of a sound checkpoint of this project (``None`` when ``lightning=False`` accepts weights).

    ``lightning=True`` (resuming) asks for a Lightning checkpoint with our ``dnagpt`` entry; ``lightning=False``
    (evaluating) only asks that the file loads, since a released ``.pth`` or a ``save_pretrained`` directory is fine
    there. Raises ``CorruptCheckpointError`` naming the file and the reason, never a bare pickle or zip traceback.
    """
    path = Path(path)
    if path.is_dir():
        if lightning:
            raise CorruptCheckpointError(f"{path}: is a directory, not a checkpoint file")
        return None
    try:
        ckpt = _load(path)
    except Exception as err:  # truncated zip, garbage, empty file: torch raises many types
        reason = str(err).strip().splitlines()[0] if str(err).strip() else "no detail"
        raise CorruptCheckpointError(f"{path}: truncated or not a checkpoint ({type(err).__name__}: {reason})") from err
    if not lightning:
        return None
    if not isinstance(ckpt, dict):
        raise CorruptCheckpointError(f"{path}: not a Lightning checkpoint (it holds a {type(ckpt).__name__})")
    missing = [key for key in ("state_dict", "global_step", CKPT_KEY) if key not in ckpt]
    if missing:
        raise CorruptCheckpointError(f"{path}: not a checkpoint of this project (no {', '.join(missing)} entry)")
    return int(ckpt["global_step"])


def find_resume_checkpoint(ckpt_dir: str | Path) -> Path | None:
    """``last.ckpt`` of ``ckpt_dir`` when it is sound, else the sound ``*.ckpt`` with the highest ``global_step``
    (the newest file among equals); ``None`` when there is none. Every file passed over is logged with its reason."""
    ckpt_dir = Path(ckpt_dir)
    last = ckpt_dir / LAST
    if last.exists():
        try:
            step = check_checkpoint(last)
            log.info(f"ckpt_path=auto: resuming from {last} (step {step})")
            return last
        except CorruptCheckpointError as err:
            log.warning(f"ckpt_path=auto: {err}; looking for another checkpoint in {ckpt_dir}")
    found = []
    for path in sorted(ckpt_dir.glob("*.ckpt")):
        if path.name == LAST:
            continue
        try:
            found.append((check_checkpoint(path), path.stat().st_mtime, path))
        except CorruptCheckpointError as err:
            log.warning(f"ckpt_path=auto: {err}; skipped")
    if not found:
        log.info(f"ckpt_path=auto: no sound checkpoint in {ckpt_dir}, starting fresh")
        return None
    step, _, path = max(found)
    log.warning(f"ckpt_path=auto: resuming from {path} (step {step}) instead of {last}")
    return path


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


class ModelCheckpoint(LightningModelCheckpoint):
    """Lightning's ModelCheckpoint, except that a step-triggered save (``every_n_train_steps``) falling on a batch that a
    validation follows is taken after that validation.

    Why: resuming from a checkpoint written at the end of a batch, Lightning takes that batch's validation as done, so a
    kill during it lost the validation (its metrics, its place in the top-k, the running best). Lightning's own deferral
    (``on_validation_end`` saves the top-k and last) does the saving. Same class name, so the two restore each other's
    state.
    """

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx) -> None:
        every = self._every_n_train_steps
        if every >= 1 and trainer.global_step % every == 0 and trainer.check_val_every_n_epoch is None:
            if validation_follows(trainer):
                self._defer_save_until_validation = True
                return
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)


class ExactResume(Callback):
    """What Lightning leaves out of a checkpoint and a resumed run needs to continue exactly as an uninterrupted one.

    - The RNG stream: torch (CPU and CUDA) is seeded at each training batch from ``(seed, global rank, global step,
      batch index)``, so dropout masks are a function of the step (module docstring); ranks draw different masks. Numpy
      and ``random`` are left alone: the data pipeline seeds its own generators.
    - The callback metrics (the last logged value of each metric): without them a resumed ModelCheckpoint finds no
      ``val/loss`` until the next validation and defers every step-triggered save until then, so a second kill in that
      window would lose everything since the resume; its top-k choices and the final metrics would differ too.
    - The states of the task's torchmetrics (torchmetrics keeps them out of the state dict): above all the running bests
      (``val/loss_best``, ``val/auroc_best``, ...), which would otherwise restart from the first validation after resuming.
    """

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)
        self._metrics: dict[str, torch.Tensor] = {}

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        entropy = [self.seed % 2**32, trainer.global_rank, trainer.global_step, batch_idx]
        torch.manual_seed(int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0]))

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        metrics = trainer.callback_metrics.items()
        checkpoint[METRICS_KEY] = {k: v.detach().cpu() for k, v in metrics if isinstance(v, torch.Tensor)}
        checkpoint[METRIC_STATES_KEY] = {
            name: {k: v.detach().cpu() for k, v in m.metric_state.items() if isinstance(v, torch.Tensor)}
            for name, m in pl_module.named_modules() if isinstance(m, Metric)
        }  # fmt: skip

    def on_load_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        self._metrics = dict(checkpoint.get(METRICS_KEY, {}))
        for name, states in checkpoint.get(METRIC_STATES_KEY, {}).items():
            metric = pl_module.get_submodule(name)
            for key, value in states.items():
                setattr(metric, key, value.to(metric.device))

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # after Lightning has restored the checkpoint and reset its metrics, before the first batch
        trainer.callback_metrics.update({k: v.to(pl_module.device) for k, v in self._metrics.items()})
        self._metrics = {}

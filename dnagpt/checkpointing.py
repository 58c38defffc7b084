"""Checkpoints: the one place that knows their format, reads them, writes them atomically and picks the one to resume.

- ``read_checkpoint`` reads a file once (memory-mapped) and returns a :class:`Checkpoint` with everything a caller needs
  (weights, model config, tokenizer, step, W&B run id), or says in one paragraph why the file is not usable: missing,
  truncated, not ours, a directory where a resume needs a file. ``ckpt_path=`` and ``init_from=`` both go through it.
  ``CKPT_KEY`` is our entry in a Lightning checkpoint (tokenizer spec, model config, W&B run id, skipped batches).
- ``resolve_checkpoint`` is what ``ckpt_path=`` means: ``auto`` is ``find_resume_checkpoint``, ``last.ckpt`` when it is
  sound, else the valid checkpoint with the highest ``global_step`` in the same directory.
- ``AtomicCheckpointIO`` (every trainer config's ``plugins``) writes each checkpoint to ``.<name>.partial`` beside its
  target, fsyncs it and renames it over the target, so a kill during a save leaves the previous ``last.ckpt`` whole.
  Lightning's own writer goes through an fsspec transaction whose temporary file lives in the system temp directory:
  renaming it into the run directory is a copy (not atomic) whenever the two are on different filesystems, and nothing
  is fsynced. A kill mid-save can still leave one ``.<name>.partial`` behind; it is never read and the next save of that
  name replaces it.
- ``ExactResume`` (a default callback) restores what Lightning does not checkpoint. The RNG: torch is reseeded at every
  training batch from ``(seed, rank, global_step, batch_idx)``. A saved generator state would not do: validation and the
  re-created DataLoader draw from the global generator between the save and the next batch, differently in a resumed
  run; dropout masks that are a function of the step are the same whether or not the run was interrupted. And the
  callback metrics, without which ModelCheckpoint defers its saves after a resume (see the class).
"""

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint as LightningModelCheckpoint
from torchmetrics import Metric

from dnagpt.lightning_internals import defer_save_to_validation_end, step_trigger, validation_follows
from dnagpt.model.pretrained import from_pretrained
from dnagpt.utils.errors import CheckpointError, MissingFileError
from dnagpt.utils.pylogger import RankedLogger

log = RankedLogger(__name__)

CKPT_KEY = "dnagpt"  # our entry in a Lightning checkpoint
LAST = "last.ckpt"
METRICS_KEY, METRIC_STATES_KEY = "callback_metrics", "metric_states"  # ExactResume's entries in a checkpoint


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
    """Memory-mapped (only the pickled structure is read); a legacy (non-zip) ``.pth`` cannot be mapped and is read whole."""
    try:
        return torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except RuntimeError as err:
        if "mmap" not in str(err):
            raise
    return torch.load(path, map_location="cpu", weights_only=False)


@dataclass(frozen=True)
class Checkpoint:
    """What a checkpoint holds, read and validated once by :func:`read_checkpoint`.

    ``kind`` is ``lightning`` (a run of ours: resumable, brings its model config and tokenizer), ``release`` (a released
    DNAGPT ``.pth``: weights only, described by the ``model`` and ``tokenizer`` groups) or ``pretrained`` (a
    ``save_pretrained`` directory: weights, model config and tokenizer).
    """

    path: Path
    kind: Literal["lightning", "release", "pretrained"]
    state_dict: Mapping[str, Any]  # the network's weights: our names ("model." stripped) or the release's
    model_cfg: dict | None = None
    tokenizer_spec: dict | None = None
    global_step: int | None = None
    wandb_run_id: str | None = None
    # a fine-tuning task's own part (lightning only): weights outside the network (a new head, under the task's names)
    # and what the task recorded under CKPT_KEY["task"] (e.g. its label mapping)
    task_weights: Mapping[str, Any] = field(default_factory=dict)
    task_state: Mapping[str, Any] = field(default_factory=dict)
    task_class: str | None = None  # lightning only: the task module's class path (``dnagpt.tasks.gsr.GSRTask``)
    data_phases: int | None = None  # lightning only: ``data.phases`` of the fit that wrote it (None: not recorded)

    def describe(self, key: str | None) -> str:
        """``init_from=PATH`` (the config key that named it) or the path alone."""
        return f"{key}={self.path}" if key else str(self.path)


def read_checkpoint(path: str | Path, key: str | None = None, resumable: bool = False) -> Checkpoint:
    """Read ``path`` once and say plainly why it is not a usable checkpoint.

    ``key`` (``ckpt_path``, ``init_from``) is the config key that named the file, put in front of every message.
    ``resumable=True`` asks for a Lightning checkpoint of ours (a resume needs the optimizer, the step and the data
    cursor); otherwise released ``.pth`` files and ``save_pretrained`` directories are accepted too. Raises
    ``MissingFileError`` or ``CheckpointError``, never a bare pickle, zip or torch traceback.
    """
    path = Path(path)
    name = f"{key}={path}" if key else str(path)
    if not path.exists():
        raise MissingFileError(
            f"{name} does not exist (a Lightning .ckpt, a save_pretrained directory or a released .pth)"
        )
    if path.is_dir():
        if resumable:
            raise CheckpointError(f"{name}: is a directory, not a checkpoint file")
        return _read_pretrained(path, name)
    try:
        ckpt = _load(path)
    except Exception as err:  # truncated zip, garbage, empty file: torch raises many types
        reason = str(err).strip().splitlines()[0] if str(err).strip() else "no detail"
        raise CheckpointError(f"{name}: truncated or not a checkpoint ({type(err).__name__}: {reason})") from None
    if not isinstance(ckpt, Mapping):
        raise CheckpointError(f"{name}: not a checkpoint (the file holds a {type(ckpt).__name__}, not a dict)")
    missing = [entry for entry in ("state_dict", "global_step", CKPT_KEY) if entry not in ckpt]
    if not missing:
        return lightning_checkpoint(ckpt, path)
    if resumable:
        raise CheckpointError(
            f"{name}: not a checkpoint of this project (no {', '.join(missing)} entry); a resume needs a Lightning "
            "checkpoint written by a run of ours; to start a new run from these weights use init_from="
        )
    weights = ckpt["model"] if isinstance(ckpt.get("model"), Mapping) else ckpt  # release: raw or {"model": ...}
    if not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise CheckpointError(f"{name}: not a checkpoint (neither a Lightning checkpoint nor a state dict of tensors)")
    return Checkpoint(path, "release", weights)


def lightning_checkpoint(ckpt: Mapping[str, Any], path: Path) -> Checkpoint:
    """The :class:`Checkpoint` of a loaded Lightning checkpoint dict of ours."""
    ours = ckpt.get(CKPT_KEY) or {}
    state = ckpt.get("state_dict", {})
    weights = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
    step = ckpt.get("global_step")
    return Checkpoint(path, "lightning", weights, ours.get("model_cfg"), ours.get("tokenizer_spec"),
                      None if step is None else int(step), ours.get("wandb_run_id"),
                      task_weights={k: v for k, v in state.items() if not k.startswith("model.")},
                      task_state=ours.get("task") or {}, task_class=ours.get("task_class"),
                      data_phases=ours.get("data_phases"))  # fmt: skip


def _read_pretrained(path: Path, name: str) -> Checkpoint:
    try:
        model, spec = from_pretrained(path)
    except (ValueError, FileNotFoundError) as err:
        raise CheckpointError(f"{name}: {err}") from None
    return Checkpoint(path, "pretrained", model.state_dict(), model.config.to_dict(), spec)


def resolve_checkpoint(ckpt_path: str | None, run_dir: str | Path, resumable: bool = True) -> Checkpoint | None:
    """The checkpoint ``ckpt_path=`` names: ``auto`` is :func:`find_resume_checkpoint` of ``<run_dir>/checkpoints``
    (``None``: start fresh), a path is read and checked (``resumable=False`` when evaluating: weights do)."""
    if ckpt_path is None:
        return None
    if ckpt_path == "auto":
        return find_resume_checkpoint(Path(run_dir) / "checkpoints")
    return read_checkpoint(ckpt_path, key="ckpt_path", resumable=resumable)


def find_resume_checkpoint(ckpt_dir: str | Path) -> Checkpoint | None:
    """``last.ckpt`` of ``ckpt_dir`` when it is sound, else the sound ``*.ckpt`` with the highest ``global_step``
    (the newest file among equals); ``None`` when there is none. Every file passed over is logged with its reason."""
    ckpt_dir = Path(ckpt_dir)
    last = ckpt_dir / LAST
    if last.exists():
        try:
            ckpt = read_checkpoint(last, resumable=True)
            log.info(f"ckpt_path=auto: resuming from {last} (step {ckpt.global_step})")
            return ckpt
        except CheckpointError as err:
            log.warning(f"ckpt_path=auto: {err}; looking for another checkpoint in {ckpt_dir}")
    found = []
    for path in sorted(ckpt_dir.glob("*.ckpt")):
        if path.name == LAST:
            continue
        try:
            ckpt = read_checkpoint(path, resumable=True)
            found.append((ckpt.global_step, path.stat().st_mtime, str(path), ckpt))
        except CheckpointError as err:
            log.warning(f"ckpt_path=auto: {err}; skipped")
    if not found:
        log.info(f"ckpt_path=auto: no sound checkpoint in {ckpt_dir}, starting fresh")
        return None
    step, _, _, ckpt = max(found, key=lambda f: f[:3])
    log.warning(f"ckpt_path=auto: resuming from {ckpt.path} (step {step}) instead of {last}")
    return ckpt


class ModelCheckpoint(LightningModelCheckpoint):
    """Lightning's ModelCheckpoint, except that a step-triggered save (``every_n_train_steps``) falling on a batch that a
    validation follows is taken after that validation.

    Why: resuming from a checkpoint written at the end of a batch, Lightning takes that batch's validation as done, so a
    kill during it lost the validation (its metrics, its place in the top-k, the running best). Lightning's own deferral
    (``on_validation_end`` saves the top-k and last) does the saving. Same class name, so the two restore each other's
    state.
    """

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx) -> None:
        every = step_trigger(self)
        if every >= 1 and trainer.global_step % every == 0 and trainer.check_val_every_n_epoch is None:
            if validation_follows(trainer):
                defer_save_to_validation_end(self)
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

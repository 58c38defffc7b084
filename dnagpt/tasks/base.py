"""What every DNAGPT task shares: the network, the optimiser and schedule, and the checkpoint contract.

- ``__init__`` takes plain dicts (model config, tokenizer spec) and Hydra partials, so ``load_from_checkpoint(path)`` works
  without Hydra: the dicts are the saved hyper-parameters, the partials are not saved (training only).
- A checkpoint carries the tokenizer spec, the model config and the W&B run id (``dnagpt.checkpointing.CKPT_KEY``);
  resuming or initialising from a checkpoint of another tokenizer or model shape is a ``CheckpointError`` before any
  weight is touched (``check_compatible``).
- ``init_from`` (weights only) goes through one strict loader for every source that ``read_checkpoint`` accepts: our
  ``.ckpt``, a ``save_pretrained`` directory or a released DNAGPT ``.pth``. Every head of the release exists in every
  task, so nothing is ever loaded with ``strict=False``.
- ``DATA_MODULE`` is the DataModule class a task reads batches from; the configuration check compares it with ``data``.
- ``PREDICTION_INPUT`` (``dnagpt.inference.prompts``) turns an unlabelled record into the prompts ``predict_step`` reads,
  for ``dnagpt.predict``; ``predict_step`` returns a dict of per-prompt (B,) tensors with ``row`` (``batch["row"]``, the
  input row), which the prediction writer averages per row and writes in input order. A checkpoint records the task
  class (``task_class``), so a prediction with another task is refused.
- One policy for a non-finite loss, ``task.nonfinite_loss``: ``stop`` raises naming the split, the loss part, the step and
  the batch; ``skip`` drops the batch (its loss is never back-propagated, the optimizer makes no update), warns and
  counts ``train/skipped_batches``. Under DDP the training decision is reduced over ranks: a rank skipping its backward
  alone would leave the others waiting in the gradient all-reduce.
"""

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.strategies import FSDPStrategy

from dnagpt.checkpointing import CKPT_KEY, Checkpoint, lightning_checkpoint, read_checkpoint
from dnagpt.lightning_internals import attached_trainer
from dnagpt.model.config import GPTConfig
from dnagpt.model.gpt import DNAGPT
from dnagpt.model.kmer_init import compose_kmer_rows
from dnagpt.model.pretrained import load_release_state_dict
from dnagpt.tokenizer import KmerTokenizer
from dnagpt.utils.errors import CheckpointError
from dnagpt.utils.pylogger import RankedLogger

if TYPE_CHECKING:
    from dnagpt.inference.prompts import PredictionInput

log = RankedLogger(__name__)

NONFINITE_POLICIES = ("stop", "skip")  # task.nonfinite_loss


def held_out(*names: str) -> frozenset[str]:
    """``val/<name>`` and ``test/<name>`` for each name: what ``log_epoch`` logs for both held-out splits."""
    return frozenset(f"{split}/{name}" for split in ("val", "test") for name in names)


class DNAGPTTask(LightningModule):
    """Base LightningModule; subclasses implement ``shared_step(batch, split)`` (losses, metric updates) and
    ``log_epoch(split)`` (held-out metrics at the end of each validation and test epoch)."""

    # Every metric the task logs, declared so that task.monitor and a sweep's optimized_metric are checked before any
    # training (dnagpt.config_checks, dnagpt.utils.multirun); tests/test_sweeps.py holds it to what a real run logs.
    LOGGED_METRICS: ClassVar[frozenset[str]] = frozenset()
    DATA_MODULE: ClassVar[type[LightningDataModule]]
    PREDICTION_INPUT: ClassVar["type[PredictionInput] | None"] = None  # None: the task makes no predictions

    def __init__(
        self,
        model_cfg: GPTConfig | dict,
        tokenizer_spec: dict,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., Any] | None = None,
        monitor: str = "val/loss",
        mode: str = "min",
        nonfinite_loss: str = "stop",
        kmer_init: float = 0.0,
        layer_lr_decay: float = 1.0,
    ) -> None:
        super().__init__()
        if not 0.0 < layer_lr_decay <= 1.0:
            raise ValueError(f"task.layer_lr_decay={layer_lr_decay} must lie in (0, 1] (1: every layer at the peak rate)")
        if nonfinite_loss not in NONFINITE_POLICIES:
            raise ValueError(f"task.nonfinite_loss={nonfinite_loss!r} must be one of {', '.join(NONFINITE_POLICIES)}")
        cfg = model_cfg if isinstance(model_cfg, GPTConfig) else GPTConfig.from_dict(dict(model_cfg))
        self.save_hyperparameters(ignore=["optimizer", "scheduler", "model_cfg", "tokenizer_spec"])
        self.hparams["model_cfg"] = cfg.to_dict()
        self.hparams["tokenizer_spec"] = dict(tokenizer_spec)
        self.tokenizer = KmerTokenizer.from_dict(dict(tokenizer_spec))
        if len(self.tokenizer) != cfg.vocab_size:
            raise ValueError(
                f"model vocab_size={cfg.vocab_size} does not fit the tokenizer ({len(self.tokenizer)} ids, "
                f"vocab={self.tokenizer.to_dict().get('vocab')}); choose the matching tokenizer for preset {cfg.name!r}"
            )
        if cfg.number_token_id != self.tokenizer.number_id:
            raise ValueError(
                f"model number_token_id={cfg.number_token_id} is not the tokenizer's <M> id {self.tokenizer.number_id}: "
                "inserted numbers must follow the token the tokenizer writes"
            )
        self.model = DNAGPT(cfg)
        matrices = {id(p): p for p in (self.model.transformer.wte.weight, self.model.token_head[-1].weight)}
        for rows in matrices.values():  # a tied head's matrix is wte's: drawn once
            compose_kmer_rows(rows, self.tokenizer, kmer_init)  # a fresh model only: init_from and resume overwrite it
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.nonfinite_loss = nonfinite_loss
        self.layer_lr_decay = layer_lr_decay
        self.skipped_batches = 0  # training batches dropped for a non-finite loss, kept across resumes
        self._batch_idx = 0  # of the batch in shared_step, for the non-finite message
        self._dropped = False  # the last training batch was dropped: optimizer_step skips the update

    # ---- weights -------------------------------------------------------------------------------------------------
    def load_weights(self, source: str | Path | Checkpoint, key: str = "init_from") -> None:
        """Weights-only initialisation from a path or a read :class:`Checkpoint`; any missing, unexpected or
        mis-shaped key is an error. ``key`` is the config key that named the file, for the messages."""
        ckpt = source if isinstance(source, Checkpoint) else read_checkpoint(source, key=key)
        self.check_compatible(ckpt, key=key)
        try:
            load_release_state_dict(self.model, ckpt.state_dict)  # our names pass the release renames unchanged
        except ValueError as err:
            raise CheckpointError(f"{ckpt.describe(key)}: {err}") from None
        log.info(f"Initialised weights from {ckpt.path}")

    def check_compatible(self, ckpt: Checkpoint, key: str) -> None:
        """Refuse a checkpoint of another tokenizer or model shape, naming both, before any weight is loaded."""
        ours = self.hparams["tokenizer_spec"]
        if ckpt.tokenizer_spec is not None and dict(ckpt.tokenizer_spec) != ours:
            raise CheckpointError(
                f"{ckpt.describe(key)} was trained with tokenizer {ckpt.tokenizer_spec}, but this run uses {ours}; "
                "pick the tokenizer config the checkpoint was trained with"
            )
        if ckpt.model_cfg is not None:
            theirs, mine = GPTConfig.from_dict(dict(ckpt.model_cfg)), self.model.config
            different = [f for f in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", "bias", "tie_head")
                         if getattr(theirs, f) != getattr(mine, f)]  # fmt: skip
            if different:
                shown = ", ".join(f"{f} {getattr(theirs, f)} vs {getattr(mine, f)}" for f in different)
                raise CheckpointError(
                    f"{ckpt.describe(key)} holds model {theirs.name!r}, this run builds {mine.name!r} ({shown}): "
                    f"use the model config the checkpoint was trained with (model={theirs.name})"
                )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        wandb_ids = [lg.version for lg in self.loggers if isinstance(lg, WandbLogger)]
        checkpoint[CKPT_KEY] = {
            "tokenizer_spec": self.hparams["tokenizer_spec"],
            "model_cfg": self.hparams["model_cfg"],
            "wandb_run_id": wandb_ids[0] if wandb_ids else None,
            "task_class": f"{type(self).__module__}.{type(self).__qualname__}",  # what dnagpt.predict checks
            "skipped_batches": self.skipped_batches,
            "data_phases": getattr(getattr(attached_trainer(self), "datamodule", None), "phases", None),  # phases_as_fitted
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        trainer = attached_trainer(self)
        path = Path(trainer.ckpt_path) if trainer is not None and trainer.ckpt_path else Path("the checkpoint")
        self.check_compatible(lightning_checkpoint(checkpoint, path), key=None)  # also for fits outside the pipeline
        self.skipped_batches = int((checkpoint.get(CKPT_KEY) or {}).get("skipped_batches", 0))

    # ---- optimisation --------------------------------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, Any]:
        if self.optimizer_factory is None:
            raise ValueError("this module was built without an optimizer partial (task.optimizer); it can only infer")
        weight_decay = self.optimizer_factory.keywords.get("weight_decay", 0.0)
        groups = self.param_groups(weight_decay)
        for group in groups:
            if "lr_scale" in group:  # layer-wise decay: a group's own peak rate, which the schedule then scales
                group["lr"] = self.optimizer_factory.keywords["lr"] * group.pop("lr_scale")
        optimizer = self.optimizer_factory(groups)
        if self.scheduler_factory is None:
            return {"optimizer": optimizer}
        scheduler = self.scheduler_factory(optimizer, total_steps=int(self.trainer.estimated_stepping_batches))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def param_groups(self, weight_decay: float) -> list[dict]:
        """The optimizer's parameter groups: the network's (per depth with ``task.layer_lr_decay``); a task with weights
        of its own (a new head) adds them to the first two, the top's."""
        return self.model.param_groups(weight_decay, self.layer_lr_decay)

    def configure_gradient_clipping(
        self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Clip here: Lightning's mixed-precision plugin refuses to clip for fused optimizers (our default, measured
        7x faster steps on CPU) because a GradScaler would unscale inside them. bf16 and fp32 use no scaler, so clipping
        the gradients as they are is exact; fp16 keeps Lightning's path (and its error). Under FSDP each rank holds a
        shard of every gradient: the norm must be the global one, which only the FSDP wrapper computes."""
        if not gradient_clip_val or self.trainer.precision.startswith("16"):
            return super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
        params = [p for group in optimizer.param_groups for p in group["params"]]
        if gradient_clip_algorithm == "value":
            torch.nn.utils.clip_grad_value_(params, gradient_clip_val)
        elif isinstance(self.trainer.strategy, FSDPStrategy):
            self.trainer.strategy.model.clip_grad_norm_(gradient_clip_val)
        else:
            torch.nn.utils.clip_grad_norm_(params, gradient_clip_val)

    # ---- steps ---------------------------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor | None:
        self._batch_idx = batch_idx
        out = self.shared_step(batch, "train")
        self._dropped = out is None
        if out is not None:
            return out["loss"]
        if self.trainer.world_size == 1:
            return None  # Lightning skips the backward
        # Lightning refuses None under DDP. A zero loss over every parameter keeps the ranks' gradient all-reduce in step
        # (every rank drops the same batch) without touching the non-finite graph; optimizer_step makes no update.
        return sum(p.sum() for p in self.parameters() if p.requires_grad) * 0.0

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Callable | None = None) -> None:
        """Lightning's default, except that the closure (training_step, backward) runs before the step, so that a dropped
        batch makes no update at all (AdamW would still decay its moments and the weights on zero gradients)."""
        loss = optimizer_closure()
        if not self._dropped:
            optimizer.step(closure=lambda: loss)  # gradient clipping and the update, as Lightning does them

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._batch_idx = batch_idx
        self.shared_step(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._batch_idx = batch_idx
        self.shared_step(batch, "test")

    def shared_step(self, batch: dict[str, torch.Tensor], split: str) -> dict[str, torch.Tensor] | None:
        """Losses and metric updates of one batch; ``None`` when the batch is dropped (``drop_nonfinite``)."""
        raise NotImplementedError

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        """Per prompt of a batch of ``PREDICTION_INPUT`` prompts: the task's outputs as (B,) tensors, and ``row``."""
        raise NotImplementedError(f"{type(self).__name__} makes no predictions (no PREDICTION_INPUT)")

    def drop_nonfinite(self, split: str, losses: Mapping[str, torch.Tensor]) -> bool:
        """Apply ``task.nonfinite_loss`` to this batch's loss parts (called before anything is logged or updated).

        Returns True when the batch must be dropped; raises ``FloatingPointError`` under ``stop``. One device sync per
        call; in training one boolean all-reduce under DDP, so that every rank drops (or stops at) the same batch.
        """
        finite = torch.stack([torch.isfinite(v.detach()).all() for v in losses.values()]).all()
        bad = bad_here = not bool(finite)
        if split == "train" and attached_trainer(self) is not None:
            bad = self.trainer.strategy.reduce_boolean_decision(bad_here, all=False)
        if not bad:
            return False
        parts = [f"{split}/{name} is {v.item()}" for name, v in losses.items() if not torch.isfinite(v).all()]
        what = ", ".join(parts) or "a loss is not finite on another rank"
        msg = f"{what} at step {self.global_step} (batch {self._batch_idx})"
        if self.nonfinite_loss == "stop":
            raise FloatingPointError(f"{msg}; task.nonfinite_loss=skip would drop such batches instead")
        if split == "train":
            self.skipped_batches += 1
            # the step's row shows what happened (unlogged, Lightning would repeat the previous step's values there),
            # logged as every task logs them: only train/loss on the progress bar
            for name, value in losses.items():
                self.log(f"train/{name}", value.detach().float(), prog_bar=name == "loss", batch_size=1)
            self.log("train/skipped_batches", float(self.skipped_batches), batch_size=1)
        log.warning(f"{msg}: batch dropped (task.nonfinite_loss=skip; {self.skipped_batches} training batches so far)")
        return True

    def log_epoch(self, split: str) -> None:
        """Log the metrics ``split`` ("val" or "test") accumulated over the epoch, then reset them."""
        raise NotImplementedError

    def on_validation_epoch_end(self) -> None:
        self.log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self.log_epoch("test")

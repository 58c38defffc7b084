"""What every DNAGPT task shares: the network, the optimiser and schedule, and the checkpoint contract.

- ``__init__`` takes plain dicts (model config, tokenizer spec) and Hydra partials, so ``load_from_checkpoint(path)`` works
  without Hydra: the dicts are the saved hyper-parameters, the partials are not saved (training only).
- A checkpoint carries the tokenizer spec, the model config and the W&B run id; resuming with another tokenizer fails loudly.
- ``init_from`` (weights only) goes through one strict loader for every source: our ``.ckpt``, a ``save_pretrained``
  directory or a released DNAGPT ``.pth``. Every head of the release exists in every task, so nothing is ever loaded with
  ``strict=False``.
"""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.loggers import WandbLogger

from dnagpt.model.config import GPTConfig
from dnagpt.model.gpt import DNAGPT
from dnagpt.model.pretrained import from_pretrained, load_release_state_dict
from dnagpt.tokenizer import KmerTokenizer
from dnagpt.utils.pylogger import RankedLogger

log = RankedLogger(__name__)

CKPT_KEY = "dnagpt"  # our entry in a Lightning checkpoint: tokenizer spec, model config, W&B run id


class DNAGPTTask(LightningModule):
    """Base LightningModule; subclasses implement ``shared_step(batch, split)`` (losses, metric updates) and
    ``log_epoch(split)`` (held-out metrics at the end of each validation and test epoch)."""

    def __init__(
        self,
        model_cfg: GPTConfig | dict,
        tokenizer_spec: dict,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., Any] | None = None,
        monitor: str = "val/loss",
        mode: str = "min",
    ) -> None:
        super().__init__()
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
        self.model = DNAGPT(cfg)
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler

    # ---- weights -------------------------------------------------------------------------------------------------
    def load_weights(self, path: str | Path) -> None:
        """Weights-only initialisation (``init_from``); any missing, unexpected or mis-shaped key is an error."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"init_from: {path} does not exist")
        if path.is_dir():
            model, spec = from_pretrained(path, tokenizer_spec=self.hparams["tokenizer_spec"])
            state_dict = model.state_dict()
        else:
            ckpt = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
            if isinstance(ckpt, dict) and "state_dict" in ckpt and CKPT_KEY in ckpt:
                self._check_tokenizer(ckpt[CKPT_KEY]["tokenizer_spec"], source=str(path))
                state_dict = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items()
                              if k.startswith("model.")}
            else:
                state_dict = ckpt  # a released DNAGPT .pth (raw or {"model": ...}); the loader handles both
        load_release_state_dict(self.model, state_dict)
        log.info(f"Initialised weights from {path}")

    def _check_tokenizer(self, spec: dict, source: str) -> None:
        if dict(spec) != self.hparams["tokenizer_spec"]:
            raise ValueError(
                f"{source} was trained with tokenizer {spec}, but this run uses {self.hparams['tokenizer_spec']}; "
                "pick the tokenizer config the checkpoint was trained with"
            )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        wandb_ids = [lg.version for lg in self.loggers if isinstance(lg, WandbLogger)]
        checkpoint[CKPT_KEY] = {
            "tokenizer_spec": self.hparams["tokenizer_spec"],
            "model_cfg": self.hparams["model_cfg"],
            "wandb_run_id": wandb_ids[0] if wandb_ids else None,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if CKPT_KEY in checkpoint:
            self._check_tokenizer(checkpoint[CKPT_KEY]["tokenizer_spec"], source="the checkpoint")

    # ---- optimisation --------------------------------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, Any]:
        if self.optimizer_factory is None:
            raise ValueError("this module was built without an optimizer partial (task.optimizer); it can only infer")
        weight_decay = self.optimizer_factory.keywords.get("weight_decay", 0.0)
        optimizer = self.optimizer_factory(self.model.param_groups(weight_decay))
        if self.scheduler_factory is None:
            return {"optimizer": optimizer}
        scheduler = self.scheduler_factory(optimizer, total_steps=int(self.trainer.estimated_stepping_batches))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def configure_gradient_clipping(
        self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Clip here: Lightning's mixed-precision plugin refuses to clip for fused optimizers (our default, measured
        7x faster steps on CPU) because a GradScaler would unscale inside them. bf16 and fp32 use no scaler, so clipping
        the gradients as they are is exact; fp16 keeps Lightning's path (and its error)."""
        if not gradient_clip_val or self.trainer.precision.startswith("16"):
            return super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
        params = [p for group in optimizer.param_groups for p in group["params"]]
        if gradient_clip_algorithm == "value":
            torch.nn.utils.clip_grad_value_(params, gradient_clip_val)
        else:
            torch.nn.utils.clip_grad_norm_(params, gradient_clip_val)

    # ---- steps ---------------------------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self.shared_step(batch, "train")["loss"]

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self.shared_step(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self.shared_step(batch, "test")

    def shared_step(self, batch: dict[str, torch.Tensor], split: str) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def log_epoch(self, split: str) -> None:
        """Log the metrics ``split`` ("val" or "test") accumulated over the epoch, then reset them."""
        raise NotImplementedError

    def on_validation_epoch_end(self) -> None:
        self.log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self.log_epoch("test")

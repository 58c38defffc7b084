"""Callbacks of our own: the loss-curve picture a person looks at after a run, and the order-0 yardstick."""

from pathlib import Path

import matplotlib
import numpy as np
import torch

matplotlib.use("Agg")  # no display on training machines
import matplotlib.pyplot as plt  # noqa: E402
from lightning.pytorch import Callback, LightningModule, Trainer  # noqa: E402
from lightning.pytorch.utilities import rank_zero_only  # noqa: E402


class LossCurvePlot(Callback):
    """Records train loss per step and validation loss per evaluation, and writes a PNG at the end of fitting.

    Independent of the logger (CSV, W&B or none), so every run leaves the same picture beside its checkpoints.
    """

    def __init__(self, path: str | Path, train_key: str = "train/loss", val_key: str = "val/loss") -> None:
        self.path = Path(path)
        self.train_key, self.val_key = train_key, val_key
        self.train: list[tuple[int, float]] = []
        self.val: list[tuple[int, float]] = []

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None:
            self.train.append((trainer.global_step, float(loss)))

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking and self.val_key in trainer.callback_metrics:
            self.val.append((trainer.global_step, float(trainer.callback_metrics[self.val_key])))

    def state_dict(self) -> dict:
        return {"train": self.train, "val": self.val}  # a resumed run continues the same curve

    def load_state_dict(self, state_dict: dict) -> None:
        self.train, self.val = list(state_dict["train"]), list(state_dict["val"])

    @rank_zero_only
    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self.train:
            return
        fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
        steps, losses = zip(*self.train, strict=True)
        ax.plot(steps, losses, lw=0.6, alpha=0.35, color="tab:blue")
        window = max(1, len(losses) // 50)
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
        ax.plot(steps[window - 1:], smooth, lw=1.5, color="tab:blue", label=f"{self.train_key} (mean of {window})")
        if self.val:
            ax.plot(*zip(*self.val, strict=True), "o-", color="tab:orange", label=self.val_key)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(self.path)
        plt.close(fig)


class Order0Baseline(Callback):
    """The order-0 yardstick of the token loss, measured on the very batches the model trains and validates on.

    ``train/order0_entropy`` is the entropy (nats) of the unigram distribution of every training target seen so far;
    ``val/order0_ce`` is the cross-entropy of that distribution (add-one smoothed) on the validation targets. A model
    that learned only k-mer frequencies has ``val/token_loss`` ≈ ``val/order0_ce``; learning context takes it below.
    """

    def __init__(self, labels_key: str = "labels") -> None:
        self.labels_key = labels_key
        self.train_counts: torch.Tensor | None = None
        self.val_counts: torch.Tensor | None = None

    def _count(self, counts: torch.Tensor | None, batch: dict, vocab_size: int) -> torch.Tensor:
        labels = batch[self.labels_key]
        new = torch.bincount(labels[labels >= 0].flatten().cpu(), minlength=vocab_size)
        return new if counts is None else counts + new

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx) -> None:
        self.train_counts = self._count(self.train_counts, batch, pl_module.model.config.vocab_size)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if not trainer.sanity_checking:
            self.val_counts = self._count(self.val_counts, batch, pl_module.model.config.vocab_size)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.train_counts is None or self.val_counts is None:
            return
        p_train = self.train_counts.double() / self.train_counts.sum()
        entropy = -(p_train[p_train > 0] * p_train[p_train > 0].log()).sum()
        smoothed = (self.train_counts.double() + 1) / (self.train_counts.sum() + len(self.train_counts))
        cross_entropy = -(self.val_counts.double() * smoothed.log()).sum() / self.val_counts.sum()
        pl_module.log_dict({"train/order0_entropy": entropy.float(), "val/order0_ce": cross_entropy.float()})
        self.val_counts = None

    def state_dict(self) -> dict:
        return {"train_counts": self.train_counts}

    def load_state_dict(self, state_dict: dict) -> None:
        self.train_counts = state_dict["train_counts"]

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
    """Records logged losses during fitting and writes one PNG of them at the end, one panel per group of keys.

    Independent of the logger (CSV, W&B or none), so every run leaves the same picture beside its checkpoints.
    ``train/*`` keys are read after every training step, the other keys after every validation; keys a run never
    logs are simply absent from the picture.
    """

    DEFAULT_PANELS = {
        "loss": ["train/loss", "val/loss"],
        "token loss (nats)": ["train/token_loss", "val/token_loss", "val/order0_ce"],
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
        fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4), dpi=120, squeeze=False)
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
                else:
                    ax.plot(steps, values, "o-", ms=4, label=key)
            ax.set_title(title)
            ax.set_xlabel("optimizer step")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
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
        metrics = {"train/order0_entropy": entropy.float(), "val/order0_ce": cross_entropy.float()}
        pl_module.log_dict(metrics, sync_dist=True)  # under DDP: the mean of the ranks' estimates
        self.val_counts = None

    def state_dict(self) -> dict:
        return {"train_counts": self.train_counts}

    def load_state_dict(self, state_dict: dict) -> None:
        self.train_counts = state_dict["train_counts"]

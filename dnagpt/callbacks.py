"""Callbacks of our own: the loss-curve picture a person looks at after a run."""

from pathlib import Path

import matplotlib
import numpy as np

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

"""A callback that times ``Trainer.fit`` from inside a real training run, for ``bench.gpu_check``'s pre-training section.

Added to ``train.py`` by a Hydra override (``+callbacks.fit_clock._target_=bench.fit_clock.FitClock``), so the run is
the real entry point with nothing else changed. Its tokens/s leave out what a wall clock around the process would
include and a longer run would amortise: the process start, data preparation, the yardsticks' fitting, the first step
(CUDA context, kernel selection) and validation.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_only

from bench.common import synchronize


class FitClock(Callback):
    """Training seconds and tokens after the first step, validation excluded, written as JSON when fit ends."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.tokens = 0
        self.validation_s = 0.0
        self._fit_start = self._first_end = self._val_start = 0.0

    def _now(self, pl_module: LightningModule) -> float:
        synchronize(pl_module.device)  # queued GPU work belongs to the interval being closed
        return time.perf_counter()

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._fit_start = self._now(pl_module)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int) -> None:
        if not self._first_end:
            self._first_end = self._now(pl_module)  # the warm-up step: neither its time nor its tokens count
        else:
            self.tokens += batch["input_ids"].numel()

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._val_start = self._now(pl_module)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._first_end:
            self.validation_s += self._now(pl_module) - self._val_start

    @rank_zero_only
    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        end = self._now(pl_module)
        clock = {
            "steps": trainer.global_step,
            "tokens": self.tokens,  # input positions of the training batches after the first
            "train_seconds": end - self._first_end - self.validation_s if self._first_end else 0.0,
            "validation_seconds": self.validation_s,
            "first_step_seconds": self._first_end - self._fit_start if self._first_end else 0.0,
            "fit_seconds": end - self._fit_start,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(clock, indent=1) + "\n")

"""Every private Lightning attribute we use, touched once on real objects: an upgrade that moves one fails here."""

from pathlib import Path

import lightning
import pytest
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader

from dnagpt import lightning_internals as li


def test_installed_lightning_is_in_the_tested_range() -> None:
    assert li.version_is_tested(lightning.__version__), (lightning.__version__, li.TESTED_VERSIONS)
    assert not li.version_is_tested("2.4.9") and not li.version_is_tested(li.TESTED_VERSIONS[1])


def test_precision_choices_are_lightnings() -> None:
    choices = li.precision_choices()
    assert {"bf16-mixed", "32-true", "16-mixed", 32} <= set(choices)
    assert "fp8" not in choices


class Tiny(LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Linear(2, 1)
        self.seen: list[tuple[int, bool]] = []

    def training_step(self, batch, batch_idx):
        self.seen.append((self.trainer.global_step, li.validation_follows(self.trainer)))
        return self.w(batch).sum()

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", self.w(batch).sum())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return DataLoader(torch.ones(64, 2), batch_size=2)

    def val_dataloader(self):
        return DataLoader(torch.ones(4, 2), batch_size=2)


def test_checkpoint_and_loop_accessors_on_a_real_run(tmp_path: Path) -> None:
    ckpt = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=3, save_last=True, monitor="val/loss")
    trainer = Trainer(max_steps=6, val_check_interval=3, logger=False, callbacks=[ckpt], enable_progress_bar=False,
                      enable_model_summary=False, accelerator="cpu")  # fmt: skip
    module = Tiny()
    assert li.attached_trainer(module) is None
    trainer.fit(module)
    assert li.attached_trainer(module) is trainer
    assert li.step_trigger(ckpt) == 3
    # batches 2 and 5 (0-based) are followed by a validation
    assert [follows for _, follows in module.seen] == [False, False, True, False, False, True]
    li.save_last(ckpt, trainer)
    assert Path(ckpt.last_model_path).is_file()
    li.defer_save_to_validation_end(ckpt)
    li.end_run_at_current_step(trainer)
    assert trainer.fit_loop.epoch_loop.max_steps == trainer.global_step == 6


def test_csv_writer_hook_replaces_the_deletion_of_metrics_csv(tmp_path: Path) -> None:
    class Keeping(li.KeepingExperimentWriter):
        def on_start(self) -> None:
            self.found = self.fs.isfile(self.metrics_file_path)

    (tmp_path / "metrics.csv").write_text("step,x\n0,1\n")
    writer = Keeping(log_dir=str(tmp_path))
    assert writer.found and (tmp_path / "metrics.csv").is_file()  # Lightning's own writer would have deleted it
    logger = CSVLogger(tmp_path / "logs", name="", version="")
    built = li.cached_experiment(logger, lambda: Keeping(log_dir=logger.log_dir))
    assert li.cached_experiment(logger, lambda: pytest.fail("built twice")) is built
    assert Path(logger.root_dir).is_dir()

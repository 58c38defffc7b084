"""The real wandb library, offline: metrics land in the run directory and a resumed run continues the same W&B run."""

from pathlib import Path

import pytest
import torch

from dnagpt.pipeline import train


@pytest.fixture
def wandb_offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    return tmp_path


def run_files(root: Path) -> list[Path]:
    return sorted(root.rglob("offline-run-*/run-*.wandb"))


@pytest.mark.slow
def test_wandb_offline_logs_metrics_and_resumes_the_same_run(make_cfg, wandb_offline: Path, tmp_path: Path) -> None:
    cfg = make_cfg("train", ["logger=many", "test=false", "trainer.max_steps=2"])
    train(cfg)
    files = run_files(tmp_path)
    assert len(files) == 1, files
    records = files[0].read_bytes()  # protobuf records: metric names and values are stored verbatim
    for key in (b"train/loss", b"val/loss", b"val/ppl", b"model/params/total"):
        assert key in records, key
    run_id = files[0].stem.removeprefix("run-")
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["dnagpt"]["wandb_run_id"] == run_id

    resumed = make_cfg("train", ["logger=many", "test=false", "trainer.max_steps=4", "ckpt_path=auto"])
    train(resumed)
    files = run_files(tmp_path)
    assert len(files) == 2, files  # offline, each process writes its own run directory ...
    assert {f.stem.removeprefix("run-") for f in files} == {run_id}  # ... under the same W&B run id

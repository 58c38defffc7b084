"""Two CPU processes (gloo, forked): both ranks finish and each saw its own, disjoint genome windows."""

import hashlib
from pathlib import Path

import pytest
from lightning.pytorch import Callback
from omegaconf import open_dict

from dnagpt.pipeline import train


class RecordBatches(Callback):
    """Writes a digest of every training window this rank saw to <dir>/rank<N>.txt."""

    def __init__(self, dir: str) -> None:
        self.dir = Path(dir)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / f"rank{trainer.global_rank}.txt", "a") as fh:
            for row in batch["input_ids"]:
                fh.write(hashlib.sha1(row.numpy().tobytes()).hexdigest() + "\n")


@pytest.mark.slow
def test_ddp_sim_ranks_see_disjoint_windows(make_cfg, tmp_path: Path) -> None:
    seen = tmp_path / "seen"
    cfg = make_cfg("train", ["trainer=ddp_sim", "test=false", "trainer.max_steps=3", "data.batch_size=8"])
    with open_dict(cfg):
        cfg.callbacks.record = {"_target_": f"{__name__}.RecordBatches", "dir": str(seen)}
    train(cfg)
    rank0 = (seen / "rank0.txt").read_text().split()
    rank1 = (seen / "rank1.txt").read_text().split()
    assert len(rank0) == len(rank1) == 3 * 4  # global batch 8 split over 2 ranks, 3 steps
    assert not set(rank0) & set(rank1)
    assert (tmp_path / "checkpoints" / "last.ckpt").exists()

"""End-to-end training on the bundled real corpus: fast_dev_run, products of a run, exact resume, weights-only init."""

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback
from omegaconf import open_dict

from dnagpt.pipeline import evaluate, train
from dnagpt.tasks.pretrain import PretrainTask


def test_fast_dev_run(make_cfg) -> None:
    metrics = train(make_cfg("train", ["debug=fdr"]))
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
    assert "train/loss" in metrics


def test_short_run_writes_checkpoint_metrics_and_plot(make_cfg, tmp_path: Path) -> None:
    metrics = train(make_cfg("train"))
    for key in ("val/loss", "val/ppl", "val/order_acc", "val/gc_r2", "test/loss", "test/bits_per_base",
                "test/markov_bits_per_base", "val/order0_bits_per_base"):
        assert key in metrics, sorted(metrics)
    assert 1.5 < metrics["test/markov_bits_per_base"] < 2.0  # real DNA: below the 2 bits of a uniform guess
    assert (tmp_path / "checkpoints" / "last.ckpt").exists()
    assert (tmp_path / "loss_curve.png").stat().st_size > 1000
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["val/loss"] == pytest.approx(metrics["val/loss"])


@pytest.mark.slow  # a real run / a fresh interpreter: seconds
def test_a_few_steps_of_pretraining_lower_the_held_out_loss(make_cfg, tmp_path: Path) -> None:
    """On the bundled real corpus, the validation token loss falls from that of the untrained model (uniform over the
    vocabulary, ln V) and keeps falling between validations."""
    steps = ["trainer.max_steps=24", "trainer.val_check_interval=8", "task.optimizer.lr=3e-3", "test=false"]
    train(make_cfg("train", steps))
    with open(tmp_path / "csv" / "metrics.csv") as fh:
        val = [float(r["val/token_loss"]) for r in csv.DictReader(fh) if r.get("val/token_loss")]
    assert len(val) == 3
    assert val[0] > val[1] > val[2], val
    assert val[2] < math.log(19_564) - 0.3  # the dynamic vocabulary's size: an untrained model scores about ln V


def test_init_from_and_ckpt_path_together_is_an_error(make_cfg, tmp_path: Path) -> None:
    cfg = make_cfg("train", [f"init_from={tmp_path}/a.ckpt", f"ckpt_path={tmp_path}/b.ckpt"])
    with pytest.raises(ValueError, match="choose one"):
        train(cfg)


class RecordStartWeights(Callback):
    """The network's weights when training starts (after init_from, before the first step)."""

    seen: dict[str, torch.Tensor] = {}

    def on_train_start(self, trainer, pl_module) -> None:
        RecordStartWeights.seen = {k: v.detach().clone() for k, v in pl_module.model.state_dict().items()}


def _weights(ckpt: Path) -> dict[str, torch.Tensor]:
    return torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]


@pytest.mark.slow
def test_resume_is_exact(make_cfg, tmp_path: Path) -> None:
    """N steps straight == N/2 steps, stop, resume to N: identical weights, optimizer and data cursor."""
    # a constant learning rate: the interrupted stage sizes its schedule for 3 steps, an interruption does not
    constant_lr = "task.scheduler.min_lr_ratio=1.0"
    straight = make_cfg("train", ["trainer.max_steps=6", "test=false", constant_lr])
    train(straight)
    want = _weights(tmp_path / "checkpoints" / "last.ckpt")

    resumed_dir = tmp_path / "resumed"
    for steps, ckpt in ((3, None), (6, "auto")):
        cfg = make_cfg("train", [f"trainer.max_steps={steps}", "test=false", "trainer.val_check_interval=3", constant_lr])
        cfg.paths.output_dir = str(resumed_dir)
        if ckpt:
            cfg.ckpt_path = ckpt
        train(cfg)
    got = _weights(resumed_dir / "checkpoints" / "last.ckpt")
    assert got.keys() == want.keys()
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=0, msg=key)
    # the metrics log of the resumed run holds its whole history, each step once, and the same losses
    straight_rows = _metric_rows(tmp_path / "csv" / "metrics.csv")
    resumed_rows = _metric_rows(resumed_dir / "csv" / "metrics.csv")
    assert [r["step"] for r in resumed_rows] == sorted({r["step"] for r in resumed_rows})
    assert [r.get("train/loss") for r in resumed_rows] == [r.get("train/loss") for r in straight_rows]


def _metric_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
def test_init_from_checkpoint_then_evaluate(make_cfg, tmp_path: Path) -> None:
    train(make_cfg("train", ["test=false"]))
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    module = PretrainTask.load_from_checkpoint(ckpt)  # no Hydra involved

    finetune = make_cfg("train", [f"init_from={ckpt}", "trainer.max_steps=1", "trainer.val_check_interval=1", "test=false"])
    finetune.paths.output_dir = str(tmp_path / "finetune")
    with open_dict(finetune):
        finetune.callbacks.record = {"_target_": f"{__name__}.RecordStartWeights"}
    train(finetune)
    saved = {k.removeprefix("model."): v for k, v in _weights(ckpt).items()}
    assert RecordStartWeights.seen.keys() == saved.keys()
    for name, value in RecordStartWeights.seen.items():  # the fine-tune's first step starts from the checkpoint
        torch.testing.assert_close(value, saved[name], rtol=0, atol=0, msg=name)

    ev = make_cfg("evaluate", [f"ckpt_path={ckpt}"])
    ev.paths.output_dir = str(tmp_path / "eval")
    first = evaluate(ev)
    second = evaluate(ev)
    assert first["test/loss"] == pytest.approx(second["test/loss"], abs=1e-3)  # deterministic held-out windows
    assert (tmp_path / "eval" / "metrics.csv").read_text().startswith("metric,value")
    assert module.model.config.n_embd == 32

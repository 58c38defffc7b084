"""The time-to-quality bench compares like with like: both arms train the same steps on the same real batches, both are
scored on the same held-out windows, and the minutes to a level are read off each curve at its first crossing.

Timings are never asserted (the hosts are shared); the run uses the bundled human excerpt at toy sizes.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from bench import time_to_quality as ttq
from bench.reference_gpt import ReferenceGPT
from dnagpt.model.config import GPTConfig
from dnagpt.pipeline import build_parts
from dnagpt.utils.errors import ConfigError

# the quick recipe shrunk to seconds: a 1-layer model on 64 positions, 2 sentences a batch, 2 held-out windows
TOY = ["corpus=bundled_human", "model.block_size=64", "model.n_layer=1", "model.n_head=2", "model.n_embd=32",
       "data.batch_size=2", "data.val_windows=2", "task.markov_max_order=3", "task.scheduler.warmup_steps=0"]  # fmt: skip


def test_time_to_reach_interpolates_the_first_crossing() -> None:
    curve = [(0.0, 2.4), (1.0, 2.0), (2.0, 1.9), (3.0, 1.95), (4.0, 1.8)]
    assert ttq.time_to_reach(curve, 2.5) == 0.0  # already there at the first evaluation
    assert ttq.time_to_reach(curve, 2.2) == pytest.approx(0.5)
    assert ttq.time_to_reach(curve, 1.92) == pytest.approx(1.8)  # 1 + (2.0 - 1.92) / (2.0 - 1.9)
    assert ttq.time_to_reach(curve, 1.9) == pytest.approx(2.0)
    assert ttq.time_to_reach(curve, 1.85) == pytest.approx(3 + 0.1 / 0.15)  # after the rebound, not at its top
    assert ttq.time_to_reach(curve, 1.79) is None
    assert ttq.time_to_reach([], 2.0) is None


def test_reference_split_into_body_and_head_is_the_same_network() -> None:
    """The task reads the reference's final states and applies its (tied) output layer: the logits are unchanged."""
    config = GPTConfig(name="t", block_size=32, vocab_size=300, n_layer=2, n_head=2, n_embd=32)
    torch.manual_seed(0)
    whole = ReferenceGPT(300, 32, 2, 2, 32)
    torch.manual_seed(0)
    split = ttq.ReferenceLM("nanogpt", config)
    ids = torch.randint(0, 300, (2, 20))
    out = split(ids, reg_pos=torch.zeros(2, 3, dtype=torch.long))
    assert out.hidden.shape == (2, 20, 32) and out.value_pred.shape == (2, 3) and not out.value_pred.any()
    torch.testing.assert_close(split.logits(out.hidden), whole(ids))
    assert split.head.weight is split.body.wte.weight  # still tied: one parameter, trained once
    groups = split.param_groups(0.01)
    assert sum(len(g["params"]) for g in groups) == len(list(split.parameters()))
    assert all(p.dim() < 2 for p in groups[1]["params"]) and groups[1]["weight_decay"] == 0.0


@pytest.mark.parametrize("share", [0.0, 0.5])
def test_both_arms_start_from_the_recipe_kmer_init(share: float) -> None:
    """``task.kmer_init`` shapes the k-mer rows of the reference's (tied) embedding as it does ours: rows of 6-mers that
    differ only in the last base start correlated, and only when the recipe asks for it."""
    cfg = ttq.compose_recipe(True, None, None, 10, [*TOY, f"task.kmer_init={share}"])
    tokenizer, _, model_cfg = build_parts(cfg)
    ours, ref = ttq.build_arms(cfg, "nanogpt", tokenizer, model_cfg)
    fives = ["".join(p) for p in itertools.product("ACGT", repeat=5)]
    pairs = torch.tensor([[tokenizer.token_id(f + "A"), tokenizer.token_id(f + "C")] for f in fives])
    for rows in (ours.task.model.transformer.wte.weight, ref.task.model.body.wte.weight):
        a, b = rows.detach()[pairs[:, 0]], rows.detach()[pairs[:, 1]]
        corr = float(torch.nn.functional.cosine_similarity(a, b, dim=1).mean())
        assert (corr > 0.25) if share else (abs(corr) < 0.05), corr


def test_quick_path_trains_both_arms_on_the_same_batches(tmp_path: Path, cache_dir: Path) -> None:
    out = tmp_path / "bench"
    table, result = ttq.measure(True, out, cache_dir=str(cache_dir), budget_minutes=30, steps=5, eval_every=2,
                                interleave=3, reference="nanogpt", overrides=TOY)  # fmt: skip
    ours, ref = result.arms
    assert (ours.name, ref.name) == ("ours", "nanoGPT-style")
    assert ours.steps == ref.steps == 5 and ours.done and ref.done
    assert len(ours.batch_digests) == 5 and len(set(ours.batch_digests)) == 5  # five different real batches ...
    assert ours.batch_digests == ref.batch_digests  # ... the same ones, in the same order, for both arms
    assert [p.step for p in ours.curve] == [p.step for p in ref.curve] == [0, 2, 4, 5]  # the last step is scored too
    for arm in result.arms:
        assert arm.curve[0].minutes == 0 and all(1.0 < p.bits < 3.0 for p in arm.curve)
        assert [p.minutes for p in arm.curve] == sorted(p.minutes for p in arm.curve)
    ys = result.yardsticks
    assert ys.markov_order is not None and 1.5 < ys.markov <= ys.order0 < 2.1  # order k never worse than order 0 on val
    assert result.common_level == max(min(p.bits for p in arm.curve) for arm in result.arms)

    assert [r.section for r in table] == [ttq.SECTION] * 3
    assert [r.unit for r in table] == ["1/min", "1/min", "tokens/s"] and all(r.baseline == ref.name for r in table)
    assert "common level" in table[0].name and "Markov order-" in table[1].name
    assert all(r.value >= 0 and r.baseline_value >= 0 and r.note for r in table)
    assert table[2].value > 0 and table[2].baseline_value > 0

    assert (out / "time_to_quality.png").stat().st_size > 10_000
    saved = json.loads((out / "time_to_quality.json").read_text())
    assert set(saved["arms"]) == {"ours", "nanoGPT-style"} and saved["yardsticks"]["markov"] == ys.markov
    assert [len(a["curve"]) for a in saved["arms"].values()] == [4, 4] and len(saved["rows"]) == 3


def test_an_arm_is_finished_by_budget_schedule_or_its_latest_score() -> None:
    def arm(steps: int, seconds: float, curve: list[tuple[int, float]]) -> SimpleNamespace:
        return SimpleNamespace(steps=steps, total_steps=100, train_seconds=seconds,
                               curve=[ttq.Point(step, 0.0, bits) for step, bits in curve])  # fmt: skip

    assert not ttq.finished(arm(10, 5.0, [(0, 2.2), (10, 2.0)]), 60.0, 1.9)
    assert ttq.finished(arm(10, 5.0, [(0, 2.2), (10, 1.9)]), 60.0, 1.9)  # at the level: done
    assert not ttq.finished(arm(12, 5.0, [(0, 2.2), (10, 1.8)]), 60.0, -math.inf)  # no level asked for
    assert not ttq.finished(arm(12, 5.0, [(0, 1.8), (10, 2.0)]), 60.0, 1.9)  # the latest score counts
    assert ttq.finished(arm(12, 61.0, [(0, 2.2)]), 60.0, -math.inf)  # budget spent
    assert ttq.finished(arm(100, 5.0, [(0, 2.2)]), 60.0, -math.inf)  # schedule run


def test_until_yardstick_stops_each_arm_at_its_first_evaluation_at_or_below_it(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A yardstick set above every score the toy arms reach: each is there untrained, so neither trains a step and
    the rows give no verdict; one set between the untrained and trained scores stops each at its first evaluation
    at or below it (step 2 of 6)."""
    monkeypatch.setattr(ttq, "fit_yardsticks", lambda *_: ttq.Yardsticks(markov=9.0, markov_order=3, order0=9.5))
    table, result = ttq.measure(True, tmp_path, cache_dir=str(cache_dir), budget_minutes=30, steps=6, eval_every=2,
                                interleave=3, reference="nanogpt", overrides=TOY, until_yardstick=True)  # fmt: skip
    for arm in result.arms:
        assert arm.done and arm.steps == 0 and [p.step for p in arm.curve] == [0]
    assert "no verdict" in table[1].note

    below_untrained = min(arm.curve[0].bits for arm in result.arms) - 1e-4
    monkeypatch.setattr(ttq, "fit_yardsticks", lambda *_: ttq.Yardsticks(markov=below_untrained, markov_order=3,
                                                                         order0=9.5))  # fmt: skip
    table, result = ttq.measure(True, tmp_path, cache_dir=str(cache_dir), budget_minutes=30, steps=6, eval_every=2,
                                interleave=3, reference="nanogpt", overrides=TOY, until_yardstick=True)  # fmt: skip
    for arm in result.arms:
        assert arm.done and arm.steps == 2 and [p.step for p in arm.curve] == [0, 2]
        assert arm.curve[1].bits <= below_untrained


def test_until_yardstick_needs_a_yardstick(tmp_path: Path, cache_dir: Path) -> None:
    with pytest.raises(ConfigError, match="--until-yardstick needs the Markov yardstick"):
        ttq.measure(True, tmp_path, cache_dir=str(cache_dir), steps=2, reference="nanogpt",
                    overrides=[*TOY, "task.markov_max_order=null"], until_yardstick=True)  # fmt: skip

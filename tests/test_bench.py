"""The benchmark suite measures what it claims: like-for-like models, the right FLOP count, honest verdicts.

Timings are never asserted (the hosts are shared); these tests run the benchmark code at toy sizes.
"""

from __future__ import annotations

import math

import pytest
import torch

from bench import train_step
from bench.common import Row, format_table, interleaved_seconds
from dnagpt.model import DNAGPT, GPTConfig


def test_row_ratio_and_verdict_in_table() -> None:
    ok = Row("s", "fast", 30.0, "tokens/s", "base", 20.0, target=1.15)
    missed = Row("s", "slow", 10.0, "tokens/s", "base", 20.0, target=1.15, note="why")
    plain = Row("s", "peak", 5.0, "GFLOP/s")
    assert ok.ratio == 1.5 and ok.met and missed.met is False and plain.ratio is None and plain.met is None
    table = format_table([ok, missed, plain])
    assert "1.50x" in table and ">= 1.15x ok" in table and "MISSED" in table and "[s / slow] why" in table
    assert ok.to_dict()["met"] is True


def test_interleaved_seconds_calls_each_function_round_robin() -> None:
    calls: list[str] = []
    secs = interleaved_seconds({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, rounds=2)
    assert calls == ["a", "b", "a", "b", "a", "b"] and set(secs) == {"a", "b"}


def test_flops_per_token_counts_our_matmul_weights() -> None:
    n_layer, n_embd, vocab = 2, 64, 300
    model = DNAGPT(GPTConfig(name="t", block_size=train_step.T, vocab_size=vocab, n_layer=n_layer, n_head=2, n_embd=n_embd))
    used = [m for m in (*model.transformer.h.modules(), *model.token_head.modules()) if isinstance(m, torch.nn.Linear)]
    weights = sum(m.weight.numel() for m in used)
    assert train_step.flops_per_token(n_layer, n_embd, vocab) == 6 * weights + 12 * n_layer * n_embd * train_step.T


def test_models_compared_have_equal_shape_and_start_at_chance(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ours, the reference and (if installed) GPT-2 get the same shape and the same task: loss ~ ln(V) at init."""
    monkeypatch.setattr(train_step, "T", 32)
    monkeypatch.setitem(train_step.SHAPES, "micro", (1, 2, 32, 500, 2))
    models = train_step.build_models("micro")
    ids = torch.randint(34, 500, (2, 33))
    for name, model in models.items():
        with torch.no_grad():
            loss = float(train_step.loss_fn(name, model, ids))
        assert abs(loss - math.log(500)) < 0.2, (name, loss)
        blocks = [m for m in model.modules() if m.__class__.__name__ in ("Block", "GPT2Block")]
        assert len(blocks) == 1, name


@pytest.mark.slow
def test_train_step_suite_runs_and_reports_every_row(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(train_step, "T", 32)
    monkeypatch.setitem(train_step.SHAPES, "micro", (1, 2, 32, 500, 2))
    monkeypatch.setattr(train_step, "matmul_peak", lambda dtype, n=64, repeats=1: 1e9)
    rows = train_step.run(["micro"], rounds=1, steps=1, memory=False)  # spawned children do not see the patch
    names = {(r.section, r.name, r.baseline) for r in rows}
    assert ("train step", "micro bf16 ours", "micro fp32 ours") in names
    assert ("MFU", "micro bf16 ours", "matmul peak bf16") in names
    assert all(r.value > 0 and (r.baseline_value is None or r.baseline_value > 0) for r in rows)

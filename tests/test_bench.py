"""The benchmark suite measures what it claims: like-for-like models, the right FLOP count, honest verdicts.

Timings are never asserted (the hosts are shared); these tests run the benchmark code at toy sizes.
"""

from __future__ import annotations

import json
import math
import platform
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize

from bench import allocator, generate, gpu_check, train_step
from bench.common import Row, device_kwargs, format_table, interleaved_seconds, markdown_table
from dnagpt.model import DNAGPT, GPTConfig, losses


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
    monkeypatch.setattr(train_step, "matmul_peak", lambda dtype, device="cpu", n=64, repeats=1: 1e9)
    rows = train_step.run(["micro"], rounds=1, steps=1, memory=False)  # spawned children do not see the patch
    names = {(r.section, r.name, r.baseline) for r in rows}
    assert ("train step", "micro bf16 ours", "micro fp32 ours") in names
    assert ("MFU", "micro bf16 ours", "matmul peak bf16") in names
    assert all(r.value > 0 and (r.baseline_value is None or r.baseline_value > 0) for r in rows)


@pytest.mark.slow
@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt thresholds are glibc's")
def test_allocator_ab_runs_each_arm_in_its_own_process_and_counts_its_faults() -> None:
    """Two spawned processes take turns at the tiny bf16 step, one with freed memory kept (what training sets)."""
    arms = allocator.compare("tiny", rounds=2)
    (kept, kept_faults), (default, default_faults) = arms["kept"], arms["glibc default"]
    assert kept > 0 and default > 0
    assert default_faults > 1000 and kept_faults < default_faults / 2  # the (857, 19564) logit blocks alone: 16k pages


def test_markdown_table_has_every_row_and_verdict() -> None:
    rows = [Row("MFU", "0.1b bf16 ours", 300.0, "GFLOP/s", "matmul peak bf16", 800.0, target=0.45, note="a | b"),
            Row("train step", "tiny bf16 ours", 9000.0, "tokens/s")]  # fmt: skip
    table = markdown_table(rows)
    assert table.splitlines()[0] == "| section | figure | value | unit | baseline | baseline value | ratio | target |"
    assert "| MFU | 0.1b bf16 ours | 300 | GFLOP/s | matmul peak bf16 | 800 | 0.38x | >= 0.45x **missed** |" in table
    assert "| train step | tiny bf16 ours | 9,000 | tokens/s |  |  |  |  |" in table
    assert "- MFU / 0.1b bf16 ours: a | b" in table


def test_device_kwargs_never_labels_a_cpu_figure_gpu() -> None:
    def on_device(n: int, device: str = "cpu") -> None: ...

    def cpu_only(n: int) -> None: ...

    assert device_kwargs(on_device, "cuda") == {"device": "cuda"} and device_kwargs(cpu_only, "cpu") == {}
    with pytest.raises(TypeError, match="cpu_only takes no device"):
        device_kwargs(cpu_only, "cuda:0")


def test_gpu_check_records_failed_skipped_and_overrunning_sections_and_goes_on(tmp_path: Path) -> None:
    """One bad section must not cost the others their minutes of GPU: each outcome is recorded, the run goes on."""

    def fine(check, budget_s, details):
        details["budget_s"] = budget_s
        return [Row("s", "fine", 2.0, "x/s", "base", 1.0, target=1.5)]

    def broken(check, budget_s, details):
        raise ValueError("bad shape")

    def refuses(check, budget_s, details):
        raise SystemExit("cached and uncached differ")

    def needs_gpu(check, budget_s, details):
        raise gpu_check.Skip("needs CUDA")

    def endless(check, budget_s, details):
        time.sleep(60)
        return [Row("s", "never", 1.0, "x/s")]

    sections = {"fine": (1.0, fine), "broken": (1.0, broken), "refuses": (1.0, refuses), "endless": (1.0, endless),
                "needs_gpu": (1.0, needs_gpu), "after": (1.0, fine)}  # fmt: skip
    check = gpu_check.Check("cpu", short=False, out=tmp_path)
    rows, results = gpu_check.run_sections(check, sections, budget_s=12.0)
    by_name = {r.name: r for r in results}
    assert [r.status for r in results] == ["ok", "failed", "failed", "timeout", "skipped", "ok"]
    assert by_name["broken"].note == "ValueError: bad shape" and "cached and uncached differ" in by_name["refuses"].note
    assert by_name["endless"].note.startswith("stopped at its budget") and by_name["needs_gpu"].note == "needs CUDA"
    assert by_name["endless"].seconds < 30 and by_name["after"].budget_s > 0  # cut at its share; time left to the next
    assert [r.name for r in rows] == ["fine", "fine"]

    info = {"device": "cpu", "short": False, "budget_s": 12.0, "machine": gpu_check.machine(), "started": "now",
            "total_seconds": 3.0}  # fmt: skip
    gpu_check.write_results(check, rows, results, info)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert [s["status"] for s in saved["sections"]] == [r.status for r in results] and len(saved["rows"]) == 2
    md = (tmp_path / "results.md").read_text()
    assert "| broken | failed |" in md and "| needs_gpu | skipped |" in md and "ValueError: bad shape" in md
    assert "| s | fine | 2 | x/s | base | 1 | 2.00x | >= 1.5x ok |" in md


def test_gpu_check_pretrain_overrides_compose_the_gpu_run(tmp_path: Path) -> None:
    """The 3-minute 0.1B run is only ever launched on a GPU: its overrides are composed here, on CPU, by real Hydra."""
    check = gpu_check.Check("cuda", short=False, out=tmp_path, step_tokens_per_s={"0.1b bf16": 400_000.0})
    preset, overrides = gpu_check.pretrain_overrides(check, tmp_path / "pretrain", budget_s=240)
    with initialize(version_base="1.3", config_path="../dnagpt/conf"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    steps = int(0.8 * 400_000 * 180 / (32 * 512))  # the bare step's speed x max_time, derated for the data pipeline
    assert preset == cfg.model.name == "dnagpt_0.1b_m" and cfg.trainer.accelerator == "gpu"
    assert cfg.trainer.precision == "bf16-mixed" and cfg.trainer.max_time == "00:00:03:00"
    assert cfg.trainer.max_steps == steps and cfg.trainer.val_check_interval == steps // 8 and cfg.data.batch_size == 32
    assert not cfg.trainer.enable_checkpointing and not {"model_checkpoint", "preemption"} & set(cfg.callbacks)
    assert cfg.callbacks.fit_clock.path == str(tmp_path / "pretrain" / "fit_clock.json") and cfg.corpus.name == "bundled"
    assert cfg.hydra.run.dir == str(tmp_path / "pretrain") and cfg.test is False


@pytest.mark.slow
def test_gpu_check_short_cpu_run_writes_every_section(tmp_path: Path, cache_dir: Path) -> None:
    """``python -m bench.gpu_check --device cpu``: the script CI keeps working (about a minute on 2 cores, slow)."""
    out = tmp_path / "gpu_check"
    gpu_check.main(["--device", "cpu", "--out", str(out), "--cache-dir", str(cache_dir)])
    saved = json.loads((out / "results.json").read_text())
    status = {s["name"]: s for s in saved["sections"]}
    assert saved["device"] == "cpu" and saved["short"] is True and list(status) == list(gpu_check.SECTIONS)
    assert {n: s["status"] for n, s in status.items()} == {"train_step": "ok", "fsdp": "skipped", "compile": "skipped",
                                                           "generate": "ok", "profile": "ok", "pretrain": "ok"}  # fmt: skip
    assert status["fsdp"]["note"].startswith("FSDP needs CUDA")
    names = {(r["section"], r["name"]) for r in saved["rows"]}
    assert {("MFU", "tiny bf16 ours"), ("train step", "tiny bf16 ours"), ("pretrain", "tiny Trainer.fit, bundled corpus"),
            ("MFU", "tiny pre-training run (Trainer.fit)")} <= names  # fmt: skip
    assert any(section == "generation" for section, _ in names)
    assert all(r["value"] > 0 for r in saved["rows"])
    clock = status["pretrain"]["details"]["clock"]
    assert clock["steps"] == 3 and clock["tokens"] > 0  # the real train.py ran its steps, timed from inside fit
    assert (out / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "results.md").read_text()
    assert "| fsdp | skipped |" in md and "| pretrain | ok |" in md and "FSDP needs CUDA" in md
    assert "## Profile: ours, tiny bf16" in md and "ATen calls" in md and "| `aten::" in md
    assert "| pretrain | tiny Trainer.fit, bundled corpus |" in md and "![pre-training loss curve](loss_curve.png)" in md
    assert "`python train.py model=tiny trainer=cpu" in md and "missed" not in md  # short mode judges no target


def test_cached_decoding_may_part_from_uncached_only_at_a_logit_tie() -> None:
    """The generation bench's cache check: equal rows pass, a row parting at a real logit gap refuses the timing, one
    parting at a tie (here: any gap, with an infinite tolerance) is counted."""
    torch.manual_seed(0)
    model = DNAGPT(GPTConfig.from_name("tiny", vocab_size=64, block_size=32)).eval()
    tokens = torch.randint(34, 64, (2, 12))
    logits = model(tokens[:1, :8]).logits[0, -1]
    parted = tokens.clone()
    parted[0, 8] = int(logits.argmin()) if int(tokens[0, 8]) == int(logits.argmax()) else int(logits.argmax())
    assert generate.near_tie_flips(model, tokens, tokens.clone()) == 0
    assert generate.near_tie_flips(model, tokens, parted) is None
    assert generate.near_tie_flips(model, tokens, parted, tolerance=math.inf) == 1


def test_head_block_ab_times_both_block_sizes_and_restores_the_shipped_one() -> None:
    shipped = losses.CHUNK_ELEMENTS
    seen: list[int] = []
    original = losses._softmax_grad

    def spy(logits, targets, out):  # the block's rows: how many logits each chunk holds
        seen.append(logits.numel())
        return original(logits, targets, out)

    losses._softmax_grad = spy
    try:
        (row,) = train_step.chunk_rows("tiny", rounds=1, steps=1, batch=4, factor=2)
    finally:
        losses._softmax_grad = original
    assert losses.CHUNK_ELEMENTS == shipped
    assert row.value > 0 and row.baseline_value > 0 and row.baseline == "ours as shipped"
    vocab = train_step.SHAPES["tiny"][3]
    rows = {size: size * 4 // (vocab * 2) for size in (shipped, 2 * shipped)}  # bf16: twice fp32's rows in the bytes
    assert 4 * train_step.T > rows[2 * shipped]  # 4 rows of 512 fill more than one larger block
    assert max(seen) == rows[2 * shipped] * vocab and rows[shipped] * vocab in seen


def test_gpu_check_finds_the_first_validation_below_the_yardstick() -> None:
    series = [(420, 1.948), (841, 1.938), (1262, 1.931), (1683, 1.926)]  # the H200 run's first points
    assert gpu_check.first_step_below(series, 1.934) == 1262
    assert gpu_check.first_step_below(series, 1.900) is None

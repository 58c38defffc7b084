"""The one script for a GPU lent for a few minutes: every GPU figure the project needs, in one JSON and one table.

    python -m bench.gpu_check [--device cuda] [--budget-minutes 7.5] [--only train_step pretrain ...] [--out DIR]
    make gpu-check ARGS="--device cuda"

Sections, in this order, each given its share of the time left (``SECTIONS``) and each behind its own try/except, so a
section that fails or overruns is recorded with its error and the next one still runs:

- ``train_step``: tokens/s and MFU of the tiny and 0.1B shapes in fp32 and bf16 (SDPA, flash on CUDA), against HF GPT-2
  and a nanoGPT-style reference, the matmul peak measured on the device in the same run (``bench.train_step``);
- ``fsdp``: the FSDP test that CPU runs skip (FULL_SHARD on one GPU: trains, checkpoints, resumes, loads), run by pytest;
- ``compile``: ``torch.compile`` on vs off, 0.1B shape, bf16;
- ``generate``: KV-cached generation vs HF ``generate``, and the batched haplotypes (``bench.generate``);
- ``profile``: one bf16 step of ours and of the nanoGPT-style reference at both shapes under ``torch.profiler``, ops by
  kernel time (``bench.profile_step``): where the MFU goes;
- ``pretrain``: the 0.1B preset pre-trained on the bundled corpus for about 3 minutes through the real entry point
  (``train.py`` with Hydra overrides, in a subprocess), its tokens/s and MFU inside ``Trainer.fit`` (``bench.fit_clock``)
  and its loss curve.

Writes ``results.json``, ``results.md`` and ``loss_curve.png`` under ``--out`` (default ``outputs/gpu_check``), rewritten
after every section, so a run cut short still leaves what it measured. On CPU (the default where CUDA is absent) it runs
its short mode: the tiny shape, a few steps, FSDP and compile skipped with the reason recorded; CI runs it so the script
keeps working between the rare GPU loans.
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F

from bench import generate, profile_step, train_step
from bench.common import Row, device_kwargs, format_table, is_cuda, machine, markdown_table, write_json
from dnagpt.model import GPTConfig

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
FSDP_TEST = "tests/test_scaleout.py::test_fsdp_trains_and_its_checkpoint_loads_everywhere"
PRETRAIN_START_S = 60.0  # process start, corpus preparation, Markov yardstick, teardown: not in trainer.max_time


class Skip(Exception):
    """A section that cannot run here; its reason is recorded, it is not a failure."""


class OverBudget(BaseException):
    """Raised in the main thread when a section outlives its budget (a BaseException, so no ``except Exception`` inside
    the measured code swallows it)."""


@dataclass
class Check:
    """What the sections share: where and how they run, and what one section measured that a later one uses."""

    device: str
    short: bool
    out: Path
    cache_dir: Path | None = None
    peak_bf16: float | None = None  # FLOP/s of the bf16 matmul peak, measured in this run
    step_tokens_per_s: dict[str, float] = field(default_factory=dict)  # "0.1b bf16" -> tokens/s of the bare step


@dataclass
class SectionResult:
    name: str
    status: str  # ok | failed | timeout | skipped
    seconds: float
    budget_s: float
    note: str = ""  # the error, or why it was skipped
    details: dict = field(default_factory=dict)


SectionFn = Callable[[Check, float, dict], list[Row]]


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise ``OverBudget`` in the main thread after ``seconds`` (SIGALRM); elsewhere, or without SIGALRM, no limit."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def alarm(signum, frame) -> None:
        raise OverBudget

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 1e-3))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_logged(cmd: list[str], log_path: Path, timeout: float) -> int:
    """Run ``cmd`` from the repository root in a process group of its own, its output to ``log_path``; past ``timeout``,
    or when the section is interrupted, the whole group (DataLoader workers included) is killed."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            return proc.wait(timeout=timeout)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def tail(path: Path, lines: int = 15) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.is_file() else ""


def free_device_memory(device: str) -> None:
    """Give cached GPU memory back before a subprocess needs the same GPU."""
    gc.collect()
    if is_cuda(device):
        torch.cuda.empty_cache()


def flash_attention_usable(device: str) -> bool:
    """Whether SDPA can run the flash kernel at the 0.1B attention shape (bf16, 12 heads of 64, causal): what our
    model's training attention dispatches to on CUDA when it can."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q = torch.randn(2, 12, 512, 64, device=device, dtype=torch.bfloat16)
    try:
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            F.scaled_dot_product_attention(q, q, q, is_causal=True)
    except RuntimeError:
        return False
    return True


# ---- sections --------------------------------------------------------------------------------------------------------
def train_step_section(check: Check, budget_s: float, details: dict) -> list[Row]:
    if check.short:
        rows = train_step.run(["tiny"], rounds=1, steps=1, memory=False, device=check.device, batch=1)
    else:
        rows = train_step.run(list(train_step.SHAPES), rounds=5, steps=3, device=check.device)
    check.peak_bf16 = 1e9 * next(r.baseline_value for r in rows if r.section == "MFU" and r.baseline == "matmul peak bf16")
    check.step_tokens_per_s = {r.name.removesuffix(" ours"): r.value for r in rows
                               if r.section == "train step" and r.name.endswith(" ours")}  # fmt: skip
    if is_cuda(check.device):
        details["flash_attention_usable"] = flash_attention_usable(check.device)
        if not check.short:
            for shape in train_step.SHAPES:
                rows += train_step.chunk_rows(shape, rounds=5, steps=3, device=check.device)
    return rows


def fsdp_section(check: Check, budget_s: float, details: dict) -> list[Row]:
    """The FSDP test as CI knows it, on the GPU: its own process (FSDP starts a process group), its own verdict."""
    if not is_cuda(check.device):
        raise Skip("FSDP needs CUDA: Lightning's FSDPStrategy refuses the CPU (tests/test_scaleout.py skips it there)")
    free_device_memory(check.device)
    junit, log_path = check.out / "fsdp" / "junit.xml", check.out / "fsdp" / "pytest.log"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}", FSDP_TEST]
    rc = run_logged(cmd, log_path, timeout=budget_s)
    details.update(test=FSDP_TEST, log=str(log_path))
    if not junit.is_file():
        raise RuntimeError(f"pytest exited with {rc} and wrote no report:\n{tail(log_path)}")
    case = ET.parse(junit).getroot().find(".//testcase")
    if case is None:
        raise RuntimeError(f"pytest ran no test (exit {rc}):\n{tail(log_path)}")
    details["test_seconds"] = float(case.get("time", "nan"))
    for outcome in ("failure", "error"):
        if (bad := case.find(outcome)) is not None:
            raise RuntimeError(f"test {outcome}: {bad.get('message', '')}\n{tail(log_path)}")
    if (skipped := case.find("skipped")) is not None:
        raise Skip(f"the test skipped itself: {skipped.get('message', '')}")
    return []


def compile_section(check: Check, budget_s: float, details: dict) -> list[Row]:
    if check.short:
        raise Skip("short mode: compiling takes tens of seconds on a CPU (python -m bench.train_step --compile measures it)")
    return train_step.compiled_rows("0.1b" if is_cuda(check.device) else "tiny", rounds=5, steps=3, device=check.device)


def generate_section(check: Check, budget_s: float, details: dict) -> list[Row]:
    """``bench.generate`` as ``python -m bench`` runs it; the short mode decodes only (its haplotype baseline, 64
    haplotypes in batches of 8, takes minutes on a loaded CPU)."""
    fn = generate.decoding_rows if check.short else generate.run
    try:
        kwargs = device_kwargs(fn, check.device)
    except TypeError as err:
        raise Skip(str(err)) from None
    details["device_passed"] = "device" in kwargs
    if check.short:
        details["haplotypes"] = "short mode: not run"
        return fn(16, 2, **kwargs)
    return fn(new_tokens=1024, batch=4, haplotypes=5008, **kwargs)


def profile_section(check: Check, budget_s: float, details: dict) -> list[Row]:
    """Where a step's time goes, ours against the nanoGPT-style reference (``bench.profile_step``): on CUDA by kernel
    time at both shapes in bf16; on CPU (short) ours at the tiny shape only, to keep the path working."""
    runs = [("ours", "tiny")] if check.short else [(m, s) for s in train_step.SHAPES for m in ("ours", "nanoGPT-style")]
    tables = {}
    for name, shape in runs:
        step = profile_step.make_labelled_step(shape, torch.bfloat16, device=check.device, name=name)
        step()  # warm-up: allocator, kernels, cuBLAS handles
        tables[f"{name}, {shape} bf16"] = profile_step.op_table(step, rows=8 if check.short else 15, device=check.device)
        del step
        free_device_memory(check.device)
    details["tables"] = tables
    return []


def pretrain_overrides(check: Check, run_dir: Path, budget_s: float) -> tuple[str, list[str]]:
    """The Hydra overrides of the pre-training run: the 0.1B preset (tiny on CPU) on the bundled corpus until
    ``trainer.max_time``; the schedule's length is the number of steps the bare step's speed says fit in that time."""
    cuda = is_cuda(check.device)
    preset, shape = ("dnagpt_0.1b_m", "0.1b") if cuda and not check.short else ("tiny", "tiny")
    max_time_s = max(10, int(budget_s - min(PRETRAIN_START_S, budget_s / 2)))
    common = [
        f"model={preset}", f"trainer={'gpu' if cuda else 'cpu'}", "test=false", "logger=csv",
        "extras.print_config=false", "trainer.enable_progress_bar=false", "++trainer.enable_checkpointing=false",
        "~callbacks.model_checkpoint", "~callbacks.preemption", f"hydra.run.dir={run_dir}",
        f"+trainer.max_time='00:00:{max_time_s // 60:02d}:{max_time_s % 60:02d}'",
        "+callbacks.fit_clock._target_=bench.fit_clock.FitClock", f"+callbacks.fit_clock.path={run_dir / 'fit_clock.json'}",
    ]  # fmt: skip
    if check.cache_dir is not None:
        common.append(f"paths.cache_dir={check.cache_dir}")
    if check.short:  # a handful of steps: the script's path end to end, not a measurement
        return preset, common + ["data.batch_size=4", "data.num_workers=0", "trainer.max_steps=3",
                                 "trainer.val_check_interval=3", "trainer.limit_val_batches=1",
                                 "trainer.log_every_n_steps=1", "task.scheduler.warmup_steps=0"]  # fmt: skip
    batch = 32 if cuda else 8
    step_tps = check.step_tokens_per_s.get(f"{shape} bf16")
    if step_tps:  # derated for the data pipeline and logging
        steps = max(200, int(0.8 * step_tps * max_time_s / (batch * 512)))
        val_every = max(25, steps // 8)
    else:  # speed unknown (train_step did not run): max_time stops the run, the schedule barely decays
        steps, val_every = 100_000, 250
    workers = max(1, min(8, (os.cpu_count() or 2) - 2))
    return preset, common + [
        f"data.batch_size={batch}", f"data.num_workers={workers}", f"trainer.max_steps={steps}",
        f"trainer.val_check_interval={val_every}", "trainer.log_every_n_steps=10",
        "task.optimizer.lr=6e-4", f"task.scheduler.warmup_steps={min(100, steps // 10)}",
    ]  # fmt: skip


def csv_series(path: Path, key: str) -> list[tuple[int, float]]:
    """``(step, value)`` of one metric in a run's metrics.csv (rows where it was logged)."""
    with path.open(newline="") as f:
        return [(int(r["step"]), float(r[key])) for r in csv.DictReader(f) if r.get(key)]


def first_step_below(series: list[tuple[int, float]], level: float) -> int | None:
    """The first logged step whose value is below ``level`` (None if none is): when validation crossed a yardstick."""
    return next((step for step, value in series if value < level), None)


def pretrain_section(check: Check, budget_s: float, details: dict) -> list[Row]:
    run_dir = check.out / "pretrain"
    shutil.rmtree(run_dir, ignore_errors=True)  # a fresh run, never a resume of the last check's
    if check.peak_bf16 is None:
        check.peak_bf16 = train_step.matmul_peak(torch.bfloat16, check.device)
    preset, overrides = pretrain_overrides(check, run_dir, budget_s)
    free_device_memory(check.device)
    log_path = check.out / "pretrain.log"
    cmd = [sys.executable, str(ROOT / "train.py"), *overrides]
    details.update(command=" ".join(["python", "train.py", *overrides]), log=str(log_path))
    rc = run_logged(cmd, log_path, timeout=budget_s)
    if rc != 0:
        raise RuntimeError(f"train.py exited with {rc}:\n{tail(log_path)}")
    clock = json.loads((run_dir / "fit_clock.json").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    curve = run_dir / "loss_curve.png"
    if curve.is_file():
        shutil.copyfile(curve, check.out / "loss_curve.png")
    logged = run_dir / "csv" / "metrics.csv"
    train_loss = csv_series(logged, "train/loss")
    details.update(clock=clock, train_loss_first=train_loss[0] if train_loss else None,
                   train_loss_last=train_loss[-1] if train_loss else None,
                   final={k: v for k, v in metrics.items() if k.startswith("val/")})  # fmt: skip
    if clock["train_seconds"] <= 0 or clock["tokens"] == 0:
        raise RuntimeError(f"the run trained {clock['steps']} step(s): too few to time (see {log_path})")
    tps = clock["tokens"] / clock["train_seconds"]
    config = GPTConfig.from_name(preset)
    flops = train_step.flops_per_token(config.n_layer, config.n_embd, config.vocab_size)
    val = metrics.get("val/loss")
    note = (f"{clock['steps']} steps, {clock['fit_seconds']:.0f} s in fit ({clock['validation_seconds']:.0f} s validating); "
            f"train/loss {train_loss[0][1]:.2f} -> {train_loss[-1][1]:.2f}" if train_loss else f"{clock['steps']} steps")
    if val is not None:
        note += f"; val/loss {val:.3f}, val/bits_per_base {metrics.get('val/bits_per_base', float('nan')):.3f} (Markov " \
                f"yardstick {metrics.get('val/markov_bits_per_base', float('nan')):.3f})"
    if (markov := metrics.get("val/markov_bits_per_base")) is not None:
        crossed = first_step_below(csv_series(logged, "val/bits_per_base"), markov)
        details["first_val_step_below_markov"] = crossed
        note += "; never below it" if crossed is None else \
            f"; below it from step {crossed} (about {crossed * clock['train_seconds'] / clock['steps']:.0f} s of training)"
    return [
        Row("pretrain", f"{preset} Trainer.fit, bundled corpus", tps, "tokens/s", note=note),
        Row("MFU", f"{preset} pre-training run (Trainer.fit)", tps * flops / 1e9, "GFLOP/s", "matmul peak bf16",
            check.peak_bf16 / 1e9, note="data pipeline, logging and the task's extra heads included; validation not"),
    ]  # fmt: skip


# share of the time left when the section starts; pretrain, last, takes whatever the others left. Sized from the H200
# run of 2026-11-30 (docs/performance.md): train_step 19 s, fsdp 31 s, compile 30 s, generate about 120 s
SECTIONS: dict[str, tuple[float, SectionFn]] = {
    "train_step": (0.10, train_step_section),  # + the head/CE block A/B, not in that run
    "fsdp": (0.12, fsdp_section),
    "compile": (0.12, compile_section),
    "generate": (0.30, generate_section),
    "profile": (0.06, profile_section),  # not in that run: four profiled steps, seconds on a GPU
    "pretrain": (0.52, pretrain_section),
}


# ---- the run and its report ------------------------------------------------------------------------------------------
def run_sections(check: Check, sections: dict[str, tuple[float, SectionFn]], budget_s: float,
                 on_section: Callable[[list[Row], list[SectionResult]], None] | None = None
                 ) -> tuple[list[Row], list[SectionResult]]:  # fmt: skip
    """Run each section within its share of the budget left; a failure, an overrun or a skip is recorded, not raised."""
    start = time.monotonic()
    rows: list[Row] = []
    results: list[SectionResult] = []
    names = list(sections)
    for i, name in enumerate(names):
        share, fn = sections[name]
        left = budget_s - (time.monotonic() - start)
        budget = max(0.0, left) * share / sum(sections[n][0] for n in names[i:])
        details: dict = {}
        began = time.monotonic()
        status, note = "ok", ""
        log.info("section %s: budget %.0f s", name, budget)
        try:
            if budget < 1:
                raise Skip("the run's budget was spent before this section")
            with time_limit(budget):
                rows += fn(check, budget, details)
        except Skip as err:
            status, note = "skipped", str(err)
        except (OverBudget, subprocess.TimeoutExpired):
            status, note = "timeout", f"stopped at its budget of {budget:.0f} s"
        except (Exception, SystemExit) as err:  # recorded with its error (a bench's refusal too); the next section runs
            log.exception("section %s failed", name)
            status, note = "failed", f"{type(err).__name__}: {err}"
        results.append(SectionResult(name, status, round(time.monotonic() - began, 1), round(budget, 1), note, details))
        if on_section is not None:
            on_section(rows, results)
    return rows, results


def markdown_report(check: Check, rows: list[Row], results: list[SectionResult], info: dict) -> str:
    gpu = info["machine"].get("gpu") or {}
    title = gpu.get("name") or info["machine"]["cpu"]
    mode = "short mode" if check.short else f"budget {info['budget_s'] / 60:.1f} min"
    short = (" Short mode checks that every path runs: its figures (batch 1, a few steps) are not measurements and no "
             "target is judged.") if check.short else ""  # fmt: skip
    lines = [
        f"# GPU check: {title} (`--device {check.device}`, {mode})", "",
        f"torch {info['machine']['torch']}, CUDA {gpu.get('cuda_runtime') or 'none'}; started {info['started']}, "
        f"{info['total_seconds']:.0f} s in all. Every ratio is against a baseline measured in the same run.{short}", "",
        "## Sections", "", "| section | status | seconds | budget (s) | note |", "|---|---|---:|---:|---|",
    ]  # fmt: skip
    for r in results:
        note = " ".join(r.note.split())[:300].replace("|", "/")
        lines.append(f"| {r.name} | {r.status} | {r.seconds:.1f} | {r.budget_s:.0f} | {note} |")
    lines += ["", "## Figures", "", markdown_table(rows) if rows else "(none measured)"]
    profiles = next((r.details.get("tables", {}) for r in results if r.name == "profile"), {})
    for title, table in profiles.items():
        lines += ["", f"## Profile: {title}", "", table]
    pretrain = next((r.details for r in results if r.name == "pretrain" and "command" in r.details), None)
    if pretrain is not None:
        lines += ["", "## Pre-training run", "", f"`{pretrain['command']}`"]
        if (check.out / "loss_curve.png").is_file():
            lines += ["", "![pre-training loss curve](loss_curve.png)"]
    return "\n".join(lines) + "\n"


def judged(check: Check, rows: list[Row]) -> list[Row]:
    """The rows as reported: short mode judges no target (batch 1 on a shared CPU: a "missed" would be noise)."""
    return [replace(r, target=None) for r in rows] if check.short else rows


def write_results(check: Check, rows: list[Row], results: list[SectionResult], info: dict) -> None:
    check.out.mkdir(parents=True, exist_ok=True)
    rows = judged(check, rows)
    extra = {key: info[key] for key in ("device", "short", "budget_s", "started", "total_seconds")}
    write_json(rows, check.out / "results.json", {**extra, "sections": [asdict(r) for r in results]})
    (check.out / "results.md").write_text(markdown_report(check, rows, results, info))


def main(argv: list[str] | None = None) -> tuple[list[Row], list[SectionResult]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="cuda[:N] or cpu (default: cuda where available)")  # fmt: skip
    parser.add_argument("--short", action=argparse.BooleanOptionalAction, default=None,
                        help="tiny shapes and a few steps (default: on for cpu, off for cuda)")  # fmt: skip
    parser.add_argument("--budget-minutes", type=float, default=None,
                        help="the whole run's time, shared out between sections (default 7.5; 10 in short mode, where "
                             "it is only a ceiling)")  # fmt: skip
    parser.add_argument("--only", nargs="+", choices=list(SECTIONS), default=list(SECTIONS))
    parser.add_argument("--out", type=Path, default=Path("outputs/gpu_check"))
    parser.add_argument("--cache-dir", type=Path, default=None, help="paths.cache_dir of the pre-training run")
    args = parser.parse_args(argv)
    short = (not is_cuda(args.device)) if args.short is None else args.short
    if is_cuda(args.device):
        if not torch.cuda.is_available():
            parser.error(f"--device {args.device}: torch {torch.__version__} sees no CUDA device")
        if torch.device(args.device).index is not None:  # a bare 'cuda' has no index to set (torch refuses it)
            torch.cuda.set_device(args.device)
        torch.set_float32_matmul_precision("high")  # what training sets (extras.matmul_precision): fp32 rows use TF32
    budget_s = 60 * (args.budget_minutes or (10.0 if short else 7.5))
    check = Check(args.device, short, args.out.resolve(), args.cache_dir.resolve() if args.cache_dir else None)
    info = {"device": args.device, "short": short, "budget_s": budget_s, "machine": machine(),
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "total_seconds": 0.0}  # fmt: skip
    start = time.monotonic()

    def save(rows: list[Row], results: list[SectionResult]) -> None:
        info["total_seconds"] = round(time.monotonic() - start, 1)
        write_results(check, rows, results, info)

    rows, results = run_sections(check, {n: s for n, s in SECTIONS.items() if n in args.only}, budget_s, save)
    print(format_table(judged(check, rows)))
    for r in results:
        print(f"{r.name:<11} {r.status:<8} {r.seconds:6.1f} s  {' '.join(r.note.split())[:160]}")
    print(f"written to {check.out / 'results.json'} and {check.out / 'results.md'}")
    return rows, results


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    main()

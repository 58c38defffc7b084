"""What every benchmark shares: result rows with their same-run baseline, interleaved timing, the table and the JSON.

Every figure is a ratio against a baseline measured in the same process, in alternation (round-robin, median of the
rounds): the hosts are shared and absolute times drift by 2x within minutes, but interleaving exposes both sides to the
same drift. Timing is device-aware (``seconds``): CUDA kernels run asynchronously, so on a GPU a host clock would time the
launches, not the work.
"""

from __future__ import annotations

import inspect
import json
import platform
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch


@dataclass
class Row:
    """One measured figure, higher is better, and what it is compared with."""

    section: str
    name: str
    value: float
    unit: str
    baseline: str | None = None
    baseline_value: float | None = None
    target: float | None = None  # the ratio value / baseline_value we aim for, at least
    note: str = ""

    @property
    def ratio(self) -> float | None:
        return self.value / self.baseline_value if self.baseline_value else None

    @property
    def met(self) -> bool | None:
        return None if self.target is None or self.ratio is None else self.ratio >= self.target

    def to_dict(self) -> dict:
        return {**asdict(self), "ratio": self.ratio, "met": self.met}


def is_cuda(device: str | torch.device) -> bool:
    return torch.device(device).type == "cuda"


def synchronize(device: str | torch.device) -> None:
    """Wait for the device's queued work (a no-op on CPU): what a host-side clock needs before it is read."""
    if is_cuda(device):
        torch.cuda.synchronize(device)


def device_seconds(fn: Callable[[], object], device: str | torch.device = "cpu") -> float:
    """Wall seconds of one call of ``fn`` on ``device``.

    CUDA: events recorded on the stream around the call after draining the queue, read after synchronising, so the
    figure is the device's time for the work ``fn`` queued (host gaps included), not the time to launch it. CPU: the
    host clock.
    """
    if is_cuda(device):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(device)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000
    begin = time.perf_counter()
    fn()
    return time.perf_counter() - begin


def device_kwargs(fn: Callable[..., object], device: str) -> dict[str, str]:
    """``{"device": device}`` for a benchmark function that takes one, ``{}`` for one that does not when ``device`` is
    the CPU (what it measures anyway); asking a GPU of a CPU-only function is an error, never a CPU figure labelled GPU."""
    if "device" in inspect.signature(fn).parameters:
        return {"device": device}
    if torch.device(device).type != "cpu":
        raise TypeError(f"{fn.__module__}.{fn.__qualname__} takes no device: it measures on the CPU only")
    return {}


def interleaved_seconds(fns: dict[str, Callable[[], object]], rounds: int, device: str = "cpu") -> dict[str, float]:
    """Median seconds of one call of each function, called round-robin ``rounds`` times after one warm-up call each."""
    for fn in fns.values():
        fn()
    synchronize(device)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            times[name].append(device_seconds(fn, device))
    return {name: statistics.median(t) for name, t in times.items()}


def status_mb(*keys: str) -> dict[str, float]:
    """Memory figures of this process from /proc/self/status, MB (e.g. VmRSS, RssAnon: its private part)."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in keys:
            out[key] = int(rest.split()[0]) / 1024
    return out


def peak_rss_mb() -> float:
    """Lifetime peak resident memory of this process, MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> dict[str, object]:
    """What the figures were measured on; the GPU's name, memory and software stack when CUDA is there."""
    out: dict[str, object] = {
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        out["gpu"] = {
            "name": props.name,
            "capability": f"{props.major}.{props.minor}",
            "memory_gib": round(props.total_memory / 2**30, 1),
            "multiprocessors": props.multi_processor_count,
            "cuda_runtime": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
            "flash_sdp_enabled": torch.backends.cuda.flash_sdp_enabled(),
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
        }
    return out


def _fmt(x: float | None, unit: str = "") -> str:
    if x is None:
        return ""
    if unit == "x":
        return f"{x:.2f}x"
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


HEADER = ("section", "figure", "value", "unit", "baseline", "baseline value", "ratio", "target")


def _cells(r: Row, missed: str) -> tuple[str, ...]:
    """A row's cells in ``HEADER`` order; the target says whether it is met (``missed``: how a miss is written)."""
    verdict = "" if r.met is None else (" ok" if r.met else f" {missed}")
    target = f">= {r.target:g}x{verdict}" if r.target is not None else ""
    return (r.section, r.name, _fmt(r.value), r.unit, r.baseline or "", _fmt(r.baseline_value), _fmt(r.ratio, "x"),
            target)  # fmt: skip


def format_table(rows: list[Row]) -> str:
    """A fixed-width table: section, figure, value, baseline, ratio, target (and whether it is met)."""
    lines = [HEADER, *(_cells(r, "MISSED") for r in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEADER))]
    out = ["  ".join(cell.ljust(w) if i < 2 or i in (3, 4) else cell.rjust(w) for i, (cell, w) in
                     enumerate(zip(line, widths, strict=True))) for line in lines]  # fmt: skip
    out.insert(1, "-" * len(out[0]))
    notes = [f"  [{r.section} / {r.name}] {r.note}" for r in rows if r.note]
    return "\n".join(out + (["notes:", *notes] if notes else []))


def markdown_table(rows: list[Row]) -> str:
    """The rows as a GitHub Markdown table (what docs and reports paste), their notes as a list below it."""
    lines = ["| " + " | ".join(HEADER) + " |", "|---|---|---:|---|---|---:|---:|---|"]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in _cells(r, "**missed**")) + " |" for r in rows]
    notes = [f"- {r.section} / {r.name}: {r.note}" for r in rows if r.note]
    return "\n".join(lines + (["", *notes] if notes else []))


def write_json(rows: list[Row], path: Path, extra: dict | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"machine": machine(), **(extra or {}), "rows": [r.to_dict() for r in rows]}
    path.write_text(json.dumps(payload, indent=1) + "\n")


def report(rows: list[Row], path: Path | None, extra: dict | None = None) -> list[Row]:
    """What each benchmark's command line ends with: the table on stdout, the JSON where asked."""
    print(format_table(rows))
    if path:
        write_json(rows, path, extra)
    return rows

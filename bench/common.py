"""What every benchmark shares: result rows with their same-run baseline, interleaved timing, the table and the JSON.

Every figure is a ratio against a baseline measured in the same process, in alternation (round-robin, median of the
rounds): the hosts are shared and absolute times drift by 2x within minutes, but interleaving exposes both sides to the
same drift.
"""

from __future__ import annotations

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


def interleaved_seconds(fns: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Median seconds of one call of each function, called round-robin ``rounds`` times after one warm-up call each."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
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
    return {
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def _fmt(x: float | None, unit: str = "") -> str:
    if x is None:
        return ""
    if unit == "x":
        return f"{x:.2f}x"
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


def format_table(rows: list[Row]) -> str:
    """A fixed-width table: section, figure, value, baseline, ratio, target (and whether it is met)."""
    header = ("section", "figure", "value", "unit", "baseline", "baseline value", "ratio", "target")
    lines = [header]
    for r in rows:
        verdict = "" if r.met is None else (" ok" if r.met else " MISSED")
        target = f">= {r.target:g}x{verdict}" if r.target is not None else ""
        lines.append((r.section, r.name, _fmt(r.value), r.unit, r.baseline or "", _fmt(r.baseline_value),
                      _fmt(r.ratio, "x"), target))  # fmt: skip
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = ["  ".join(cell.ljust(w) if i < 2 or i in (3, 4) else cell.rjust(w) for i, (cell, w) in
                     enumerate(zip(line, widths, strict=True))) for line in lines]  # fmt: skip
    out.insert(1, "-" * len(out[0]))
    notes = [f"  [{r.section} / {r.name}] {r.note}" for r in rows if r.note]
    return "\n".join(out + (["notes:", *notes] if notes else []))


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

"""Report an Optuna sweep of ``train.py -m hparams_search=...``: ``python scripts/sweep_report.py <sweep dir>``.

Reads what the sweep left on disk, nothing else: the first trial's ``.hydra`` files (the optimized metric, the
direction), ``optimization_results.yaml`` (the searched parameters), each trial's ``.hydra/overrides.yaml`` (its
values) and ``metrics.json`` (its result; a trial without one failed or is running), and writes a Markdown table of
the trials (best first, the best one marked) with the minutes each took, and a figure: the value per trial with the
running best, and the value against each numeric parameter. ``--doc`` writes the table between the
``sweep:begin``/``sweep:end`` markers of a page; without it the table goes to stdout.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import write_table  # noqa: E402

from dnagpt.utils.plots import save_figure, subplots  # noqa: E402

BEGIN, END = "<!-- sweep:begin -->", "<!-- sweep:end -->"


@dataclass
class Trial:
    number: int
    params: dict[str, str]
    value: float | None  # None: no metrics.json (the trial failed, or is the running one of an unfinished sweep)
    minutes: float


@dataclass
class Sweep:
    params: list[str]
    metric: str
    maximize: bool
    trials: list[Trial]
    finished: bool  # optimization_results.yaml exists

    def ranked(self) -> list[Trial]:
        done = sorted((t for t in self.trials if t.value is not None), key=lambda t: t.value, reverse=self.maximize)
        return done + [t for t in self.trials if t.value is None]


def read_sweep(sweep_dir: Path) -> Sweep:
    """The sweep's settings and trials; a folder that is no Hydra Optuna sweep is a clear error.

    The searched parameters are those Optuna sampled (``optimization_results.yaml``, written when the sweep ends); while
    it runs (or after it was stopped), those of the search config and every override whose value differs between trials.
    """
    found = sweep_dir.iterdir() if sweep_dir.is_dir() else []
    jobs = sorted((p for p in found if p.name.isdigit()), key=lambda p: int(p.name))
    if not jobs or not (jobs[0] / ".hydra" / "hydra.yaml").is_file():
        raise SystemExit(f"{sweep_dir}: no trial folders (0/.hydra/hydra.yaml ...), not the folder of a `train.py -m` sweep")
    sweeper = yaml.safe_load((jobs[0] / ".hydra" / "hydra.yaml").read_text())["hydra"]["sweeper"]
    if "direction" not in sweeper:
        raise SystemExit(f"{sweep_dir}: hydra.sweeper has no direction, not an Optuna sweep (hparams_search=...)")
    metric = yaml.safe_load((jobs[0] / ".hydra" / "config.yaml").read_text())["optimized_metric"]
    overrides = [dict(o.split("=", 1) for o in yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text()))
                 for job in jobs]  # fmt: skip
    finished = sweep_dir / "optimization_results.yaml"
    if finished.is_file():
        params = list(yaml.safe_load(finished.read_text())["best_params"])
    else:
        varied = [k for k in overrides[0] if len({o.get(k) for o in overrides}) > 1]
        params = list(dict.fromkeys([*varied, *(k for k in sweeper["params"] if k in overrides[0])]))
    trials = []
    for job, values in zip(jobs, overrides, strict=True):
        metrics = job / "metrics.json"
        value = json.loads(metrics.read_text()).get(metric) if metrics.is_file() else None
        start = (job / ".hydra" / "overrides.yaml").stat().st_mtime
        end = metrics.stat().st_mtime if metrics.is_file() else max(p.stat().st_mtime for p in job.rglob("*"))
        trials.append(Trial(int(job.name), {k: values.get(k, "?") for k in params}, value, (end - start) / 60))
    return Sweep(params, metric, sweeper["direction"] == "maximize", trials, finished.is_file())


def shown(value: str) -> str:
    """A sampled float with 3 significant digits (``0.000123456`` -> ``1.23e-04``); anything else as it is."""
    try:
        number = float(value)
    except ValueError:
        return value
    return value if number.is_integer() else f"{number:.3g}"


def table(sweep: Sweep) -> list[str]:
    ranked = sweep.ranked()
    best = ranked[0] if ranked[0].value is not None else None
    cols = [p.split(".")[-1] if sum(q.split(".")[-1] == p.split(".")[-1] for q in sweep.params) == 1 else p
            for p in sweep.params]  # fmt: skip
    lines = [f"| trial | {' | '.join(cols)} | {sweep.metric} | minutes |", "|---" * (len(cols) + 3) + "|"]
    for t in ranked:
        unfinished = "running or stopped" if not sweep.finished and t is sweep.trials[-1] else "failed"
        value = unfinished if t.value is None else f"{t.value:.4f}" + (" (best)" if t is best else "")
        lines.append(f"| {t.number} | {' | '.join(shown(t.params[p]) for p in sweep.params)} | {value} | {t.minutes:.1f} |")
    return lines


def plot(sweep: Sweep, path: Path) -> None:
    numeric = [p for p in sweep.params if all(_is_number(t.params[p]) for t in sweep.trials)]
    fig, axes = subplots(1, 1 + len(numeric), figsize=(4 * (1 + len(numeric)), 3.4), squeeze=False)
    done = [t for t in sweep.trials if t.value is not None]
    ax = axes[0][0]
    ax.plot([t.number for t in done], [t.value for t in done], "o", label="trial")
    running, best = [], -math.inf if sweep.maximize else math.inf
    for t in done:
        best = max(best, t.value) if sweep.maximize else min(best, t.value)
        running.append(best)
    ax.step([t.number for t in done], running, where="post", label="best so far")
    ax.set(xlabel="trial", ylabel=sweep.metric)
    ax.legend()
    for ax, p in zip(axes[0][1:], numeric, strict=True):
        x = [float(t.params[p]) for t in done]
        ax.plot(x, [t.value for t in done], "o")
        if min(x) > 0 and max(x) / min(x) > 20:
            ax.set_xscale("log")
        ax.set(xlabel=p, ylabel=sweep.metric)
    save_figure(fig, path, dpi=110)


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path, help="the sweep's folder (hydra.sweep.dir), holding multirun.yaml")
    parser.add_argument("--doc", type=Path, help="write the table between the sweep markers of this page")
    parser.add_argument("--figure", type=Path, help="PNG of the trials (default: next to --doc, results/sweep.png)")
    parser.add_argument("--command", default="", help="the sweep's command line, quoted above the table")
    args = parser.parse_args(argv)
    sweep = read_sweep(args.sweep_dir)
    n_done = sum(t.value is not None for t in sweep.trials)
    goal = "maximising" if sweep.maximize else "minimising"
    minutes = sum(t.minutes for t in sweep.trials)
    body = [*([f"`{args.command}`", ""] if args.command else []),
            f"{len(sweep.trials)} trials ({n_done} finished), {goal} `{sweep.metric}`, {minutes:.1f} minutes in all.", "",
            *table(sweep), ""]  # fmt: skip
    figure = args.figure or (args.doc.parent / "results" / "sweep.png" if args.doc else None)
    if figure is not None and n_done:
        plot(sweep, figure)
        if args.doc:
            body += [f"![the sweep's trials]({Path(os.path.relpath(figure, args.doc.parent)).as_posix()})", ""]
    if args.doc:
        write_table(args.doc, body, BEGIN, END)
    else:
        sys.stdout.write("\n".join(body) + "\n")


if __name__ == "__main__":
    main()

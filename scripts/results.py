"""Regenerate the table of docs/results.md from scratch: ``python scripts/results.py --data-root /path/to/shared/data``.

Every row of the "model must earn its place" table is a set of runs of the repository's own commands (``train.py``,
``evaluate.py``) with fixed overrides and seeds; their metrics are read back from the runs' ``metrics.json`` and the
table, its intervals, the CPU time of each row and the learning curves are written into docs/results.md (between the
``results:begin``/``results:end`` markers; the prose around them is left alone) and ``docs/results/*.png``.

- Resumable: a run whose ``metrics.json`` exists is not run again; an interrupted one resumes from its last checkpoint.
- ``--only pas_human,expression`` runs some rows; ``--seeds 0 1 2`` the seeds; ``--scale smoke`` shrinks every budget to
  a few steps on the shipped subsets (tests/test_results_script.py), which checks the plumbing and nothing else.
- Intervals: mean ± half-width of the 95 % Student-t interval over seeds (cross-validation rows: mean ± SD over folds).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import re
import resource
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from dnagpt.utils.plots import save_figure, subplots  # noqa: E402

log = logging.getLogger("results")
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
COMMON = ("trainer.enable_progress_bar=false", "extras.print_config=false")


@dataclass(frozen=True)
class Scale:
    """Budgets of one scale: ``cpu`` is the table's, ``quick`` a fifth of its fine-tuning, model selection on the first
    320 validation windows (what a shared 2-core session afforded), ``smoke`` a few steps for the plumbing test."""

    pretrain_steps: int
    finetune_steps: int
    val_every: int
    expression_epochs: int
    full_data: bool
    val_batches: int | None = None  # trainer.limit_val_batches of fine-tuning (None: the whole validation split)


SCALES = {
    "cpu": Scale(pretrain_steps=3000, finetune_steps=1000, val_every=100, expression_epochs=10, full_data=True),
    "quick": Scale(pretrain_steps=3000, finetune_steps=200, val_every=100, expression_epochs=5, full_data=True,
                   val_batches=10),
    "smoke": Scale(pretrain_steps=4, finetune_steps=4, val_every=2, expression_epochs=1, full_data=False),
}


@dataclass
class Run:
    """One command of the table; ``out`` is its Hydra run directory."""

    script: str
    overrides: list[str]
    out: Path

    @property
    def resuming(self) -> bool:
        """An earlier attempt left a last checkpoint: the run continues from it."""
        return (self.out / "checkpoints" / "last.ckpt").is_file()

    def command(self) -> list[str]:
        """An interrupted training run resumes from its last checkpoint (which then replaces ``init_from``)."""
        overrides = self.overrides
        if self.resuming:
            overrides = [o for o in overrides if not o.startswith("init_from=")] + ["ckpt_path=auto"]
        return [sys.executable, str(ROOT / self.script), *overrides, *COMMON, f"hydra.run.dir={self.out}"]

    @property
    def done(self) -> bool:
        """Finished: a ``metrics.json`` that is not a preemption's (that one marks a run to resume)."""
        return (self.out / "metrics.json").is_file() and "preempted_at_step" not in self.metrics()

    def metrics(self) -> dict[str, float]:
        return json.loads((self.out / "metrics.json").read_text())

    def execute(self) -> dict[str, float]:
        """Run it (unless done) and return its cost: CPU seconds of the child processes and wall seconds, ``partial``
        when it resumed an earlier attempt (whose cost an interrupted driver never recorded)."""
        cost_file = self.out / "cost.json"
        if self.done:
            return json.loads(cost_file.read_text()) if cost_file.is_file() else {"cpu_s": math.nan, "wall_s": math.nan}
        self.out.mkdir(parents=True, exist_ok=True)
        command, resuming = self.command(), self.resuming
        before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic()
        log.info("running %s", " ".join(command))
        with open(self.out / "command.log", "a") as fh:
            proc = subprocess.run(command, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT)
        if proc.returncode != 0:
            raise RuntimeError(f"{self.script} failed (exit {proc.returncode}); see {self.out / 'command.log'}")
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cost = {"cpu_s": after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime,
                "wall_s": time.monotonic() - start, "partial": resuming}
        cost_file.write_text(json.dumps(cost))
        return cost


@dataclass
class Row:
    """A row of the table: arms (model variants and their baseline) measured over replicates (seeds or folds)."""

    name: str
    what: str
    runs: dict[tuple[str, int], list[Run]] = field(default_factory=dict)  # (arm, replicate) -> runs, last one scored
    metrics: dict[str, str] = field(default_factory=dict)  # column -> metrics.json key of the scored run
    # column -> (model key, baseline key): the model minus its baseline per replicate, then the interval over them
    # (paired: each seed's baseline is fitted on that seed's split, so the difference is what "above it" means)
    differences: dict[str, tuple[str, str]] = field(default_factory=dict)
    curve: str | None = None  # logged metric plotted against the step (train runs' csv logs)
    spread: str = "ci95"  # ci95 over seeds | sd over folds
    digits: dict[str, int] = field(default_factory=dict)  # column -> decimals, where not 3 (counts: 0)


def best_checkpoint(train_dir: Path) -> Path:
    """The best checkpoint by the task's monitor (``step*.ckpt``; ModelCheckpoint keeps one)."""
    found = sorted((train_dir / "checkpoints").glob("step*.ckpt"))
    if len(found) != 1:
        raise RuntimeError(f"expected one best checkpoint in {train_dir / 'checkpoints'}, found {[p.name for p in found]}")
    return found[0]


def gsr_files(data_root: Path | None, scale: Scale) -> list[str]:
    if data_root is None or not scale.full_data:
        return []  # the shipped subsets (the config's default)
    return [f"data.files.pas={data_root / 'gsr_pas_deepgsr_4species.tsv.gz'}",
            f"data.files.tis={data_root / 'gsr_tis_3species.tsv.gz'}"]


TIED = ("model.tie_head=true",)
CORPORA = {"pretrain": ("chromosomes", "bundled", "pre-training", ()),
           "pretrain_human": ("chromosomes_human", "bundled_human", "pre-training, human only", ()),
           "pretrain_tied": ("chromosomes", "bundled", "pre-training, tied token head", TIED)}
"""Pre-training row -> its corpus with the shared data, at smoke scale, its name in the table and what else it
overrides: the H vs M ablation (the same recipe on human chr20 alone against the six species), and the six species
with GPT-2's tied token head instead of the release's MLP head."""
PRETRAINING_OF = {"pretrained": "pretrain", "pretrained_human": "pretrain_human", "pretrained_tied": "pretrain_tied"}
"""Fine-tuning arm -> the pre-training row whose first seed it starts from (its model overrides come along)."""


def pretrain_row(out: Path, scale: Scale, data_root: Path | None, seeds: Sequence[int],
                 name: str = "pretrain") -> tuple[Row, Path]:
    """The CPU recipe on the chromosome corpus, or on its human part, once per seed in ``out/seed<N>`` (``--pretrain-dir``
    may point at runs made before, resumed if unfinished); the fine-tuning arms start from the first seed's last
    checkpoint."""
    full, small, what, extra = CORPORA[name]
    shared = data_root is not None and scale.full_data
    corpus = [f"corpus={full}", f"corpus.root={data_root}"] if shared else [f"corpus={small}"]
    recipe = ["experiment=pretrain_cpu", *corpus, *extra, f"trainer.max_steps={scale.pretrain_steps}",
              f"trainer.val_check_interval={min(250, scale.val_every * 25) if scale.full_data else 2}",
              "task.scheduler.warmup_steps=" + ("200" if scale.full_data else "1")]
    row = Row(name, f"{what}, held-out bits per base (lower is better) vs order-k Markov",
              {("model", seed): [Run("train.py", [*recipe, f"seed={seed}"], out / f"seed{seed}")] for seed in seeds},
              {"val bits/base": "val/bits_per_base", "test bits/base": "test/bits_per_base",
               "Markov val": "val/markov_bits_per_base", "Markov test": "test/markov_bits_per_base",
               "Markov k": "val/markov_order"},
              {f"{part} − Markov": (f"{part}/bits_per_base", f"{part}/markov_bits_per_base") for part in ("val", "test")},
              curve="val/bits_per_base", digits={"Markov k": 0})
    return row, out / f"seed{seeds[0]}" / "checkpoints" / "last.ckpt"


# --arms name -> the arm's name in the table; pretrained_human starts from the human-only pre-training (H vs M),
# pretrained_tied from the tied-head one, random_tied is its random-initialisation twin (the tied arms run on demand:
# not in DEFAULT_ARMS, the arms of the whole table)
ARMS = {"pretrained": "pretrained", "random": "random init", "pretrained_human": "pretrained, human only",
        "pretrained_tied": "pretrained, tied head", "random_tied": "random init, tied head"}
DEFAULT_ARMS = ("pretrained", "random", "pretrained_human")
RANDOM_ARMS = {"random": (), "random_tied": TIED}
"""Arm from random initialisation -> its model overrides."""


def arm_dir(arm: str) -> str:
    """An arm's folder name: its table name with every run of other characters than letters and digits as one ``_``."""
    return re.sub(r"[^A-Za-z0-9]+", "_", arm)


def init_arms(starts: Mapping[str, Path], arms: Sequence[str]) -> list[tuple[str, list[str]]]:
    """The fine-tuning arms asked for, with the overrides that set their initialisation (``starts``: the checkpoint of
    each pre-trained arm) and the model overrides of the pre-training it starts from (a tied head stays tied)."""
    return [(ARMS[a], [f"init_from={starts[a]}", *CORPORA[PRETRAINING_OF[a]][3]] if a in PRETRAINING_OF
             else list(RANDOM_ARMS[a])) for a in ARMS if a in arms]


def gsr_row(signal: str, species: str, out: Path, scale: Scale, data_root: Path | None, seeds: Sequence[int],
            starts: Mapping[str, Path], arms: Sequence[str] = DEFAULT_ARMS) -> Row:
    """Fine-tuned from the pre-training checkpoint and from random initialisation, same budget, same split per seed."""
    name = f"{signal}_{species}"
    # data.phases as in experiment=finetune_gsr_cpu, given to both commands (evaluate.py has no experiment group; left
    # out, it reads what the checkpoint recorded, and checkpoints written before that was recorded would read phase 0)
    data = [f"data.signals=[{signal}]", f"data.species.{signal}=[{species}]", "data.phases=6", *gsr_files(data_root, scale)]
    if signal == "tis":
        data.append("data.split=block")
    budget = [f"trainer.max_steps={scale.finetune_steps}", f"trainer.val_check_interval={scale.val_every}",
              "task.scheduler.warmup_steps=" + ("50" if scale.full_data else "1"), "test=false"]
    if scale.val_batches is not None:
        budget.append(f"trainer.limit_val_batches={scale.val_batches}")
    row = Row(name, f"GSR {signal.upper()} {species}: test accuracy / AUROC", curve="val/auroc",
              metrics={f"{who}{column}": f"test/{name}/{prefix}{key}"
                       for who, prefix in (("", ""), ("6-mer LR ", "baseline_"))
                       for column, key in (("acc", "acc"), ("AUROC", "auroc"))},
              differences={f"{column} − LR": (f"test/{name}/{key}", f"test/{name}/baseline_{key}")
                           for column, key in (("acc", "acc"), ("AUROC", "auroc"))})
    for arm, init in init_arms(starts, arms):
        for seed in seeds:
            base = out / name / arm_dir(arm) / f"seed{seed}"
            train = Run("train.py", ["experiment=finetune_gsr_cpu", f"seed={seed}", *data, *budget, *init], base / "train")
            evaluate = Run("evaluate.py", ["task=gsr", f"seed={seed}", *data, "ckpt_path={best}"], base / "eval")
            row.runs[(arm, seed)] = [train, evaluate]
    return row


def expression_row(out: Path, scale: Scale, folds: int, starts: Mapping[str, Path],
                   arms: Sequence[str] = DEFAULT_ARMS) -> Row:
    """5-fold cross-validation on the mini set: each fold's test genes once, ridge fitted on the same training folds.
    The recipe of docs/expression.md (epoch-based, best epoch by val R²) on the six phases (docs/phases.md), at lr 3e-4:
    chosen over the task's 1e-4 by validation R² on every fold (docs/results.md)."""
    data = ["data.split=kfold", f"data.n_folds={folds}", "data.phases=6"]
    epochs = [f"trainer.max_epochs={scale.expression_epochs}", "trainer.max_steps=-1", "trainer.val_check_interval=1.0",
              "trainer.check_val_every_n_epoch=1", "callbacks.model_checkpoint.every_n_train_steps=null"]
    row = Row("expression", f"expression (mini set), {folds}-fold CV: test R²", curve="val/r2", spread="sd",
              metrics={"R²": "test/r2", "ridge R²": "test/kmer_ridge_r2"},
              differences={"R² − ridge": ("test/r2", "test/kmer_ridge_r2")})
    for arm, init in init_arms(starts, arms):
        for fold in range(folds):
            base = out / "expression" / arm_dir(arm) / f"fold{fold}"
            split = [*data, f"data.fold={fold}"]
            train = Run("train.py", ["task=expression", "model=tiny", "trainer=cpu", *split, *init, *epochs,
                                     "task.optimizer.lr=3e-4", "test=false"], base / "train")
            evaluate = Run("evaluate.py", ["task=expression", *split, "ckpt_path={best}"], base / "eval")
            row.runs[(arm, fold)] = [train, evaluate]
    return row


def execute(row: Row, report_only: bool = False) -> str:
    """Run every command of the row in order (the ``{best}`` placeholder is the preceding train run's best checkpoint);
    returns the CPU time they took, a lower bound ("≥") when some run's cost was not recorded or only in part.
    ``report_only`` runs nothing: the finished replicates are reported, the others left out (the table's n says how
    many)."""
    costs, partial = [], False
    for runs in row.runs.values():
        if report_only and not all(run.done for run in runs):
            continue
        for i, run in enumerate(runs):
            run.overrides = [o.replace("{best}", str(best_checkpoint(runs[i - 1].out))) if "{best}" in o else o
                             for o in run.overrides]
            cost = run.execute()
            costs.append(cost["cpu_s"])
            partial |= cost.get("partial", False)
    known = [c for c in costs if math.isfinite(c)]
    if not known:
        return "CPU time not recorded"
    return f"{'' if len(known) == len(costs) and not partial else '≥ '}{sum(known) / 3600:.2f} CPU hours"


def interval(values: Sequence[float], spread: str, signed: bool = False, digits: int = 3) -> str:
    """``mean ± half-width`` (one value: the value); ``signed`` writes a ``+`` on positive means (differences)."""
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=float)
    if v.size == 0:
        return "–"
    number = f"{{:{'+' if signed else ''}.{digits}f}}"
    if v.size == 1:
        return number.format(v[0])
    sd = v.std(ddof=1)
    half = sd if spread == "sd" else stats.t.ppf(0.975, v.size - 1) * sd / math.sqrt(v.size)
    return f"{number.format(v.mean())} ± {half:.{digits}f}"


def summarise(row: Row, cost: str) -> list[str]:
    """Markdown lines of one row: one line per arm with a finished replicate, the columns of ``row.metrics``."""
    columns = [*row.metrics, *row.differences]
    lines = [f"**{row.what}** — {cost}", "",
             "| arm | n | " + " | ".join(columns) + " |", "|---" * (len(columns) + 2) + "|"]
    for arm in dict.fromkeys(a for a, _ in row.runs):
        scored = [runs[-1].metrics() for (a, _), runs in row.runs.items() if a == arm and runs[-1].done]
        if not scored:
            continue
        cells = [interval([m.get(key, math.nan) for m in scored], row.spread, digits=row.digits.get(column, 3))
                 for column, key in row.metrics.items()]
        cells += [interval([m.get(ours, math.nan) - m.get(base, math.nan) for m in scored], row.spread, signed=True)
                  for ours, base in row.differences.values()]  # fmt: skip
        lines.append(f"| {arm} | {len(scored)} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def read_curve(csv_path: Path, metric: str) -> tuple[np.ndarray, np.ndarray]:
    with open(csv_path) as fh:
        pts = [(int(r["step"]), float(r[metric])) for r in csv.DictReader(fh) if r.get(metric)]
    return np.array([p[0] for p in pts]), np.array([p[1] for p in pts])


def plot_curves(row: Row, path: Path) -> None:
    """The logged validation metric against the step, one line per train run, coloured by arm."""
    if row.curve is None:
        return
    fig, ax = subplots(figsize=(6, 4))
    colours: dict[str, str] = {}
    for (arm, _), runs in row.runs.items():
        log_csv = runs[0].out / "csv" / "metrics.csv"
        if not log_csv.is_file():
            continue
        steps, values = read_curve(log_csv, row.curve)
        first = arm not in colours
        colour = colours.setdefault(arm, f"C{len(colours)}")
        ax.plot(steps, values, color=colour, alpha=0.8, label=arm if first else None)
    ax.set(xlabel="optimizer step", ylabel=row.curve, title=f"{row.name}: {row.curve} during training, per run")
    ax.legend()
    save_figure(fig, path, dpi=110)


def write_table(doc: Path, body: list[str], begin: str = BEGIN, end: str = END) -> None:
    """Replace what lies between the ``begin`` and ``end`` markers of ``doc`` (a new page holds only them)."""
    text = doc.read_text() if doc.is_file() else f"# Results\n\n{begin}\n{end}\n"
    if begin not in text or end not in text:
        raise RuntimeError(f"{doc} has no {begin} ... {end} markers to write the table between")
    head, rest = text.split(begin, 1)
    doc.write_text(head + begin + "\n" + "\n".join(body) + "\n" + end + rest.split(end, 1)[1])


def build_rows(args: argparse.Namespace) -> tuple[list[Row], list[Row], dict[str, Path]]:
    """The pre-training rows (six species, human only, tied head), the fine-tuning rows, and each pre-trained arm's
    checkpoint."""
    scale = SCALES[args.scale]
    multi, last = pretrain_row(args.pretrain_dir or args.out / "pretrain", scale, args.data_root, args.pretrain_seeds)
    human, last_human = pretrain_row(args.out / "pretrain_human", scale, args.data_root, args.pretrain_seeds,
                                     "pretrain_human")
    tied, last_tied = pretrain_row(args.out / "pretrain_tied", scale, args.data_root, args.pretrain_seeds,
                                   "pretrain_tied")
    starts = {"pretrained": args.pretrained or last, "pretrained_human": args.pretrained_human or last_human,
              "pretrained_tied": args.pretrained_tied or last_tied}
    rows = [gsr_row("pas", sp, args.out, scale, args.data_root, args.seeds, starts, args.arms)
            for sp in ("human", "mouse", "bovine", "fruitfly")]
    rows += [gsr_row("tis", sp, args.out, scale, args.data_root, args.seeds, starts, args.arms)
             for sp in ("yeast", "arabidopsis")]
    rows.append(expression_row(args.out, scale, args.folds, starts, args.arms))
    return [multi, human, tied], rows, starts


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", type=Path, help="folder with the genomes and the full GSR files (shared data)")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "results", help="where the runs go")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--pretrain-seeds", type=int, nargs="+", default=[1337, 1338, 1339],
                        help="seeds of the pre-training rows (the first, the config's default, is the fine-tuning start)")
    parser.add_argument("--pretrain-dir", type=Path, help="folder of the pre-training's seed<N> runs (default: "
                        "OUT/pretrain)")
    parser.add_argument("--pretrained", type=Path, help="checkpoint the pretrained arm starts from (default: the "
                        "pretrain row's first seed's last.ckpt)")
    parser.add_argument("--pretrained-human", type=Path, help="checkpoint the pretrained_human arm starts from "
                        "(default: the pretrain_human row's first seed's last.ckpt, OUT/pretrain_human/seed<N>)")
    parser.add_argument("--pretrained-tied", type=Path, help="checkpoint the pretrained_tied arm starts from "
                        "(default: the pretrain_tied row's first seed's last.ckpt, OUT/pretrain_tied/seed<N>)")
    parser.add_argument("--scale", choices=sorted(SCALES), default="cpu")
    parser.add_argument("--only", default="", help="comma-separated row names (default: all)")
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(DEFAULT_ARMS),
                        help="fine-tuning arms to run (random needs no pre-training checkpoint; default: all but "
                        "the tied arms)")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "results.md")
    parser.add_argument("--threads", type=int, help="torch/BLAS threads per run (OMP_NUM_THREADS of the children; "
                        "default: torch's, one per core): several drivers on one machine want cores / drivers each, "
                        "else they oversubscribe the cores (docs/results.md: 58 vs 15-17 min per GSR run on 2 cores)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands and write nothing")
    parser.add_argument("--report-only", action="store_true", help="run nothing: tabulate the finished runs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.data_root is not None and not args.data_root.is_dir():
        parser.error(f"--data-root {args.data_root}: no such folder")

    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads {args.threads}: give at least 1")
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # inherited by every train.py / evaluate.py it starts
    pres, rows, starts = build_rows(args)
    every = [*pres, *rows]
    wanted = {n for n in args.only.split(",") if n}
    unknown = wanted - {r.name for r in every}
    if unknown:
        parser.error(f"--only {','.join(sorted(unknown))}: no such row; rows: {', '.join(r.name for r in every)}")
    chosen = [r for r in every if not wanted or r.name in wanted]
    if args.dry_run:
        for row in chosen:
            for runs in row.runs.values():
                for run in runs:
                    log.info(" ".join(run.command()[1:]))
        return
    fine_tuning = any(row not in pres for row in chosen)
    names = {row.name for row in chosen}
    for arm, pre in PRETRAINING_OF.items():
        if fine_tuning and arm in args.arms and pre not in names and not starts[arm].is_file() and not args.report_only:
            parser.error(f"the {arm} arm starts from {starts[arm]}, which does not exist: run the {pre} row first "
                         f"or name a checkpoint with --{arm.replace('_', '-')}")
    began = ", ".join(ARMS[a] + (f" from `{starts[a].name}`" if a in starts else "") for a in args.arms)
    body = [f"Regenerated by `python scripts/results.py --data-root /path/to/shared/data --scale {args.scale} "
            f"--pretrain-seeds {' '.join(map(str, args.pretrain_seeds))} "
            f"--seeds {' '.join(map(str, args.seeds))} --folds {args.folds} --arms {' '.join(args.arms)}` "
            f"(rows: {', '.join(r.name for r in chosen)}); "
            f"fine-tuning arms: {began}.", ""]
    figures = args.doc.parent / "results"
    for row in chosen:
        body += summarise(row, execute(row, args.report_only))
        if row.curve:
            plot_curves(row, figures / f"{row.name}.png")
            body += [f"![{row.name}](results/{row.name}.png)", ""]
    write_table(args.doc, body)


if __name__ == "__main__":
    main()

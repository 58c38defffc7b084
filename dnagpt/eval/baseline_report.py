"""The k-mer baselines alone, on the very splits a model run reads: tuned on validation against one fixed setting.

No model is trained: the task's DataModule is built from the evaluation config and its overrides, and the evaluator's
own baseline code is fitted on its splits, once with the config's grid (chosen on validation) and once with the single
value ``--fixed``. So a target such as "the model beats the tuned baseline" can be checked before any training, and
the gain of tuning is measured, not assumed.

    python -m dnagpt.eval.baseline_report task=gsr --seeds 0 1 2          # PAS subset: per species, over 3 seeds
    python -m dnagpt.eval.baseline_report task=expression data.split=kfold # mini set: ridge over the 5 folds

* ``task=gsr``: one logistic regression per (signal, species) (``GSREvaluator.baseline``); each seed (``seed=``)
  redraws the balance and the split; test accuracy and AUROC as mean ± half-width of the 95 % Student-t interval.
* ``task=expression``: the 6-mer ridge and the GC/CpG regression (``fit_baselines``); under ``data.split=kfold``
  every fold is test once, R² as mean ± SD over folds (and seeds, which do not move the folds: ``data.split_seed``
  does).

The table goes to the log; ``--json PATH`` keeps every fit (chosen value, its validation grid, test metrics).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from hydra import compose, initialize_config_module
from hydra.utils import instantiate
from omegaconf import DictConfig
from scipy import stats

from dnagpt.eval.expression import ExpressionEvaluator, fit_baselines, regression_metrics
from dnagpt.eval.gsr import GSREvaluator, binary_scores
from dnagpt.pipeline import build_parts
from dnagpt.utils.errors import ConfigError, error_boundary
from dnagpt.utils.resolvers import register_resolvers

__all__ = ["Fit", "format_report", "report", "summarise"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Fit:
    """One baseline fitted on one split of the data and scored on its test rows."""

    group: str  # pas_human, expression/kmer_ridge, ...
    setting: str  # "tuned" (the config's grid, chosen on val) or "fixed"
    seed: int
    fold: int | None
    value: float  # the C or alpha it ran at
    grid: list[tuple[float, float]]  # (value, validation score)
    n_test: int
    metrics: dict[str, float]


def _configs(overrides: Sequence[str], seeds: Sequence[int]) -> Iterator[tuple[int, int | None, DictConfig]]:
    """The evaluation config (no checkpoint needed) per seed and, under ``data.split=kfold``, per fold."""
    register_resolvers()
    with initialize_config_module(config_module="dnagpt.conf", version_base="1.3"):
        for seed in seeds:
            cfg = compose("evaluate", overrides=[*overrides, f"seed={seed}"])
            if cfg.data.get("split") != "kfold":
                yield seed, None, cfg
                continue
            for fold in range(int(cfg.data.n_folds)):
                yield seed, fold, compose("evaluate", overrides=[*overrides, f"seed={seed}", f"data.fold={fold}"])


def report(overrides: Sequence[str], seeds: Sequence[int], fixed: float) -> list[Fit]:
    """Every fit of the tuned and the fixed baseline over the seeds (and folds) of ``overrides``."""
    fits = []
    for seed, fold, cfg in _configs(overrides, seeds):
        evaluator = instantiate(cfg.evaluation) if "evaluation" in cfg else None
        if not isinstance(evaluator, GSREvaluator | ExpressionEvaluator):
            raise ConfigError(f"the baseline report knows task=gsr and task=expression, not {cfg.task._target_}")
        _, dm, _ = build_parts(cfg)
        dm.setup("fit")
        if isinstance(evaluator, GSREvaluator):
            fits += _gsr_fits(evaluator, dm, seed, fixed)
        else:
            fits += _expression_fits(evaluator, dm, seed, fold, fixed)
        log.info(f"seed {seed}{'' if fold is None else f', fold {fold}'}: {len(fits)} fits so far")
    return fits


def _gsr_fits(evaluator: GSREvaluator, dm: Any, seed: int, fixed: float) -> list[Fit]:
    test = dm.tables["test"]
    fits = []
    for setting, grid in (("tuned", evaluator.C), ("fixed", [fixed])):
        p, models = GSREvaluator(kmer=evaluator.kmer, C=grid).baseline(dm, dm.seed)
        for group, model in models.items():
            signal, species = group.split("_", 1)
            idx = np.flatnonzero((test.signal == signal) & (test.species == species))
            fits.append(Fit(group, setting, seed, None, model.C_, model.grid, len(idx),
                            binary_scores(p[idx], test.label[idx])))  # fmt: skip
    return fits


def _expression_fits(evaluator: ExpressionEvaluator, dm: Any, seed: int, fold: int | None, fixed: float) -> list[Fit]:
    train, val, test = (dm.split_data(s) for s in ("train", "val", "test"))
    fits = []
    for setting, grid in (("tuned", evaluator.alphas), ("fixed", [fixed])):
        preds, ridge = fit_baselines(train, val, test, k=evaluator.kmer, alphas=grid)
        fits.append(Fit("expression/kmer_ridge", setting, seed, fold, ridge.value, ridge.grid, len(test.labels),
                        regression_metrics(test.labels, preds["kmer_ridge"])))  # fmt: skip
        if setting == "tuned":  # no hyperparameter: one row
            fits.append(Fit("expression/gc_cpg", "-", seed, fold, float("nan"), [], len(test.labels),
                            regression_metrics(test.labels, preds["gc_cpg"])))  # fmt: skip
    return fits


def summarise(values: Sequence[float], folds: bool) -> tuple[float, float]:
    """(mean, spread): the SD over cross-validation folds, else the half-width of the 95 % Student-t interval.

    >>> [tuple(round(v, 4) for v in summarise([0.7, 0.8, 0.9], folds)) for folds in (True, False)]
    [(0.8, 0.1), (0.8, 0.2484)]
    """
    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return float(v.mean()), float("nan")
    sd = float(v.std(ddof=1))
    if folds:
        return float(v.mean()), sd
    return float(v.mean()), float(stats.t.ppf(0.975, len(v) - 1) * sd / np.sqrt(len(v)))


def format_report(fits: Sequence[Fit]) -> str:
    """A markdown table: per group and setting, the test metrics' mean and spread and the values chosen."""
    folds = any(f.fold is not None for f in fits)
    metrics = ("r2", "pearson") if fits and "r2" in fits[0].metrics else ("acc", "auroc")
    spread = "SD over folds" if folds else "95 % t-interval"
    head = ["group", "baseline", "fits", *(f"test {m} (mean ± {spread})" for m in metrics), "chosen values"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    keys = sorted(dict.fromkeys((f.group, f.setting) for f in fits), key=lambda k: (k[0], k[1] != "tuned"))
    for group, setting in keys:
        rows = [f for f in fits if (f.group, f.setting) == (group, setting)]
        cells = []
        for m in metrics:
            mean, half = summarise([f.metrics[m] for f in rows], folds)
            cells.append(f"{mean:.3f} ± {half:.3f}")
        chosen = ", ".join(f"{f.value:g}" for f in rows) if setting != "-" else "-"
        lines.append(f"| {group} | {setting} | {len(rows)} | {' | '.join(cells)} | {chosen} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m dnagpt.eval.baseline_report [--seeds ...] [--fixed V] [--json PATH] <overrides of evaluate.yaml>``."""
    parser = argparse.ArgumentParser(prog="python -m dnagpt.eval.baseline_report", description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="values of seed= (GSR: balance and split)")
    parser.add_argument("--fixed", type=float, default=1.0, help="the fixed C / alpha the tuned grid is compared with")
    parser.add_argument("--json", type=Path, default=None, help="write every fit here")
    args, overrides = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    with error_boundary():
        fits = report(overrides, args.seeds, args.fixed)
        log.info("Baselines, tuned on validation vs fixed (%s):\n%s", " ".join(overrides), format_report(fits))
        if args.json is not None:
            args.json.write_text(json.dumps([asdict(f) for f in fits], indent=1))


if __name__ == "__main__":
    main()

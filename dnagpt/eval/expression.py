"""Regression evaluation: the model against two non-neural baselines fitted in the same run, one table and one plot.

Baselines (scikit-learn, fitted on the training split only, scored on the evaluated split; numeric features, when the
task has any, are appended to both):

* ``gc_cpg``: linear regression on the GC fraction and the CpG density of the window the model reads. Promoter CpG
  content is the classic predictor of expression (CpG-island promoters belong to broadly expressed genes).
* ``kmer_ridge``: ridge regression on overlapping 6-mer frequencies of the same window (``kmer_counts`` of
  ``dnagpt.eval.kmer_baselines``), the penalty ``alpha`` chosen from a grid by R² on the validation split, as the
  model's checkpoint is (``tune_on_validation``); the chosen alpha and the grid go to
  ``<prefix>_baselines_<split>.json`` and ``<split>/kmer_ridge_alpha``.

Metrics for every predictor: ``r2`` (coefficient of determination), ``pearson``, ``spearman`` and ``pearson_r2``
(squared Pearson r, Xpresso's and the DNAGPT paper's "R²"). The model's own numbers are also logged by the task's
test step; the evaluator scores it again in the same pass as the baselines, under the trainer's precision.

The DataModule provides ``dataset(split)``, ``split_data(split)`` (ids, windows, z-scored features, labels) and
``to_label_units(z)``: ``dnagpt.data.expression.ExpressionDataModule`` does.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from scipy import sparse
from sklearn.linear_model import LinearRegression, Ridge
from sklearn.metrics import r2_score as sk_r2_score
from sklearn.preprocessing import MaxAbsScaler
from torch.utils.data import DataLoader
from torchmetrics.functional import pearson_corrcoef, r2_score, spearman_corrcoef

from dnagpt.eval.kmer_baselines import Tuned, check_grid, kmer_counts, tune_on_validation
from dnagpt.utils.errors import ConfigError
from dnagpt.utils.plots import save_figure, subplots
from dnagpt.utils.pylogger import RankedLogger

__all__ = ["ExpressionEvaluator", "Rows", "fit_baselines", "gc_cpg_features", "regression_metrics"]

log = RankedLogger(__name__)

METRICS = ("r2", "pearson", "spearman", "pearson_r2")


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """R², Pearson, Spearman and squared Pearson of predictions (torchmetrics, float64).

    >>> m = regression_metrics(np.array([1.0, 2.0, 3.0, 4.0]), np.array([2.0, 4.0, 6.0, 8.0]))
    >>> round(m["pearson"], 4), round(m["spearman"], 4), round(m["r2"], 4)  # perfectly correlated, yet off by 2x
    (1.0, 1.0, -5.0)
    """
    t = torch.as_tensor(np.asarray(y_true, dtype=np.float64))
    p = torch.as_tensor(np.asarray(y_pred, dtype=np.float64))
    if t.shape != p.shape or t.ndim != 1 or len(t) < 2:
        raise ValueError(f"need two 1-D arrays of one length >= 2, got {tuple(t.shape)} and {tuple(p.shape)}")
    pearson = float(pearson_corrcoef(p, t))
    return {"r2": float(r2_score(p, t)), "pearson": pearson, "spearman": float(spearman_corrcoef(p, t)),
            "pearson_r2": pearson**2}  # fmt: skip


def gc_cpg_features(seqs: Sequence[str]) -> np.ndarray:
    """(n, 2): GC fraction over A/C/G/T and CpG dinucleotides per bp of each sequence (upper-case ACGTN).

    >>> gc_cpg_features(["ACGT", "GGCC"]).tolist()
    [[0.5, 0.25], [1.0, 0.0]]
    """
    out = np.empty((len(seqs), 2))
    for i, s in enumerate(seqs):
        acgt = len(s) - s.count("N")
        out[i] = ((s.count("G") + s.count("C")) / max(acgt, 1), s.count("CG") / max(len(s), 1))
    return out


def _kmer_frequencies(seqs: Sequence[str], k: int) -> sparse.csr_matrix:
    counts = kmer_counts(seqs, k).astype(np.float64)
    totals = np.asarray(counts.sum(axis=1)).ravel()
    return sparse.diags(1.0 / np.maximum(totals, 1.0)) @ counts


class Rows(NamedTuple):
    """One split as the baselines read it; ``SplitData`` of ``dnagpt.data.expression`` has these fields too."""

    windows: Sequence[str]
    features: np.ndarray  # (n, F)
    labels: np.ndarray  # (n,) label units; not read for the evaluated rows


def fit_baselines(
    train: Rows, val: Rows | None, ev: Rows, k: int = 6, alphas: float | Sequence[float] = (0.1, 1.0, 10.0, 100.0, 1000.0)
) -> tuple[dict[str, np.ndarray], Tuned[Ridge]]:
    """Predictions for the ``ev`` rows of each baseline fitted on the ``train`` rows, in the labels' units, and the
    ridge's tuning (alpha chosen by R² on ``val``; a single alpha needs no ``val``)."""
    for name, part in (("train", train), ("val", val), ("evaluated", ev)):
        if part is not None and len(part.windows) != len(part.features):
            raise ValueError(f"{len(part.windows)} {name} sequences but {len(part.features)} feature rows")
    if len(train.windows) != len(train.labels):
        raise ValueError(f"{len(train.windows)} training sequences but {len(train.labels)} labels")
    y = np.asarray(train.labels, dtype=np.float64)
    gc = LinearRegression().fit(np.hstack([gc_cpg_features(train.windows), train.features]), y)
    scaler = MaxAbsScaler()
    x_train = scaler.fit_transform(_kmer_design(train, k))
    val_xy = None if val is None else (scaler.transform(_kmer_design(val, k)), np.asarray(val.labels, dtype=np.float64))
    grid = check_grid(alphas, "alphas")
    ridge = tune_on_validation(lambda a: Ridge(alpha=a), grid, (x_train, y), val_xy, _val_r2, "val_r2")
    if len(grid) > 1:
        text = ", ".join(f"{a:g}: {r2:.4f}" for a, r2 in ridge.grid)
        log.info(f"kmer_ridge baseline: alpha {ridge.value:g} chosen by validation R² from {text}")
    preds = {
        "gc_cpg": gc.predict(np.hstack([gc_cpg_features(ev.windows), ev.features])),
        "kmer_ridge": ridge.model.predict(scaler.transform(_kmer_design(ev, k))),
    }
    return preds, ridge


def _kmer_design(rows: Rows, k: int) -> sparse.csr_matrix:
    return sparse.hstack([_kmer_frequencies(rows.windows, k), rows.features], format="csr")


def _val_r2(model: Ridge, x: sparse.csr_matrix, y: np.ndarray) -> float:
    return float(sk_r2_score(y, model.predict(x)))


def plot_scatter(y_true: np.ndarray, preds: dict[str, np.ndarray], path: Path, title: str, label_name: str) -> None:
    """One panel per predictor: predicted against true, the identity line, and R² / Pearson r in the panel title."""
    fig, axes = subplots(1, len(preds), figsize=(4.2 * len(preds), 4.4), squeeze=False, sharex=True, sharey=True)
    lo, hi = min(map(np.min, [y_true, *preds.values()])), max(map(np.max, [y_true, *preds.values()]))
    pad = 0.05 * (hi - lo)
    for ax, (name, pred) in zip(axes[0], preds.items(), strict=True):
        m = regression_metrics(y_true, pred)
        ax.scatter(y_true, pred, s=12, alpha=0.6, edgecolors="none", label=f"genes (n={len(y_true)})")
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="grey", lw=1, ls="--", label="y = x")
        ax.set_title(f"{name}\nR² {m['r2']:.3f}   Pearson r {m['pearson']:.3f}", fontsize=10)
        ax.set_xlabel(f"true {label_name}")
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_ylim(lo - pad, hi + pad)
        ax.legend(loc="upper left", fontsize=8)
    axes[0, 0].set_ylabel(f"predicted {label_name}")
    fig.suptitle(title)
    save_figure(fig, path, dpi=120)


def format_table(rows: dict[str, dict[str, float]], n: int, split: str) -> str:
    lines = [f"{split} split, {n} genes", f"{'predictor':<12}" + "".join(f"{m:>12}" for m in METRICS)]
    lines += [f"{name:<12}" + "".join(f"{vals[m]:>12.4f}" for m in METRICS) for name, vals in rows.items()]
    return "\n".join(lines)


class ExpressionEvaluator:
    """``evaluation`` hook of ``evaluate.py``: the model and the baselines scored on one split.

    Writes ``<prefix>_scatter_<split>.png``, ``<prefix>_predictions_<split>.csv`` and ``<prefix>_baselines_<split>.json``
    (the ridge's alpha and its validation grid), logs the table and returns the baselines' metrics as
    ``<split>/<baseline>_<metric>`` and ``<split>/kmer_ridge_alpha`` (the model's are the task's ``<split>/<metric>``).
    """

    def __init__(
        self,
        split: str = "test",
        kmer: int = 6,
        alphas: float | Sequence[float] = (0.1, 1.0, 10.0, 100.0, 1000.0),
        batch_size: int = 32,
        label_name: str = "label",
        prefix: str = "regression",
    ) -> None:
        grid = check_grid(alphas, "evaluation.alphas")
        if split == "val" and len(grid) > 1:
            raise ConfigError(
                "evaluation.split=val with a grid of evaluation.alphas would choose the ridge's alpha on the rows it "
                "scores; evaluate the test split, or give one alpha"
            )
        self.split, self.kmer, self.alphas, self.batch_size = split, kmer, grid, batch_size
        self.label_name, self.prefix = label_name, prefix

    @torch.no_grad()
    def predict(self, module, datamodule, trainer) -> tuple[np.ndarray, np.ndarray]:
        """(rows, z-scored predictions) of the split, under the trainer's precision on the module's device."""
        module.eval()
        rows, preds = [], []
        loader = DataLoader(datamodule.dataset(self.split), batch_size=self.batch_size, shuffle=False)
        context = trainer.precision_plugin.forward_context() if trainer is not None else torch.autocast("cpu", enabled=False)
        with context:
            for batch in loader:
                batch = {k: v.to(module.device) for k, v in batch.items()}
                preds.append(module.predict(batch).float().cpu())
                rows.append(batch["row"].cpu())
        return torch.cat(rows).numpy(), torch.cat(preds).numpy()

    def __call__(self, module, datamodule, trainer, output_dir: str | Path) -> dict[str, float]:
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        datamodule.setup("test")
        train, val, ev = (datamodule.split_data(s) for s in ("train", "val", self.split))
        rows, z = self.predict(module, datamodule, trainer)
        if not np.array_equal(rows, ev.rows):
            raise RuntimeError(f"the {self.split} dataloader and split_data disagree on the row order")
        preds = {"model": datamodule.to_label_units(z)}
        baselines, ridge = fit_baselines(train, val, ev, k=self.kmer, alphas=self.alphas)
        preds |= baselines
        table = {name: regression_metrics(ev.labels, p) for name, p in preds.items()}
        summary = format_table(table, len(rows), self.split)
        log.info(f"Regression metrics (model vs baselines fitted on the training split):\n{summary}")

        title = f"{self.prefix}: predicted vs true, {self.split} split ({len(rows)} genes)"
        plot_scatter(ev.labels, preds, output_dir / f"{self.prefix}_scatter_{self.split}.png", title, self.label_name)
        with open(output_dir / f"{self.prefix}_predictions_{self.split}.csv", "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["id", "true", *preds])
            for i, gene in enumerate(ev.ids):
                writer.writerow([gene, f"{ev.labels[i]:.6g}", *(f"{p[i]:.6g}" for p in preds.values())])
        tuning = {"kmer_ridge": {"alpha": ridge.value, "metric": ridge.metric, "grid": ridge.grid,
                                 "fitted_on": "train", "chosen_on": "val"}}  # fmt: skip
        (output_dir / f"{self.prefix}_baselines_{self.split}.json").write_text(json.dumps(tuning, indent=2))
        return {
            f"{self.split}/{name}_{metric}": value
            for name, vals in table.items()
            if name != "model"
            for metric, value in vals.items()
        } | {f"{self.split}/kmer_ridge_alpha": ridge.value}

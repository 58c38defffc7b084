"""GSR evaluation: model next to its k-mer yardstick, overall, per species and per motif, with ROC and confusion plots.

``GSREvaluator(...)(module, datamodule, trainer, output_dir)`` (the ``evaluation`` hook of ``dnagpt.pipeline.evaluate``):

1. scores the test split with the model (p(true) from the two answer logits, the task's own ``score``);
2. fits one logistic regression on 6-mer counts per (signal, species) on the *train* split of the same DataModule
   (upstream and downstream of the cut kept apart: the same 600 bp the model sees), its ``C`` chosen from a grid by
   AUROC on that group's *val* rows (``dnagpt.eval.kmer_baselines.tune_on_validation``), and scores the same test rows;
3. computes accuracy, F1, MCC and AUROC (torchmetrics, threshold 0.5) for both on every group, writes
   ``gsr_metrics.csv`` / ``gsr_metrics.json`` (per (signal, species) also ``baseline_C`` and ``baseline_grid``, the
   (C, val AUROC) pairs), ``roc_<group>.png`` and ``confusion_<group>.png`` per (signal, species), logs a summary table
   and returns flat scalars ``test/<group>/<metric>``, ``test/<group>/baseline_<metric>`` and
   ``test/<signal>_<species>/baseline_C``.

Groups: ``all``, ``<signal>_<species>`` (e.g. ``pas_human``) and ``<signal>_motif_<MOTIF>``.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import confusion_matrix, roc_curve
from torch.utils.data import DataLoader
from torchmetrics.functional.classification import (
    binary_accuracy,
    binary_auroc,
    binary_f1_score,
    binary_matthews_corrcoef,
)

from dnagpt.data.gsr import cut_signal
from dnagpt.data.gsr_table import SIGNALS
from dnagpt.eval.kmer_baselines import KmerLogistic, check_grid
from dnagpt.utils.plots import save_figure, subplots
from dnagpt.utils.pylogger import RankedLogger

log = RankedLogger(__name__)

METRICS = ("acc", "f1", "mcc", "auroc")


def binary_scores(p_true: np.ndarray, label: np.ndarray) -> dict[str, float]:
    """Accuracy, F1, MCC (threshold 0.5) and AUROC; AUROC is NaN when the group holds one class only."""
    p, y = torch.as_tensor(p_true, dtype=torch.float32), torch.as_tensor(label, dtype=torch.long)
    out = {
        "acc": binary_accuracy(p, y).item(),
        "f1": binary_f1_score(p, y).item(),
        "mcc": binary_matthews_corrcoef(p, y).item(),
    }
    out["auroc"] = binary_auroc(p, y).item() if y.unique().numel() == 2 else float("nan")
    return out


@torch.no_grad()
def predict(module: Any, loader: DataLoader) -> np.ndarray:
    """p(true) for every row of ``loader`` in order."""
    was_training = module.training
    module.eval()
    device = next(module.parameters()).device
    scores = [module.score(module.answer_logits({k: v.to(device) for k, v in b.items()})).cpu() for b in loader]
    module.train(was_training)
    return torch.cat(scores).numpy() if scores else np.zeros(0)


def group_index(signal: np.ndarray, species: np.ndarray, motif: np.ndarray) -> dict[str, np.ndarray]:
    """Row indices of ``all``, each ``<signal>_<species>`` and each ``<signal>_motif_<MOTIF>``."""
    groups = {"all": np.arange(len(signal))}
    for key, cols in (("{}_{}", (signal, species)), ("{}_motif_{}", (signal, motif))):
        names = np.array([key.format(*row) for row in zip(*cols, strict=True)])
        groups |= {n: np.flatnonzero(names == n) for n in sorted(set(names))}
    return groups


class GSREvaluator:
    """Callable evaluation hook; see the module docstring. ``C``: one value (fixed) or a grid chosen on validation."""

    def __init__(self, kmer: int = 6, C: float | Sequence[float] = 1.0, batch_size: int = 32) -> None:
        self.kmer, self.C, self.batch_size = kmer, check_grid(C, "evaluation.C"), batch_size

    def baseline(self, datamodule: Any, seed: int) -> tuple[np.ndarray, dict[str, KmerLogistic]]:
        """Baseline p(true) on the test rows and the fitted model per ``<signal>_<species>`` group: one model per
        group, fitted on its train rows with ``C`` chosen on its val rows."""
        tables = datamodule.tables
        test = tables["test"]
        out = np.full(len(test), np.nan)
        models = {}
        for signal in sorted(set(test.signal)):
            for species in sorted(set(test.species[test.signal == signal])):
                rows = {s: np.flatnonzero((t.signal == signal) & (t.species == species)) for s, t in tables.items()}
                seqs = {s: [cut_signal(q, signal) for q in tables[s].sequence[rows[s]]] for s in rows}
                model = KmerLogistic(k=self.kmer, cut=SIGNALS[signal].start, C=self.C, seed=seed)
                model.fit(seqs["train"], tables["train"].label[rows["train"]],
                          val=(seqs["val"], tables["val"].label[rows["val"]]) if len(rows["val"]) else None)  # fmt: skip
                out[rows["test"]] = model.predict_proba(seqs["test"])[:, 1]
                models[f"{signal}_{species}"] = model
        return out, models

    def __call__(self, module: Any, datamodule: Any, trainer: Any, output_dir: str | Path) -> dict[str, float]:
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        test = datamodule.tables["test"]
        loader = DataLoader(datamodule.datasets["test"], batch_size=self.batch_size, shuffle=False)
        baseline, fitted = self.baseline(datamodule, datamodule.seed)
        scores = {"model": predict(module, loader), "baseline": baseline}
        if len(scores["model"]) != len(test):
            raise RuntimeError(f"scored {len(scores['model'])} test rows, the table has {len(test)}")
        groups = group_index(test.signal, test.species, test.motif)
        rows, flat = [], {}
        for name, idx in groups.items():
            row: dict[str, Any] = {"group": name, "n": len(idx), "n_true": int(test.label[idx].sum())}
            for who, p in scores.items():
                for metric, value in binary_scores(p[idx], test.label[idx]).items():
                    row[f"{who}_{metric}"] = value
                    flat[f"test/{name}/{'' if who == 'model' else 'baseline_'}{metric}"] = value
            if name in fitted:
                row |= {"baseline_C": fitted[name].C_, "baseline_grid": fitted[name].grid}
                flat[f"test/{name}/baseline_C"] = fitted[name].C_
            rows.append(row)
        self._write_tables(rows, output_dir)
        for name, idx in groups.items():
            if name != "all" and "_motif_" not in name:
                self._plot_roc(name, test.label[idx], {k: v[idx] for k, v in scores.items()}, output_dir)
                self._plot_confusion(name, test.label[idx], {k: v[idx] for k, v in scores.items()}, output_dir)
        log.info("GSR test, model vs 6-mer baseline (threshold 0.5):\n" + summary_table(rows))
        return {k: v for k, v in flat.items() if np.isfinite(v)}

    @staticmethod
    def _write_tables(rows: list[dict[str, Any]], output_dir: Path) -> None:
        """One row per group; the baseline's grid is a JSON list of [C, val AUROC] (a JSON string in the CSV)."""
        fields = list(dict.fromkeys(k for r in rows for k in r))  # groups without a baseline of their own lack C
        with open(output_dir / "gsr_metrics.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields)
            writer.writeheader()
            writer.writerows({k: json.dumps(v) if isinstance(v, list) else v for k, v in r.items()} for r in rows)
        clean = [{k: _json_value(r.get(k)) for k in fields} for r in rows]
        (output_dir / "gsr_metrics.json").write_text(json.dumps(clean, indent=2))

    @staticmethod
    def _plot_roc(name: str, label: np.ndarray, scores: dict[str, np.ndarray], output_dir: Path) -> None:
        fig, ax = subplots(figsize=(5, 5))
        if np.unique(label).size == 2:
            for who, p in scores.items():
                fpr, tpr, _ = roc_curve(label, p)
                ax.plot(fpr, tpr, label=f"{who} (AUROC {binary_scores(p, label)['auroc']:.3f})")
        ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8, label="chance")
        ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC, {name} (test, n={len(label)})")
        ax.legend(loc="lower right")
        save_figure(fig, output_dir / f"roc_{name}.png", dpi=110)

    @staticmethod
    def _plot_confusion(name: str, label: np.ndarray, scores: dict[str, np.ndarray], output_dir: Path) -> None:
        fig, axes = subplots(1, len(scores), figsize=(4.2 * len(scores), 4))
        for ax, (who, p) in zip(np.atleast_1d(axes), scores.items(), strict=True):
            cm = confusion_matrix(label, (p >= 0.5).astype(int), labels=[0, 1])
            ax.imshow(cm, cmap="Blues")
            for (i, j), v in np.ndenumerate(cm):
                ax.text(j, i, str(v), ha="center", va="center", color="white" if v > cm.max() / 2 else "black")
            ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=["false", "true"], yticklabels=["false", "true"],
                   xlabel="predicted", ylabel="actual", title=f"{who}")
        fig.suptitle(f"Confusion matrices, {name} (test, threshold 0.5)")
        save_figure(fig, output_dir / f"confusion_{name}.png", dpi=110)


def _json_value(v: Any) -> Any:
    """NaN (an undefined metric, a missing grid score) as JSON null, in lists too."""
    if isinstance(v, list | tuple):
        return [_json_value(x) for x in v]
    return None if isinstance(v, float) and not np.isfinite(v) else v


def summary_table(rows: list[dict[str, Any]]) -> str:
    """Fixed-width table of the overall and per-species rows: accuracy / MCC / AUROC for model and baseline, and the
    baseline's chosen C."""
    head = f"{'group':<18}{'n':>6}  {'acc':>6}{'mcc':>7}{'auroc':>7}  | {'base acc':>8}{'mcc':>7}{'auroc':>7}{'C':>8}"
    lines = [head, "-" * len(head)]
    for r in rows:
        if "_motif_" in r["group"]:
            continue
        lines.append(
            f"{r['group']:<18}{r['n']:>6}  {r['model_acc']:>6.3f}{r['model_mcc']:>7.3f}{r['model_auroc']:>7.3f}"
            f"  | {r['baseline_acc']:>8.3f}{r['baseline_mcc']:>7.3f}{r['baseline_auroc']:>7.3f}"
            + (f"{r['baseline_C']:>8g}" if "baseline_C" in r else "")
        )
    return "\n".join(lines)

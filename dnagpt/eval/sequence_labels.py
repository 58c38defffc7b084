"""Evaluation of ``task=classification`` and ``task=regression``: the model next to the k-mer yardsticks of the GSR and
expression tasks, fitted in the same run on the same table, so every table has its yardstick.

``SequenceLabelsEvaluator(...)(module, datamodule, trainer, output_dir)`` (the ``evaluation`` hook of ``evaluate.py``):

1. scores the split with the task's own ``predict_step`` and averages the prompts (windows) of each row, as the
   task's held-out metrics do;
2. fits the yardsticks on the training rows, reading the bases the model reads (``read_sequences``: the whole
   sequence, or its first bases under ``long_sequences=truncate``). Classification: ``KmerLogistic`` on 6-mer counts
   (multinomial beyond two classes), its ``C`` chosen from a grid on the validation rows. Regression: the GC/CpG
   linear regression and the 6-mer ridge of the expression task (``fit_baselines``, its alpha chosen on the
   validation rows);
3. computes the task's metrics (accuracy, macro-F1, MCC, AUROC; R², Pearson, Spearman and squared Pearson) for each
   predictor, over all rows and per species when the table has a species column; writes ``<prefix>_metrics.csv`` and
   ``.json`` (one row per group and predictor), ``<prefix>_predictions_<split>.csv`` (per row: file, line, truth and
   each predictor's answer) and ``<prefix>_confusion_<split>.png`` or ``<prefix>_scatter_<split>.png``; logs the table
   and returns the baselines' figures as ``<split>/<baseline>_<metric>`` (the model's are the task's ``<split>/<metric>``).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dnagpt.data.sequence_labels import SequenceLabelsDataModule
from dnagpt.eval.expression import Rows, fit_baselines, plot_scatter, regression_metrics
from dnagpt.eval.kmer_baselines import KmerLogistic, check_grid
from dnagpt.tasks.sequence_labels import SequenceLabelsTask, classification_metrics, pool_rows
from dnagpt.utils.errors import ConfigError
from dnagpt.utils.plots import save_figure, subplots
from dnagpt.utils.pylogger import RankedLogger

__all__ = ["SequenceLabelsEvaluator"]

log = RankedLogger(__name__)


@torch.no_grad()
def score_rows(module: SequenceLabelsTask, datamodule: SequenceLabelsDataModule, split: str, batch_size: int,
               trainer: Any = None) -> np.ndarray:  # fmt: skip
    """Per row of ``tables[split]``: class probabilities ``(n, K)`` or the prediction in label units ``(n,)``, the
    windows of a row averaged; under the trainer's precision on the module's device."""
    was_training = module.training
    module.eval()
    context = trainer.precision_plugin.forward_context() if trainer is not None else nullcontext()
    rows, values = [], []
    with context:
        for i, batch in enumerate(datamodule.loader(split, batch_size)):
            out = module.predict_step({k: v.to(module.device) for k, v in batch.items()}, i)
            rows.append(out.pop("row").cpu())
            values.append(torch.stack([v.float().cpu() for v in out.values()], dim=1))
    module.train(was_training)
    row, pooled = pool_rows(torch.cat(rows), torch.cat(values))
    n = len(datamodule.tables[split])
    if not torch.equal(row, torch.arange(n)):
        raise RuntimeError(f"scored {len(row)} distinct rows of the {split} split, which has {n}")
    return pooled.numpy() if pooled.shape[1] > 1 else pooled[:, 0].numpy()


class SequenceLabelsEvaluator:
    """Callable evaluation hook; see the module docstring. ``C``: one value or a grid chosen on validation rows."""

    def __init__(
        self,
        split: str = "test",
        kmer: int = 6,
        C: float | Sequence[float] = (0.01, 0.1, 1.0, 10.0),
        alphas: float | Sequence[float] = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0),
        batch_size: int = 32,
        prefix: str = "labels",
    ) -> None:
        self.split, self.kmer = split, kmer
        self.C, self.alphas = check_grid(C, "evaluation.C"), check_grid(alphas, "evaluation.alphas")
        if split == "val" and max(len(self.C), len(self.alphas)) > 1:
            raise ConfigError("evaluation.split=val: the baselines choose C and alpha on the val rows; give one value each")
        self.batch_size, self.prefix = batch_size, prefix

    def predictions(self, module: SequenceLabelsTask, datamodule: SequenceLabelsDataModule, trainer: Any
                    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:  # fmt: skip
        """Every predictor's answers on the split (probabilities, or values in label units) and the fitted settings."""
        seqs = {s: datamodule.read_sequences(s) for s in ("train", "val", self.split)}
        y = {s: datamodule.label_values(s) for s in seqs}
        preds = {"model": score_rows(module, datamodule, self.split, self.batch_size, trainer)}
        if datamodule.KIND == "classification":
            baseline = KmerLogistic(k=self.kmer, C=self.C, seed=datamodule.split_seed)
            baseline.fit(seqs["train"], y["train"], val=(seqs["val"], y["val"]))
            preds["kmer_logistic"] = baseline.predict_proba(seqs[self.split])
            return preds, {"kmer_logistic_C": baseline.C_, "kmer_logistic_grid": baseline.grid}
        rows = {s: Rows(seqs[s], np.zeros((len(y[s]), 0)), y[s]) for s in seqs}  # sequences only, no features
        baselines, ridge = fit_baselines(rows["train"], rows["val"], rows[self.split], k=self.kmer, alphas=self.alphas)
        return preds | baselines, {"kmer_ridge_alpha": ridge.value, "kmer_ridge_grid": ridge.grid}

    def __call__(self, module: SequenceLabelsTask, datamodule: SequenceLabelsDataModule, trainer: Any,
                 output_dir: str | Path) -> dict[str, float]:  # fmt: skip
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        datamodule.setup("test")
        table, truth = datamodule.tables[self.split], datamodule.label_values(self.split)
        preds, fitted = self.predictions(module, datamodule, trainer)
        classes = datamodule.targets.classes
        groups = {"all": np.arange(len(table))} | {
            f"species_{s}": np.flatnonzero(table.species == s) for s in sorted(set(table.species)) if s
        }
        rows: list[dict[str, Any]] = []
        for group, idx in groups.items():
            for name, p in preds.items():
                rows.append({"group": group, "predictor": name, "n": len(idx), **self._metrics(p[idx], truth[idx])})
        self._write(rows, fitted, output_dir)
        self._write_predictions(table, truth, preds, classes, output_dir)
        name = f"{self.prefix}_{'confusion' if classes else 'scatter'}_{self.split}.png"
        if classes:
            self._plot_confusion(truth, preds, classes, output_dir / name)
        else:
            title = f"{self.prefix}: predicted vs true, {self.split} split ({len(truth)} rows)"
            plot_scatter(truth, preds, output_dir / name, title, datamodule.columns["label_column"])
        log.info(f"{self.prefix}, {self.split} split, model vs yardsticks fitted on the training rows:\n{format_rows(rows)}")
        flat = {f"{self.split}/{r['predictor']}_{k}": v for r in rows if r["group"] == "all" and r["predictor"] != "model"
                for k, v in r.items() if k not in ("group", "predictor", "n")}  # fmt: skip
        flat |= {f"{self.split}/{k}": float(v) for k, v in fitted.items() if np.isscalar(v)}
        return {k: v for k, v in flat.items() if np.isfinite(v)}

    @staticmethod
    def _metrics(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
        if pred.ndim == 2:
            scores = classification_metrics(torch.as_tensor(pred, dtype=torch.float32), torch.as_tensor(truth))
            return {k: float(v) for k, v in scores.items()}
        return regression_metrics(truth, pred)

    def _write(self, rows: list[dict[str, Any]], fitted: dict[str, Any], output_dir: Path) -> None:
        with open(output_dir / f"{self.prefix}_metrics.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        clean = [{k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in r.items()} for r in rows]
        (output_dir / f"{self.prefix}_metrics.json").write_text(json.dumps({"rows": clean, "fitted": fitted}, indent=2))

    def _write_predictions(self, table: Any, truth: np.ndarray, preds: dict[str, np.ndarray], classes: Sequence[str],
                           output_dir: Path) -> None:  # fmt: skip
        """One line per row: where it was read, the truth and each predictor's answer (class, or value)."""
        with open(output_dir / f"{self.prefix}_predictions_{self.split}.csv", "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["file", "line", "true", *preds])
            for i in range(len(table)):
                if classes:
                    answers = [classes[truth[i]], *(classes[int(np.argmax(p[i]))] for p in preds.values())]
                else:
                    answers = [f"{v:.6g}" for v in (truth[i], *(p[i] for p in preds.values()))]
                writer.writerow([Path(table.path[i]).name, int(table.line[i]), *answers])

    def _plot_confusion(self, truth: np.ndarray, preds: dict[str, np.ndarray], classes: Sequence[str], path: Path) -> None:
        k = len(classes)
        fig, axes = subplots(1, len(preds), figsize=(0.55 * k * len(preds) + 3, 0.55 * k + 2.5), squeeze=False)
        for ax, (name, p) in zip(axes[0], preds.items(), strict=True):
            counts = np.zeros((k, k), dtype=int)
            np.add.at(counts, (truth, p.argmax(axis=1)), 1)
            ax.imshow(counts, cmap="Blues")
            for (i, j), v in np.ndenumerate(counts):
                ax.text(j, i, str(v), ha="center", va="center", fontsize=7,
                        color="white" if v > counts.max() / 2 else "black")  # fmt: skip
            ax.set(xticks=range(k), yticks=range(k), xlabel="predicted", ylabel="true", title=name)
            ax.set_xticklabels(classes, rotation=60, ha="right", fontsize=7)
            ax.set_yticklabels(classes, fontsize=7)
        fig.suptitle(f"{self.prefix}: confusion matrices, {self.split} split ({len(truth)} rows)")
        save_figure(fig, path, dpi=110)


def format_rows(rows: list[dict[str, Any]]) -> str:
    """Fixed-width table: one line per (group, predictor)."""
    metrics = [k for k in rows[0] if k not in ("group", "predictor", "n")]
    head = f"{'group':<22}{'predictor':<15}{'n':>6}" + "".join(f"{m:>11}" for m in metrics)
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['group']:<22}{r['predictor']:<15}{r['n']:>6}" + "".join(f"{r[m]:>11.4f}" for m in metrics))
    return "\n".join(lines)

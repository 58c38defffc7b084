"""Expression regression: the regression head at the last ``<M>`` of the prompt predicts the z-scored label.

loss = MSE(regression head at ``reg_pos``, z-scored label). The token head is not used (``compute_logits=False``);
it stays in the model, so checkpoints keep the release layout and load strictly. Prompt and batch layout:
``dnagpt/data/expression.py``.

Metrics per held-out split: ``r2`` (coefficient of determination, torchmetrics ``R2Score``), ``pearson``,
``spearman`` and ``pearson_r2`` (squared Pearson r: what Xpresso's scripts print as "R^2" and the figure the
DNAGPT paper compares with). All are invariant to the z-scoring, so they hold in label units too.

With ``data.phases=6`` a validation or test row holds its promoter's six phases: ``predict`` averages the six
predictions, so metrics stay one row per gene; the loss is the MSE of every phase (what training minimises per row).
"""

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MaxMetric, MeanMetric, PearsonCorrCoef, R2Score, SpearmanCorrCoef

from dnagpt.data.batching import mean_over_phases
from dnagpt.data.expression import ExpressionDataModule
from dnagpt.inference.prompts import ExpressionInput
from dnagpt.tasks.base import DNAGPTTask, held_out

EVAL_SPLITS = ("val", "test")


class ExpressionTask(DNAGPTTask):
    DATA_MODULE = ExpressionDataModule
    PREDICTION_INPUT = ExpressionInput
    LOGGED_METRICS = frozenset({"train/loss", "val/r2_best"}) | held_out("loss", "r2", "pearson", "pearson_r2", "spearman")

    def __init__(self, *args, monitor: str = "val/r2", mode: str = "max", **kwargs) -> None:
        super().__init__(*args, monitor=monitor, mode=mode, **kwargs)
        self.loss_mean = nn.ModuleDict({s: MeanMetric() for s in EVAL_SPLITS})
        self.r2 = nn.ModuleDict({s: R2Score() for s in EVAL_SPLITS})
        self.pearson = nn.ModuleDict({s: PearsonCorrCoef() for s in EVAL_SPLITS})
        self.spearman = nn.ModuleDict({s: SpearmanCorrCoef() for s in EVAL_SPLITS})
        self.val_r2_best = MaxMetric()

    def predict(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B,) z-scored predictions of the regression head at each prompt's last ``<M>``; the mean over the phases
        when each row holds several."""
        return mean_over_phases(self.phase_predictions(batch))

    def phase_predictions(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B,) predictions, or (B, P) when each row holds P phases (input_ids (B, P, T)), in one forward pass."""
        input_ids = batch["input_ids"]
        phases = input_ids.shape[1] if input_ids.dim() == 3 else 1
        numbers = ("values", "value_pos", "value_mask") if batch["values"].shape[1] else ()  # sequence only: none
        per_prompt = {k: batch[k].repeat_interleave(phases, dim=0) for k in (*numbers, "reg_pos")}
        out = self.model(input_ids.reshape(-1, input_ids.shape[-1]), **per_prompt, compute_logits=False)
        return out.value_pred[:, 0].float().reshape(input_ids.shape[:-1])

    def shared_step(self, batch: dict[str, torch.Tensor], split: str) -> dict[str, torch.Tensor] | None:
        phase_pred = self.phase_predictions(batch)
        target = batch["target"].float()
        loss = F.mse_loss(phase_pred, target.reshape(-1, *[1] * (phase_pred.dim() - 1)).expand_as(phase_pred))
        pred = mean_over_phases(phase_pred)
        if self.drop_nonfinite(split, {"loss": loss}):
            return None
        if split == "train":
            self.log("train/loss", loss, prog_bar=True, batch_size=len(target))
        else:
            self.loss_mean[split].update(loss.detach(), weight=len(target))
            for metric in (self.r2, self.pearson, self.spearman):
                metric[split].update(pred.detach(), target)
        return {"loss": loss, "pred": pred}

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        """The z-scored ``prediction`` (training label statistics; the mean over the phases) and ``row`` per prompt."""
        return {"row": batch["row"], "prediction": self.predict(batch)}

    def log_epoch(self, split: str) -> None:
        pearson = self.pearson[split].compute()
        metrics = {
            f"{split}/loss": self.loss_mean[split].compute(),
            f"{split}/r2": self.r2[split].compute(),
            f"{split}/pearson": pearson,
            f"{split}/pearson_r2": pearson**2,
            f"{split}/spearman": self.spearman[split].compute(),
        }
        if split == "val":
            self.val_r2_best.update(metrics["val/r2"])
            metrics["val/r2_best"] = self.val_r2_best.compute()
        self.log_dict(metrics, prog_bar=split == "val")
        for metric in (self.loss_mean, self.r2, self.pearson, self.spearman):
            metric[split].reset()

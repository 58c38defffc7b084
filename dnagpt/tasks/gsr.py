"""GSR recognition (PAS/TIS): is the signal cut out of this window real? Answered with a token, as the release does.

loss = CE over the full vocabulary of the token head at the ``<=>`` position, target ``true_id`` (``N``) for a true
signal and ``false_id`` (``A``) otherwise. Keeping the full-vocabulary head (rather than a new 2-way head) means a
released checkpoint answers zero-shot and fine-tuning starts from the head it was trained with. The score is
p(true) = softmax over the two logits [false_id, true_id]. Logits are computed at ``answer_pos`` only.

``task.readout`` says which state the token head reads: ``answer`` (the release) the state at ``<=>``; ``mean`` the mean
of the final states over the prompt up to and including ``<=>``, so every position passes its gradient straight to the
answer, as every overlapping k-mer does in the baseline's logistic regression. Both use the same head and weights (a
checkpoint's shapes do not change); the checkpoint records the read-out, and scoring one with the other is refused.

With ``data.phases=6`` a validation or test row holds its window's six phases: each is scored, ``score`` averages the
six p(true), so metrics stay one row per window; the loss is the CE of every phase (what training minimises per row).

Per-species and per-motif figures, with the k-mer baseline beside them, come from ``dnagpt.eval.gsr``.
"""

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MaxMetric, MeanMetric, MetricCollection
from torchmetrics.classification import BinaryAccuracy, BinaryAUROC, BinaryF1Score, BinaryMatthewsCorrCoef

from dnagpt.checkpointing import CKPT_KEY, Checkpoint, read_checkpoint
from dnagpt.data.batching import mean_over_phases
from dnagpt.data.gsr import GSRDataModule
from dnagpt.inference.prompts import GSRInput
from dnagpt.tasks.base import DNAGPTTask, held_out
from dnagpt.utils.errors import CheckpointError

EVAL_SPLITS = ("val", "test")
READOUTS = ("answer", "mean")


def binary_metrics() -> MetricCollection:
    return MetricCollection(
        {"acc": BinaryAccuracy(), "f1": BinaryF1Score(), "mcc": BinaryMatthewsCorrCoef(), "auroc": BinaryAUROC()}
    )


class GSRTask(DNAGPTTask):
    DATA_MODULE = GSRDataModule
    PREDICTION_INPUT = GSRInput
    LOGGED_METRICS = frozenset({"train/loss", "train/acc", "val/auroc_best"}) | held_out("loss", "acc", "f1", "mcc", "auroc")

    def __init__(self, *args, readout: str = "answer", monitor: str = "val/auroc", mode: str = "max", **kwargs) -> None:
        super().__init__(*args, monitor=monitor, mode=mode, **kwargs)
        if readout not in READOUTS:
            raise ValueError(f"task.readout={readout!r} must be one of {', '.join(READOUTS)}")
        self.readout = readout
        self.metrics = nn.ModuleDict({s: binary_metrics() for s in EVAL_SPLITS})
        self.train_acc = BinaryAccuracy()
        self.loss_mean = nn.ModuleDict({s: MeanMetric() for s in EVAL_SPLITS})
        self.val_auroc_best = MaxMetric()

    def answer_logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, V) token-head logits at each row's ``<=>`` position; (B, P, V) when each row holds P phases (input_ids
        (B, P, T)), all scored in one forward pass."""
        input_ids, answer_pos = batch["input_ids"], batch["answer_pos"]
        if (answer_pos < 0).any() or (answer_pos >= input_ids.shape[-1]).any():
            raise ValueError(f"answer_pos {answer_pos.tolist()} outside the {input_ids.shape[-1]} tokens of the batch")
        prompts = input_ids.reshape(-1, input_ids.shape[-1])
        out = self.model(prompts, compute_logits=False)
        pos = answer_pos.repeat_interleave(prompts.shape[0] // answer_pos.shape[0])  # one position for all phases
        if self.readout == "mean":
            upto = torch.arange(prompts.shape[1], device=pos.device) <= pos.unsqueeze(1)  # (N, T), padding excluded
            state = (out.hidden.float() * upto.unsqueeze(-1)).sum(1) / upto.sum(1, keepdim=True)
        else:
            state = out.hidden[torch.arange(prompts.shape[0], device=pos.device), pos]
        logits = self.model.logits(state)
        return logits.reshape(*input_ids.shape[:-1], logits.shape[-1])

    # ---- checkpoints: the read-out a fine-tuned model answers with ----------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint[CKPT_KEY]["task"] = {"readout": self.readout}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """A resumed fit (or ``load_from_checkpoint``) goes on with the read-out it was trained with, or is refused."""
        super().on_load_checkpoint(checkpoint)
        self.check_readout(((checkpoint.get(CKPT_KEY) or {}).get("task") or {}).get("readout"), "the checkpoint")

    def load_weights(self, source: str | Path | Checkpoint, key: str = "init_from") -> None:
        """As the base class; a GSR checkpoint fine-tuned with the other read-out may start a fine-tune
        (``init_from``) but is refused for scoring, where its answers would mean something else."""
        ckpt = source if isinstance(source, Checkpoint) else read_checkpoint(source, key=key)
        if key != "init_from" and ckpt.task_class == f"{type(self).__module__}.{type(self).__qualname__}":
            self.check_readout(ckpt.task_state.get("readout"), ckpt.describe(key))
        super().load_weights(ckpt, key)

    def check_readout(self, tuned: str | None, name: str) -> None:
        """``tuned`` (None for checkpoints from before the option: the release's ``answer``) must be ours."""
        tuned = tuned or "answer"
        if tuned != self.readout:
            raise CheckpointError(f"{name} was fine-tuned with task.readout={tuned}, this run asks "
                                  f"task.readout={self.readout}: use task.readout={tuned}")  # fmt: skip

    def score(self, logits: torch.Tensor) -> torch.Tensor:
        """(B,) p(true signal) from the two answer logits; the mean over the phases for (B, P, V) logits."""
        tok = self.tokenizer
        return mean_over_phases(torch.softmax(logits[..., [tok.false_id, tok.true_id]].float(), dim=-1)[..., 1])

    def shared_step(self, batch: dict[str, torch.Tensor], split: str) -> dict[str, torch.Tensor] | None:
        label = batch["label"]
        if ((label != 0) & (label != 1)).any():
            raise ValueError(f"{split} batch has labels {label.unique().tolist()}; GSR labels are 0 or 1")
        logits = self.answer_logits(batch)
        target = torch.where(label == 1, self.tokenizer.true_id, self.tokenizer.false_id)
        phases = logits.shape[1] if logits.dim() == 3 else 1
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), target.repeat_interleave(phases))
        if self.drop_nonfinite(split, {"loss": loss}):
            return None
        p_true = self.score(logits.detach())
        bs = label.shape[0]
        if split == "train":
            self.train_acc(p_true, label)
            self.log("train/loss", loss, prog_bar=True, batch_size=bs)
            self.log("train/acc", self.train_acc, batch_size=bs)
        else:
            self.loss_mean[split].update(loss.detach(), weight=bs)
            self.metrics[split].update(p_true, label)
        return {"loss": loss, "p_true": p_true}

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        """``p_true`` (the mean over the phases when a prompt holds several) and ``row`` of each prompt."""
        return {"row": batch["row"], "p_true": self.score(self.answer_logits(batch))}

    def log_epoch(self, split: str) -> None:
        values = {f"{split}/{k}": v.float() for k, v in self.metrics[split].compute().items()}
        values[f"{split}/loss"] = self.loss_mean[split].compute()
        if split == "val":
            self.val_auroc_best.update(values["val/auroc"])
            values["val/auroc_best"] = self.val_auroc_best.compute()
        self.log_dict(values, prog_bar=split == "val")
        self.metrics[split].reset()
        self.loss_mean[split].reset()

"""Fine-tuning on any labelled table: ``task=classification`` (any number of classes) and ``task=regression``.

Two read-outs (``task.readout``), the same prompts (:mod:`dnagpt.data.sequence_labels`):

* ``answer``, the release's way. Classification: the token head at ``<=>`` answers with one token per class
  (``answer_tokens``; by default ``A``/``N`` for two classes, the release's false/true, and ``<0>``..``<9>`` for up
  to ten); the loss is the cross-entropy over the whole vocabulary, as in GSR, so a released checkpoint answers
  before any fine-tuning; class probabilities are the softmax over the answer tokens' logits. Regression: the
  regression head at the closing ``<M>`` predicts the z-scored label (MSE), as in the expression task.
* ``head``: a new :class:`~dnagpt.model.heads.MLPHead` (the release's head layout) on the mean of the final states over
  the prompt's tokens, with one output per class (cross-entropy) or one value (MSE). Its weights live outside the
  network: checkpoints carry them beside it (``Checkpoint.task_weights``) and the optimizer trains them
  (:meth:`param_groups`).

The targets (class order or z-scoring, :class:`~dnagpt.data.sequence_labels.Targets`) come from the DataModule in
``setup``, are saved as a hyper-parameter (so ``load_from_checkpoint`` needs no Hydra and no data) and under
``CKPT_KEY["task"]`` (so ``init_from`` and ``evaluate.py`` restore them with the head); data whose targets differ from
a checkpoint's is refused. Validation and test collect every prompt's score with its row, average the windows of a
row (``data.long_sequences=windows``; one prompt per row otherwise) and compute the metrics per row: accuracy,
macro-F1, MCC and macro AUROC (one class against the rest, over the classes the split holds), or R², Pearson and
Spearman. ``predict_step`` returns per-prompt ``p_<label>`` columns or the ``prediction`` in label units, with ``row``;
``PREDICTION_INPUT`` (:mod:`dnagpt.inference.sequence_labels`) gives ``dnagpt.predict`` the training prompts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import CatMetric, MaxMetric, MeanMetric
from torchmetrics.functional import pearson_corrcoef, r2_score, spearman_corrcoef
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_auroc,
    multiclass_f1_score,
    multiclass_matthews_corrcoef,
)

from dnagpt.checkpointing import CKPT_KEY, Checkpoint, read_checkpoint
from dnagpt.data.sequence_labels import (
    ClassificationDataModule,
    RegressionDataModule,
    SequenceLabelsDataModule,
    Targets,
)
from dnagpt.inference.sequence_labels import ClassificationInput, RegressionInput
from dnagpt.model.heads import MLPHead
from dnagpt.tasks.base import DNAGPTTask, held_out
from dnagpt.utils.errors import CheckpointError, ConfigError
from dnagpt.utils.pylogger import RankedLogger

__all__ = ["ClassificationTask", "RegressionTask", "classification_metrics", "pool_rows"]

log = RankedLogger(__name__)

READOUTS = ("answer", "head")
EVAL_SPLITS = ("val", "test")
DIGITS = tuple(f"<{d}>" for d in range(10))  # the release's reserved digit tokens: default answers beyond two classes


def pool_rows(row: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
    """The distinct rows (sorted) and the mean of ``values`` (first dimension aligned with ``row``) over each.

    >>> r, v = pool_rows(torch.tensor([3, 1, 3]), torch.tensor([1.0, 5.0, 2.0]))
    >>> r.tolist(), v.tolist()
    ([1, 3], [5.0, 1.5])
    """
    rows, inverse = torch.unique(row, return_inverse=True)
    sums = torch.zeros((len(rows), *values.shape[1:]), dtype=values.dtype, device=values.device)
    sums.index_add_(0, inverse, values)
    counts = torch.bincount(inverse, minlength=len(rows)).to(values.dtype)
    return rows, sums / counts.view(-1, *[1] * (values.dim() - 1))


def classification_metrics(probs: Tensor, target: Tensor) -> dict[str, Tensor]:
    """Accuracy, macro-F1, MCC (argmax class) and macro AUROC of ``(n, K)`` class probabilities; AUROC averages one
    class against the rest over the classes present (NaN when the rows hold one class)."""
    k = probs.shape[1]
    target = target.long()
    per_class = multiclass_auroc(probs, target, num_classes=k, average=None)
    present = torch.bincount(target, minlength=k) > 0
    ranked = present.sum() >= 2
    return {
        "acc": multiclass_accuracy(probs, target, num_classes=k, average="micro"),
        "macro_f1": multiclass_f1_score(probs, target, num_classes=k, average="macro"),
        "mcc": multiclass_matthews_corrcoef(probs, target, num_classes=k),
        "auroc": per_class[present].mean() if ranked else torch.tensor(float("nan"), device=probs.device),
    }


def regression_scores(pred: Tensor, target: Tensor) -> dict[str, Tensor]:
    """R², Pearson and Spearman (torchmetrics) of predictions, invariant to the z-scoring; NaN below two rows (a partial
    pass, ``limit_val_batches``, may hold the windows of one row only)."""
    pred, target = pred.double(), target.double()
    if len(pred) < 2:
        return dict.fromkeys(("r2", "pearson", "spearman"), torch.tensor(float("nan"), device=pred.device))
    return {"r2": r2_score(pred, target), "pearson": pearson_corrcoef(pred, target),
            "spearman": spearman_corrcoef(pred, target)}  # fmt: skip


class SequenceLabelsTask(DNAGPTTask):
    """What both tasks share: the read-outs, the targets and their checkpoint entries, per-row held-out metrics."""

    KIND: ClassVar[str]
    BEST: ClassVar[str]  # the held-out metric whose best value is tracked as val/<BEST>_best

    def __init__(self, *args: Any, readout: str = "answer", targets: dict | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if readout not in READOUTS:
            raise ValueError(f"task.readout={readout!r} must be one of {', '.join(READOUTS)}")
        self.readout = readout
        self.targets: Targets | None = None
        self.head: MLPHead | None = None
        self.loss_mean = nn.ModuleDict({s: MeanMetric() for s in EVAL_SPLITS})
        # every held-out prompt's row, score and target; metrics are computed per row at the epoch's end
        self.collected = nn.ModuleDict({
            s: nn.ModuleDict({k: CatMetric(nan_strategy="disable") for k in ("row", "score", "target")})
            for s in EVAL_SPLITS
        })  # fmt: skip
        self.val_best = MaxMetric()
        if targets is not None:
            self.use_targets(Targets.from_dict(dict(targets)))

    # ---- targets -------------------------------------------------------------------------------------------------
    def use_targets(self, targets: Targets) -> None:
        """Adopt the class order or z-scoring; refuse one that differs from what this module already answers."""
        if targets.kind != self.KIND:
            raise CheckpointError(f"{type(self).__name__} needs {self.KIND} targets, got {targets.kind}")
        if self.targets is not None:
            if targets != self.targets:
                raise CheckpointError(
                    f"this model was fine-tuned with targets {self.targets.to_dict()}, the data has {targets.to_dict()}: "
                    "score it on data with the same labels, or fine-tune from a pre-training checkpoint"
                )
            return
        self.targets = targets
        self.hparams["targets"] = targets.to_dict()
        if self.readout == "head":
            cfg = self.model.config
            self.head = MLPHead(cfg.n_embd, cfg.n_embd, targets.n_outputs, cfg.bias)
            self.head.apply(self.model._init_weights)

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if isinstance(datamodule, SequenceLabelsDataModule) and datamodule.targets is not None:
            self.use_targets(datamodule.targets)

    def require_targets(self) -> Targets:
        if self.targets is None:
            raise RuntimeError(f"{type(self).__name__} has no targets yet: fit it on a DataModule or load a checkpoint")
        return self.targets

    def param_groups(self, weight_decay: float) -> list[dict]:
        """The network's groups (decay first), with the head's Linear weights decayed and its LayerNorm and biases not."""
        groups = super().param_groups(weight_decay)
        if self.head is not None:
            for module in self.head.modules():
                for name, p in module.named_parameters(recurse=False):
                    groups[0 if name == "weight" and isinstance(module, nn.Linear) else 1]["params"].append(p)
        return groups

    # ---- checkpoints ---------------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        targets = self.targets.to_dict() if self.targets is not None else None
        checkpoint[CKPT_KEY]["task"] = {"kind": self.KIND, "readout": self.readout, "targets": targets}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        recorded = (checkpoint.get(CKPT_KEY) or {}).get("task") or {}
        if recorded.get("targets"):
            self.use_targets(Targets.from_dict(recorded["targets"]))

    def load_weights(self, source: str | Path | Checkpoint, key: str = "init_from") -> None:
        """The network's weights, then (from a checkpoint of this task and read-out) its targets and head. A checkpoint
        fine-tuned with another task or read-out gives only its network to ``init_from`` and is refused for scoring."""
        ckpt = source if isinstance(source, Checkpoint) else read_checkpoint(source, key=key)
        super().load_weights(ckpt, key)
        recorded = ckpt.task_state
        if not recorded.get("targets"):
            return
        kind, readout = recorded.get("kind"), recorded.get("readout")
        if (kind, readout) != (self.KIND, self.readout):
            tuned = f"{ckpt.describe(key)} was fine-tuned for task={kind} with task.readout={readout}"
            if key != "init_from":  # scoring it: the head it was trained with must answer
                raise CheckpointError(f"{tuned}, this run asks task={self.KIND} task.readout={self.readout}: use those")
            log.info(f"{tuned}: only the network is taken")
            return
        self.use_targets(Targets.from_dict(recorded["targets"]))
        if self.head is not None:
            head = {k.removeprefix("head."): v for k, v in ckpt.task_weights.items() if k.startswith("head.")}
            try:
                self.head.load_state_dict(head, strict=True)
            except RuntimeError as err:
                raise CheckpointError(f"{ckpt.describe(key)}: its head does not fit: {' '.join(str(err).split())}") from None

    # ---- read-outs -----------------------------------------------------------------------------------------------
    def pooled(self, batch: dict[str, Tensor]) -> Tensor:
        """(B, D) mean of the final states over each prompt's tokens (padding excluded)."""
        hidden = self.model(batch["input_ids"], compute_logits=False).hidden
        mask = batch["attention_mask"].to(hidden.dtype).unsqueeze(-1)
        return (hidden * mask).sum(1) / mask.sum(1)

    def score_and_loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Per prompt the score the metrics read (class probabilities or z-scored prediction) and the batch loss."""
        raise NotImplementedError

    def metrics(self, score: Tensor, target: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError

    # ---- steps ---------------------------------------------------------------------------------------------------
    def shared_step(self, batch: dict[str, Tensor], split: str) -> dict[str, Tensor] | None:
        self.require_targets()
        score, loss = self.score_and_loss(batch)
        if self.drop_nonfinite(split, {"loss": loss}):
            return None
        n = len(batch["row"])
        if split == "train":
            self.log("train/loss", loss, prog_bar=True, batch_size=n)
            self.log_train(score.detach(), batch["target"], n)
        else:
            self.loss_mean[split].update(loss.detach(), weight=n)
            parts = self.collected[split]
            parts["row"].update(batch["row"])
            parts["score"].update(score.detach().float())
            parts["target"].update(batch["target"])
        return {"loss": loss, "score": score}

    def log_train(self, score: Tensor, target: Tensor, n: int) -> None:
        """Training metrics of the batch besides the loss (none by default)."""

    def log_epoch(self, split: str) -> None:
        parts = self.collected[split]
        row, score, target = (parts[k].compute() for k in ("row", "score", "target"))
        _, score = pool_rows(row.long(), score)
        _, target = pool_rows(row.long(), target.float())  # every prompt of a row carries the row's target
        values = {f"{split}/{k}": v.float() for k, v in self.metrics(score, target).items()}
        values[f"{split}/loss"] = self.loss_mean[split].compute()
        if split == "val":
            self.val_best.update(values[f"val/{self.BEST}"])
            values[f"val/{self.BEST}_best"] = self.val_best.compute()
        self.log_dict(values, prog_bar=split == "val")
        self.loss_mean[split].reset()
        for metric in parts.values():
            metric.reset()


class ClassificationTask(SequenceLabelsTask):
    DATA_MODULE = ClassificationDataModule
    PREDICTION_INPUT = ClassificationInput
    KIND = "classification"
    BEST = "auroc"
    LOGGED_METRICS = frozenset({"train/loss", "train/acc", "val/auroc_best"}) | held_out(
        "loss", "acc", "macro_f1", "mcc", "auroc"
    )

    def __init__(
        self, *args: Any, answer_tokens: list[str] | None = None, monitor: str = "val/auroc", mode: str = "max",
        **kwargs: Any,
    ) -> None:  # fmt: skip
        super().__init__(*args, monitor=monitor, mode=mode, **kwargs)
        self.answer_tokens = list(answer_tokens) if answer_tokens is not None else None
        if self.answer_tokens is not None:
            for token in self.answer_tokens:
                self.tokenizer.token_id(token)  # an unknown token is an InputError (a ValueError) naming it

    def answer_ids(self) -> Tensor:
        """The token answering each class, in class order."""
        n = self.require_targets().n_outputs
        tok = self.tokenizer
        if self.answer_tokens is not None:
            if len(self.answer_tokens) != n or len(set(self.answer_tokens)) != n:
                raise ConfigError(f"task.answer_tokens={self.answer_tokens} must name {n} distinct tokens, one per class "
                                  f"({', '.join(self.targets.classes)})")  # fmt: skip
            ids = [tok.token_id(t) for t in self.answer_tokens]
        elif n == 2:
            ids = [tok.false_id, tok.true_id]  # the release: A = false (first class), N = true (second class)
        elif n <= len(DIGITS):
            ids = [tok.token_id(d) for d in DIGITS[:n]]
        else:
            raise ConfigError(f"{n} classes but only {len(DIGITS)} default answer tokens: give task.answer_tokens "
                              "(one token per class) or use task.readout=head")  # fmt: skip
        return torch.tensor(ids, device=self.device)

    def class_logits(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor | None]:
        """(B, K) class logits; with the answer read-out also the (B, D) states at ``<=>`` (for the full-vocabulary loss)."""
        if self.readout == "head":
            return self.head(self.pooled(batch)), None
        hidden = self.model(batch["input_ids"], compute_logits=False).hidden
        state = hidden[torch.arange(len(hidden), device=hidden.device), batch["answer_pos"]]
        return self.model.logits_at(state, self.answer_ids()), state

    def score_and_loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        logits, state = self.class_logits(batch)
        target = batch["target"].long()
        if state is None:
            loss = F.cross_entropy(logits.float(), target)
        else:
            loss = self.model.token_loss(state, self.answer_ids()[target])
        return torch.softmax(logits.float(), dim=-1), loss

    def metrics(self, score: Tensor, target: Tensor) -> dict[str, Tensor]:
        return classification_metrics(score, target)

    def log_train(self, score: Tensor, target: Tensor, n: int) -> None:
        self.log("train/acc", (score.argmax(-1) == target).float().mean(), batch_size=n)

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Tensor]:
        """``p_<label>`` (probability of each class) and ``row`` per prompt."""
        probs = torch.softmax(self.class_logits(batch)[0].float(), dim=-1)
        out = {f"p_{label}": probs[:, i] for i, label in enumerate(self.require_targets().classes)}
        return out | {"row": batch["row"].long()}


class RegressionTask(SequenceLabelsTask):
    DATA_MODULE = RegressionDataModule
    PREDICTION_INPUT = RegressionInput
    KIND = "regression"
    BEST = "r2"
    LOGGED_METRICS = frozenset({"train/loss", "val/r2_best"}) | held_out("loss", "r2", "pearson", "spearman")

    def __init__(self, *args: Any, monitor: str = "val/r2", mode: str = "max", **kwargs: Any) -> None:
        super().__init__(*args, monitor=monitor, mode=mode, **kwargs)

    def predict_z(self, batch: dict[str, Tensor]) -> Tensor:
        """(B,) z-scored predictions."""
        if self.readout == "head":
            return self.head(self.pooled(batch))[:, 0].float()
        out = self.model(batch["input_ids"], reg_pos=batch["answer_pos"][:, None], compute_logits=False)
        return out.value_pred[:, 0].float()

    def score_and_loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        pred = self.predict_z(batch)
        return pred, F.mse_loss(pred, batch["target"].float())

    def metrics(self, score: Tensor, target: Tensor) -> dict[str, Tensor]:
        return regression_scores(score, target)

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Tensor]:
        """``prediction`` in the label's units and ``row`` per prompt."""
        targets = self.require_targets()
        return {"prediction": self.predict_z(batch) * targets.std + targets.mean, "row": batch["row"].long()}

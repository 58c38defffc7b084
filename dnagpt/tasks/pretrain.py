"""Pre-training: next-token prediction + sequence-order prediction + GC-content regression (DNAGPT paper).

loss = CE(next DNA token) + w_order · CE(order answer) + λ · MSE(GC content), λ = 0.01 by default.

The batch layout is documented in ``docs/pretraining_samples.md``. Labels arrive already shifted (``labels[:, t]`` is the
target of ``logits[:, t]``), with −100 on everything that is not a DNA token, so the token loss never sees prompts or pads.
The order answer (``N`` = reversed, ``A`` = forward) is read from the token head at ``order_pos``; the GC value is read from
the regression head at each ``<M>``, which by construction never sees the value inserted after it.

``{val,test}/bits_per_base`` is the token cross-entropy summed over the target tokens, in bits, divided by the bases
those tokens spell (``KmerTokenizer.bases_per_token``: 6 for a 6-mer, fewer for a tail k-mer); only DNA tokens are
targets here, so no special token enters it. It is measured on the held-out windows as the model sees them: half of
them reversed (the order task), which is also the mix the Markov yardstick (``dnagpt.model.markov``) is fitted on.
"""

import math

import torch
import torch.nn.functional as F
from lightning.pytorch import Callback
from torch import nn
from torchmetrics import MeanMetric, MinMetric, R2Score
from torchmetrics.classification import BinaryAccuracy

from dnagpt.data.pretrain import PretrainDataModule
from dnagpt.tasks.base import DNAGPTTask, held_out
from dnagpt.tasks.yardsticks import MarkovYardstick, Order0Baseline
from dnagpt.tokenizer import IGNORE_INDEX

EVAL_SPLITS = ("val", "test")  # train reports per-step values; held-out splits accumulate over the epoch


class PretrainTask(DNAGPTTask):
    DATA_MODULE = PretrainDataModule
    LOGGED_METRICS = frozenset(
        {"train/loss", "train/token_loss", "train/order_loss", "train/gc_loss", "val/loss_best"}
        | {"train/order0_entropy", "val/order0_ce", "val/order0_bits_per_base"}  # the yardsticks of configure_callbacks
    ) | held_out("loss", "token_loss", "bits_per_base", "ppl", "order_acc", "gc_r2", "markov_bits_per_base", "markov_order")

    def __init__(
        self, *args, reg_loss_weight: float = 0.01, order_loss_weight: float = 1.0, markov_max_order: int | None = 10,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.reg_loss_weight = reg_loss_weight
        self.order_loss_weight = order_loss_weight
        self.markov_max_order = markov_max_order
        # one metric object per split (torchmetrics must not be shared across splits)
        self.loss_mean = nn.ModuleDict({s: MeanMetric() for s in EVAL_SPLITS})
        self.token_loss_mean = nn.ModuleDict({s: MeanMetric() for s in EVAL_SPLITS})
        self.bits_per_base = nn.ModuleDict({s: MeanMetric() for s in EVAL_SPLITS})  # weighted by bases
        self.register_buffer("bases_of", torch.as_tensor(self.tokenizer.bases_per_token), persistent=False)
        self.order_acc = nn.ModuleDict({s: BinaryAccuracy() for s in EVAL_SPLITS})
        self.gc_r2 = nn.ModuleDict({s: R2Score() for s in EVAL_SPLITS})
        self.val_loss_best = MinMetric()

    def configure_callbacks(self) -> list[Callback]:
        """The yardsticks of the token loss (``dnagpt.tasks.yardsticks``): part of the task, so they are there whatever
        ``callbacks=`` the run picks. ``markov_max_order=null`` leaves the Markov one out."""
        markov = [] if self.markov_max_order is None else [MarkovYardstick(self.markov_max_order)]
        return [Order0Baseline(), *markov]

    def model_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = self.model(
            batch["input_ids"],
            values=batch["values"],
            value_pos=batch["value_pos"],
            value_mask=batch["value_mask"],
            reg_pos=batch["value_pos"],
            compute_logits=False,
        )
        labels = batch["labels"]
        target = labels != IGNORE_INDEX
        n_targets = target.sum()
        if n_targets == 0:
            raise ValueError(f"a pre-training batch has no DNA target token (all labels are {IGNORE_INDEX})")
        # the token loss only where there is a target, through the fused chunked head: no (N, V) logits
        token_loss = self.model.token_loss(out.hidden[target], labels[target])
        n_bases = self.bases_of[labels[target]].sum()

        rows = torch.arange(labels.shape[0], device=labels.device)
        order_logits = self.model.logits(out.hidden[rows, batch["order_pos"]])  # (B, V)
        tok = self.tokenizer
        answer = torch.where(batch["order_label"] == 1, tok.true_id, tok.false_id)
        order_loss = F.cross_entropy(order_logits, answer)
        p_reversed = torch.softmax(order_logits[:, [tok.false_id, tok.true_id]].float(), dim=-1)[:, 1]

        vmask = batch["value_mask"]
        gc_pred = out.value_pred[vmask].float()
        gc_true = batch["values"][vmask].float()
        gc_loss = F.mse_loss(gc_pred, gc_true) if gc_true.numel() else gc_pred.new_zeros(())

        loss = token_loss + self.order_loss_weight * order_loss + self.reg_loss_weight * gc_loss
        return {
            "loss": loss, "token_loss": token_loss, "order_loss": order_loss, "gc_loss": gc_loss,
            "n_targets": n_targets, "n_bases": n_bases, "p_reversed": p_reversed, "gc_pred": gc_pred, "gc_true": gc_true,
        }

    @staticmethod
    def total_bits(res: dict[str, torch.Tensor]) -> torch.Tensor:
        """A :meth:`model_step`'s token cross-entropy summed over its targets, in bits (÷ ``n_bases``: bits per base)."""
        return res["token_loss"] * res["n_targets"] / math.log(2)

    def shared_step(self, batch: dict[str, torch.Tensor], split: str) -> dict[str, torch.Tensor] | None:
        res = self.model_step(batch)
        if self.drop_nonfinite(split, {name: res[name] for name in ("token_loss", "order_loss", "gc_loss", "loss")}):
            return None
        if split == "train":
            bs = batch["input_ids"].shape[0]
            self.log("train/loss", res["loss"], prog_bar=True, batch_size=bs)
            for name in ("token_loss", "order_loss", "gc_loss"):
                self.log(f"train/{name}", res[name], batch_size=bs)
            return res
        self.loss_mean[split].update(res["loss"].detach())
        self.token_loss_mean[split].update(res["token_loss"].detach(), weight=res["n_targets"])
        self.bits_per_base[split].update(self.total_bits(res).detach() / res["n_bases"], weight=res["n_bases"])
        self.order_acc[split].update(res["p_reversed"].detach(), batch["order_label"])
        if res["gc_true"].numel():
            self.gc_r2[split].update(res["gc_pred"].detach(), res["gc_true"])
        return res

    def log_epoch(self, split: str) -> None:
        token_loss = self.token_loss_mean[split].compute()
        metrics = {
            f"{split}/loss": self.loss_mean[split].compute(),
            f"{split}/token_loss": token_loss,
            f"{split}/bits_per_base": self.bits_per_base[split].compute(),
            f"{split}/ppl": torch.exp(token_loss),
            f"{split}/order_acc": self.order_acc[split].compute(),
        }
        if self.gc_r2[split].update_count > 0:
            metrics[f"{split}/gc_r2"] = self.gc_r2[split].compute()
        if split == "val":
            self.val_loss_best.update(metrics["val/loss"])
            metrics["val/loss_best"] = self.val_loss_best.compute()
        self.log_dict(metrics, prog_bar=split == "val")
        for metric in (self.loss_mean, self.token_loss_mean, self.bits_per_base, self.order_acc, self.gc_r2):
            metric[split].reset()

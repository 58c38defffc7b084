"""Artificial human genomes: next-token language modelling of haplotype sentences (``<R>`` + allele k-mers).

The batch comes from ``dnagpt.data.genomes``: labels are already shifted, −100 where there is no target. The token
head runs only on positions with a target. ``val/ppl`` is per k-mer token: its floor is set by how predictable six
linked alleles are, not by the 19,564-word vocabulary (generation is constrained to the 64 valid k-mers anyway).
"""

import torch
from torch import nn
from torchmetrics import MeanMetric, MinMetric

from dnagpt.data.genomes import GenomesDataModule
from dnagpt.tasks.base import DNAGPTTask, held_out
from dnagpt.tokenizer import IGNORE_INDEX

EVAL_SPLITS = ("val", "test")


class GenomesTask(DNAGPTTask):
    DATA_MODULE = GenomesDataModule
    LOGGED_METRICS = frozenset({"train/loss", "val/loss_best"}) | held_out("loss", "ppl")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.loss_mean = nn.ModuleDict({s: MeanMetric() for s in EVAL_SPLITS})
        self.val_loss_best = MinMetric()

    def shared_step(self, batch: dict[str, torch.Tensor], split: str) -> dict[str, torch.Tensor] | None:
        labels = batch["labels"]
        target = labels != IGNORE_INDEX
        n_targets = target.sum()
        if n_targets == 0:
            raise ValueError(f"a genomes batch has no target token (all labels are {IGNORE_INDEX})")
        hidden = self.model(batch["input_ids"], compute_logits=False).hidden
        loss = self.model.token_loss(hidden[target], labels[target])
        if self.drop_nonfinite(split, {"loss": loss}):
            return None
        if split == "train":
            self.log("train/loss", loss, prog_bar=True, batch_size=labels.shape[0])
        else:
            self.loss_mean[split].update(loss.detach(), weight=n_targets)
        return {"loss": loss}

    def log_epoch(self, split: str) -> None:
        loss = self.loss_mean[split].compute()
        metrics = {f"{split}/loss": loss, f"{split}/ppl": torch.exp(loss)}
        if split == "val":
            self.val_loss_best.update(loss)
            metrics["val/loss_best"] = self.val_loss_best.compute()
        self.log_dict(metrics, prog_bar=split == "val")
        self.loss_mean[split].reset()

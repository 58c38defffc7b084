"""Yardsticks of the pre-training token loss, measured beside the model on the data it trains and is scored on.

- :class:`Order0Baseline`: the unigram of the 6-mer tokens (the level of a model that learned only k-mer frequencies).
- :class:`MarkovYardstick`: the classic DNA-compression yardstick, an order-k Markov model per base
  (``dnagpt.model.markov``) fitted on the training regions and scored on the very held-out windows the model is scored
  on, in bits per base. The windows are read as the model reads them (half reversed for the order task), so the model
  is fitted on the same mix: the training regions forward and reversed. ``k`` and the smoothing ``β`` are chosen on the
  validation windows; the test windows are scored once with that choice. The counts are cached on disk beside the
  encoded genomes, keyed by the training regions, so a corpus is counted once.
"""

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from dnagpt.checkpointing import atomic_path
from dnagpt.model.markov import MarkovModel, choose_order
from dnagpt.utils.locks import writer_lock
from dnagpt.utils.pylogger import RankedLogger

log = RankedLogger(__name__)


class Order0Baseline(Callback):
    """The order-0 yardstick of the token loss, measured on the very batches the model trains and validates on.

    ``train/order0_entropy`` is the entropy (nats) of the unigram distribution of every training target seen so far;
    ``val/order0_ce`` is the cross-entropy of that distribution (add-one smoothed) on the validation targets. A model
    that learned only k-mer frequencies has ``val/token_loss`` ≈ ``val/order0_ce``; learning context takes it below.
    ``val/order0_bits_per_base`` is the same cross-entropy per base (the module's ``bases_of``: bases per token id).
    """

    def __init__(self, labels_key: str = "labels") -> None:
        self.labels_key = labels_key
        self.train_counts: torch.Tensor | None = None
        self.val_counts: torch.Tensor | None = None

    def _count(self, counts: torch.Tensor | None, batch: dict, trainer: Trainer, vocab_size: int) -> torch.Tensor:
        """Add this batch's target counts of every rank (all ranks then hold the same counts, as one process would)."""
        labels = batch[self.labels_key]
        new = torch.bincount(labels[labels >= 0].flatten(), minlength=vocab_size)
        new = trainer.strategy.reduce(new, reduce_op="sum").cpu() if trainer.world_size > 1 else new.cpu()
        return new if counts is None else counts + new

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx) -> None:
        self.train_counts = self._count(self.train_counts, batch, trainer, pl_module.model.config.vocab_size)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if not trainer.sanity_checking:
            self.val_counts = self._count(self.val_counts, batch, trainer, pl_module.model.config.vocab_size)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.train_counts is None or self.val_counts is None:
            return
        p_train = self.train_counts.double() / self.train_counts.sum()
        entropy = -(p_train[p_train > 0] * p_train[p_train > 0].log()).sum()
        smoothed = (self.train_counts.double() + 1) / (self.train_counts.sum() + len(self.train_counts))
        cross_entropy = -(self.val_counts.double() * smoothed.log()).sum() / self.val_counts.sum()
        bases = (self.val_counts.double() * pl_module.bases_of.cpu().double()).sum()
        bits_per_base = -(self.val_counts.double() * smoothed.log()).sum() / (bases * math.log(2))
        metrics = {"train/order0_entropy": entropy.float(), "val/order0_ce": cross_entropy.float(),
                   "val/order0_bits_per_base": bits_per_base.float()}  # fmt: skip
        pl_module.log_dict(metrics)  # the counts are every rank's: the same value on all ranks
        self.val_counts = None

    def state_dict(self) -> dict:
        return {"train_counts": self.train_counts}

    def load_state_dict(self, state_dict: dict) -> None:
        self.train_counts = state_dict["train_counts"]


def markov_cache_file(cache_dir: str | Path, sequences: list[np.ndarray], max_order: int) -> Path:
    """Where the counts of ``sequences`` up to ``max_order`` are kept, named by their digest."""
    key = hashlib.sha256(json.dumps([max_order, [[len(s), hashlib.sha256(s).hexdigest()] for s in sequences]])
                         .encode()).hexdigest()[:20]  # fmt: skip
    return Path(cache_dir) / "markov" / f"{key}.npz"


def fitted_markov(datamodule, max_order: int) -> MarkovModel:
    """The Markov counts of the data module's training regions, forward and reversed (the mix the model reads), up to
    ``max_order``; cached under ``datamodule.cache_dir`` (``markov_cache_file``), so a resume does not count again."""
    sequences = list(datamodule.training_sequences())
    path = markov_cache_file(datamodule.cache_dir, sequences, max_order)
    model = MarkovModel(max_order)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        with writer_lock(path, "counting"):  # the ranks of a DDP run share the cache: one counts, the others wait
            if not path.is_file():
                model.fit(sequences + [s[::-1] for s in sequences])
                with atomic_path(path) as partial, open(partial, "wb") as fh:
                    np.savez(fh, **{f"order{j}": c for j, c in enumerate(model.counts)})
                log.info(f"Markov yardstick: counted {model.n_bases:,} bases (training regions, forward and reversed)")
                return model
    with np.load(path) as saved:
        model.counts = [saved[f"order{j}"] for j in range(max_order + 1)]
    return model


class MarkovYardstick(Callback):
    """``{val,test}/markov_bits_per_base`` (and the chosen ``markov_order``) beside the model's ``bits_per_base``."""

    def __init__(self, max_order: int = 10) -> None:
        self.max_order = max_order
        self.model: MarkovModel | None = None
        self.order: int | None = None
        self.beta: float | None = None
        self.scores: dict[str, float] = {}

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.model is not None:
            return
        datamodule = trainer.datamodule
        self.model = fitted_markov(datamodule, self.max_order)
        self.order, self.beta, grid = choose_order(self.model, datamodule.heldout_sequences("val"))
        self.scores = {"val": grid[(self.order, self.beta)]}
        log.info(
            f"Markov yardstick: order {self.order}, beta {self.beta}, {self.scores['val']:.4f} bits per base on the "
            f"validation windows; by order (beta {self.beta}): "
            + ", ".join(f"{j}: {grid[(j, self.beta)]:.4f}" for j in range(self.max_order + 1))
        )

    def _log(self, pl_module: LightningModule, split: str) -> None:
        if split not in self.scores:
            self.scores[split] = self.model.bits_per_base(
                pl_module.trainer.datamodule.heldout_sequences(split), self.order, self.beta
            )
        pl_module.log_dict({f"{split}/markov_bits_per_base": self.scores[split],
                            f"{split}/markov_order": float(self.order)})  # fmt: skip

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._log(pl_module, "val")

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._log(pl_module, "test")

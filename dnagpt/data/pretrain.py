"""``PretrainDataModule``: the pre-training data of a genome corpus, from config check to resumable loaders.

The constructor validates what is cheap (the corpus config, that each species' FASTA exists, the species names, the
counts), so a bad ``corpus`` or ``data`` config fails before anything is built. ``prepare_data`` encodes each FASTA
once (``dnagpt.data.fasta``); ``setup`` plans each species' regions and cuts its shards; the loaders serve the streams
of ``dnagpt.data.pretrain_stream``, where the order of the windows is documented.

Resuming: ``state_dict()`` holds the number of training batches this rank has consumed. It is counted in
``on_after_batch_transfer`` when ``trainer.training``: Lightning calls that hook on the batch it is about to train on,
so batches the DataLoader prefetched but never trained are not counted (counting in ``__iter__`` would be off by the
prefetch depth). The stream replays that many batches exactly, provided seed, world size, workers and batch size are
the same (a mismatch is warned about).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from dnagpt.data.batching import ignore_preemption_signals, per_device_batch_size
from dnagpt.data.corpus import Corpus, SpeciesPlan, plan_species
from dnagpt.data.fasta import EncodedGenome, build_cache
from dnagpt.data.pretrain_stream import (
    HeldoutItem,
    PretrainStreamDataset,
    PretrainWindowDataset,
    SpeciesShards,
    heldout_windows,
    make_shards,
)
from dnagpt.data.samples import SampleBuilder
from dnagpt.utils.errors import ConfigError, InputError
from dnagpt.utils.pylogger import RankedLogger

__all__ = ["PretrainDataModule"]

log = RankedLogger(__name__)


class PretrainDataModule(L.LightningDataModule):
    """Pre-training data from a genome corpus: encoded caches, a rank x worker sharded stream, fixed val/test windows.

    ``batch_size`` is global (divided by the world size in ``setup``); ``block_size`` is the model's ``block_size``
    (the expanded sentence length).
    """

    def __init__(
        self,
        corpus: Mapping[str, Any] | DictConfig,
        tokenizer,
        block_size: int,
        batch_size: int,
        num_workers: int = 0,
        seed: int = 0,
        cache_dir: str | Path = "data/cache",
        reverse_prob: float = 0.5,
        gc_prompts: int = 2,
        min_segment_tokens: int = 8,
        shard_windows: int = 16,
        val_windows: int = 64,
        test_windows: int = 64,
        pin_memory: bool = False,
    ) -> None:
        super().__init__()
        self.corpus = Corpus.from_config(corpus)
        self.tokenizer = tokenizer
        self.builder = SampleBuilder(
            tokenizer,
            block_size,
            reverse_prob,
            gc_prompts,
            min_segment_tokens,
            rc_augment=self.corpus.rc_augment,
        )
        for sp in self.corpus.species:
            try:
                tokenizer.species_id(sp.name)
            except ValueError as err:
                raise ConfigError(f"corpus {self.corpus.name}: species.{sp.name}: {err}") from None
        at_least = {"batch_size": (batch_size, 1), "shard_windows": (shard_windows, 1), "num_workers": (num_workers, 0)}
        at_least |= {"val_windows": (val_windows, 1), "test_windows": (test_windows, 1)}
        bad = [f"data.{key}={value} must be >= {low}" for key, (value, low) in at_least.items() if value < low]
        if bad:
            raise ConfigError("; ".join(bad))
        self.entries = self.corpus.available_species()  # the species trained on: their files exist
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self.cache_dir = Path(cache_dir) / "genomes"
        self.shard_windows = shard_windows
        self.n_windows = {"val": val_windows, "test": test_windows}
        self.pin_memory = pin_memory
        self.local_batch_size = batch_size
        self.rank, self.world_size = 0, 1
        self.train_batches = 0  # training batches consumed on this rank: the resume cursor
        self._plans: list[SpeciesPlan] | None = None
        self._species: list[SpeciesShards] = []
        self._heldout: dict[str, list[HeldoutItem]] = {}

    # ----- lifecycle ------------------------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Encode each species' FASTA once (a no-op when its cache exists); a malformed file fails here, named."""
        for sp in self.entries:
            build_cache(sp.fasta, self.cache_dir, self.tokenizer)

    def setup(self, stage: str | None = None) -> None:
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            self.rank, self.world_size = trainer.global_rank, trainer.world_size
        self.local_batch_size = per_device_batch_size(self.batch_size, trainer)
        if self._plans is not None:
            return
        wbp = self.builder.window_bp
        plans, species = [], []
        for entry in self.entries:
            genome = EncodedGenome(build_cache(entry.fasta, self.cache_dir, self.tokenizer))
            plan = plan_species(entry, genome, self.corpus.name)
            shards, stats = make_shards(plan, wbp, self.shard_windows, self.corpus.max_n_frac)
            self._check_usable(plan, stats, shards)
            log.info(
                f"{self.corpus.name}/{entry.name}: {int(genome.lengths.sum())} bp ({int(genome.n_counts.sum())} N), "
                f"{len(shards)} shards, {stats.get('windows', 0)} training windows of {wbp} bp; skipped: "
                f"{stats.get('n_heavy_windows', 0)} windows with > {self.corpus.max_n_frac:.0%} N "
                f"({stats.get('n_heavy_shards', 0)} whole shards), {stats.get('short_regions', 0)} regions shorter "
                f"than a window ({stats.get('short_bp', 0)} bp)"
            )
            plans.append(plan)
            species.append(SpeciesShards(entry.name, self.tokenizer.species_id(entry.name), entry.weight, genome, shards))
        self._plans, self._species = plans, species
        self._check_readers()

    def _check_usable(self, plan: SpeciesPlan, stats: dict[str, int], shards: np.ndarray) -> None:
        wbp, g = self.builder.window_bp, plan.genome
        records = ", ".join(g.names[:5]) + (", ..." if len(g.names) > 5 else "")
        where = f"corpus {self.corpus.name}, species {plan.entry.name} ({g.source}, records {records})"
        if not stats.get("windows"):
            longest = max((len(r) for r in plan.train), default=0)
            raise ConfigError(
                f"{where}: the window ({wbp} bp for block_size {self.builder.block_size}) is longer than every "
                f"training region (longest {longest} bp)"
            )
        if len(shards) == 0:
            raise InputError(f"{where}: no usable window: every window has more than {self.corpus.max_n_frac:.0%} N")

    def _check_readers(self) -> None:
        n_readers = self.world_size * max(1, self.num_workers)
        for sp in self._species:
            if len(sp.shards) < n_readers:
                log.warning(
                    f"species {sp.name} has {len(sp.shards)} shards for {n_readers} readers (world x workers): readers "
                    "without one draw only the other species; lower data.shard_windows to spread it"
                )
        for gid in range(n_readers):
            if not any(len(PretrainStreamDataset.worker_shards(sp.shards, gid, n_readers)) for sp in self._species):
                raise ConfigError(
                    f"reader {gid} of {n_readers} (world_size x num_workers) would hold no shard: the corpus has too "
                    "few shards; lower data.shard_windows or data.num_workers"
                )

    # ----- dataloaders ----------------------------------------------------------------------------------------------
    def train_dataset(self) -> PretrainStreamDataset:
        self._require_setup()
        return PretrainStreamDataset(
            self._species,
            self.builder,
            seed=self.seed,
            max_n_frac=self.corpus.max_n_frac,
            rank=self.rank,
            world_size=self.world_size,
            batch_size=self.local_batch_size,
            skip_batches=self.train_batches,
        )

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            self.train_dataset(),
            batch_size=self.local_batch_size,
            num_workers=self.num_workers,
            worker_init_fn=ignore_preemption_signals,
            pin_memory=self.pin_memory,
        )

    def heldout_dataset(self, split: str) -> PretrainWindowDataset:
        return PretrainWindowDataset(self._species, self.builder, self._fixed_items(split))

    def _fixed_items(self, split: str) -> list[HeldoutItem]:
        """The ``split`` windows, drawn once: the model's loader and the yardsticks' sequences read the same list."""
        self._require_setup()
        if split not in self._heldout:
            self._heldout[split] = self._heldout_items(split)
        return self._heldout[split]

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def _eval_loader(self, split: str) -> DataLoader:
        return DataLoader(
            self.heldout_dataset(split),
            batch_size=self.local_batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            worker_init_fn=ignore_preemption_signals,
            pin_memory=self.pin_memory,
        )

    def _heldout_items(self, split: str) -> list[HeldoutItem]:
        items = heldout_windows(
            self._plans or [], self.builder, split, self.n_windows[split], self.seed, self.corpus.max_n_frac
        )
        if not items:
            raise ConfigError(
                f"corpus {self.corpus.name}: no usable {split} window: give holdout.<species>.{split} regions of at "
                f"least {self.builder.window_bp} bp with at most {self.corpus.max_n_frac:.0%} N"
            )
        return items

    def training_sequences(self) -> Iterator[np.ndarray]:
        """The bases of every training region, species by species (forward strand): what a yardstick is fitted on."""
        self._require_setup()
        for plan in self._plans:
            for region in plan.train:
                yield plan.genome.window(region.record, region.start, region.end)

    def heldout_sequences(self, split: str) -> list[np.ndarray]:
        """The bases of each ``split`` window as the model reads them (reversed where the order task drew so)."""
        return [self.builder.present(self._plans[i].genome.window(r.record, r.start, r.end), draw)
                for i, r, draw in self._fixed_items(split)]  # fmt: skip

    def _require_setup(self) -> None:
        if self._plans is None:
            raise RuntimeError("PretrainDataModule.setup() must run before its datasets are built")

    # ----- resume ---------------------------------------------------------------------------------------------------
    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        trainer = getattr(self, "trainer", None)
        if trainer is not None and trainer.training:
            self.train_batches += 1
        return batch

    def _layout(self) -> dict[str, int]:
        return {
            "seed": self.seed,
            "world_size": self.world_size,
            "num_workers": self.num_workers,
            "local_batch_size": self.local_batch_size,
        }

    def state_dict(self) -> dict[str, int]:
        return {"train_batches": self.train_batches, **self._layout()}

    def load_state_dict(self, state_dict: Mapping[str, int]) -> None:
        saved = {k: state_dict.get(k) for k in self._layout()}
        if saved != self._layout():
            log.warning(
                f"data cursor saved with {saved}, resuming with {self._layout()}: the stream continues, but it is not "
                "the one an uninterrupted run would have seen"
            )
        self.train_batches = int(state_dict["train_batches"])

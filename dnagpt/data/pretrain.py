"""Streaming pre-training data: ``GenomeStreamDataset`` (train, infinite) and ``PretrainDataModule``.

How a training window is chosen (all of it a pure function of ``seed``, the reader slot and the sample index):

* **Shards.** Each species' training regions (records minus held-out regions) are cut into shards of
  ``shard_windows * window_bp`` bases; a region's short tail joins its last shard. Shards whose windows are
  all above the N threshold (assembly gaps) are dropped at setup, and counted in the log.
* **Readers.** A reader is one DataLoader worker of one rank: ``gid = rank * num_workers + worker_id`` of
  ``G = world_size * num_workers``. It owns ``shards[gid::G]`` of every species, so readers never share a
  window.
* **Species.** Each sample draws its species by weight (renormalised over the species this reader holds), then
  takes the next window of that species' own pass. A pass ("epoch" of that species on that reader) visits the
  reader's shards in an order shuffled with ``(seed, species, gid, G, epoch)``; each shard gets a random phase
  in ``[0, window_bp)``, so windows (and their 6-mer frames) differ from pass to pass, and its windows come in
  shuffled order. Windows with more than ``max_n_frac`` N are skipped and counted; running totals are
  logged after passes 1, 2, 4, 8, ... (every pass at DEBUG).
* **Validation / test.** A fixed list of windows from the held-out regions (the phase-0 grid minus N-heavy
  windows, a seeded choice of ``val_windows`` / ``test_windows`` split over species by weight): a map-style
  dataset.

Resuming: ``state_dict()`` holds the number of training batches this rank has consumed. It is counted in
``on_after_batch_transfer`` when ``trainer.training``: Lightning calls that hook on the batch it is about to
train on, so batches the DataLoader prefetched but never trained are not counted (counting in ``__iter__``
would be off by the prefetch depth). A DataLoader hands out batches round-robin over its workers, so reader
slot ``w`` of ``W`` produced ``len(range(w, C, W))`` of ``C`` consumed batches; on resume the workers take
their slots rotated by ``C`` (the resumed loader starts with worker 0 where the old one would have asked
worker ``C % W``), and each replays its slot's consumed batches without tokenising them (species and sample
draws, window reads for the N check) and continues exactly where an uninterrupted run would, provided seed,
world size, workers and batch size are the same (a mismatch is warned about).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from dnagpt.data.batching import per_device_batch_size
from dnagpt.data.corpus import Corpus, SpeciesPlan, plan_species
from dnagpt.data.fasta import N_BYTE, EncodedGenome, Region, build_cache
from dnagpt.data.samples import SampleBuilder, SampleDraw
from dnagpt.utils.pylogger import RankedLogger

__all__ = ["PretrainDataModule", "GenomeStreamDataset", "SpeciesShards", "WindowDataset", "make_shards"]

log = RankedLogger(__name__)
worker_log = logging.getLogger(__name__)

_SPLIT_CODE = {"val": 1, "test": 2}
_VALID_CHUNK_BP = 1 << 24  # bases checked per numpy call at setup: bounded memory on any chromosome


def _to_tensors(sample: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.as_tensor(v) for k, v in sample.items()}


def _max_n(window_bp: int, max_n_frac: float) -> int:
    return int(np.floor(max_n_frac * window_bp))


def _grid_valid(genome: EncodedGenome, region: Region, window_bp: int, max_n: int) -> np.ndarray:
    """For the phase-0 grid of non-overlapping windows of ``region``: True where a window has at most
    ``max_n`` N."""
    n, step = len(region) // window_bp, max(1, _VALID_CHUNK_BP // window_bp)
    out = np.empty(n, dtype=bool)
    for k0 in range(0, n, step):
        k1 = min(n, k0 + step)
        s = region.start + k0 * window_bp
        block = genome.window(region.record, s, s + (k1 - k0) * window_bp).reshape(k1 - k0, window_bp)
        out[k0:k1] = np.count_nonzero(block == N_BYTE, axis=1) <= max_n
    return out


@dataclass
class SpeciesShards:
    """One species as the stream sees it: token id, weight, genome and shards (rows of record, start, end)."""

    name: str
    species_id: int
    weight: float
    genome: EncodedGenome
    shards: np.ndarray  # (S, 3) int64


def make_shards(
    plan: SpeciesPlan, window_bp: int, shard_windows: int, max_n_frac: float
) -> tuple[np.ndarray, dict[str, int]]:
    """Cut the training regions into shards; return them with counts for the log (windows on the phase-0
    grid)."""
    genome, max_n = plan.genome, _max_n(window_bp, max_n_frac)
    rows, stats = [], Counter()
    for region in plan.train:
        if len(region) < window_bp:
            stats["short_regions"] += 1
            stats["short_bp"] += len(region)
            continue
        valid = _grid_valid(genome, region, window_bp, max_n)
        stats["windows"] += len(valid)
        stats["n_heavy_windows"] += int((~valid).sum())
        n_shards = -(-len(valid) // shard_windows)  # ceil: the last shard holds 1..shard_windows windows
        for j in range(n_shards):
            k0, k1 = j * shard_windows, (j + 1) * shard_windows if j < n_shards - 1 else len(valid)
            end = region.start + k1 * window_bp if j < n_shards - 1 else region.end  # the tail joins the last shard
            if valid[k0:k1].any():
                rows.append((region.record, region.start + k0 * window_bp, end))
            else:
                stats["n_heavy_shards"] += 1
    return np.array(rows, dtype=np.int64).reshape(-1, 3), dict(stats)


class GenomeStreamDataset(IterableDataset):
    """Infinite stream of pre-training samples for one rank; see the module docstring for the exact order."""

    def __init__(
        self,
        species: list[SpeciesShards],
        builder: SampleBuilder,
        *,
        seed: int,
        max_n_frac: float,
        rank: int = 0,
        world_size: int = 1,
        batch_size: int = 1,
        skip_batches: int = 0,
    ) -> None:
        self.species = species
        self.builder = builder
        self.seed = seed
        self.max_n = _max_n(builder.window_bp, max_n_frac)
        self.rank, self.world_size = rank, world_size
        self.batch_size = batch_size
        self.skip_batches = skip_batches
        # windows yielded and skipped (N) per species, by the readers of this process
        self.stats: dict[str, Counter] = {"windows": Counter(), "skipped_n": Counter()}

    @staticmethod
    def worker_shards(shards: np.ndarray, gid: int, n_readers: int) -> np.ndarray:
        """The shards reader ``gid`` of ``n_readers`` owns."""
        return shards[gid::n_readers]

    def _slot(self) -> tuple[int, int, int]:
        """``(gid, G, batches to replay)`` of this process. A fresh DataLoader asks worker 0 first, but the
        next batch of the interrupted run was due from worker ``C % W``: worker ``k`` therefore plays reader
        slot ``(k + C) % W``, which produced ``len(range(slot, C, W))`` of the ``C`` consumed batches."""
        info = get_worker_info()
        worker, n_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        slot = (worker + self.skip_batches) % n_workers
        return (
            self.rank * n_workers + slot,
            self.world_size * n_workers,
            len(range(slot, self.skip_batches, n_workers)),
        )

    def _species_windows(self, i: int, gid: int, n_readers: int) -> Iterator[tuple[int, int, np.ndarray]]:
        """Endless passes over this reader's shards of species ``i``: ``(record, start, window bytes)``."""
        sp, wbp = self.species[i], self.builder.window_bp
        shards = self.worker_shards(sp.shards, gid, n_readers)
        epoch = 0
        while True:
            rng = np.random.default_rng([self.seed, i, gid, n_readers, epoch])
            yielded = 0
            for rec, s, e in shards[rng.permutation(len(shards))]:
                phase = int(rng.integers(0, wbp))
                if (e - s - phase) < wbp:
                    phase = 0
                starts = s + phase + wbp * rng.permutation((e - s - phase) // wbp)
                for start in starts:
                    window = sp.genome.window(int(rec), int(start), int(start) + wbp)
                    if np.count_nonzero(window == N_BYTE) > self.max_n:
                        self.stats["skipped_n"][sp.name] += 1
                        continue
                    yielded += 1
                    self.stats["windows"][sp.name] += 1
                    yield int(rec), int(start), window
            if yielded == 0:
                raise RuntimeError(
                    f"reader {gid}/{n_readers}: a whole pass over {len(shards)} shard(s) of species "
                    f"{sp.name} ({sp.genome.source}) gave no window with at most {self.max_n} N"
                )
            epoch += 1
            level = logging.INFO if epoch & (epoch - 1) == 0 else logging.DEBUG  # passes 1, 2, 4, 8, ...
            worker_log.log(
                level, "reader %d/%d species %s: %d passes, %d windows yielded, %d skipped (more than %d N of %d bp)",
                gid, n_readers, sp.name, epoch, self.stats["windows"][sp.name], self.stats["skipped_n"][sp.name],
                self.max_n, wbp,
            )  # fmt: skip

    def samples(self, gid: int, n_readers: int) -> Iterator[tuple[int, int, int, np.ndarray, SampleDraw]]:
        """Reader ``gid``'s stream before tokenisation: ``(species index, record, start, window, draw)``."""
        present = [i for i, sp in enumerate(self.species) if len(self.worker_shards(sp.shards, gid, n_readers))]
        if not present:
            raise ValueError(f"reader {gid} of {n_readers} holds no shard: use fewer workers or smaller shards")
        cum = np.cumsum([self.species[i].weight for i in present])
        cum /= cum[-1]
        streams = {i: self._species_windows(i, gid, n_readers) for i in present}
        rng = np.random.default_rng([self.seed, gid, n_readers])
        while True:
            i = present[min(int(np.searchsorted(cum, rng.random(), side="right")), len(present) - 1)]
            rec, start, window = next(streams[i])
            yield i, rec, start, window, self.builder.draw(rng)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        gid, n_readers, consumed = self._slot()
        to_skip = consumed * self.batch_size
        for n, (i, _, _, window, draw) in enumerate(self.samples(gid, n_readers)):
            if n >= to_skip:
                yield _to_tensors(self.builder.build(window, self.species[i].species_id, draw))


class WindowDataset(Dataset):
    """A fixed list of windows (validation / test), each with its sample draws: deterministic, map-style."""

    def __init__(
        self,
        species: list[SpeciesShards],
        builder: SampleBuilder,
        items: list[tuple[int, Region, SampleDraw]],
    ):
        self.species, self.builder, self.items = species, builder, items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, idx: int) -> dict[str, torch.Tensor]:
        i, region, draw = self.items[idx]
        sp = self.species[i]
        window = sp.genome.window(region.record, region.start, region.end)
        return _to_tensors(self.builder.build(window, sp.species_id, draw))


def _allocate(total: int, weights: list[float]) -> list[int]:
    """Split ``total`` over species by weight (largest remainder), at least one each."""
    w = np.asarray(weights, dtype=float)
    raw = total * w / w.sum()
    n = np.maximum(np.floor(raw).astype(int), 1)
    for j in np.argsort(-(raw - np.floor(raw))):
        if n.sum() >= total:
            break
        n[j] += 1
    return n.tolist()


class PretrainDataModule(L.LightningDataModule):
    """Pre-training data from a genome corpus: encoded caches, rank x worker sharded stream, fixed val/test
    windows.

    ``batch_size`` is global (divided by the world size in ``setup``); ``block_size`` is the model's
    ``block_size`` (the expanded sentence length).
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
            tokenizer.species_id(sp.name)  # an unknown species name fails here, naming it
        if batch_size < 1 or shard_windows < 1 or num_workers < 0 or val_windows < 1 or test_windows < 1:
            raise ValueError(
                "need batch_size, shard_windows, val_windows, test_windows >= 1 and num_workers >= 0; got "
                f"{batch_size}, {shard_windows}, {val_windows}, {test_windows}, {num_workers}"
            )
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
        self._heldout: dict[str, list[tuple[int, Region, SampleDraw]]] = {}

    # ----- lifecycle ----------------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Check the files (missing ones: an error with the download command) and build the encoded caches
        once."""
        for sp in self.corpus.available_species():
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
        for entry in self.corpus.available_species():
            genome = EncodedGenome(build_cache(entry.fasta, self.cache_dir, self.tokenizer))
            plan = plan_species(entry, genome, self.corpus.name)
            shards, stats = make_shards(plan, wbp, self.shard_windows, self.corpus.max_n_frac)
            self._check_usable(plan, stats, shards)
            log.info(
                f"{self.corpus.name}/{entry.name}: {int(genome.lengths.sum())} bp ({int(genome.n_counts.sum())} N), "
                f"{len(shards)} shards, {stats.get('windows', 0)} "
                f"training windows of {wbp} bp; skipped: {stats.get('n_heavy_windows', 0)} windows with > "
                f"{self.corpus.max_n_frac:.0%} N ({stats.get('n_heavy_shards', 0)} whole shards), "
                f"{stats.get('short_regions', 0)} regions shorter "
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
            raise ValueError(
                f"{where}: the window ({wbp} bp for block_size {self.builder.block_size}) is longer than "
                f"every training "
                f"region (longest {longest} bp)"
            )
        if len(shards) == 0:
            raise ValueError(f"{where}: no usable window: every window has more than {self.corpus.max_n_frac:.0%} N")

    def _check_readers(self) -> None:
        n_readers = self.world_size * max(1, self.num_workers)
        for sp in self._species:
            if len(sp.shards) < n_readers:
                log.warning(
                    f"species {sp.name} has {len(sp.shards)} shards for {n_readers} readers "
                    "(world x workers): "
                    "readers without one draw only the other species; lower data.shard_windows to spread it"
                )
        for gid in range(n_readers):
            if not any(len(GenomeStreamDataset.worker_shards(sp.shards, gid, n_readers)) for sp in self._species):
                raise ValueError(
                    f"reader {gid} of {n_readers} (world_size x num_workers) would hold no shard: the corpus "
                    "has too "
                    "few shards; lower data.shard_windows or data.num_workers"
                )

    # ----- dataloaders --------------------------------------------------------------------------------------
    def train_dataset(self) -> GenomeStreamDataset:
        self._require_setup()
        return GenomeStreamDataset(
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
            pin_memory=self.pin_memory,
        )

    def heldout_dataset(self, split: str) -> WindowDataset:
        self._require_setup()
        if split not in self._heldout:
            self._heldout[split] = self._heldout_items(split)
        return WindowDataset(self._species, self.builder, self._heldout[split])

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
            pin_memory=self.pin_memory,
        )

    def _heldout_items(self, split: str) -> list[tuple[int, Region, SampleDraw]]:
        wbp, max_n = self.builder.window_bp, _max_n(self.builder.window_bp, self.corpus.max_n_frac)
        plans = self._plans or []
        counts = _allocate(self.n_windows[split], [p.entry.weight for p in plans])
        items = []
        for i, (plan, n_wanted) in enumerate(zip(plans, counts, strict=True)):
            regions = getattr(plan, split)
            cands = [
                Region(r.record, r.start + k * wbp, r.start + (k + 1) * wbp)
                for r in regions
                for k in np.flatnonzero(_grid_valid(plan.genome, r, wbp, max_n))
            ]
            if not cands:
                log.warning(
                    f"species {plan.entry.name}: no usable {split} window "
                    f"({len(regions)} held-out region(s), "
                    f"window {wbp} bp, at most {max_n} N)"
                )
                continue
            rng = np.random.default_rng([self.seed, _SPLIT_CODE[split], i])
            picks = np.sort(rng.choice(len(cands), size=min(n_wanted, len(cands)), replace=False))
            items.extend((i, cands[k], self.builder.draw(rng)) for k in picks)
            if len(picks) < n_wanted:
                log.info(f"species {plan.entry.name}: {split} has only {len(picks)} windows ({n_wanted} asked)")
        if not items:
            raise ValueError(
                f"corpus {self.corpus.name}: no usable {split} window: give holdout.<species>.{split} "
                f"regions of at "
                f"least {wbp} bp with at most {self.corpus.max_n_frac:.0%} N"
            )
        return items

    def _require_setup(self) -> None:
        if self._plans is None:
            raise RuntimeError("PretrainDataModule.setup() must run before its datasets are built")

    # ----- resume -------------------------------------------------------------------------------------------
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
                f"data cursor saved with {saved}, resuming with {self._layout()}: the stream continues, "
                "but it is not "
                "the one an uninterrupted run would have seen"
            )
        self.train_batches = int(state_dict["train_batches"])

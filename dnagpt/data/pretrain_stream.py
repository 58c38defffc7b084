"""The pre-training windows: shards of the training regions, the infinite per-rank stream, the fixed held-out windows.

How a training window is chosen (all of it a pure function of ``seed``, the reader slot and the sample index):

* **Shards.** Each species' training regions (records minus held-out regions) are cut into shards of
  ``shard_windows * window_bp`` bases; a region's short tail joins its last shard. Shards whose windows are all above
  the N threshold (assembly gaps) are dropped at setup, and counted in the log.
* **Readers.** A reader is one DataLoader worker of one rank: ``gid = rank * num_workers + worker_id`` of
  ``G = world_size * num_workers``. It owns ``shards[gid::G]`` of every species, so readers never share a window.
* **Species.** Each sample draws its species by weight (renormalised over the species this reader holds), then takes
  the next window of that species' own pass. A pass ("epoch" of that species on that reader) visits the reader's
  shards in an order shuffled with ``(seed, species, gid, G, epoch)``; each shard gets a random phase in
  ``[0, window_bp)``, so windows (and their 6-mer frames) differ from pass to pass, and its windows come in shuffled
  order. Windows with more than ``max_n_frac`` N are skipped and counted; running totals are logged after passes 1, 2,
  4, 8, ... (every pass at DEBUG).
* **Validation / test.** A fixed list of windows from the held-out regions (the phase-0 grid minus N-heavy windows, a
  seeded choice of ``val_windows`` / ``test_windows`` split over species by weight): a map-style dataset.

Resuming (the DataModule counts the batches trained, see ``dnagpt.data.pretrain``): a DataLoader hands out batches
round-robin over its workers, so reader slot ``w`` of ``W`` produced ``len(range(w, C, W))`` of ``C`` consumed
batches. On resume the workers take their slots rotated by ``C`` (the resumed loader starts with worker 0 where the old
one would have asked worker ``C % W``), and each replays its slot's consumed batches without tokenising them (species
and sample draws, window reads for the N check) and continues exactly where an uninterrupted run would, provided seed,
world size, workers and batch size are the same.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from dnagpt.data.corpus import SpeciesPlan
from dnagpt.data.fasta import N_BYTE, EncodedGenome, Region
from dnagpt.data.samples import SampleBuilder, SampleDraw
from dnagpt.data.splits import SPLITS
from dnagpt.utils.errors import ConfigError, InputError
from dnagpt.utils.pylogger import RankedLogger

__all__ = [
    "HeldoutItem",
    "PretrainStreamDataset",
    "PretrainWindowDataset",
    "SpeciesShards",
    "heldout_windows",
    "make_shards",
]

log = RankedLogger(__name__)
worker_log = logging.getLogger(__name__)  # DataLoader workers log their passes themselves, whatever the rank

_VALID_CHUNK_BP = 1 << 24  # bases checked per numpy call at setup: bounded memory on any chromosome

HeldoutItem = tuple[int, Region, SampleDraw]  # (species index, window, its sample draws)


def _to_tensors(sample: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.as_tensor(v) for k, v in sample.items()}


def _max_n(window_bp: int, max_n_frac: float) -> int:
    """The most N a usable window of ``window_bp`` bases may hold."""
    return int(np.floor(max_n_frac * window_bp))


def _grid_valid(genome: EncodedGenome, region: Region, window_bp: int, max_n: int) -> np.ndarray:
    """True where a window of the phase-0 grid of ``region`` (non-overlapping windows) has at most ``max_n`` N."""
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
    """Cut the training regions into shards; return them with counts for the log (windows of the phase-0 grid)."""
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


class PretrainStreamDataset(IterableDataset):
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
        """``(gid, G, batches to replay)`` of this process.

        A fresh DataLoader asks worker 0 first, but the next batch of the interrupted run was due from worker
        ``C % W``: worker ``k`` therefore plays reader slot ``(k + C) % W``, which produced ``len(range(slot, C, W))``
        of the ``C`` consumed batches.
        """
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
                raise InputError(
                    f"reader {gid}/{n_readers}: a whole pass over {len(shards)} shard(s) of species {sp.name} gave no "
                    f"window with at most {self.max_n} N",
                    sp.genome.source,
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
            raise ConfigError(f"reader {gid} of {n_readers} holds no shard: use fewer workers or smaller shards")
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


class PretrainWindowDataset(Dataset):
    """A fixed list of windows (validation / test), each with its sample draws: deterministic, map-style."""

    def __init__(self, species: list[SpeciesShards], builder: SampleBuilder, items: list[HeldoutItem]) -> None:
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


def heldout_windows(
    plans: list[SpeciesPlan], builder: SampleBuilder, split: str, n_windows: int, seed: int, max_n_frac: float
) -> list[HeldoutItem]:
    """The fixed ``split`` windows, ``n_windows`` shared over species by weight (empty when no species has one).

    Each species' share is a seeded choice from the phase-0 grid of its held-out regions, minus the N-heavy windows.
    """
    wbp, max_n = builder.window_bp, _max_n(builder.window_bp, max_n_frac)
    counts = _allocate(n_windows, [p.entry.weight for p in plans])
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
                f"species {plan.entry.name}: no usable {split} window ({len(regions)} held-out region(s), "
                f"window {wbp} bp, at most {max_n} N)"
            )
            continue
        rng = np.random.default_rng([seed, SPLITS.index(split), i])
        picks = np.sort(rng.choice(len(cands), size=min(n_wanted, len(cands)), replace=False))
        items.extend((i, cands[k], builder.draw(rng)) for k in picks)
        if len(picks) < n_wanted:
            log.info(f"species {plan.entry.name}: {split} has only {len(picks)} windows ({n_wanted} asked)")
    return items

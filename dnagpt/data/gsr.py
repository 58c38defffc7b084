"""Genomic signal region (GSR) recognition batches: the prompt of each window and the DataModule that serves them.

The prompt is the one of the released DNAGPT code::

    <species> + the 600 bp window with the central signal cut out + <=>     → answer token N (true) / A (false)

Since 600 = 100 × 6, every prompt is 102 tokens and token ``1 + i`` covers bp ``6i..6i+5`` of the cut window; the signal
sat between cut-window bp 299 and 300 (0-based). All prompts have the same length, so batches need no padding.

**Phases** (``phases=6``; 1, the default, is the release prompt above): phase ``s`` of a window drops the first ``s``
and the last ``6 - s`` bp of the cut window, so each phase is 594 bp = 99 whole 6-mers (101 tokens) and the six cut
every 6-mer of the window in each of its six frames (the window holds no spare sequence to shift into). An item
then holds all six prompts (``input_ids`` of shape (6, 101)); training reads them as rows
(:class:`dnagpt.data.batching.PhaseRows`) and the task averages p(true) over the six at validation and test.

The rows come from :mod:`dnagpt.data.gsr_table` (reading, hygiene, splits); the names evaluators and scripts use are
exported here too, so ``dnagpt.data.gsr`` is the task's one data interface.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from dnagpt.data.batching import (
    SplitLoaders,
    checked_phases,
    ignore_preemption_signals,
    per_device_batch_size,
    training_rows,
)
from dnagpt.data.gsr_table import (
    SIGNALS,
    GSRTable,
    balance,
    block_split,
    deduplicate,
    random_split,
    read_gsr_tsv,
)
from dnagpt.data.splits import SPLITS, check_fractions
from dnagpt.data.tables import require_file
from dnagpt.tokenizer import KmerTokenizer
from dnagpt.utils.errors import ConfigError
from dnagpt.utils.pylogger import RankedLogger

__all__ = ["GSRDataModule", "GSRDataset", "cut_signal"]

log = RankedLogger(__name__)


def cut_signal(sequence: str, signal: str) -> str:
    """The window with its central signal removed (600 bp), as the prompt and the baseline see it.

    >>> cut_signal("A" * 300 + "AATAAA" + "C" * 300, "pas") == "A" * 300 + "C" * 300
    True
    """
    spec = SIGNALS[signal]
    return sequence[: spec.start] + sequence[spec.start + spec.length :]


def phase_windows(cut: str, phases: int) -> list[str]:
    """The ``phases`` equal-length phases of a cut window: phase ``s`` drops ``s`` bp in front and ``phases - s``
    behind; with one phase, the cut window itself.

    >>> phase_windows("ACGTACGT", 4)
    ['ACGT', 'CGTA', 'GTAC', 'TACG']
    """
    if phases == 1:
        return [cut]
    return [cut[s : s + len(cut) - phases] for s in range(phases)]


class GSRDataset(Dataset):
    """Encoded prompts of one split; every tensor is precomputed, ``__getitem__`` only indexes. With ``phases > 1``
    an item holds the prompts of every phase of its window (``input_ids`` (phases, T))."""

    def __init__(self, table: GSRTable, tokenizer: KmerTokenizer, motifs: Sequence[str], phases: int = 1) -> None:
        self.table = table
        n = len(table)
        species_ids = np.empty(n, dtype=np.int64)
        for name in np.unique(table.species):
            try:
                species_ids[table.species == name] = tokenizer.species_id(name)
            except ValueError as err:  # the tokenizer's InputError, placed at the row's file and line
                raise table.error(int(np.argmax(table.species == name)), str(err), "species") from None
        shape = (n,) if phases == 1 else (n, phases)
        dna = "".join(
            p for s, g in zip(table.sequence, table.signal, strict=True) for p in phase_windows(cut_signal(s, g), phases)
        )
        words = tokenizer.encode_dna(dna).reshape(*shape, -1) if n else np.zeros((*shape, 0), dtype=np.int64)
        species = np.broadcast_to(species_ids.reshape(n, *[1] * len(shape)), (*shape, 1))
        eq = np.full((*shape, 1), tokenizer.eq_id, dtype=np.int64)
        self.input_ids = torch.from_numpy(np.concatenate([species, words, eq], axis=-1))
        motif_index = {m: i for i, m in enumerate(motifs)}
        self.label = torch.from_numpy(table.label.astype(np.int64))
        self.species = torch.from_numpy(species_ids)
        self.motif = torch.tensor([motif_index[m] for m in table.motif], dtype=torch.long)
        self.signal = torch.tensor([list(SIGNALS).index(s) for s in table.signal], dtype=torch.long)

    def __len__(self) -> int:
        return len(self.label)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        ids = self.input_ids[i]
        return {
            "input_ids": ids,
            "attention_mask": torch.ones_like(ids, dtype=torch.bool),
            "answer_pos": torch.tensor(ids.shape[-1] - 1),  # the <=> token (of every phase): its logits predict the answer
            "label": self.label[i],
            "species": self.species[i],
            "motif": self.motif[i],
            "signal": self.signal[i],
        }


class GSRDataModule(SplitLoaders, L.LightningDataModule):
    """PAS/TIS rows → dedup → balance → split → prompts. ``motifs`` and ``tables[split]`` serve evaluators."""

    def __init__(
        self,
        tokenizer: KmerTokenizer,
        block_size: int,
        files: Mapping[str, str],
        signals: Sequence[str] = ("pas",),
        species: Mapping[str, Sequence[str] | None] | None = None,
        split: str = "random",
        fractions: Sequence[float] = (0.6, 0.15, 0.25),
        block_bp: int = 100_000,
        holdout_chromosomes: Mapping[str, Mapping[str, Sequence[str]]] | None = None,
        dedup: bool = True,
        rebalance: bool = True,
        batch_size: int = 8,
        num_workers: int = 0,
        pin_memory: bool = False,
        seed: int = 1337,
        phases: int | None = None,
        train_phases: str = "random",
    ) -> None:
        super().__init__()
        phases = checked_phases(phases, train_phases, tokenizer.k)
        unknown = [s for s in signals if s not in SIGNALS or s not in files]
        if unknown or not signals:
            raise ConfigError(f"signals {list(signals)}: each must be one of {sorted(SIGNALS)} with an entry in files")
        for signal in signals:  # read in setup; a wrong path fails here, when the config is built
            require_file(f"files.{signal}", files[signal])
        if split not in ("random", "block"):
            raise ConfigError(f"split must be 'random' or 'block', got {split!r}")
        if batch_size < 1 or num_workers < 0:
            raise ConfigError(f"need batch_size >= 1 and num_workers >= 0, got {batch_size}, {num_workers}")
        prompt_len = 2 + SIGNALS[signals[0]].cut_len // tokenizer.k
        if prompt_len > block_size:
            raise ConfigError(f"GSR prompts are {prompt_len} tokens, more than the model's block_size {block_size}")
        check_fractions(fractions)
        self.tokenizer, self.block_size = tokenizer, block_size
        self.files, self.signals = dict(files), list(signals)
        self.species = {k: (list(v) if v is not None else None) for k, v in (species or {}).items()}
        self.split, self.fractions, self.block_bp = split, list(fractions), block_bp
        self.holdout_chromosomes = holdout_chromosomes
        self.dedup, self.rebalance = dedup, rebalance
        self.batch_size, self.num_workers, self.pin_memory, self.seed = batch_size, num_workers, pin_memory, seed
        self.phases, self.train_phases = phases, train_phases
        self.local_batch_size = batch_size
        self.tables: dict[str, GSRTable] = {}
        self.datasets: dict[str, GSRDataset] = {}
        self.motifs: list[str] = []

    def load_table(self) -> GSRTable:
        """All selected rows after hygiene (dedup, balance), before splitting."""
        parts = []
        for signal in self.signals:
            table = read_gsr_tsv(self.files[signal], signal)
            wanted = self.species.get(signal)
            if wanted is not None:
                wanted = [w.lower() for w in wanted]
                present = set(table.species)
                missing = [w for w in wanted if w not in present]
                if missing:
                    raise ConfigError(
                        f"data.species.{signal}: {missing} not in {self.files[signal]} (it has {sorted(present)})"
                    )
                table = table.take(np.flatnonzero(np.isin(table.species, wanted)))
            parts.append(table)
        table = GSRTable.concat(parts)
        n0 = len(table)
        if self.dedup:
            table, dropped = deduplicate(table)
            log.info(f"GSR dedup: dropped {n0 - len(table)} of {n0} rows within species ({dict(sorted(dropped.items()))})")
        if self.rebalance:
            n1 = len(table)
            table = balance(table, self.seed)
            log.info(f"GSR balance: dropped {n1 - len(table)} rows to equalise labels per (signal, species, motif)")
        return table

    def setup(self, stage: str | None = None) -> None:
        self.local_batch_size = per_device_batch_size(self.batch_size, getattr(self, "trainer", None))
        if self.datasets:
            return
        table = self.load_table()
        if self.split == "random":
            code = random_split(table, self.fractions, self.seed)
        else:
            code = block_split(table, self.fractions, self.seed, self.block_bp, self.holdout_chromosomes)
        self.motifs = sorted(set(table.motif))
        rng = np.random.default_rng(self.seed)
        for i, name in enumerate(SPLITS):
            # rows in a seeded order, so a partial pass (limit_*_batches, max_windows) sees every species and label
            self.tables[name] = table.take(rng.permutation(np.flatnonzero(code == i)))
            self.datasets[name] = GSRDataset(self.tables[name], self.tokenizer, self.motifs, self.phases)
        sizes = {n: len(d) for n, d in self.datasets.items()}
        if min(sizes.values()) == 0:
            raise ConfigError(f"a GSR split is empty ({sizes}); add rows or change fractions/holdout_chromosomes")
        log.info(f"GSR {self.split} split sizes: {sizes}")

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        dataset = training_rows(self.datasets[split], self.phases, self.train_phases) if shuffle else self.datasets[split]
        return DataLoader(
            dataset,
            batch_size=self.local_batch_size,
            sampler=self._sampler(dataset, self.local_batch_size, shuffle),
            num_workers=self.num_workers,
            worker_init_fn=ignore_preemption_signals,
            persistent_workers=self.num_workers > 0,
            pin_memory=self.pin_memory,
        )

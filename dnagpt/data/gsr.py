"""Genomic signal region (GSR) recognition data: PAS and TIS windows, hygiene, leak-free splits, prompts.

A row is one DeepGSR-style window: 606 nt with a polyadenylation hexamer at 301-306 (PAS), or 603 nt with the ATG at
301-303 (TIS). The prompt is the one of the release (``shared/REFERENCE.md`` §4)::

    <species> + the 600 bp window with the central signal cut out + <=>     → answer token N (true) / A (false)

Since 600 = 100 × 6, every prompt is 102 tokens and token ``1 + i`` covers bp ``6i..6i+5`` of the cut window; the signal
sat between cut-window bp 299 and 300 (0-based). All prompts have the same length, so batches need no padding.

Hygiene before anything is split (pure functions over a :class:`GSRTable`, tested on their own):

* :func:`deduplicate` drops exact repeats of a sequence within a species and signal (the PAS file repeats 8,469 rows);
  a sequence listed with both labels is ambiguous and dropped entirely. Counts are logged.
* :func:`balance` downsamples the majority label within each (signal, species, motif) so dropping duplicates (almost
  all positives) does not leave a label skew behind.
* :func:`random_split` is stratified by (signal, species, label) in the paper's 6 : 1.5 : 2.5 proportions.
* :func:`block_split` keeps genomic neighbours together: overlapping windows are merged into clusters, clusters are
  grouped into ``block_bp`` position blocks, and whole blocks (or whole held-out chromosomes) go to one split, so no
  two overlapping windows ever sit on both sides (the TIS set has them: a false ATG a few codons from a true one).
"""

from __future__ import annotations

import csv
import gzip
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from dnagpt.data.batching import SplitLoaders, per_device_batch_size
from dnagpt.tokenizer import KmerTokenizer
from dnagpt.utils.pylogger import RankedLogger

__all__ = [
    "SIGNALS", "GSRDataModule", "GSRDataset", "GSRTable", "SignalSpec", "balance", "block_split", "cut_signal",
    "deduplicate", "random_split", "read_gsr_tsv",
]  # fmt: skip

log = RankedLogger(__name__)

SPLITS = ("train", "val", "test")
REQUIRED_COLUMNS = ("species", "motif", "label", "sequence")
_PAS_ID = re.compile(r"^(?P<chrom>[^:]+):(?P<start>\d+)-(?P<end>\d+)")


@dataclass(frozen=True)
class SignalSpec:
    """Geometry of one signal type: window length and where the central signal sits (0-based start, length)."""

    name: str
    window: int
    start: int
    length: int

    @property
    def cut_len(self) -> int:
        return self.window - self.length


SIGNALS: dict[str, SignalSpec] = {
    "pas": SignalSpec("PAS", window=606, start=300, length=6),
    "tis": SignalSpec("TIS", window=603, start=300, length=3),
}


@dataclass
class GSRTable:
    """Columns of GSR rows (numpy arrays of equal length); ``where`` says ``file:line`` of each row for messages.

    ``chrom``/``start``/``end`` bound the genomic span of each window (conservatively; -1 when the file has no
    coordinates): only :func:`block_split` uses them.
    """

    signal: np.ndarray
    species: np.ndarray
    motif: np.ndarray
    label: np.ndarray
    sequence: np.ndarray
    chrom: np.ndarray
    start: np.ndarray
    end: np.ndarray
    where: np.ndarray

    def __len__(self) -> int:
        return len(self.label)

    def take(self, index: np.ndarray) -> GSRTable:
        return GSRTable(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    @staticmethod
    def concat(tables: Sequence[GSRTable]) -> GSRTable:
        return GSRTable(**{f.name: np.concatenate([getattr(t, f.name) for t in tables]) for f in fields(GSRTable)})


def _open_text(path: Path):
    return gzip.open(path, "rt", newline="") if path.suffix == ".gz" else open(path, newline="")


def _coordinates(row: dict[str, str], spec: SignalSpec, where: str) -> tuple[str, int, int]:
    """(chrom, start, end) covering the window: PAS ``id`` = ``chrom:start-end(strand)``; TIS ``chrom`` + ``pos_1based``."""
    if row.get("chrom") and row.get("pos_1based") is not None:
        try:
            pos = float(row["pos_1based"])
        except ValueError:
            pos = math.nan
        if not math.isfinite(pos) or pos != int(pos):
            raise ValueError(f"{where}: column pos_1based is {row['pos_1based']!r}, not an integer position")
        half = spec.window // 2 + 1  # either strand: the window lies within pos ± half
        return row["chrom"], int(pos) - half, int(pos) + half
    m = _PAS_ID.match(row.get("id") or "")
    if m:
        return m["chrom"], int(m["start"]), int(m["end"])
    return "", -1, -1


def read_gsr_tsv(path: str | Path, signal: str) -> GSRTable:
    """Read and validate one GSR TSV (gzip or plain); any bad row is a ValueError naming file, line and column."""
    if signal not in SIGNALS:
        raise ValueError(f"unknown signal {signal!r}; choose from {sorted(SIGNALS)}")
    spec, path = SIGNALS[signal], Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GSR {signal} file {path} does not exist")
    cols: dict[str, list] = {f.name: [] for f in fields(GSRTable)}
    with _open_text(path) as fh:
        reader = csv.DictReader(fh, delimiter="\t")
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}:1: missing column(s) {missing}; the header has {reader.fieldnames}")
        for row in reader:
            where = f"{path}:{reader.line_num}"
            if None in row or any(row[c] is None for c in REQUIRED_COLUMNS):
                raise ValueError(f"{where}: expected {len(reader.fieldnames)} tab-separated fields")
            label = row["label"].strip()
            if label not in ("0", "1"):
                raise ValueError(f"{where}: column label is {label!r}; labels must be 0 or 1")
            seq = row["sequence"].strip().upper()
            if len(seq) != spec.window:
                raise ValueError(
                    f"{where}: column sequence has {len(seq)} nt; a {spec.name} window has {spec.window}"
                )
            bad = re.search(r"[^ACGTN]", seq)
            if bad:
                raise ValueError(f"{where}: column sequence has {bad.group()!r} at position {bad.start()} (ACGTN only)")
            motif = row["motif"].strip().upper()
            centre = seq[spec.start : spec.start + spec.length]
            if centre != motif:
                raise ValueError(
                    f"{where}: the window holds {centre!r} at {spec.start + 1}-{spec.start + spec.length}, "
                    f"not its motif {motif!r}"
                )
            chrom, start, end = _coordinates(row, spec, where)
            for key, value in (
                ("signal", signal), ("species", row["species"].strip().lower()), ("motif", motif),
                ("label", int(label)), ("sequence", seq), ("chrom", chrom), ("start", start), ("end", end),
                ("where", where),
            ):  # fmt: skip
                cols[key].append(value)
    if not cols["label"]:
        raise ValueError(f"{path}: no data rows")
    return GSRTable(**{
        k: np.array(v, dtype=np.int64 if k in ("label", "start", "end") else object) for k, v in cols.items()
    })  # fmt: skip


def deduplicate(table: GSRTable) -> tuple[GSRTable, Counter]:
    """Keep the first copy of each (signal, species, sequence); drop all copies of a sequence with both labels.

    Returns the table and the number of rows dropped per species (``"<species>"`` repeats, ``"<species>:conflict"``
    rows of label-conflicting sequences).
    """
    labels_of: dict[tuple, set] = {}
    for key, lab in zip(zip(table.signal, table.species, table.sequence, strict=True), table.label, strict=True):
        labels_of.setdefault(key, set()).add(int(lab))
    seen: set[tuple] = set()
    keep, dropped = np.zeros(len(table), dtype=bool), Counter()
    for i, key in enumerate(zip(table.signal, table.species, table.sequence, strict=True)):
        if len(labels_of[key]) > 1:
            dropped[f"{key[1]}:conflict"] += 1
        elif key in seen:
            dropped[key[1]] += 1
        else:
            seen.add(key)
            keep[i] = True
    return table.take(np.flatnonzero(keep)), dropped


def _groups(*keys: np.ndarray) -> dict[tuple, np.ndarray]:
    """Row indices of each distinct key tuple, in sorted key order (deterministic)."""
    out: dict[tuple, list[int]] = {}
    for i, key in enumerate(zip(*keys, strict=True)):
        out.setdefault(key, []).append(i)
    return {k: np.array(out[k], dtype=np.int64) for k in sorted(out)}


def balance(table: GSRTable, seed: int) -> GSRTable:
    """Downsample the majority label within each (signal, species, motif) to the minority count."""
    rng = np.random.default_rng(seed)
    keep = []
    for idx in _groups(table.signal, table.species, table.motif).values():
        pos, neg = idx[table.label[idx] == 1], idx[table.label[idx] == 0]
        n = min(len(pos), len(neg))
        keep += [np.sort(rng.permutation(pos)[:n]), np.sort(rng.permutation(neg)[:n])]
    return table.take(np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=np.int64))


def _check_fractions(fractions: Sequence[float]) -> np.ndarray:
    f = np.asarray(fractions, dtype=float)
    if f.shape != (3,) or (f < 0).any() or not math.isclose(f.sum(), 1.0, abs_tol=1e-6):
        raise ValueError(f"fractions must be three non-negative numbers (train, val, test) summing to 1, got {fractions}")
    return f


def random_split(table: GSRTable, fractions: Sequence[float], seed: int) -> np.ndarray:
    """Split code per row (0 train, 1 val, 2 test), stratified by (signal, species, label), deterministic for a seed."""
    f = _check_fractions(fractions)
    rng = np.random.default_rng(seed)
    split = np.zeros(len(table), dtype=np.int8)
    for idx in _groups(table.signal, table.species, table.label).values():
        idx = rng.permutation(idx)
        n_val, n_test = round(len(idx) * f[1]), round(len(idx) * f[2])
        split[idx[:n_val]] = 1
        split[idx[n_val : n_val + n_test]] = 2
    return split


def block_split(
    table: GSRTable,
    fractions: Sequence[float],
    seed: int,
    block_bp: int = 100_000,
    holdout_chromosomes: Mapping[str, Mapping[str, Sequence[str]]] | None = None,
) -> np.ndarray:
    """Split code per row with genomic neighbours kept together (see the module docstring).

    ``holdout_chromosomes`` = ``{species: {"val": [chrom, ...], "test": [...]}}``: for those species the named
    chromosomes are the val/test sets and every other chromosome is train; other species split by position blocks,
    assigned greedily in a seeded order towards the target fractions of each (signal, species).
    """
    f = _check_fractions(fractions)
    if block_bp < 1:
        raise ValueError(f"block_bp must be >= 1, got {block_bp}")
    if (table.start < 0).any():
        i = int(np.argmax(table.start < 0))
        raise ValueError(f"{table.where[i]}: no genomic coordinates (id or chrom/pos_1based); use split=random")
    holdout = {k.lower(): v for k, v in (holdout_chromosomes or {}).items()}
    rng = np.random.default_rng(seed)
    split = np.full(len(table), -1, dtype=np.int8)
    for (signal, species), idx in _groups(table.signal, table.species).items():
        if species in holdout:
            chroms = set(table.chrom[idx])
            for code, name in ((1, "val"), (2, "test")):
                unknown = set(holdout[species].get(name, [])) - chroms
                if unknown:
                    raise ValueError(f"holdout_chromosomes.{species}.{name}: {sorted(unknown)} not among {sorted(chroms)}")
                split[idx[np.isin(table.chrom[idx], list(holdout[species].get(name, [])))]] = code
            rest = idx[split[idx] < 0]
            split[rest] = 0
            continue
        blocks = _position_blocks(table.chrom[idx], table.start[idx], table.end[idx], block_bp)
        target = f * len(idx)
        have = np.zeros(3)
        for block in rng.permutation(np.unique(blocks)):
            rows = idx[blocks == block]
            code = int(np.argmax(target - have))
            split[rows] = code
            have[code] += len(rows)
        log.info(f"block split {signal}/{species}: {len(np.unique(blocks))} blocks, rows per split {have.astype(int)}")
    return split


def _position_blocks(chrom: np.ndarray, start: np.ndarray, end: np.ndarray, block_bp: int) -> np.ndarray:
    """Block id per row: overlapping windows form one cluster, and a cluster's block is that of its first base."""
    block_of = np.empty(len(chrom), dtype=np.int64)
    names: dict[tuple[str, int], int] = {}
    for c in np.unique(chrom):
        rows = np.flatnonzero(chrom == c)
        rows = rows[np.argsort(start[rows], kind="stable")]
        cluster_start, reach = None, -1
        for r in rows:
            if cluster_start is None or start[r] >= reach:  # a gap: a new cluster starts here
                cluster_start = start[r]
            reach = max(reach, end[r])
            block_of[r] = names.setdefault((c, int(cluster_start) // block_bp), len(names))
    return block_of


def cut_signal(sequence: str, signal: str) -> str:
    """The window with its central signal removed (600 bp), as the prompt and the baseline see it.

    >>> cut_signal("A" * 300 + "AATAAA" + "C" * 300, "pas") == "A" * 300 + "C" * 300
    True
    """
    spec = SIGNALS[signal]
    return sequence[: spec.start] + sequence[spec.start + spec.length :]


class GSRDataset(Dataset):
    """Encoded prompts of one split; every tensor is precomputed, ``__getitem__`` only indexes."""

    def __init__(self, table: GSRTable, tokenizer: KmerTokenizer, motifs: Sequence[str]) -> None:
        self.table = table
        n = len(table)
        species_ids = np.empty(n, dtype=np.int64)
        for name in np.unique(table.species):
            try:
                species_ids[table.species == name] = tokenizer.species_id(name)
            except ValueError as err:
                first = table.where[int(np.argmax(table.species == name))]
                raise ValueError(f"{first}: column species: {err}") from None
        cut = [cut_signal(s, g) for s, g in zip(table.sequence, table.signal, strict=True)]
        words = tokenizer.encode_dna("".join(cut)).reshape(n, -1) if n else np.zeros((0, 0), dtype=np.int64)
        eq = np.full((n, 1), tokenizer.eq_id, dtype=np.int64)
        self.input_ids = torch.from_numpy(np.concatenate([species_ids[:, None], words, eq], axis=1))
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
            "answer_pos": torch.tensor(len(ids) - 1),  # the <=> token: its logits predict the answer
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
        seed: int = 1337,
    ) -> None:
        super().__init__()
        unknown = [s for s in signals if s not in SIGNALS or s not in files]
        if unknown or not signals:
            raise ValueError(f"signals {list(signals)}: each must be one of {sorted(SIGNALS)} with an entry in files")
        if split not in ("random", "block"):
            raise ValueError(f"split must be 'random' or 'block', got {split!r}")
        if batch_size < 1 or num_workers < 0:
            raise ValueError(f"need batch_size >= 1 and num_workers >= 0, got {batch_size}, {num_workers}")
        prompt_len = 2 + SIGNALS[signals[0]].cut_len // tokenizer.k
        if prompt_len > block_size:
            raise ValueError(f"GSR prompts are {prompt_len} tokens, more than the model's block_size {block_size}")
        _check_fractions(fractions)
        self.tokenizer, self.block_size = tokenizer, block_size
        self.files, self.signals = dict(files), list(signals)
        self.species = {k: (list(v) if v is not None else None) for k, v in (species or {}).items()}
        self.split, self.fractions, self.block_bp = split, list(fractions), block_bp
        self.holdout_chromosomes = holdout_chromosomes
        self.dedup, self.rebalance = dedup, rebalance
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
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
                    raise ValueError(
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
            self.datasets[name] = GSRDataset(self.tables[name], self.tokenizer, self.motifs)
        sizes = {n: len(d) for n, d in self.datasets.items()}
        if min(sizes.values()) == 0:
            raise ValueError(f"a GSR split is empty ({sizes}); add rows or change fractions/holdout_chromosomes")
        log.info(f"GSR {self.split} split sizes: {sizes}")

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        return DataLoader(
            self.datasets[split], batch_size=self.local_batch_size, shuffle=shuffle, num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

"""The GSR table: PAS and TIS windows read and validated, cleaned (hygiene), and assigned leak-free splits.

A row is one DeepGSR-style window: 606 nt with a polyadenylation hexamer at 301-306 (PAS), or 603 nt with the ATG at
301-303 (TIS). Any bad row is an ``InputError`` naming the file, line and column (:mod:`dnagpt.data.tables` reads).

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

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from dnagpt.data.splits import balanced_fill, check_fractions, grouped_split, overlap_clusters
from dnagpt.data.tables import parse_int, tsv_rows
from dnagpt.utils.errors import ConfigError, InputError
from dnagpt.utils.pylogger import RankedLogger

__all__ = [
    "SIGNALS", "GSRTable", "SignalSpec", "balance", "block_split", "deduplicate", "random_split", "read_gsr_tsv",
]  # fmt: skip

log = RankedLogger(__name__)

REQUIRED_COLUMNS = ("species", "motif", "label", "sequence")
COORDINATE_COLUMNS = ("id", "chrom", "pos_1based")  # PAS: id = chrom:start-end(strand); TIS: chrom + pos_1based
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
    """Columns of GSR rows (numpy arrays of equal length); ``path`` and ``line`` place each row for messages.

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
    path: np.ndarray
    line: np.ndarray

    def __len__(self) -> int:
        return len(self.label)

    def take(self, index: np.ndarray) -> GSRTable:
        return GSRTable(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    @staticmethod
    def concat(tables: Sequence[GSRTable]) -> GSRTable:
        return GSRTable(**{f.name: np.concatenate([getattr(t, f.name) for t in tables]) for f in fields(GSRTable)})

    def error(self, i: int, message: str, column: str | None = None) -> InputError:
        """An ``InputError`` placed at row ``i``'s file and line."""
        return InputError(message, self.path[i], int(self.line[i]), column)


def _coordinates(row: dict[str, str], spec: SignalSpec, path: Path, line: int) -> tuple[str, int, int]:
    """(chrom, start, end) covering the window: PAS ``id`` = ``chrom:start-end(strand)``; TIS ``chrom`` + ``pos_1based``."""
    if row.get("chrom") and "pos_1based" in row:
        pos = parse_int(row["pos_1based"], path, line, "pos_1based")
        half = spec.window // 2 + 1  # either strand: the window lies within pos ± half
        return row["chrom"], pos - half, pos + half
    m = _PAS_ID.match(row.get("id") or "")
    if m:
        return m["chrom"], int(m["start"]), int(m["end"])
    return "", -1, -1


def read_gsr_tsv(path: str | Path, signal: str) -> GSRTable:
    """Read and validate one GSR TSV (gzip or plain); any bad row is an InputError naming file, line and column."""
    if signal not in SIGNALS:
        raise ConfigError(f"unknown signal {signal!r}; choose from {sorted(SIGNALS)}")
    spec, path = SIGNALS[signal], Path(path)
    cols: dict[str, list] = {f.name: [] for f in fields(GSRTable)}
    name = str(path)  # one string shared by every row
    for line, row in tsv_rows(path, REQUIRED_COLUMNS, COORDINATE_COLUMNS):
        label = row["label"].strip()
        if label not in ("0", "1"):
            raise InputError(f"{label!r} is not a label: labels are 0 or 1", path, line, "label")
        seq = row["sequence"].strip().upper()
        if len(seq) != spec.window:
            raise InputError(f"has {len(seq)} nt; a {spec.name} window has {spec.window}", path, line, "sequence")
        bad = re.search(r"[^ACGTN]", seq)
        if bad:
            raise InputError(f"has {bad.group()!r} at position {bad.start()} (ACGTN only)", path, line, "sequence")
        motif = row["motif"].strip().upper()
        centre = seq[spec.start : spec.start + spec.length]
        if centre != motif:
            raise InputError(
                f"the window holds {centre!r} at {spec.start + 1}-{spec.start + spec.length}, not its motif {motif!r}",
                path, line, "motif",
            )  # fmt: skip
        chrom, start, end = _coordinates(row, spec, path, line)
        for key, value in (
            ("signal", signal), ("species", row["species"].strip().lower()), ("motif", motif), ("label", int(label)),
            ("sequence", seq), ("chrom", chrom), ("start", start), ("end", end), ("path", name), ("line", line),
        ):  # fmt: skip
            cols[key].append(value)
    return GSRTable(**{
        k: np.array(v, dtype=np.int64 if k in ("label", "start", "end", "line") else object) for k, v in cols.items()
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


def random_split(table: GSRTable, fractions: Sequence[float], seed: int) -> np.ndarray:
    """Split code per row (0 train, 1 val, 2 test), stratified by (signal, species, label), deterministic for a seed."""
    f = check_fractions(fractions)
    rng = np.random.default_rng(seed)
    split = np.zeros(len(table), dtype=np.int8)
    for idx in _groups(table.signal, table.species, table.label).values():
        quotas = {"val": round(len(idx) * f[1]), "test": round(len(idx) * f[2])}
        split[idx] = grouped_split(np.arange(len(idx)), quotas, rng)
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
    assigned in a seeded order towards the target fractions of each (signal, species) (:func:`balanced_fill`).
    """
    f = check_fractions(fractions)
    if block_bp < 1:
        raise ConfigError(f"block_bp must be >= 1, got {block_bp}")
    if len(no_coordinates := np.flatnonzero(table.start < 0)):
        raise table.error(int(no_coordinates[0]), "no genomic coordinates (id or chrom/pos_1based); use split=random")
    holdout = {k.lower(): v for k, v in (holdout_chromosomes or {}).items()}
    rng = np.random.default_rng(seed)
    split = np.empty(len(table), dtype=np.int8)
    for (signal, species), idx in _groups(table.signal, table.species).items():
        if species in holdout:
            split[idx] = _holdout_split(table.chrom[idx], holdout[species], species)
            continue
        blocks = _position_blocks(table.chrom[idx], table.start[idx], table.end[idx], block_bp)
        sizes = np.bincount(blocks)
        order = rng.permutation(len(sizes))
        code = np.empty(len(sizes), dtype=np.int8)
        code[order] = balanced_fill(sizes[order], f)
        split[idx] = code[blocks]
        per_split = np.bincount(split[idx], minlength=3)
        log.info(f"block split {signal}/{species}: {len(sizes)} blocks, rows per split {per_split}")
    return split


def _holdout_split(chrom: np.ndarray, holdout: Mapping[str, Sequence[str]], species: str) -> np.ndarray:
    """Split code per row of one species: its held-out chromosomes are val/test, every other one train."""
    present = set(chrom)
    code = np.zeros(len(chrom), dtype=np.int8)
    for i, name in ((1, "val"), (2, "test")):
        wanted = list(holdout.get(name, []))
        if unknown := set(wanted) - present:
            raise ConfigError(f"holdout_chromosomes.{species}.{name}: {sorted(unknown)} not among {sorted(present)}")
        code[np.isin(chrom, wanted)] = i
    return code


def _position_blocks(chrom: np.ndarray, start: np.ndarray, end: np.ndarray, block_bp: int) -> np.ndarray:
    """Block id per row: overlapping windows form one cluster, and a cluster's block is that of its first base.

    Ids are 0, 1, ... in (chromosome, block) order.
    """
    cluster = overlap_clusters(chrom, start, end)
    first_base = np.full(cluster.max() + 1, np.iinfo(np.int64).max)
    np.minimum.at(first_base, cluster, start)
    chrom_code = np.unique(chrom, return_inverse=True)[1].reshape(-1)
    keys = np.stack([chrom_code, first_base[cluster] // block_bp], axis=1)
    return np.unique(keys, axis=0, return_inverse=True)[1].reshape(-1)

"""Labelled sequence tables: the formats ``task=classification`` and ``task=regression`` read, and their splits.

Formats (``data.format``; ``auto`` tells them apart by what ``data.path`` is):

* ``splits``: a folder with one table per split, the GUE layout of DNABERT-2 (``train.csv``, ``dev.csv``,
  ``test.csv`` with ``sequence,label``). ``dev`` is the validation split (``val.*`` is accepted too). A table is CSV
  (``.csv``) or TSV (``.tsv``, ``.txt``), gzipped or not. Without a dev table, validation is carved out of train
  (``val_size``) by :func:`split_codes`. Genomic Benchmarks exported as CSV (the Hugging Face copies: ``seq,label``,
  train and test only) are this format with ``sequence_column=seq``.
* ``table``: one file, split here by :func:`split_codes` (``val_size``, ``test_size``).
* ``genomic_benchmarks``: the folders ``genomic_benchmarks`` writes when it downloads a benchmark,
  ``train/<class>/*.txt`` and ``test/<class>/*.txt``, one sequence per file, the class named by its folder; validation
  is carved out of train. The coordinate CSVs the package ships (``<class>.csv.gz`` of region/start/end) are not read:
  turning them into sequences needs the reference genomes, which is what the package's download does.

:func:`split_codes` deals whole groups of identical sequences to the held-out splits in a seeded order, stratified by
label for classification (:func:`dnagpt.data.splits.grouped_split` per stratum), so no sequence sits on two sides.
Given splits are kept as they are; a validation or test sequence that also occurs in train is counted and logged.

Every row keeps its file and line: a bad cell is an ``InputError`` naming them and the column (the table opener of
:mod:`dnagpt.data.tables` reports unreadable files, empty tables and ragged rows). Sequences are cleaned by the
tokenizer (soft-masking upper-cased, IUPAC codes to ``N``); any other character names the row and its position.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from dnagpt.data.splits import SPLITS, grouped_split, split_count
from dnagpt.data.tables import text_lines, tsv_rows
from dnagpt.tokenizer import KmerTokenizer
from dnagpt.utils.errors import ConfigError, InputError, MissingFileError
from dnagpt.utils.pylogger import RankedLogger

__all__ = ["FORMATS", "LabelledTable", "detect_format", "read_class_folders", "read_labelled", "read_table", "split_codes"]

log = RankedLogger(__name__)

FORMATS = ("auto", "splits", "table", "genomic_benchmarks")
SPLIT_NAMES = {"train": ("train",), "val": ("dev", "val"), "test": ("test",)}  # file stems of each split
DELIMITERS = {".csv": ",", ".tsv": "\t", ".txt": "\t"}


@dataclass(frozen=True)
class LabelledTable:
    """The rows of one split (numpy arrays of equal length) and where each was read, for messages."""

    sequence: np.ndarray  # clean upper-case ACGTN text
    label: np.ndarray  # label text as written (stripped); classes or numbers are the DataModule's business
    species: np.ndarray  # species name per row, "" when the table has no species column
    path: np.ndarray
    line: np.ndarray  # 1-based line of the row (1 for a one-sequence file)

    def __len__(self) -> int:
        return len(self.sequence)

    def take(self, index: np.ndarray) -> LabelledTable:
        return LabelledTable(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def error(self, i: int, message: str, column: str | None = None) -> InputError:
        """An ``InputError`` placed at row ``i``'s file and line."""
        return InputError(message, self.path[i], int(self.line[i]), column)


def _table(rows: list[tuple[str, str, str, str, int]]) -> LabelledTable:
    seq, label, species, path, line = zip(*rows, strict=True) if rows else ((),) * 5
    text = {"sequence": seq, "label": label, "species": species, "path": path}
    return LabelledTable(**{k: np.array(v, dtype=object) for k, v in text.items()}, line=np.array(line, dtype=np.int64))


def _clean(tokenizer: KmerTokenizer, text: str, path: Path, line: int, column: str | None) -> str:
    """The cleaned sequence of one cell; a character outside the alphabet is an error placed at the cell."""
    try:
        return tokenizer.clean(text.strip()).tobytes().decode("ascii")
    except ValueError as err:  # the tokenizer's InputError says what and where in the sequence, not in which row
        raise InputError(str(err), path, line, column) from None


def _delimiter(path: Path) -> str:
    suffix = Path(path.name.removesuffix(".gz")).suffix
    if suffix not in DELIMITERS:
        raise ConfigError(f"{path}: a table must be .csv (comma) or .tsv/.txt (tab), optionally .gz; got {suffix!r}")
    return DELIMITERS[suffix]


def read_table(
    path: str | Path,
    tokenizer: KmerTokenizer,
    sequence_column: str = "sequence",
    label_column: str = "label",
    species_column: str | None = None,
) -> LabelledTable:
    """Every row of one CSV/TSV; a bad cell names the file, line and column."""
    path = Path(path)
    required = [sequence_column, label_column, *([species_column] if species_column else [])]
    rows = []
    for line, row in tsv_rows(path, required, delimiter=_delimiter(path)):
        label = row[label_column].strip()
        if not label:
            raise InputError("the label is empty (every row needs one)", path, line, label_column)
        species = ""
        if species_column:
            species = row[species_column].strip()
            try:
                tokenizer.species_id(species)
            except ValueError as err:
                raise InputError(str(err), path, line, species_column) from None
        rows.append((_clean(tokenizer, row[sequence_column], path, line, sequence_column), label, species, str(path), line))
    return _table(rows)


def read_class_folders(folder: str | Path, tokenizer: KmerTokenizer) -> LabelledTable:
    """``<folder>/<class>/*.txt``, one sequence per file (Genomic Benchmarks); the class is the folder's name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MissingFileError(f"{folder} is not a folder (expected <class>/*.txt sequence files in it)")
    classes = sorted(d for d in folder.iterdir() if d.is_dir())
    if not classes:
        raise InputError("holds no class folders: expected <class>/*.txt, one sequence per file", folder)
    rows = []
    for class_dir in classes:
        files = sorted(class_dir.glob("*.txt"))
        if not files:
            raise InputError("class folder holds no .txt sequence files", class_dir)
        for f in files:
            text = "".join(line.strip() for line in text_lines(f))
            rows.append((_clean(tokenizer, text, f, 1, None), class_dir.name, "", str(f), 1))
    return _table(rows)


def _split_file(folder: Path, split: str) -> Path | None:
    """The table of ``split`` in a splits folder (``train.csv``, ``dev.tsv.gz``, ...), None when there is none."""
    found = [folder / f"{stem}{suffix}{gz}" for stem in SPLIT_NAMES[split] for suffix in DELIMITERS for gz in ("", ".gz")]
    found = [p for p in found if p.is_file()]
    if len(found) > 1:
        raise ConfigError(f"{folder}: more than one {split} table ({', '.join(p.name for p in found)}); keep one")
    return found[0] if found else None


def detect_format(path: str | Path) -> str:
    """``table`` for a file, ``splits`` for a folder with a train table, ``genomic_benchmarks`` for one with ``train/``."""
    path = Path(path)
    if path.is_file():
        return "table"
    if not path.is_dir():
        raise MissingFileError(f"data.path={path} does not exist")
    if _split_file(path, "train") is not None:
        return "splits"
    if (path / "train").is_dir():
        return "genomic_benchmarks"
    raise InputError(
        "is neither a splits folder (train.csv, dev.csv, test.csv; .tsv too) nor a Genomic Benchmarks folder "
        "(train/<class>/*.txt, test/<class>/*.txt)",
        path,
    )


def split_codes(sequences: np.ndarray, strata: np.ndarray, sizes: Mapping[str, float], seed: int) -> np.ndarray:
    """Split code per row (0 train, 1 val, 2 test): groups of identical sequences go whole to the held-out splits of
    ``sizes`` (``{"test": 0.1, "val": 0.1}``, each a fraction or a row count, filled in that order), stratum by stratum
    (each gets its share of every split, rounded: a stratum too small for a share keeps its rows in train), the
    rest train.

    >>> seqs = np.array(["A", "A", "C", "G", "T", "AC", "AG", "AT"], dtype=object)
    >>> code = split_codes(seqs, np.zeros(8, dtype=int), {"test": 2, "val": 2}, seed=0)
    >>> bool(code[0] == code[1]), np.bincount(code, minlength=3).tolist()
    (True, [4, 2, 2])
    """
    n = len(sequences)
    group = np.unique(sequences.astype(str), return_inverse=True)[1].reshape(-1)
    first = np.full(group.max() + 1 if n else 0, n)
    np.minimum.at(first, group, np.arange(n))
    group_stratum = np.asarray(strata)[first][group]  # every row of a group in the stratum of its first row
    totals = {name: split_count(size, n, f"{name}_size") for name, size in sizes.items()}
    rng = np.random.default_rng(seed)
    code = np.zeros(n, dtype=np.int8)
    for stratum in np.unique(group_stratum):
        rows = np.flatnonzero(group_stratum == stratum)
        quotas = {name: round(total * len(rows) / n) for name, total in totals.items()}  # a tiny stratum stays in train
        code[rows] = grouped_split(group[rows], quotas, rng)
    return code


def _report_shared(tables: Mapping[str, LabelledTable]) -> None:
    train = set(tables["train"].sequence)
    for split in SPLITS[1:]:
        shared = int(sum(s in train for s in tables[split].sequence))
        if shared:
            log.warning(
                f"{shared} of {len(tables[split])} {split} rows ({tables[split].path[0]}) repeat a training sequence "
                "exactly: their figures measure memory as much as skill"
            )


def read_labelled(
    path: str | Path,
    tokenizer: KmerTokenizer,
    format: str = "auto",
    sequence_column: str = "sequence",
    label_column: str = "label",
    species_column: str | None = None,
    val_size: float = 0.1,
    test_size: float = 0.1,
    seed: int = 0,
    stratify: bool = True,
) -> dict[str, LabelledTable]:
    """The train/val/test tables of ``path`` in any of :data:`FORMATS` (module docstring); ``stratify`` splits by
    label (classification), otherwise at random (regression)."""
    if format not in FORMATS:
        raise ConfigError(f"data.format={format!r} is not one of {', '.join(FORMATS)}")
    path = Path(path)
    format = detect_format(path) if format == "auto" else format
    columns = dict(sequence_column=sequence_column, label_column=label_column, species_column=species_column)

    def carve(table: LabelledTable, sizes: dict[str, float]) -> list[LabelledTable]:
        code = split_codes(table.sequence, table.label if stratify else np.zeros(len(table)), sizes, seed)
        return [table.take(np.flatnonzero(code == i)) for i in range(len(SPLITS))]

    if format == "table":
        if not path.is_file():
            raise MissingFileError(f"data.path={path} is not a file (data.format=table reads one table)")
        tables = dict(zip(SPLITS, carve(read_table(path, tokenizer, **columns), {"test": test_size, "val": val_size}),
                          strict=True))  # fmt: skip
    else:
        if not path.is_dir():
            raise MissingFileError(f"data.path={path} is not a folder (data.format={format} reads one)")
        if format == "genomic_benchmarks":
            if species_column:
                raise ConfigError("data.species_column: Genomic Benchmarks folders hold sequences only, no columns")
            given = {s: read_class_folders(path / s, tokenizer) for s in ("train", "test")}
        else:
            files = {s: _split_file(path, s) for s in SPLITS}
            if missing := [s for s in ("train", "test") if files[s] is None]:
                raise MissingFileError(f"{path}: no {' or '.join(missing)} table (train.csv, dev.csv, test.csv; .tsv too)")
            given = {s: read_table(f, tokenizer, **columns) for s, f in files.items() if f is not None}
        if "val" not in given:
            given["train"], given["val"], _ = carve(given["train"], {"val": val_size})
        tables = {s: given[s] for s in SPLITS}
        _report_shared(tables)
    sizes = {s: len(t) for s, t in tables.items()}
    if empty := [s for s, n in sizes.items() if not n]:
        raise ConfigError(f"{path}: the {', '.join(empty)} split is empty ({sizes} rows); change val_size/test_size")
    return tables

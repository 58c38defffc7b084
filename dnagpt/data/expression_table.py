"""The expression table: promoter rows read and validated, grouped by genomic overlap, and assigned splits.

* **Table.** Any TSV (gzipped or not) with a header row: an id column, a label column, a sequence column of one
  fixed length whose TSS sits at a known index, and any named numeric feature columns. Xpresso's own
  ``*_FantomAnnotations.InputData.pM10Kb.txt.gz`` fits (``docs/expression.md`` has the overrides); its raw
  lengths and the label take ``log10(x + 0.1)`` through ``log10_columns``, as Xpresso does. Any bad cell is an
  ``InputError`` naming the file, line and column (:mod:`dnagpt.data.tables` reads).
* **Splits.** ``grouped``: a seeded split of groups of genes whose stored sequences overlap on the genome (or are
  identical), so no test sequence shares bases with a training one; ``random``: the same per gene; ``ordered``: file
  order, the last ``test_size`` rows test and the ``val_size`` before them validation (Xpresso's rule for its
  pre-shuffled files); ``kfold``: cross-validation, the groups of ``grouped`` dealt into ``n_folds`` folds of
  near-equal rows, fold ``fold`` is test and ``val_size`` rows of the other folds (whole groups) validation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dnagpt.data.splits import SPLITS, fill_in_order, grouped_split, kfold_groups, overlap_clusters, split_count
from dnagpt.data.tables import parse_float, parse_int, tsv_rows
from dnagpt.tokenizer import KmerTokenizer
from dnagpt.utils.errors import ConfigError, InputError

__all__ = ["SPLIT_METHODS", "ExpressionTable", "assign_splits", "check_fold", "overlap_groups", "read_expression_table"]

SPLIT_METHODS = ("grouped", "random", "ordered", "kfold")


@dataclass(frozen=True)
class ExpressionTable:
    """The validated rows of an expression TSV, in file order (label and features after any log10)."""

    path: Path
    ids: list[str]
    lines: list[int]  # 1-based line of each row in the file, for error messages
    sequences: list[str]  # clean upper-case ACGTN, all of one length
    labels: np.ndarray  # (n,) float64
    features: np.ndarray  # (n, F) float64
    species: list[str]
    coords: list[tuple[str, int, str]] | None  # (chrom, tss, strand) per row when coordinate columns are given


def read_expression_table(
    path: str | Path,
    tokenizer: KmerTokenizer,
    *,
    id_column: str,
    label_column: str,
    sequence_column: str,
    sequence_length: int,
    feature_columns: Sequence[str] = (),
    log10_columns: Sequence[str] = (),
    species: str = "human",
    species_column: str | None = None,
    coordinate_columns: Sequence[str] | None = None,
) -> ExpressionTable:
    """Read and check every row; any bad cell is an InputError naming the file, line and column."""
    path = Path(path)
    feature_columns, log10_columns = list(feature_columns), list(log10_columns)
    numeric = [label_column, *feature_columns]
    if stray := sorted(set(log10_columns) - set(numeric)):
        raise ConfigError(f"log10_columns {stray} are neither the label column nor a feature column ({numeric})")
    if coordinate_columns is not None and len(coordinate_columns) != 3:
        raise ConfigError(f"coordinate_columns must name (chrom, tss, strand) columns, got {list(coordinate_columns)}")
    needed = [id_column, label_column, sequence_column, *feature_columns, *(coordinate_columns or [])]
    needed += [species_column] if species_column else []
    if species_column is None:
        try:
            tokenizer.species_id(species)
        except ValueError as err:
            raise ConfigError(f"data.species: {err}") from None

    ids, lines, seqs, nums, sps, coords = [], [], [], [], [], []
    for line, row in tsv_rows(path, needed):
        seq = row[sequence_column]
        if len(seq) != sequence_length:
            raise InputError(f"holds {len(seq)} bp, expected sequence_length={sequence_length}", path, line, sequence_column)
        seqs.append(_at_cell(tokenizer.clean, seq, path, line, sequence_column).tobytes().decode("ascii"))
        nums.append([parse_float(row[c], path, line, c) for c in numeric])
        if species_column:
            _at_cell(tokenizer.species_id, row[species_column], path, line, species_column)
        sps.append(row[species_column] if species_column else species)
        if coordinate_columns:
            chrom, tss, strand = coordinate_columns
            if row[strand] not in ("+", "-"):
                raise InputError(f"strand {row[strand]!r} is not + or -", path, line, strand)
            coords.append((row[chrom], parse_int(row[tss], path, line, tss), row[strand]))
        ids.append(row[id_column])
        lines.append(line)
    values = np.asarray(nums, dtype=np.float64)
    for c in log10_columns:
        j = numeric.index(c)
        if (bad := values[:, j] <= -0.1).any():
            i = int(np.argmax(bad))
            raise InputError(f"log10(x + 0.1) needs x > -0.1, got {values[i, j]}", path, lines[i], c)
        values[:, j] = np.log10(values[:, j] + 0.1)
    return ExpressionTable(path, ids, lines, seqs, values[:, 0], values[:, 1:], sps, coords or None)


def _at_cell(check: Callable[[str], Any], text: str, path: Path, line: int, column: str) -> Any:
    """``check(text)``, a tokenizer call whose error is placed at the cell it read."""
    try:
        return check(text)
    except ValueError as err:  # the tokenizer's InputError says what is wrong, not where
        raise InputError(str(err), path, line, column) from None


def overlap_groups(
    sequences: Sequence[str], coords: Sequence[tuple[str, int, str]] | None, span: tuple[int, int]
) -> np.ndarray:
    """Group id of each row: identical sequences, or sequences whose genomic ``span`` (bp relative to the TSS)
    overlap, share a group.

    The id is a row of the group, chosen by merging in a fixed order (identical sequences first, then each overlap
    cluster in (chromosome, start) order), so a seeded split of the groups is the same from run to run.
    """
    first: dict[str, int] = {}
    parent = [first.setdefault(seq, i) for i, seq in enumerate(sequences)]  # identical sequences under the first

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    if coords is not None:
        start, end = span
        chrom = np.array([c for c, _, _ in coords], dtype=object)
        tss = np.array([t for _, t, _ in coords], dtype=np.int64)
        plus = np.array([s == "+" for _, _, s in coords])
        # genomic span of each window: downstream is + on the + strand, - on the - strand
        lo, hi = np.where(plus, tss + start, tss - end + 1), np.where(plus, tss + end, tss - start + 1)
        cluster = overlap_clusters(chrom, lo, hi)
        rep: dict[int, int] = {}
        for i in np.lexsort((lo, cluster)).tolist():  # each cluster's rows in sweep order; the first leads it
            parent[find(i)] = find(rep.setdefault(int(cluster[i]), i))
    return np.array([find(i) for i in range(len(sequences))])


def check_fold(n_folds: int, fold: int) -> None:
    """``fold`` names one of ``n_folds >= 2`` folds (0-based), or a ``ConfigError``."""
    if not isinstance(n_folds, int) or not isinstance(fold, int) or n_folds < 2 or not 0 <= fold < n_folds:
        raise ConfigError(f"data.fold={fold!r} must be an integer in 0..n_folds-1 with data.n_folds={n_folds!r} >= 2")


def assign_splits(
    groups: np.ndarray,
    val_size: float,
    test_size: float,
    seed: int,
    method: str = "grouped",
    n_folds: int = 5,
    fold: int = 0,
) -> np.ndarray:
    """Split name of each row: whole groups go to one split (``ordered`` keeps file order and ignores groups).

    Groups are shuffled with ``seed``; test is filled first, then validation, each until it holds at least its
    share, so a split may exceed its share by less than one group (:func:`dnagpt.data.splits.fill_in_order`).
    ``kfold`` deals the groups into ``n_folds`` folds with ``seed`` (the same folds for every ``fold``), takes fold
    ``fold`` as test (``test_size`` is not used) and fills validation from the other folds' groups.

    >>> assign_splits(np.arange(7), 2, 2, seed=0, method="ordered").tolist()
    ['train', 'train', 'train', 'val', 'val', 'test', 'test']
    """
    if method not in SPLIT_METHODS:
        raise ConfigError(f"split={method!r} is not one of {SPLIT_METHODS}")
    n = len(groups)
    if method == "kfold":
        check_fold(n_folds, fold)
        rng = np.random.default_rng(seed)
        folds = kfold_groups(groups, n_folds, rng)
        test = folds == fold
        n_val, n_test = split_count(val_size, n, "val_size"), int(test.sum())
    else:
        n_val, n_test = split_count(val_size, n, "val_size"), split_count(test_size, n, "test_size")
    if n_val < 2 or n_test < 2 or n - n_val - n_test < 2:
        raise ConfigError(
            f"{n} rows cannot be split into val={n_val}, test={n_test} and a training rest: each split needs at "
            "least 2 rows (R² and correlations are undefined below that)"
        )
    quotas = {"test": n_test, "val": n_val}
    if method == "kfold":  # validation: whole groups of the training folds, in an order drawn after the folds
        code = np.full(n, SPLITS.index("test"), dtype=np.int8)
        code[~test] = grouped_split(groups[~test], {"val": n_val}, rng)
    elif method == "ordered":  # the last rows of the file, filled from the end
        code = fill_in_order(np.ones(n, dtype=np.int64), quotas)[::-1]
    else:
        rows = np.arange(n) if method == "random" else groups
        code = grouped_split(rows, quotas, np.random.default_rng(seed))
    if (code == 0).sum() < 2:
        raise ConfigError(f"after grouping overlapping windows no training rows remain (val {n_val}, test {n_test})")
    return np.array(SPLITS, dtype=object)[code]

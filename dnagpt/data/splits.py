"""Split names and the rules that assign rows to them, shared by every DataModule.

A split is coded by its index in :data:`SPLITS` (0 train, 1 val, 2 test). The rules, each seeded and deterministic:

* :func:`fill_in_order` — items in a given (seeded) order fill the held-out splits in turn, each until it holds its
  share, and the rest is train. GSR's stratified random split, expression's grouped/random/ordered splits and the
  genomes split of individuals are all this rule; :func:`grouped_split` applies it to whole groups in a seeded order.
* :func:`balanced_fill` — whole blocks in a seeded order, each to the split furthest below its target share (the GSR
  block split, which has no per-split counts to fill first).
* :func:`kfold_groups` — whole groups in a seeded order dealt into ``n`` folds of near-equal rows by
  :func:`balanced_fill`: the folds of a cross-validation, each test once.
* :func:`overlap_clusters` — rows whose genomic intervals overlap, directly or through a chain, form one cluster, so
  a split rule applied to clusters never puts shared bases on two sides.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np

from dnagpt.utils.errors import ConfigError

__all__ = [
    "SPLITS", "balanced_fill", "check_fractions", "check_split_size", "fill_in_order", "grouped_split", "kfold_groups",
    "overlap_clusters", "split_count",
]  # fmt: skip

SPLITS = ("train", "val", "test")


def check_fractions(fractions: Sequence[float]) -> np.ndarray:
    """``(train, val, test)`` fractions as an array, or a ``ConfigError`` unless three non-negative numbers sum to 1."""
    f = np.asarray(fractions, dtype=float)
    if f.shape != (3,) or (f < 0).any() or not math.isclose(f.sum(), 1.0, abs_tol=1e-6):
        raise ConfigError(f"fractions must be three non-negative numbers (train, val, test) summing to 1, got {fractions}")
    return f


def check_split_size(size: float, name: str) -> None:
    """A held-out split size is a fraction in (0, 1) of the rows or a whole number of rows (>= 1)."""
    if not (0 < size < 1 or (size >= 1 and float(size).is_integer())):
        raise ConfigError(f"{name}={size} must be a fraction in (0, 1) or a whole number of rows")


def split_count(size: float, n: int, name: str) -> int:
    """Rows of a held-out split of ``n``: a fraction in (0, 1) of them, rounded, or a row count.

    >>> split_count(0.15, 445, "val_size"), split_count(1000, 20_000, "test_size")
    (67, 1000)
    """
    check_split_size(size, name)
    return round(size * n) if size < 1 else int(size)


def fill_in_order(sizes: np.ndarray, quotas: Mapping[str, float]) -> np.ndarray:
    """Split code of each item, taken in the given order: the splits of ``quotas`` (in its order) fill in turn, each
    taking items until their ``sizes`` add up to at least its quota; the remaining items are train.

    >>> fill_in_order(np.ones(7, dtype=int), {"test": 2, "val": 3}).tolist()
    [2, 2, 1, 1, 1, 0, 0]
    >>> fill_in_order(np.array([3, 1, 1, 2]), {"test": 2, "val": 2}).tolist()  # a split exceeds its quota by < 1 item
    [2, 1, 1, 0]
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    if (sizes < 1).any():
        raise ValueError("every item needs a size >= 1")
    before = np.concatenate([[0], np.cumsum(sizes)[:-1]])  # total size of the items before each one
    code = np.zeros(len(sizes), dtype=np.int8)
    first = 0
    for name, quota in quotas.items():
        if first == len(sizes):
            break
        # the first item at which this split already holds its quota: the split takes the items before it
        stop = first + int(np.searchsorted(before[first:], before[first] + quota))
        code[first:stop] = SPLITS.index(name)
        first = stop
    return code


def grouped_split(
    groups: np.ndarray, quotas: Mapping[str, float], rng: np.random.Generator, count: Literal["rows", "groups"] = "rows"
) -> np.ndarray:
    """Split code per row by :func:`fill_in_order` over whole groups in a seeded order; a quota counts ``rows`` or
    ``groups``. The distinct groups are ordered (sorted) before ``rng`` permutes them, so the result depends only
    on the grouping and the generator's state."""
    if count not in ("rows", "groups"):
        raise ValueError(f"count must be 'rows' or 'groups', got {count!r}")
    uniq, inverse, n_rows = np.unique(groups, return_inverse=True, return_counts=True)
    order = rng.permutation(len(uniq))
    code = np.empty(len(uniq), dtype=np.int8)
    code[order] = fill_in_order(n_rows[order] if count == "rows" else np.ones(len(uniq), dtype=np.int64), quotas)
    return code[inverse.reshape(-1)]


def balanced_fill(sizes: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    """Split code of each block, taken in the given order: each goes to the split furthest below its target share
    ``fractions × total size``, so shares come out close to the fractions whatever the block sizes. Any number of
    fractions works (the folds of :func:`kfold_groups`); three are the splits of :data:`SPLITS`.

    >>> balanced_fill(np.array([5, 1, 1, 2, 1]), np.array([0.6, 0.2, 0.2])).tolist()
    [0, 1, 2, 0, 1]
    """
    target = fractions * np.sum(sizes)
    have = np.zeros(len(fractions))
    code = np.empty(len(sizes), dtype=np.int8)
    for i, size in enumerate(sizes):
        code[i] = np.argmax(target - have)
        have[code[i]] += size
    return code


def kfold_groups(groups: np.ndarray, n_folds: int, rng: np.random.Generator) -> np.ndarray:
    """Fold (0 .. n_folds - 1) of each row: whole groups, in a seeded order (the distinct groups sorted, then permuted
    by ``rng``), each to the fold furthest below an equal share of the rows (:func:`balanced_fill`).

    >>> kfold_groups(np.array([7, 7, 3, 3, 5, 9]), 3, np.random.default_rng(0)).tolist()
    [0, 0, 1, 1, 2, 2]
    """
    if not isinstance(n_folds, int) or n_folds < 2:
        raise ConfigError(f"n_folds={n_folds!r} must be an integer >= 2")
    uniq, inverse, n_rows = np.unique(groups, return_inverse=True, return_counts=True)
    if len(uniq) < n_folds:
        raise ConfigError(f"{len(uniq)} groups of rows cannot fill {n_folds} folds")
    order = rng.permutation(len(uniq))
    fold = np.empty(len(uniq), dtype=np.int64)
    fold[order] = balanced_fill(n_rows[order], np.full(n_folds, 1.0 / n_folds))
    return fold[inverse.reshape(-1)]


def overlap_clusters(chrom: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Cluster id per row: half-open intervals ``[start, end)`` on one chromosome that overlap, directly or through
    a chain of others, share a cluster. Ids count up in (chromosome, start) order, the order of a sweep over them.

    >>> overlap_clusters(np.array(["2", "1", "1", "1"]), np.array([0, 50, 0, 10]), np.array([9, 60, 20, 50])).tolist()
    [2, 1, 0, 0]
    """
    chrom_code = np.unique(chrom, return_inverse=True)[1].reshape(-1)
    cluster = np.empty(len(chrom), dtype=np.int64)
    current, reach, last_chrom = -1, 0, -1
    for i in np.lexsort((start, chrom_code)):  # stable: ties keep row order
        if chrom_code[i] != last_chrom or start[i] >= reach:  # a gap: a new cluster starts here
            current, reach, last_chrom = current + 1, end[i], chrom_code[i]
        else:
            reach = max(reach, end[i])
        cluster[i] = current
    return cluster

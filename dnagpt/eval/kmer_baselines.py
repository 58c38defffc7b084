"""k-mer count features and a logistic-regression yardstick, so every downstream table has a non-neural baseline.

``kmer_counts`` is vectorised: each sequence is mapped to base codes through one lookup table, the k-mer index of every
position is a rolling base-4 number, and the counts land in a sparse matrix built in one call. k-mers containing anything
but ``ACGT`` (``N``, IUPAC codes) are skipped, not an error: the baseline must score the same rows the model scores.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import sparse
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import MaxAbsScaler

from dnagpt.utils.errors import ConfigError, InputError

__all__ = ["KmerLogistic", "kmer_counts"]

_CODE = np.full(256, 4, dtype=np.int64)  # 4 = not ACGT
for _i, _b in enumerate(b"ACGT"):
    _CODE[_b] = _i
    _CODE[_b + 32] = _i  # soft-masked lower case counts as the base


def kmer_counts(seqs: Sequence[str | bytes], k: int = 6) -> sparse.csr_matrix:
    """Counts of overlapping k-mers over ``ACGT`` (index = base-4 value, A=0 C=1 G=2 T=3): (n, 4**k) CSR int32.

    >>> kmer_counts(["ACGTA", "AANAA"], k=2).toarray()[:, [1, 6, 11, 12, 0]].tolist()
    [[1, 1, 1, 1, 0], [0, 0, 0, 0, 2]]
    """
    if not isinstance(k, int) or not 1 <= k <= 12:
        raise ConfigError(f"k must be an int in 1..12 (evaluation.kmer), got {k!r}")
    raw = [s.encode() if isinstance(s, str) else bytes(s) for s in seqs]
    lengths = np.fromiter((len(s) for s in raw), dtype=np.int64, count=len(raw))
    codes = _CODE[np.frombuffer(b"".join(raw), dtype=np.uint8)]
    n_pos = np.maximum(lengths - k + 1, 0)
    if codes.size == 0 or n_pos.sum() == 0:
        return sparse.csr_matrix((len(raw), 4**k), dtype=np.int32)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    # start index (into the joined codes) of every k-mer that lies inside one sequence
    row = np.repeat(np.arange(len(raw)), n_pos)
    first = np.repeat(starts, n_pos) + (np.arange(n_pos.sum()) - np.repeat(np.cumsum(n_pos) - n_pos, n_pos))
    index = np.zeros(first.size, dtype=np.int64)
    bad = np.zeros(first.size, dtype=bool)
    for j in range(k):
        c = codes[first + j]
        bad |= c == 4
        index = index * 4 + np.minimum(c, 3)
    keep = ~bad
    counts = sparse.csr_matrix(
        (np.ones(int(keep.sum()), dtype=np.int32), (row[keep], index[keep])), shape=(len(raw), 4**k)
    )
    counts.sum_duplicates()
    return counts


def split_counts(seqs: Sequence[str | bytes], cut: int, skip: int = 0, k: int = 6) -> sparse.csr_matrix:
    """Upstream ``[:cut]`` and downstream ``[cut + skip:]`` k-mer counts side by side: (n, 2 * 4**k).

    Keeping the two sides apart lets a linear model tell an upstream from a downstream motif (the GSR signal sits
    between them), which one bag of k-mers over the whole window cannot.
    """
    up = kmer_counts([s[:cut] for s in seqs], k)
    down = kmer_counts([s[cut + skip:] for s in seqs], k)
    return sparse.hstack([up, down], format="csr")


class KmerLogistic:
    """Logistic regression on (optionally split) k-mer counts, scaled by the maximum absolute count per feature."""

    def __init__(self, k: int = 6, cut: int | None = None, skip: int = 0, C: float = 1.0, max_iter: int = 2000,
                 seed: int = 0) -> None:
        self.k, self.cut, self.skip = k, cut, skip
        self.scaler = MaxAbsScaler()
        self.clf = LogisticRegression(C=C, max_iter=max_iter, random_state=seed)

    def features(self, seqs: Sequence[str | bytes]) -> sparse.csr_matrix:
        if self.cut is None:
            return kmer_counts(seqs, self.k)
        return split_counts(seqs, self.cut, self.skip, self.k)

    def fit(self, seqs: Sequence[str | bytes], labels: Sequence[int] | np.ndarray) -> KmerLogistic:
        y = np.asarray(labels)
        if len(seqs) != len(y):
            raise ValueError(f"{len(seqs)} sequences but {len(y)} labels")
        if np.unique(y).size < 2:
            raise InputError(f"the baseline needs both classes in its training rows, got only {np.unique(y).tolist()}")
        self.clf.fit(self.scaler.fit_transform(self.features(seqs)), y)
        return self

    def predict_proba(self, seqs: Sequence[str | bytes]) -> np.ndarray:
        """p(label 1) per sequence."""
        return self.clf.predict_proba(self.scaler.transform(self.features(seqs)))[:, 1]

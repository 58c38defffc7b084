"""k-mer count features and a logistic-regression yardstick, so every downstream table has a non-neural baseline.

``kmer_counts`` is vectorised: each sequence is mapped to base codes through one lookup table, the k-mer index of every
position is a rolling base-4 number, and the counts land in a sparse matrix built in one call. k-mers containing anything
but ``ACGT`` (``N``, IUPAC codes) are skipped, not an error: the baseline must score the same rows the model scores.

Baselines get the same care as the model: :func:`tune_on_validation` picks a regulariser from a grid by its score on
the validation split (each grid point fitted on the training rows only, features built once), and reports the whole
grid, so a table says which setting the yardstick ran at and how much the choice mattered.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np
from scipy import sparse
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss, roc_auc_score
from sklearn.preprocessing import MaxAbsScaler

from dnagpt.utils.errors import ConfigError, InputError
from dnagpt.utils.pylogger import RankedLogger

__all__ = ["KmerLogistic", "Tuned", "check_grid", "kmer_counts", "split_counts", "tune_on_validation"]

log = RankedLogger(__name__)

M = TypeVar("M")

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


@dataclass(frozen=True)
class Tuned(Generic[M]):
    """A model fitted on the training rows at the grid value with the best validation score, and the whole grid."""

    model: M
    value: float
    grid: list[tuple[float, float]]  # (value, validation score) for every grid point, in grid order
    metric: str  # what the validation score is, higher is better (e.g. "val_auroc")


def check_grid(grid: float | Sequence[float], name: str) -> list[float]:
    """A grid of positive regularisation values (a single number is a grid of one), or a ``ConfigError``."""
    values = [float(grid)] if np.isscalar(grid) else [float(v) for v in grid]
    if not values or not all(np.isfinite(v) and v > 0 for v in values):
        raise ConfigError(f"{name} must be a positive number or a non-empty list of them, got {grid!r}")
    return values


def tune_on_validation(
    make_model: Callable[[float], M],
    grid: Sequence[float],
    train: tuple[Any, np.ndarray],
    val: tuple[Any, np.ndarray] | None,
    score: Callable[[M, Any, np.ndarray], float],
    metric: str = "val_score",
) -> Tuned[M]:
    """Fit ``make_model(value).fit(*train)`` for every grid value, score each on ``val``; keep the best (first on ties).

    Only the training rows are ever fitted (never validation or test), and the feature matrices are the caller's, so a
    grid refits the estimator only. A grid of one value is the fixed fit; ``val`` may then be ``None`` (score NaN).

    >>> from sklearn.linear_model import Ridge
    >>> x = np.arange(20.0).reshape(-1, 1); y = x[:, 0] * 2
    >>> r2 = lambda m, xv, yv: 1 - ((m.predict(xv) - yv) ** 2).sum() / ((yv - yv.mean()) ** 2).sum()
    >>> t = tune_on_validation(lambda a: Ridge(alpha=a), [1000.0, 0.01], (x[::2], y[::2]), (x[1::2], y[1::2]), r2)
    >>> t.value, [round(s, 3) for _, s in t.grid]
    (0.01, [0.418, 1.0])
    """
    if val is None and len(grid) > 1:
        raise ConfigError(f"a grid of {len(grid)} values ({list(grid)}) needs validation rows to choose from")
    models, table = [], []
    for value in grid:
        model = make_model(value)
        model.fit(*train)
        models.append(model)
        table.append((float(value), float(score(model, *val)) if val is not None else float("nan")))
    scores = np.array([s for _, s in table])
    if len(grid) > 1 and not np.isfinite(scores).any():
        raise InputError(f"no grid value has a finite {metric} ({table}): the validation rows cannot rank them")
    best = int(np.argmax(np.where(np.isfinite(scores), scores, -np.inf)))  # the first of equal scores
    return Tuned(models[best], table[best][0], table, metric)


class KmerLogistic:
    """Logistic regression on (optionally split) k-mer counts, scaled by the maximum absolute count per feature.

    ``C`` is one inverse regularisation strength or a grid of them; a grid is chosen on the validation rows given to
    :meth:`fit` by AUROC (two classes) or log-loss (more classes, multinomial), see :func:`tune_on_validation`.
    After ``fit``: ``C_`` (the value used), ``grid`` (value, validation score) and ``metric``.
    """

    def __init__(self, k: int = 6, cut: int | None = None, skip: int = 0, C: float | Sequence[float] = 1.0,
                 max_iter: int = 2000, seed: int = 0) -> None:  # fmt: skip
        self.k, self.cut, self.skip = k, cut, skip
        self.C_grid = check_grid(C, "C")
        self.max_iter, self.seed = max_iter, seed
        self.scaler = MaxAbsScaler()
        self.clf: LogisticRegression | None = None
        self.C_ = float("nan")
        self.grid: list[tuple[float, float]] = []
        self.metric = ""

    def features(self, seqs: Sequence[str | bytes]) -> sparse.csr_matrix:
        if self.cut is None:
            return kmer_counts(seqs, self.k)
        return split_counts(seqs, self.cut, self.skip, self.k)

    def fit(
        self,
        seqs: Sequence[str | bytes],
        labels: Sequence[int] | np.ndarray,
        val: tuple[Sequence[str | bytes], Sequence[int] | np.ndarray] | None = None,
    ) -> KmerLogistic:
        """Fit on ``seqs``; with a grid of ``C``, choose on ``val = (sequences, labels)``."""
        y = _labels(seqs, labels)
        classes = np.unique(y)
        if classes.size < 2:
            raise InputError(
                f"the baseline needs two or more classes (both classes of a binary task) in its training rows, got "
                f"only {classes.tolist()}"
            )
        x = self.scaler.fit_transform(self.features(seqs))
        val_xy = None
        if val is not None:
            yv = _labels(val[0], val[1])
            if stray := sorted(set(np.unique(yv).tolist()) - set(classes.tolist())):
                raise InputError(f"validation labels {stray} never occur in the training rows ({classes.tolist()})")
            val_xy = (self.scaler.transform(self.features(val[0])), yv)
        binary = classes.size == 2
        tuned = tune_on_validation(
            lambda c: LogisticRegression(C=c, max_iter=self.max_iter, random_state=self.seed),
            self.C_grid, (x, y), val_xy, _val_auroc if binary else _neg_log_loss,
            "val_auroc" if binary else "val_neg_log_loss",
        )  # fmt: skip
        self.clf, self.C_, self.grid, self.metric = tuned.model, tuned.value, tuned.grid, tuned.metric
        if len(self.C_grid) > 1:
            log.info(f"k-mer logistic: C {self.C_} chosen by {self.metric} from {_grid_text(self.grid)}")
        return self

    def predict_proba(self, seqs: Sequence[str | bytes]) -> np.ndarray:
        """(n, classes) probabilities, columns in sorted label order (``p[:, 1]`` is p(label 1) for 0/1 labels)."""
        if self.clf is None:
            raise RuntimeError("KmerLogistic.fit() has not run yet")
        return self.clf.predict_proba(self.scaler.transform(self.features(seqs)))


def _labels(seqs: Sequence[Any], labels: Sequence[int] | np.ndarray) -> np.ndarray:
    y = np.asarray(labels)
    if len(seqs) != len(y):
        raise ValueError(f"{len(seqs)} sequences but {len(y)} labels")
    return y


def _val_auroc(clf: LogisticRegression, x: sparse.csr_matrix, y: np.ndarray) -> float:
    """AUROC of p(the larger label); NaN when the validation rows hold one class (nothing to rank)."""
    return float(roc_auc_score(y, clf.predict_proba(x)[:, 1])) if np.unique(y).size == 2 else float("nan")


def _neg_log_loss(clf: LogisticRegression, x: sparse.csr_matrix, y: np.ndarray) -> float:
    return -float(log_loss(y, clf.predict_proba(x), labels=clf.classes_))


def _grid_text(grid: list[tuple[float, float]]) -> str:
    return ", ".join(f"{v:g}: {s:.4f}" for v, s in grid)

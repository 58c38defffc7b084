"""The classic DNA-compression yardstick: an order-k Markov model per base, interpolated with every shorter order.

A language model of DNA has learned something beyond k-mer counts only if its held-out bits per base fall below this.

- **Estimate.** ``p_j(x | last j bases) = (n_j(context, x) + β · p_{j-1}(x | last j-1 bases)) / (n_j(context) + β)``,
  from ``p_{-1} = 1/4`` up to the model's order ``k``: each order backs off to the one below it in proportion to how
  rarely its context was seen (Dirichlet / interpolated smoothing, one concentration ``β`` for all orders).
- **Bases.** ``A C G T`` are modelled; an ``N`` (or any other byte) is neither scored nor used as context: the context of
  the next base restarts after it, so near an ``N`` the model uses the longest clean context it has.
- **Sequences are separate.** Contexts never cross from one sequence (a region, a window) into the next, as the language
  model's context never crosses windows.
- **All orders at once.** ``fit`` counts every order up to ``max_order`` in one pass per order; ``bits`` scores a sequence
  under every order in one pass, so choosing ``k`` (and ``β``) on validation costs one scoring per ``β``.

Memory: order ``j`` holds ``4^(j+1)`` counts (int32): 268 MB at ``j = 12``, 17 MB at ``j = 10``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np

__all__ = ["MarkovModel", "choose_order"]

_CODE = np.full(256, 4, dtype=np.int64)
for _i, _b in enumerate(b"ACGT"):
    _CODE[_b] = _i
MAX_ORDER = 13  # 4^14 counts: beyond what any CPU corpus here can fill


def _codes(seq: np.ndarray | bytes | str) -> np.ndarray:
    raw = np.frombuffer(seq.encode() if isinstance(seq, str) else bytes(seq), dtype=np.uint8)
    return _CODE[raw]


def _contexts(codes: np.ndarray, max_order: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """For each order ``j = 0..max_order``: (positions, context index) of every clean base with ``j`` clean bases before
    it. Built incrementally (order ``j`` extends the contexts of order ``j - 1`` by one base), so all orders cost
    ``O(len · max_order)`` together; the most recent base is the lowest digit of the index."""
    clean = codes < 4
    marker = np.where(clean, -1, np.arange(len(codes)))
    last_unclean = np.maximum.accumulate(marker) if len(codes) else marker  # at or before each position
    before = np.zeros(len(codes), dtype=np.int64)  # clean bases right before each position
    before[1:] = np.arange(len(codes) - 1) - last_unclean[:-1]
    pos = np.flatnonzero(clean)
    ctx = np.zeros(len(pos), dtype=np.int64)
    for j in range(max_order + 1):
        if j:
            keep = before[pos] >= j
            pos, ctx = pos[keep], ctx[keep] + (codes[pos[keep] - j] << (2 * (j - 1)))
        yield pos, ctx


class MarkovModel:
    """Counts of every order ``0..max_order`` over the training sequence; see the module docstring for the estimate."""

    def __init__(self, max_order: int) -> None:
        if not 0 <= max_order <= MAX_ORDER:
            raise ValueError(f"max_order must be in 0..{MAX_ORDER}, got {max_order}")
        self.max_order = max_order
        self.counts = [np.zeros(4 ** (j + 1), dtype=np.int32) for j in range(max_order + 1)]

    def fit(self, sequences: Iterable[np.ndarray | bytes | str]) -> MarkovModel:
        for seq in sequences:
            codes = _codes(seq)
            for table, (pos, ctx) in zip(self.counts, _contexts(codes, self.max_order), strict=True):
                table += np.bincount(ctx * 4 + codes[pos], minlength=len(table)).astype(np.int32)
        return self

    @property
    def n_bases(self) -> int:
        return int(self.counts[0].sum())

    def bits(self, sequences: Iterable[np.ndarray | bytes | str], beta: float = 1.0) -> tuple[np.ndarray, int]:
        """Total bits of the clean bases of ``sequences`` under each order ``0..max_order`` (an array), and their count.

        A base near the start of a sequence (or after an ``N``) with fewer clean bases before it than an order asks
        for is scored with the longest context it has, so every order scores the same bases.
        """
        if beta <= 0:
            raise ValueError(f"beta must be > 0, got {beta}")
        total = np.zeros(self.max_order + 1)
        n = 0
        for seq in sequences:
            codes = _codes(seq)
            clean = np.flatnonzero(codes < 4)
            n += len(clean)
            prob = np.full(len(codes), 0.25)  # p_{-1}, then each order refines where its context exists
            for j, (table, (pos, ctx)) in enumerate(zip(self.counts, _contexts(codes, self.max_order), strict=True)):
                row = table.reshape(-1, 4)[ctx]
                prob[pos] = (row[np.arange(len(pos)), codes[pos]] + beta * prob[pos]) / (row.sum(1) + beta)
                total[j] += -np.log2(prob[clean]).sum()
        return total, n

    def bits_per_base(self, sequences: Sequence[np.ndarray | bytes | str], order: int, beta: float = 1.0) -> float:
        if not 0 <= order <= self.max_order:
            raise ValueError(f"order must be in 0..{self.max_order}, got {order}")
        total, n = self.bits(sequences, beta)
        if n == 0:
            raise ValueError("no A/C/G/T base to score")
        return float(total[order] / n)


def bits_grid(
    model: MarkovModel, sequences: Sequence[np.ndarray | bytes | str], betas: Sequence[float]
) -> dict[tuple[int, float], float]:
    """Bits per base of ``sequences`` for every (order, β) cell: one pass over them per β."""
    grid = {}
    for beta in betas:
        total, n = model.bits(sequences, beta)
        if n == 0:
            raise ValueError("no A/C/G/T base in the sequences to score")
        grid.update({(j, beta): float(t / n) for j, t in enumerate(total)})
    return grid


def choose_order(
    model: MarkovModel, validation: Sequence[np.ndarray | bytes | str], betas: Sequence[float] = (0.5, 2.0, 8.0)
) -> tuple[int, float, dict[tuple[int, float], float]]:
    """The (order, β) with the fewest validation bits per base, and the whole grid (logged by callers)."""
    grid = bits_grid(model, validation, betas)
    order, beta = min(grid, key=grid.get)
    return order, beta, grid

"""The multi-task pre-training sentence built from one genome window (layout in ``docs/pretraining_samples.md``).

Token coordinates, ``T = block_size - gc_prompts`` tokens; each ``<M>`` is followed by one inserted value, so
the model's expanded length ``T + gc_prompts`` equals ``block_size``::

    <species> d_1 ... d_a <M>[gc_1] d_a+1 ... d_b <M>[gc_2] ... d_n <=> <ans>

* ``n_dna = block_size - 3 - 2 * gc_prompts`` DNA tokens, i.e. ``6 * n_dna`` bp: every token is a full 6-mer,
  so the fixed and the dynamic vocabularies both apply.
* With probability ``reverse_prob`` the window's bases are reversed (order only); ``<ans>`` is ``tok.true_id``
  for a reversed window and ``tok.false_id`` for the forward one (the release answers "true" with ``N``,
  "false" with ``A``).
* Each ``<M>`` carries the GC fraction, G+C over A/C/G/T with ``N`` ignored, of the DNA tokens since the
  previous prompt (or the sentence start), computed on the DNA as presented. A segment with no A/C/G/T base
  has no GC fraction: its value is 0 and ``value_mask`` is False there.
* ``rc_augment``: the window is reverse-complemented with probability 0.5 before anything else.

All random choices of a sample are drawn first (``draw``) and applied second (``build``): the stream can then
replay the draws of skipped samples cheaply when it resumes, without tokenising them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dnagpt.data.fasta import reverse_complement
from dnagpt.tokenizer import IGNORE_INDEX
from dnagpt.utils.errors import ConfigError

__all__ = ["SampleBuilder", "SampleDraw", "gc_fraction"]

_K = 6
_G, _C, _N = ord("G"), ord("C"), ord("N")


def gc_fraction(bp: np.ndarray | str) -> float:
    """(G + C) / (A + C + G + T) of clean upper-case DNA; NaN when there is no A/C/G/T base.

    >>> gc_fraction("GGCANN"), gc_fraction("NN")
    (0.75, nan)
    """
    arr = np.frombuffer(bp.encode("ascii"), dtype=np.uint8) if isinstance(bp, str) else bp
    acgt = int(np.count_nonzero(arr != _N))
    return float(np.count_nonzero((arr == _G) | (arr == _C))) / acgt if acgt else float("nan")


@dataclass(frozen=True)
class SampleDraw:
    """The random choices of one sample."""

    reverse: bool  # base order reversed (the order task's answer)
    rc: bool  # reverse-complemented first (rc_augment)
    cuts: tuple[int, ...]  # number of DNA tokens before each <M>, increasing


class SampleBuilder:
    """Turns a clean window of ``window_bp`` bases into one sentence of the layout above (numpy arrays)."""

    def __init__(
        self,
        tokenizer,
        block_size: int,
        reverse_prob: float = 0.5,
        gc_prompts: int = 2,
        min_segment_tokens: int = 8,
        rc_augment: bool = False,
    ) -> None:
        if not 0.0 <= reverse_prob <= 1.0:
            raise ConfigError(f"data.reverse_prob must be in [0, 1], got {reverse_prob}")
        if gc_prompts < 0 or min_segment_tokens < 1:
            raise ConfigError(
                f"need data.gc_prompts >= 0 and data.min_segment_tokens >= 1, got {gc_prompts}, {min_segment_tokens}"
            )
        self.tok = tokenizer
        self.block_size = block_size
        self.reverse_prob = reverse_prob
        self.gc_prompts = gc_prompts
        self.min_segment_tokens = min_segment_tokens
        self.rc_augment = rc_augment
        self.n_dna = block_size - 3 - 2 * gc_prompts
        # slack: DNA tokens left once every segment has its minimum; the cuts spread it at random
        self._slack = self.n_dna - (gc_prompts + 1) * min_segment_tokens
        if self._slack < 0:
            raise ConfigError(
                f"block_size {block_size} is too small for {gc_prompts} GC prompts with at least "
                f"{min_segment_tokens} DNA tokens per segment (needs block_size >= "
                f"{3 + 2 * gc_prompts + (gc_prompts + 1) * min_segment_tokens})"
            )
        self.window_bp = _K * self.n_dna
        self.n_tokens = self.n_dna + gc_prompts + 3  # T

    def draw(self, rng: np.random.Generator) -> SampleDraw:
        """Random choices for one sample, in a fixed order of generator calls (so replays are exact)."""
        rc = bool(rng.random() < 0.5) if self.rc_augment else False
        reverse = bool(rng.random() < self.reverse_prob)
        x = np.sort(rng.integers(0, self._slack + 1, size=self.gc_prompts))
        cuts = tuple(int(v) + (i + 1) * self.min_segment_tokens for i, v in enumerate(x))
        return SampleDraw(reverse=reverse, rc=rc, cuts=cuts)

    @staticmethod
    def present(window: np.ndarray, draw: SampleDraw) -> np.ndarray:
        """The window's bases as the sentence spells them: reverse-complemented, then reversed, as drawn."""
        bp = reverse_complement(window) if draw.rc else window
        return np.ascontiguousarray(bp[::-1] if draw.reverse else bp)

    def build(self, window: np.ndarray, species_id: int, draw: SampleDraw) -> dict[str, np.ndarray]:
        """One sentence; ``labels`` are already shifted (``labels[t]`` is the target of position ``t``)."""
        if window.shape != (self.window_bp,):
            raise ValueError(f"window of {window.shape} bases, expected ({self.window_bp},)")
        bp = self.present(window, draw)
        dna = self.tok.encode_dna(bp)  # (n_dna,)
        per_tok = bp.reshape(self.n_dna, _K)
        gc_cum = np.concatenate([[0], np.cumsum(((per_tok == _G) | (per_tok == _C)).sum(1))])
        acgt_cum = np.concatenate([[0], np.cumsum((per_tok != _N).sum(1))])

        g, T = self.gc_prompts, self.n_tokens
        bounds = np.array([0, *draw.cuts])
        acgt = acgt_cum[bounds[1:]] - acgt_cum[bounds[:-1]]
        gc = gc_cum[bounds[1:]] - gc_cum[bounds[:-1]]
        value_mask = acgt > 0
        values = np.where(value_mask, gc / np.maximum(acgt, 1), 0.0).astype(np.float32)
        value_pos = bounds[1:] + 1 + np.arange(g)  # species token, DNA before the cut, earlier <M>s

        ids = np.empty(T, dtype=np.int64)
        is_dna = np.ones(T, dtype=bool)
        ids[0], is_dna[0] = species_id, False
        ids[value_pos], is_dna[value_pos] = self.tok.number_id, False
        ids[T - 2] = self.tok.eq_id
        ids[T - 1] = self.tok.true_id if draw.reverse else self.tok.false_id
        is_dna[T - 2 :] = False
        ids[is_dna] = dna

        labels = np.full(T, IGNORE_INDEX, dtype=np.int64)
        target_is_dna = is_dna[1:]
        labels[:-1][target_is_dna] = ids[1:][target_is_dna]
        return {
            "input_ids": ids,
            "labels": labels,
            "attention_mask": np.ones(T, dtype=bool),
            "values": values,
            "value_pos": value_pos.astype(np.int64),
            "value_mask": value_mask,
            "order_pos": np.int64(T - 2),
            "order_label": np.int64(draw.reverse),
            "species": np.int64(species_id),
        }

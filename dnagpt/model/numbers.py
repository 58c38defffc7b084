"""Numbers as tokens: where each token and each value of a batch lands in the expanded sequence (torch only).

Design decisions, following the released DNAGPT:

- values are *inserted* after their ``<M>`` token, not substituted for a placeholder: a row grows by one position per
  value, the learned positions are added after insertion, and ``block_size`` counts tokens plus values.
- a batch gives its values as (B, V) ``values``/``value_pos``/``value_mask``: value j of a row follows the ``<M>`` at
  token index ``value_pos[:, j]``, non-decreasing over the row's valid values, so rows may hold different numbers of
  values (``value_mask`` marks the valid ones).
- the whole batch is expanded with one gather, no Python loop over samples: each expanded position picks its vector
  from ``cat([token embeddings, value embeddings, zero])`` (:meth:`Layout.insert`); a row shorter than the widest
  ends in zero vectors, which causal attention never lets a valid position see.
- right padding only: causal attention means a valid position never attends to a later pad, so no padding mask is
  needed, while left padding would shift the learned positions.
- :class:`Layout` also maps the states back to tokens: ``pred_pos`` (after a token's values: the ``hidden`` that
  ``DNAGPT.forward`` returns) and ``token_pos`` (a ``<M>`` itself, before its values: where the regression head reads).
- :func:`check_inputs` refuses a batch that would be silently misread (a value not after a ``<M>``, unordered or
  non-finite values, an index outside the row) with an ``InputError`` naming the first offending entry.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from dnagpt.model.config import GPTConfig
from dnagpt.utils.errors import InputError


@dataclass
class Layout:
    """Where each token and value of a batch lands in the expanded (number-inserted) sequence."""

    token_pos: Tensor  # (B, T) expanded position of token t
    pred_pos: Tensor  # (B, T) last expanded position before token t+1: token t plus its values
    source: Tensor | None  # (B, L) row of cat([tokens, values, zero]) for each expanded position; None if no values
    length: Tensor  # (B,) valid expanded length of each row
    width: int  # L = max(length)

    def insert(self, tokens: Tensor, values: Tensor) -> Tensor:
        """The (B, L, D) expanded sequence of (B, T, D) token and (B, V, D) value embeddings (a batch without values
        is its tokens)."""
        if self.source is None:
            return tokens
        zero = tokens.new_zeros(tokens.size(0), 1, tokens.size(2))
        return gather_rows(torch.cat([tokens, values, zero], dim=1), self.source)


def insertion_layout(input_ids: Tensor, value_pos: Tensor | None, value_mask: Tensor | None) -> Layout:
    """Token t goes to t + #(values before t); valid value j of rank r goes to value_pos_j + 1 + r."""
    B, T = input_ids.shape
    ar = torch.arange(T, device=input_ids.device).expand(B, T)
    if value_pos is None or value_mask is None:
        return Layout(ar, ar, None, torch.full((B,), T, device=input_ids.device), T)
    V = value_pos.size(1)
    at = torch.where(value_mask, value_pos, 0)
    counts = torch.zeros_like(input_ids, dtype=torch.long).scatter_add_(1, at, value_mask.long())  # (B, T)
    cum = counts.cumsum(1)
    length = T + cum[:, -1]
    width = int(length.max())
    rank = value_mask.long().cumsum(1) - 1
    slot = torch.where(value_mask, at + 1 + rank, width)  # invalid values go to a spare column, dropped below
    source = torch.full((B, width + 1), T + V, dtype=torch.long, device=input_ids.device)  # default: zero row
    source.scatter_(1, ar + cum - counts, ar)
    source.scatter_(1, slot, torch.arange(T, T + V, device=input_ids.device).expand(B, V))
    return Layout(ar + cum - counts, ar + cum, source[:, :width], length, width)


def gather_rows(x: Tensor, index: Tensor) -> Tensor:
    """x (B, L, D) at positions index (B, K) -> (B, K, D)."""
    return x.gather(1, index.unsqueeze(-1).expand(-1, -1, x.size(-1)))


def _first(mask: Tensor) -> tuple[int, ...]:
    """Index of the first True entry, for error messages."""
    return tuple(int(i) for i in mask.nonzero()[0])


def check_inputs(
    config: GPTConfig,
    input_ids: Tensor,
    values: Tensor | None,
    value_pos: Tensor | None,
    value_mask: Tensor | None,
    reg_pos: Tensor | None,
) -> tuple[Tensor | None, Tensor | None]:
    """Validate a batch for ``DNAGPT.forward``; return (value_pos, value_mask) as long/bool, or (None, None)."""
    if input_ids.dim() != 2 or input_ids.size(1) == 0 or input_ids.is_floating_point():
        raise InputError(f"input_ids must be a non-empty (B, T) integer tensor, got {tuple(input_ids.shape)}")
    B, T = input_ids.shape
    bad = (input_ids < 0) | (input_ids >= config.vocab_size)
    if bad.any():
        r, t = _first(bad)
        raise InputError(
            f"input_ids[{r}, {t}] = {int(input_ids[r, t])} is outside the vocabulary [0, {config.vocab_size})"
        )
    if reg_pos is not None:
        if reg_pos.dim() != 2 or reg_pos.size(0) != B or reg_pos.is_floating_point():
            raise InputError(f"reg_pos must be a ({B}, R) integer tensor, got {tuple(reg_pos.shape)}")
        if ((reg_pos < 0) | (reg_pos >= T)).any():
            r, j = _first((reg_pos < 0) | (reg_pos >= T))
            raise InputError(f"reg_pos[{r}, {j}] = {int(reg_pos[r, j])} is not a token index in [0, {T})")
    if values is None and value_pos is None and value_mask is None:
        return None, None
    if values is None or value_pos is None:
        raise InputError("values and value_pos must be given together (value_mask is optional)")
    if values.dim() != 2 or values.size(0) != B or value_pos.shape != values.shape:
        raise InputError(
            f"values and value_pos must both be ({B}, V); got {tuple(values.shape)} and {tuple(value_pos.shape)}"
        )
    if value_pos.is_floating_point():
        raise InputError(f"value_pos must be an integer tensor, got {value_pos.dtype}")
    if value_mask is None:
        value_mask = torch.ones_like(value_pos, dtype=torch.bool)
    elif value_mask.shape != values.shape or value_mask.dtype != torch.bool:
        raise InputError(f"value_mask must be a bool tensor of shape {tuple(values.shape)}")
    value_pos = value_pos.long()
    outside = value_mask & ((value_pos < 0) | (value_pos >= T))
    if outside.any():
        r, j = _first(outside)
        raise InputError(f"value_pos[{r}, {j}] = {int(value_pos[r, j])} is not a token index in [0, {T})")
    at = torch.where(value_mask, value_pos, 0)
    not_m = value_mask & (input_ids.gather(1, at) != config.number_token_id)
    if not_m.any():
        r, j = _first(not_m)
        p = int(value_pos[r, j])
        raise InputError(
            f"value without <M>: values[{r}, {j}] follows input_ids[{r}, {p}] = {int(input_ids[r, p])}, "
            f"not the number token {config.number_token_id}"
        )
    running_max = torch.cummax(torch.where(value_mask, value_pos, -1), dim=1).values
    unordered = value_mask & (value_pos < running_max)
    if unordered.any():
        r, j = _first(unordered)
        raise InputError(f"value_pos[{r}] must be non-decreasing over valid values; it decreases at value {j}")
    nonfinite = value_mask & ~torch.isfinite(values)
    if nonfinite.any():
        r, j = _first(nonfinite)
        raise InputError(f"values[{r}, {j}] = {float(values[r, j])} is not finite")
    return value_pos, value_mask

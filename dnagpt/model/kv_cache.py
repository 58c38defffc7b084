"""Key/value cache for incremental decoding, with rows that hold different numbers of inserted values (torch only).

Design decisions:

- slots are absolute expanded positions (tokens plus inserted values), with a write position per row: rows whose
  prompts carry different numbers of values, so different expanded lengths, decode together, each continuing at its
  own position (``input_pos`` is an int or a (B,) tensor).
- only the valid items of a call are written, never a row's padding past its expanded length, so a slot never
  written is never attended to: the mask lets each query see exactly the slots up to its own position.
- a call may hold several tokens (the prompt, or a continuation chunk); its slots and mask are computed once per call
  (:func:`cache_step`) and shared by every layer.
- generation's decode steps (``DNAGPT.decode_step``) take a leaner convention: after the prompts (slots = expanded
  positions, as above), step s of every row writes slot ``width + s``, ``width`` being the longest expanded prompt;
  the row's position is carried by its embedding, and attention does not depend on the order of the keys. So a step
  writes one slice (:meth:`KVCache.append`), builds no indices, and the only mask is a fixed one hiding a shorter
  prompt's unwritten tail (:func:`decode_mask`; none when the prompts have equal expanded lengths).
- the cache is plain state, not a module: ``model.to()`` does not move it and it never enters a state dict or a
  checkpoint. Keys and values are cast to the cache's dtype on write and back to the activations' dtype on read, so
  a cache in the weights' dtype works under autocast.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class CacheStep:
    """Bookkeeping of one cached forward call, shared by all layers."""

    rows: Tensor  # (N,) batch row of each valid expanded item of this call
    items: Tensor  # (N,) its index in this call's expanded chunk
    slots: Tensor  # (N,) its absolute position, i.e. its cache slot
    mask: Tensor  # (B, 1, L, kv_len) True where a query may attend to a cached key
    kv_len: int  # cache prefix any query of this call can see
    positions: Tensor  # (B, L) wpe index of each item (padding past a row's end clamped: never written or read)


@dataclass
class KVCache:
    """Keys and values of one attention layer, each (B, n_head, max_seq_length, head_dim)."""

    k: Tensor
    v: Tensor

    @classmethod
    def zeros(cls, shape: tuple[int, int, int, int], device: torch.device, dtype: torch.dtype) -> KVCache:
        """An empty cache. Zeros, not ``torch.empty``: masked slots still enter ``att @ v`` with weight 0, and 0 * NaN
        is NaN."""
        return cls(torch.zeros(shape, device=device, dtype=dtype), torch.zeros(shape, device=device, dtype=dtype))

    def update(self, k: Tensor, v: Tensor, step: CacheStep) -> tuple[Tensor, Tensor]:
        """Write this call's (B, nh, L, hs) keys/values and return the visible prefix (B, nh, kv_len, hs)."""
        self.k[step.rows, :, step.slots] = k[step.rows, :, step.items].to(self.k.dtype)  # (N, nh, hs)
        self.v[step.rows, :, step.slots] = v[step.rows, :, step.items].to(self.v.dtype)
        return self.k[:, :, : step.kv_len].to(k.dtype), self.v[:, :, : step.kv_len].to(v.dtype)

    def append(self, k: Tensor, v: Tensor, slot: int) -> tuple[Tensor, Tensor]:
        """Write one decode step's (B, nh, hs) keys/values at ``slot`` for every row; return the prefix up to it,
        (B, nh, slot + 1, hs) views (no copy when the cache has the activations' dtype)."""
        self.k[:, :, slot] = k
        self.v[:, :, slot] = v
        return self.k[:, :, : slot + 1].to(k.dtype), self.v[:, :, : slot + 1].to(v.dtype)


def cache_step(
    caches: list[KVCache] | None, length: Tensor, width: int, input_pos: int | Tensor, block_size: int
) -> CacheStep:
    """Slots and attention mask of a cached call whose rows have expanded ``length`` (B,) (padded to ``width``) and
    start at expanded position(s) ``input_pos``."""
    if caches is None:
        raise ValueError("input_pos was given but no KV cache is set: call model.set_kv_cache(batch_size) first")
    batch_size = length.size(0)
    cache_b, _, cache_len, _ = caches[0].k.shape
    if batch_size != cache_b:
        raise ValueError(f"batch size {batch_size} differs from the KV cache's {cache_b}")
    device = length.device
    start = torch.as_tensor(input_pos, dtype=torch.long, device=device).expand(batch_size)
    end = start + length
    kv_len = int(end.max())
    if int(start.min()) < 0 or kv_len > cache_len:
        raise ValueError(
            f"cached call needs positions [{int(start.min())}, {kv_len}) but the KV cache holds {cache_len} "
            f"(block_size {block_size})"
        )
    ar = torch.arange(width, device=device)
    q_pos = start[:, None] + ar  # (B, L) absolute position of each expanded item
    rows, items = (ar < length[:, None]).nonzero(as_tuple=True)
    mask = torch.arange(kv_len, device=device) <= q_pos[..., None]  # (B, L, kv_len)
    positions = q_pos.clamp(max=block_size - 1)
    return CacheStep(rows, items, q_pos[rows, items], mask.unsqueeze(1), kv_len, positions)


def decode_mask(length: Tensor, cache_len: int) -> Tensor | None:
    """The (B, 1, 1, cache_len) slots each row may see during decode steps, whose prompts have expanded ``length``
    (B,): its own prompt ``[0, length)`` and the decode slots from ``max(length)`` on. None when the lengths are equal
    (every written slot is visible), so the common case runs attention without a mask."""
    width = int(length.max())
    if int(length.min()) == width:
        return None
    slots = torch.arange(cache_len, device=length.device)
    return ((slots < length[:, None]) | (slots >= width))[:, None, None, :]

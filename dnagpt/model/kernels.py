"""Kernel choices that depend on the CPU, decided at run time from the bf16 matrix instructions it has.

Causal attention has two kernels: SDPA (``F.scaled_dot_product_attention``: flash attention on CUDA, a blocked kernel
on CPU) and :func:`explicit_attention`, softmax(QK^T)V as two batched matmuls around a softmax, the matmuls in oneDNN
(on the AMX tiles where there are some). Measured on a 2-core AMX Xeon shared with a training run, bf16, T 512, hs 64
(same process, alternated): the whole training step with one thread, where the time is the work (with two threads
the host's load decides, in either direction):

- AMX (``amx_bf16``): the step 1.05-1.06x faster with the explicit kernel (tiny 0.728 vs 0.773 s, 0.1b 1.706 vs
  1.795 s); attention alone, forward + backward, 1.2-1.3x less CPU time. The first explicit kernel (``q @ k.T *
  scale`` + ``masked_fill``) was 1.5x slower than this one: the scale and the causal mask now ride on ``baddbmm``.
- AVX512-BF16 without AMX (oneDNN limited to ``AVX512_CORE_BF16`` on the same machine): a tie on one thread; the
  first pass measured the explicit kernel 1.3-2x faster than SDPA (``docs/performance.md``).
- AVX2 only (no bf16 dot products): SDPA 1.5x faster.
- fp32: SDPA 1.2-1.9x faster.

So the explicit kernel runs in bf16 on CPUs with bf16 matrix instructions, SDPA everywhere else; the explicit kernel
also runs wherever the attention weights are asked for.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

MANUAL_ATTENTION_MAX_LEN = 2048  # the explicit kernel holds (B, nh, L, S) weights; SDPA never does


def _cpu_bf16_matmul() -> str | None:
    """This CPU's bf16 matrix instructions that ATen may use: ``"amx"`` (tiles), ``"avx512_bf16"`` (dot products) or
    None. ``ATEN_CPU_CAPABILITY=avx2`` (or lower) counts as None: both are AVX512-era extensions."""
    if not torch.backends.cpu.get_cpu_capability().startswith("AVX512"):
        return None
    if torch.cpu._is_amx_tile_supported():
        return "amx"
    return "avx512_bf16" if torch.cpu._is_avx512_bf16_supported() else None


CPU_BF16_MATMUL = _cpu_bf16_matmul()  # a constant, also to torch.compile


def explicit_attention_is_faster(q: Tensor) -> bool:
    """The attention kernel for queries ``q`` (B, nh, L, hs): True for :func:`explicit_attention`, False for SDPA."""
    return (
        q.device.type == "cpu"
        and q.dtype == torch.bfloat16
        and q.size(-2) <= MANUAL_ATTENTION_MAX_LEN
        and CPU_BF16_MATMUL is not None
    )


def explicit_attention(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, dropout: Callable[[Tensor], Tensor] | None = None
) -> tuple[Tensor, Tensor]:
    """softmax(Q K^T / sqrt(hs) + mask) V of (B, nh, L, hs) queries against (B, nh, S, hs) keys and values.

    ``mask``: bool, broadcastable to (B, nh, L, S), True where a query may attend (None: causal). Returns the output
    (B, nh, L, hs) and the softmax weights (B, nh, L, S), before ``dropout``. The mask enters as an additive bias
    inside the first matmul (``baddbmm``, the scale as its ``alpha``): no full passes over the (L, S) scores for
    scaling and masking, forward or backward, which made the plain ``(q @ k.T) * scale`` + ``masked_fill`` 1.5x slower.
    """
    B, nh, L, hs = q.shape
    S = k.size(-2)
    if mask is None:
        bias = torch.full((L, S), float("-inf"), dtype=q.dtype, device=q.device).triu_(1)
    else:
        bias = torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill_(~mask, float("-inf"))
    bias = bias.expand(B, nh, L, S).reshape(B * nh, L, S)  # a view when the mask is shared by the batch
    q3, k3, v3 = (t.reshape(B * nh, -1, hs) for t in (q, k, v))
    weights = torch.baddbmm(bias, q3, k3.transpose(1, 2), alpha=1.0 / math.sqrt(hs)).softmax(dim=-1)
    y = torch.bmm(weights if dropout is None else dropout(weights), v3)
    return y.view(B, nh, L, hs), weights.view(B, nh, L, S)

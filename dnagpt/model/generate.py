"""Batched sampling from DNAGPT: temperature, top-k, top-p, stop tokens and constrained decoding.

Prompts of a batch have the same number of tokens and contain no padding: a right-padded prompt would make
its row continue after the pads, and left padding would shift the learned positions. Rows may still carry
different numbers of inserted values; the KV cache keeps a write position per row. Sampled ``<M>`` tokens get
no value inserted after them (read the regression head yourself if you need one). Finished rows emit ``pad_id``,
the tokenizer's ``<P>`` unless told otherwise. A bad argument value is an ``InputError`` naming it.

Decoding streams every weight once per step, so its speed is bytes per step and per-step overhead: the prompt goes
through ``DNAGPT.forward`` once, then each step through the lean ``DNAGPT.decode_step`` (one cache slice written, no
index or mask built), the new tokens into one buffer allocated up front, and no host synchronisation unless stop ids
can end the run early. It runs on a twin of the model (:func:`decoding_model`) whose weights are held once in the
decode dtype (``dtype=torch.bfloat16``: half the bytes; not autocast, which would cast every weight at every step) and,
on CPU, pre-packed for oneDNN where that measured faster.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

from dnagpt.model.gpt import DNAGPT
from dnagpt.model.kv_cache import decode_mask
from dnagpt.tokenizer import KmerTokenizer
from dnagpt.utils.errors import InputError

AllowedFn = Callable[[int, Tensor], Tensor]


def _check_args(
    model: DNAGPT,
    input_ids: Tensor,
    max_new_tokens: int,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    tokens: list[tuple[str, int]],
) -> None:
    if input_ids.dim() != 2 or input_ids.numel() == 0:
        raise InputError(f"empty prompt: input_ids must be a non-empty (B, T) tensor, got {tuple(input_ids.shape)}")
    if max_new_tokens < 0:
        raise InputError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if not (temperature >= 0 and temperature != float("inf")):
        raise InputError(f"temperature must be finite and >= 0 (0 = greedy), got {temperature}")
    if top_k is not None and top_k < 1:
        raise InputError(f"top_k must be >= 1 or None, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise InputError(f"top_p must be in (0, 1] or None, got {top_p}")
    for name, token in tokens:
        if not 0 <= token < model.config.vocab_size:
            raise InputError(f"{name} {token} is outside the vocabulary [0, {model.config.vocab_size})")


class PackedLinear(nn.Module):
    """An ``nn.Linear`` whose weight is also held pre-packed in oneDNN's blocked layout (CPU).

    A decode step multiplies a few rows by every weight, and the plain kernels spend part of that call re-laying the
    weight out; packing once per ``generate`` call removes it. ``weight`` and ``bias`` stay readable for callers that
    slice rows (``DNAGPT.logits_at``)."""

    def __init__(self, linear: nn.Linear, rows: int) -> None:
        super().__init__()
        self.weight, self.bias = linear.weight, linear.bias
        self.packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), rows)

    def forward(self, x: Tensor) -> Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [None], "")


def _packs(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether oneDNN's pre-packed linear is there for this device and dtype (CPU builds with oneDNN; bf16 where the
    CPU has bf16 instructions)."""
    if device.type != "cpu" or not torch.backends.mkldnn.is_available() or dtype not in (torch.float32, torch.bfloat16):
        return False
    if not (hasattr(torch.ops.mkldnn, "_reorder_linear_weight") and hasattr(torch.ops.mkldnn, "_linear_pointwise")):
        return False
    return dtype == torch.float32 or bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def decoding_model(model: DNAGPT, dtype: torch.dtype | None, rows: int, head: bool = True) -> DNAGPT:
    """A twin of ``model`` for decoding ``rows`` sequences: floating-point weights cast to ``dtype`` once (shared with
    ``model`` where already in it, so fp32 decoding copies no weight), and on CPU the linear layers pre-packed where it
    measured faster (:class:`PackedLinear`): in bf16 all of them (1.4x on the block matmuls, 2.1x on the token head,
    4 rows), in fp32 only the token head's output (``head``: 1.5x; the block matmuls were faster unpacked).

    The twin is built from the cast tensors (``deepcopy``'s memo), so no second full-precision model exists even
    briefly; the caller's model, its mode and its KV cache are left alone."""
    dtype = dtype or model.transformer.wte.weight.dtype
    if not dtype.is_floating_point:
        raise InputError(f"dtype must be a floating-point dtype (e.g. torch.bfloat16), got {dtype}")
    memo: dict[int, object] = {}
    for t in (*model.parameters(), *model.buffers()):
        if t.is_floating_point() and t.dtype != dtype:
            cast = t.detach().to(dtype)
            memo[id(t)] = nn.Parameter(cast, requires_grad=False) if isinstance(t, nn.Parameter) else cast
        else:
            memo[id(t)] = t
    memo[id(model.kv_caches)] = None  # a cache the caller set stays theirs; generate sets the twin's own
    twin = copy.deepcopy(model, memo).eval()
    if _packs(twin.transformer.wte.weight.device, dtype):
        out = twin.token_head[-1]
        for module in list(twin.modules()):
            for name, child in list(module.named_children()):
                if isinstance(child, nn.Linear) and (head if child is out else dtype == torch.bfloat16):
                    setattr(module, name, PackedLinear(child, rows))
    return twin


def _allowed_at(
    allowed: Tensor | AllowedFn | None, step: int, new: Tensor, max_new_tokens: int, vocab_size: int
) -> Tensor | None:
    """The (B, V) or (V,) bool mask of tokens permitted at ``step``, or None if unconstrained."""
    if allowed is None:
        return None
    B = new.size(0)
    if callable(allowed):
        mask = allowed(step, new)
        shapes, where = ((B, vocab_size), (vocab_size,)), f"allowed({step}, generated) returned"
    else:
        mask = allowed
        shapes, where = ((max_new_tokens, vocab_size), (B, max_new_tokens, vocab_size)), "allowed has"
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool or tuple(mask.shape) not in shapes:
        got = f"{tuple(mask.shape)} {mask.dtype}" if isinstance(mask, Tensor) else type(mask).__name__
        raise InputError(f"{where} {got}; expected a bool tensor of shape {' or '.join(map(str, shapes))}")
    if callable(allowed):
        return mask
    return mask[step] if mask.dim() == 2 else mask[:, step]


def _sample(
    logits: Tensor,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    generator: torch.Generator | None,
) -> Tensor:
    """One token per row from (B, V) float logits (disallowed entries already -inf)."""
    if temperature == 0:  # max's indices: the first maximum, as argmax, but a vectorised kernel (about 5x faster on CPU)
        return logits.max(dim=-1).indices
    logits = logits / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        drop = probs.cumsum(dim=-1) - probs > top_p  # keep the smallest prefix reaching top_p (>= 1 token)
        logits = logits.masked_fill(drop.scatter(1, order, drop), float("-inf"))
    return torch.multinomial(logits.softmax(dim=-1), 1, generator=generator).squeeze(1)


@torch.no_grad()
def generate(
    model: DNAGPT,
    input_ids: Tensor,
    max_new_tokens: int,
    *,
    values: Tensor | None = None,
    value_pos: Tensor | None = None,
    value_mask: Tensor | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    stop_ids: Iterable[int] = (),
    pad_id: int = KmerTokenizer.pad_id,
    allowed: Tensor | AllowedFn | None = None,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """Sample up to ``max_new_tokens`` per row after equal-length prompts ``input_ids`` (B, T0).

    Returns (B, T0 + n). A row that emits one of ``stop_ids`` is finished and emits ``pad_id`` from then on;
    generation stops early (n < max_new_tokens) once every row is finished. ``temperature`` 0 is greedy.
    ``allowed`` constrains decoding: a bool tensor (max_new_tokens, V) or (B, max_new_tokens, V), or a
    callable ``(step, generated) -> (B, V)`` bool mask, where ``generated`` (B, step) holds the new tokens
    so far (a view, valid during the call); disallowed logits are set to -inf before sampling. ``dtype`` (e.g.
    ``torch.bfloat16``) decodes with a copy of the weights cast to it once; None uses the model's own. Decoding runs
    in eval mode on a twin of the model (:func:`decoding_model`) that holds its own KV cache: the model's mode and
    any cache set on it are left as they were.
    """
    stop_ids = tuple(stop_ids)
    tokens = [("pad_id", pad_id)] + [("stop id", s) for s in stop_ids]
    _check_args(model, input_ids, max_new_tokens, temperature, top_k, top_p, tokens)
    if (input_ids == pad_id).any():
        r, t = (int(i) for i in (input_ids == pad_id).nonzero()[0])
        raise InputError(f"prompts must be equal length without padding, but input_ids[{r}, {t}] is pad_id {pad_id}")
    B, T0 = input_ids.shape
    n_values = torch.zeros(B, dtype=torch.long, device=input_ids.device)
    if value_pos is not None:
        n_values = (value_mask if value_mask is not None else torch.ones_like(value_pos, dtype=torch.bool)).sum(1)
    length = T0 + n_values  # (B,) expanded prompt length of each row
    width = int(length.max())
    need = width + max_new_tokens - 1  # the last sampled token is never fed back
    if need > model.config.block_size:
        raise InputError(
            f"prompt of {width} positions (after number insertion) + {max_new_tokens} new tokens "
            f"needs {need} positions, more than block_size {model.config.block_size}"
        )
    if max_new_tokens == 0:
        return input_ids.clone()
    net = decoding_model(model, dtype, B, head=allowed is None)  # a constrained head reads only some rows
    numbers = {"values": values, "value_pos": value_pos, "value_mask": value_mask}
    stop = torch.tensor(stop_ids, dtype=input_ids.dtype, device=input_ids.device) if stop_ids else None
    new = input_ids.new_full((B, max_new_tokens), pad_id)  # every step writes its column: no per-step concatenation
    finished = torch.zeros(B, dtype=torch.bool, device=input_ids.device)
    n = max_new_tokens
    if use_cache:
        net.set_kv_cache(B, need)
        hidden = net(input_ids, **numbers, input_pos=0, compute_logits=False).hidden[:, -1]
        mask = decode_mask(length, need)
    for step in range(max_new_tokens):
        if not use_cache:
            seq = torch.cat([input_ids, new[:, :step]], dim=1)
            hidden = net(seq, **numbers, compute_logits=False).hidden[:, -1]
        rule = _allowed_at(allowed, step, new[:, :step], max_new_tokens, net.config.vocab_size)
        if rule is None:
            token = _sample(net.logits(hidden).float(), temperature, top_k, top_p, generator)
        else:
            rule = rule.to(hidden.device)  # (V,) shared by the rows, or (B, V): a shared one is reduced once, not B times
            blocked = ~rule.any(dim=-1).expand(B) & ~finished  # finished rows emit pad_id whatever they sample
            if blocked.any():
                raise InputError(f"allowed permits no token for row {int(blocked.nonzero()[0])} at step {step}")
            # the head scores only the ids some row may take: the softmax over them is the masked softmax
            cols = (rule if rule.dim() == 1 else rule.any(dim=0)).nonzero().squeeze(1)
            logits = net.logits_at(hidden, cols).float()
            if rule.dim() == 2:
                logits = logits.masked_fill(~rule[:, cols], float("-inf"))
            logits = logits.masked_fill(finished[:, None], 0.0)  # finished rows: any finite row samples
            token = cols[_sample(logits, temperature, top_k, top_p, generator)]
        if stop is not None:  # without stop ids no row finishes: no per-step check, no host synchronisation
            token = token.masked_fill(finished, pad_id)
            finished |= torch.isin(token, stop)
        new[:, step] = token
        if step == max_new_tokens - 1 or (stop is not None and bool(finished.all())):
            n = step + 1
            break
        if use_cache:
            hidden = net.decode_step(token, length + step, width + step, mask)
    return torch.cat([input_ids, new[:, :n]], dim=1)

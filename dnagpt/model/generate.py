"""Batched sampling from DNAGPT: temperature, top-k, top-p, stop tokens and constrained decoding.

Prompts of a batch have the same number of tokens and contain no padding: a right-padded prompt would make
its row continue after the pads, and left padding would shift the learned positions. Rows may still carry
different numbers of inserted values; the KV cache keeps a write position per row. Sampled ``<M>`` tokens get
no value inserted after them (read the regression head yourself if you need one). Finished rows emit ``pad_id``,
the tokenizer's ``<P>`` unless told otherwise. A bad argument value is an ``InputError`` naming it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor

from dnagpt.model.gpt import DNAGPT
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
    if temperature == 0:
        return logits.argmax(dim=-1)
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
) -> Tensor:
    """Sample up to ``max_new_tokens`` per row after equal-length prompts ``input_ids`` (B, T0).

    Returns (B, T0 + n). A row that emits one of ``stop_ids`` is finished and emits ``pad_id`` from then on;
    generation stops early (n < max_new_tokens) once every row is finished. ``temperature`` 0 is greedy.
    ``allowed`` constrains decoding: a bool tensor (max_new_tokens, V) or (B, max_new_tokens, V), or a
    callable ``(step, generated) -> (B, V)`` bool mask, where ``generated`` (B, step) holds the new tokens
    so far; disallowed logits are set to -inf before sampling. The model runs in eval mode (its previous
    mode is restored) and its KV cache is owned by this call: it is replaced and cleared afterwards.
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
    need = int(length.max()) + max_new_tokens - 1  # the last sampled token is never fed back
    if need > model.config.block_size:
        raise InputError(
            f"prompt of {int(length.max())} positions (after number insertion) + {max_new_tokens} new tokens "
            f"needs {need} positions, more than block_size {model.config.block_size}"
        )
    if max_new_tokens == 0:
        return input_ids.clone()
    numbers = {"values": values, "value_pos": value_pos, "value_mask": value_mask}
    stop = torch.tensor(stop_ids, dtype=input_ids.dtype, device=input_ids.device)
    new = input_ids.new_empty(B, 0)
    finished = torch.zeros(B, dtype=torch.bool, device=input_ids.device)
    was_training = model.training
    model.eval()
    try:
        if use_cache:
            model.set_kv_cache(B, need)
            hidden = model(input_ids, **numbers, input_pos=0, compute_logits=False).hidden[:, -1]
        for step in range(max_new_tokens):
            if not use_cache:
                seq = torch.cat([input_ids, new], dim=1)
                hidden = model(seq, **numbers, compute_logits=False).hidden[:, -1]
            mask = _allowed_at(allowed, step, new, max_new_tokens, model.config.vocab_size)
            if mask is None:
                token = _sample(model.logits(hidden).float(), temperature, top_k, top_p, generator)
            else:
                mask = mask.to(hidden.device).expand(B, -1)
                blocked = ~mask.any(dim=-1) & ~finished  # finished rows emit pad_id whatever they sample
                if blocked.any():
                    raise InputError(f"allowed permits no token for row {int(blocked.nonzero()[0])} at step {step}")
                # the head scores only the ids some row may take: the softmax over them is the masked softmax
                cols = mask.any(dim=0).nonzero().squeeze(1)
                logits = model.logits_at(hidden, cols).float().masked_fill(~mask[:, cols], float("-inf"))
                logits = logits.masked_fill(finished[:, None], 0.0)  # finished rows: any finite row samples
                token = cols[_sample(logits, temperature, top_k, top_p, generator)]
            token = torch.where(finished, torch.full_like(token, pad_id), token)
            new = torch.cat([new, token[:, None]], dim=1)
            finished |= torch.isin(token, stop)
            if bool(finished.all()) or step == max_new_tokens - 1:
                break
            if use_cache:
                hidden = model(token[:, None], input_pos=length + step, compute_logits=False).hidden[:, -1]
    finally:
        model.clear_kv_cache()
        model.train(was_training)
    return torch.cat([input_ids, new], dim=1)

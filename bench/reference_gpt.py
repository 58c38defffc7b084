"""The baselines of ``bench``: a minimal nanoGPT-style GPT and Hugging Face GPT-2 of the same shape (:func:`hf_gpt2`).

What a careful user would write by hand: pre-LN blocks, one fused QKV matmul, SDPA causal attention, GELU MLP, an output
layer tied to the token embedding, full ``(B, T, V)`` logits and ``F.cross_entropy``; a simple concatenating KV cache
for generation. Written for this benchmark, not used by the package.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def hf_gpt2(
    vocab_size: int, block_size: int, n_layer: int, n_head: int, n_embd: int, use_cache: bool = False
) -> nn.Module | None:
    """``GPT2LMHeadModel`` of this shape (SDPA attention, no dropout), or None without ``transformers`` (a bench-only
    dependency: ``pip install -e .[bench]``). ``use_cache``: what ``generate`` needs; training steps return no cache."""
    try:
        from transformers import GPT2Config, GPT2LMHeadModel
    except ImportError:
        return None
    config = GPT2Config(vocab_size=vocab_size, n_positions=block_size, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, use_cache=use_cache, bos_token_id=0,
                        eos_token_id=0, attn_implementation="sdpa")  # fmt: skip
    return GPT2LMHeadModel(config)


class Attention(nn.Module):
    def __init__(self, d: int, n_head: int) -> None:
        super().__init__()
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.out = nn.Linear(d, d, bias=False)
        self.n_head = n_head

    def forward(self, x: Tensor, cache: list[Tensor] | None = None) -> Tensor:
        B, T, D = x.shape
        q, k, v = (t.view(B, T, self.n_head, D // self.n_head).transpose(1, 2) for t in self.qkv(x).split(D, dim=2))
        if cache is not None:
            if cache:  # append this step's keys and values to the cached ones
                k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)
            cache[:] = [k, v]
        causal = cache is None or q.size(2) == k.size(2)  # one new query attends to every cached key
        y = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        return self.out(y.transpose(1, 2).reshape(B, T, D))


class Block(nn.Module):
    def __init__(self, d: int, n_head: int) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d, bias=False), nn.LayerNorm(d, bias=False)
        self.attn = Attention(d, n_head)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d, bias=False), nn.GELU(approximate="tanh"),
                                 nn.Linear(4 * d, d, bias=False))  # fmt: skip

    def forward(self, x: Tensor, cache: list[Tensor] | None = None) -> Tensor:
        x = x + self.attn(self.ln1(x), cache)
        return x + self.mlp(self.ln2(x))


class ReferenceGPT(nn.Module):
    def __init__(self, vocab_size: int, block_size: int, n_layer: int, n_head: int, n_embd: int) -> None:
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab_size, n_embd), nn.Embedding(block_size, n_embd)
        self.blocks = nn.ModuleList(Block(n_embd, n_head) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd, bias=False)
        self.head = nn.Linear(n_embd, vocab_size, bias=False)
        self.head.weight = self.wte.weight
        for p in self.parameters():
            if p.dim() >= 2:
                nn.init.normal_(p, std=0.02)

    def forward(self, ids: Tensor, start: int = 0, caches: list[list[Tensor]] | None = None) -> Tensor:
        pos = torch.arange(start, start + ids.size(1), device=ids.device)
        x = self.wte(ids) + self.wpe(pos)
        for i, block in enumerate(self.blocks):
            x = block(x, None if caches is None else caches[i])
        return self.head(self.ln_f(x))

    def loss(self, ids: Tensor) -> Tensor:
        logits = self(ids[:, :-1])
        return F.cross_entropy(logits.flatten(0, 1).float(), ids[:, 1:].flatten())

    @torch.no_grad()
    def generate(self, prompt: Tensor, new_tokens: int) -> Tensor:
        """Greedy decoding with the KV cache."""
        caches: list[list[Tensor]] = [[] for _ in self.blocks]
        logits = self(prompt, 0, caches)[:, -1]
        out = [prompt]
        for step in range(new_tokens):
            token = logits.argmax(-1, keepdim=True)
            out.append(token)
            if step < new_tokens - 1:
                logits = self(token, prompt.size(1) + step, caches)[:, -1]
        return torch.cat(out, dim=1)

"""DNAGPT backbone: a GPT decoder over DNA k-mer words, with numbers inserted into the sequence.

Read top-down like nanoGPT: attention, MLP, Block, then the network. Design decisions (and departures from GPT-2),
following the released DNAGPT so its checkpoints load strictly:

- pre-LayerNorm blocks, GELU (tanh approximation), MLP width 4x, final ``ln_f``; LayerNorm eps 1e-5 with a bias only
  when ``config.bias`` (the released presets have no biases anywhere); dropout 0 in the release.
- learned absolute positions (``wpe``) added *after* number insertion, so inserted values occupy positions and
  ``block_size`` counts tokens plus values. Where each token and value lands, and the checks on a batch's numbers,
  live in ``numbers.py``.
- the untied MLP token head, the regression head and the Numerical Embedding layer live in ``heads.py``; state-dict
  names match the release up to a three-entry rename (``pretrained.py``). ``tie_head`` (``tiny`` only) swaps the token
  head for GPT-2's: ``wte``'s own matrix, fewer parameters and, on the CPU recipe, faster learning per step. Its
  weight is one Parameter, saved once (under ``transformer.wte.weight``) and re-tied after every load.
- SDPA causal attention (``is_causal=True``, no mask buffer); the explicit kernel runs when attention maps are asked
  for, and in bf16 on CPUs with bf16 matrix instructions (AMX, AVX512-BF16), where it is the faster one (``kernels.py``).
- the token loss goes through a chunked fused head + cross-entropy (``losses.py``): no (N, vocab) logits.
- ``hidden`` is returned in token coordinates: row ``t`` is the state that predicts token ``t+1`` after all values
  attached to token ``t`` (the standard causal shift, numbers notwithstanding).
- cached decoding (``set_kv_cache`` + ``input_pos``) keeps a write position per row, so rows holding different
  numbers of values decode together (``kv_cache.py``); generation's one-token steps take the leaner ``decode_step``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dnagpt.model.config import GPTConfig
from dnagpt.model.heads import NumberEmbedding, RegressionHead, TiedTokenHead, TokenHead
from dnagpt.model.kernels import explicit_attention, explicit_attention_is_faster
from dnagpt.model.kv_cache import CacheStep, KVCache, cache_step
from dnagpt.model.losses import linear_cross_entropy
from dnagpt.model.numbers import check_inputs, gather_rows, insertion_layout
from dnagpt.utils.errors import InputError


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v stacked
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.attn_dropout = nn.Dropout(config.dropout)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head = config.n_head
        self.dropout = config.dropout

    def forward(
        self,
        x: Tensor,
        cache: KVCache | None = None,
        step: CacheStep | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        B, L, D = x.shape
        hs = D // self.n_head
        q, k, v = self.c_attn(x).split(D, dim=2)
        q = q.view(B, L, self.n_head, hs).transpose(1, 2)  # (B, nh, L, hs)
        k = k.view(B, L, self.n_head, hs).transpose(1, 2)  # (B, nh, L, hs)
        v = v.view(B, L, self.n_head, hs).transpose(1, 2)  # (B, nh, L, hs)
        mask = None
        if cache is not None and step is not None:
            k, v = cache.update(k, v, step)  # (B, nh, kv_len, hs)
            mask = step.mask
        att = None
        if need_weights or explicit_attention_is_faster(q):
            y, weights = explicit_attention(q, k, v, mask, self.attn_dropout)
            att = weights if need_weights else None
        else:
            p = self.dropout if self.training else 0.0
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, is_causal=mask is None)
        y = y.transpose(1, 2).contiguous().view(B, L, D)  # (B, L, D)
        return self.resid_dropout(self.c_proj(y)), att

    def decode(self, x: Tensor, cache: KVCache, slot: int, mask: Tensor | None) -> Tensor:
        """One new token per row, (B, D) -> (B, D): its key/value go to cache ``slot``, its query attends to slots
        ``[0, slot]`` where ``mask`` (B, 1, 1, slot + 1) allows (None: all). SDPA even in bf16 on CPU: with a single
        query it is the faster kernel."""
        B, D = x.shape
        q, k, v = self.c_attn(x).view(B, 3, self.n_head, D // self.n_head).unbind(1)  # (B, nh, hs) each
        k, v = cache.append(k, v, slot)  # (B, nh, slot + 1, hs)
        y = F.scaled_dot_product_attention(q.unsqueeze(2), k, v, attn_mask=mask)  # (B, nh, 1, hs)
        return self.c_proj(y.view(B, D))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU(approximate="tanh")
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=1e-5, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=1e-5, bias=config.bias)
        self.mlp = MLP(config)

    def forward(
        self,
        x: Tensor,
        cache: KVCache | None = None,
        step: CacheStep | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        a, att = self.attn(self.ln_1(x), cache, step, need_weights)
        x = x + a
        return x + self.mlp(self.ln_2(x)), att

    def decode(self, x: Tensor, cache: KVCache, slot: int, mask: Tensor | None) -> Tensor:
        """:meth:`forward` for one new token per row, (B, D) -> (B, D) (see :meth:`CausalSelfAttention.decode`)."""
        x = x + self.attn.decode(self.ln_1(x), cache, slot, mask)
        return x + self.mlp(self.ln_2(x))


@dataclass
class DNAGPTOutput:
    """What :meth:`DNAGPT.forward` returns."""

    hidden: Tensor  # (B, T, D) post-ln_f state at each token's predictor position
    token_pos: Tensor  # (B, T) expanded position of each token: maps attention maps back to tokens
    logits: Tensor | None = None  # (B, T, vocab_size) next-token logits, if compute_logits
    value_pred: Tensor | None = None  # (B, R) regression head at the <M> tokens of reg_pos
    attentions: list[Tensor] | None = None  # per layer (B, n_head, L, S) softmax weights, expanded coordinates


TIED_HEAD_KEY = "token_head.0.weight"  # a tied head's weight: transformer.wte.weight itself, saved under that name only


def _drop_tied_head(module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    """State dicts hold the tied matrix once (safetensors refuses aliased tensors; a copy would double the file)."""
    del state_dict[prefix + TIED_HEAD_KEY]


def _alias_tied_head(module: nn.Module, state_dict: dict, prefix: str, *_: object) -> None:
    """Loading: the head's key reads ``wte``'s tensor (a state dict that holds the key keeps its own, checked as usual)."""
    wte = state_dict.get(prefix + "transformer.wte.weight")
    if wte is not None:
        state_dict.setdefault(prefix + TIED_HEAD_KEY, wte)


def _retie_head(module: nn.Module, incompatible_keys: object) -> None:
    """``load_state_dict(assign=True)`` (meta-device loading) gives each key its own Parameter: share ``wte``'s again."""
    module.token_head[-1].weight = module.transformer.wte.weight


class DNAGPT(nn.Module):
    """The DNAGPT network: backbone, Numerical Embedding, token head and regression head."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_rows, config.n_embd),
                wpe=nn.Embedding(config.block_size, config.n_embd),
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
                ln_f=nn.LayerNorm(config.n_embd, eps=1e-5, bias=config.bias),
            )
        )
        self.number_embedding = NumberEmbedding(config.n_embd, config.bias)
        if config.tie_head:
            self.token_head = TiedTokenHead(self.transformer.wte)
            self.register_state_dict_post_hook(_drop_tied_head)
            self.register_load_state_dict_pre_hook(_alias_tied_head)
            self.register_load_state_dict_post_hook(_retie_head)
        else:
            self.token_head = TokenHead(config.n_embd, config.vocab_rows, config.bias)
        self.regression_head = RegressionHead(config.n_embd, config.bias)
        self.kv_caches: list[KVCache] | None = None
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):  # GPT-2: scale residual projections by depth
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def _init_weights(self, module: nn.Module) -> None:
        """nanoGPT init; public to the LightningModule for freshly added heads."""
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def num_params(self) -> int:
        """All parameters, heads and position embeddings included (the release's counting)."""
        return sum(p.numel() for p in self.parameters())

    def param_groups(self, weight_decay: float, layer_lr_decay: float = 1.0) -> list[dict]:
        """nanoGPT param groups: Linear and Embedding weights decay, LayerNorm weights and biases don't.

        Chosen by module and name, not by ``p.dim()``: FSDP flattens every parameter to 1-D, which would silently turn
        weight decay off. Returns groups, not an optimizer, so every harness builds its optimizer (e.g. a Hydra
        partial) on the same groups. The first two groups (decay, no decay) hold the top of the network. A parameter
        shared by two modules (``tie_head``) is listed once, where it first appears: a tied head's matrix is ``wte``.

        ``layer_lr_decay < 1`` (layer-wise learning-rate decay for fine-tuning a pre-trained body) splits them per
        depth, each with ``lr_scale = layer_lr_decay ** (n_layer + 1 - depth)``: the heads and final LayerNorm
        (depth ``n_layer + 1``) learn at the full rate, block ``i`` at depth ``i + 1``, the embeddings at depth 0.
        """
        if not 0.0 < layer_lr_decay <= 1.0:
            raise ValueError(f"layer_lr_decay must lie in (0, 1], got {layer_lr_decay}")
        top = self.config.n_layer + 1
        groups: dict[tuple[int, bool], list[nn.Parameter]] = {}
        seen: set[int] = set()
        for module_name, module in self.named_modules():
            depth = self.depth(module_name) if layer_lr_decay < 1.0 else top
            for name, p in module.named_parameters(recurse=False):
                if p.requires_grad and id(p) not in seen:
                    seen.add(id(p))
                    matrix = name == "weight" and isinstance(module, nn.Linear | nn.Embedding)
                    groups.setdefault((depth, matrix), []).append(p)
        out = []
        for depth in range(top, -1, -1):
            for matrix in (True, False):
                group = {"params": groups.get((depth, matrix), []), "weight_decay": weight_decay if matrix else 0.0}
                if layer_lr_decay < 1.0:
                    group["lr_scale"] = layer_lr_decay ** (top - depth)
                if group["params"] or depth == top:  # the top pair always exists: tasks append their heads to it
                    out.append(group)
        return out

    def depth(self, module_name: str) -> int:
        """0 for the embeddings (tokens, positions, numbers), ``i + 1`` inside block ``i``, ``n_layer + 1`` above."""
        parts = module_name.split(".")
        if parts[0] == "number_embedding" or parts[:2] in (["transformer", "wte"], ["transformer", "wpe"]):
            return 0
        if parts[:2] == ["transformer", "h"] and len(parts) > 2:
            return int(parts[2]) + 1
        return self.config.n_layer + 1

    def logits(self, hidden: Tensor) -> Tensor:
        """Token head on (..., D) states, sliced back to ``vocab_size`` if the head is padded."""
        return self.token_head(hidden)[..., : self.config.vocab_size]

    def logits_at(self, hidden: Tensor, ids: Tensor) -> Tensor:
        """``self.logits(hidden)[..., ids]`` computing only those columns of the token head: constrained decoding
        (e.g. one SNP's alleles) scores a few ids instead of the whole vocabulary."""
        out = self.token_head[-1]
        bias = None if out.bias is None else out.bias[ids]
        return F.linear(self.token_head.features(hidden), out.weight[ids], bias)

    def token_loss(self, hidden: Tensor, targets: Tensor) -> Tensor:
        """Mean next-token cross-entropy of (N, D) states against (N,) ids, equal to ``F.cross_entropy(self.logits(
        hidden), targets)`` but through :func:`linear_cross_entropy`: the (N, vocab) logits are never materialised."""
        out = self.token_head[-1]
        v = self.config.vocab_size
        bias = None if out.bias is None else out.bias[:v]
        return linear_cross_entropy(self.token_head.features(hidden), out.weight[:v], bias, targets)

    def set_kv_cache(
        self,
        batch_size: int,
        max_seq_length: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        """Allocate one zeroed :class:`KVCache` per layer, (batch_size, n_head, max_seq_length, head_dim).

        The cache is plain state, not a module: ``model.to()`` does not move it, so set it after moving the model.
        ``max_seq_length`` defaults to ``block_size``; device and dtype default to the weights'.
        """
        max_len = self.config.block_size if max_seq_length is None else max_seq_length
        if not 0 < max_len <= self.config.block_size:
            raise ValueError(f"max_seq_length must be in [1, block_size={self.config.block_size}], got {max_len}")
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        w = self.transformer.wte.weight
        shape = (batch_size, self.config.n_head, max_len, self.config.n_embd // self.config.n_head)
        device, dtype = torch.device(device or w.device), dtype or w.dtype
        self.kv_caches = [KVCache.zeros(shape, device, dtype) for _ in self.transformer.h]

    def clear_kv_cache(self) -> None:
        self.kv_caches = None

    def decode_step(self, tokens: Tensor, positions: Tensor, slot: int, mask: Tensor | None = None) -> Tensor:
        """The lean cached step of generation: (B,) ``tokens`` at expanded ``positions`` (B,) -> (B, D) post-``ln_f``
        states. Every row writes its key/value at the same cache ``slot`` (its position lives in ``wpe``, not in the
        slot: attention is order-free), so no per-row index bookkeeping is built; ``mask`` (B, 1, 1, >= slot + 1) bool
        hides the slots a row must not see (a shorter prompt's unwritten tail), None when there are none. No number
        insertion, no input checks and no dropout (eval only): ``generate`` feeds back the ids it sampled, after a
        prefill through :meth:`forward` with ``input_pos=0``."""
        if self.kv_caches is None:
            raise ValueError("decode_step needs a KV cache: call model.set_kv_cache(batch_size) and prefill first")
        x = self.transformer.wte(tokens) + self.transformer.wpe(positions)  # (B, D)
        visible = None if mask is None else mask[..., : slot + 1]
        for block, cache in zip(self.transformer.h, self.kv_caches, strict=True):
            x = block.decode(x, cache, slot, visible)
        return self.transformer.ln_f(x)

    def forward(
        self,
        input_ids: Tensor,
        *,
        values: Tensor | None = None,
        value_pos: Tensor | None = None,
        value_mask: Tensor | None = None,
        reg_pos: Tensor | None = None,
        input_pos: int | Tensor | None = None,
        compute_logits: bool = True,
        return_attentions: bool = False,
    ) -> DNAGPTOutput:
        """Run the network on right-padded ``input_ids`` (B, T) with optional inserted numbers.

        ``values``/``value_pos``/``value_mask`` (B, V): value j of a row follows the ``<M>`` token at index
        ``value_pos[:, j]`` (non-decreasing over valid values). ``reg_pos`` (B, R): token indices of ``<M>`` tokens
        whose regression prediction is wanted (read before the values attached to them). ``input_pos`` (int or (B,)):
        cached decoding; the expanded position at which this chunk starts in each row (see ``set_kv_cache``); without
        it the KV cache is neither read nor written.
        """
        value_pos, value_mask = check_inputs(self.config, input_ids, values, value_pos, value_mask, reg_pos)
        layout = insertion_layout(input_ids, value_pos, value_mask)
        x = self.transformer.wte(input_ids)  # (B, T, D)
        if values is not None:
            nums = self.number_embedding(values.unsqueeze(-1).to(x.dtype)).to(x.dtype)  # (B, V, D)
            x = layout.insert(x, nums)  # (B, L, D)
        step: CacheStep | None = None
        if input_pos is None:
            if layout.width > self.config.block_size:
                r = int(layout.length.argmax())
                raise InputError(
                    f"row {r} is {layout.width} positions long after number insertion ({input_ids.size(1)} tokens + "
                    f"{layout.width - input_ids.size(1)} values), more than block_size {self.config.block_size}"
                )
            positions = torch.arange(layout.width, device=x.device)
        else:
            step = cache_step(self.kv_caches, layout.length, layout.width, input_pos, self.config.block_size)
            positions = step.positions
        x = self.transformer.drop(x + self.transformer.wpe(positions))
        attentions: list[Tensor] | None = [] if return_attentions else None
        for i, block in enumerate(self.transformer.h):
            cache = self.kv_caches[i] if step is not None and self.kv_caches is not None else None
            x, att = block(x, cache, step, return_attentions)
            if attentions is not None and att is not None:
                attentions.append(att)
        x = self.transformer.ln_f(x)
        hidden = gather_rows(x, layout.pred_pos)  # (B, T, D)
        value_pred = None
        if reg_pos is not None:
            at_m = layout.token_pos.gather(1, reg_pos.long())  # (B, R) expanded position of each <M>
            value_pred = self.regression_head(gather_rows(x, at_m)).squeeze(-1)  # (B, R)
        logits = self.logits(hidden) if compute_logits else None
        return DNAGPTOutput(hidden, layout.token_pos, logits, value_pred, attentions)

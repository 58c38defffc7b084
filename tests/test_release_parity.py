"""Release parity: our DNAGPT against an independent reference forward of the released architecture.

Every other "released" checkpoint in the tests is our own model saved under the release's key names, so a fact we got
wrong would be wrong on both sides. Here the released network is re-derived from its documented facts with plain torch
ops over a state dict in the release's layout (nothing from ``dnagpt.model.gpt``/``numbers``/``heads``), random weights
are drawn for it, and our model must reproduce it after the public loader (``config_from_release_state_dict`` +
``load_release_state_dict``; the small model from a ``{"model": state_dict}`` file). Everything runs in float64, so
the tolerance is far below what a wrong fact produces (a GELU variant, an epsilon or a position rule each move the
logits by > 1e-4).

The facts of the official release relied on (from the project's reference notes on the paper and the release):

- State dict, Linear weights ``[out, in]``, no biases anywhere: ``transformer.wte.weight [V, D]``,
  ``transformer.wpe.weight [block_size, D]``; per layer i ``transformer.h.{i}.ln_1.weight``,
  ``.attn.c_attn.weight [3D, D]`` (q, k, v stacked in that order), ``.attn.c_proj.weight [D, D]``, ``.ln_2.weight``,
  ``.mlp.c_fc.weight [4D, D]``, ``.mlp.c_proj.weight [D, 4D]``; ``transformer.ln_f.weight``; three heads, each
  ``Sequential(Linear, SiLU, LayerNorm, Linear)`` (keys ``.0 .2 .3``): ``number_embedding`` (1 -> D -> D, the
  Numerical Embedding layer), ``mlm_head`` (D -> D -> V, the token head, not tied to ``wte``) and ``num_regression``
  (D -> D -> 1, the regression head). A checkpoint may be a raw state dict or ``{"model": state_dict}``.
- Blocks: GPT-2 pre-LayerNorm, ``x + attn(ln_1(x))`` then ``x + mlp(ln_2(x))``; causal multi-head softmax attention
  scaled by 1/sqrt(head size); MLP of width 4D with GELU in its tanh approximation; final ``ln_f``; dropout 0.
- LayerNorm: epsilon 1e-5, a weight and no bias.
- Numbers are inserted, not substituted: the embedding sequence is the token embeddings up to and including a ``<M>``,
  then the number embeddings of its values, then the rest. Learned positions are added after insertion, so values
  occupy positions 0..L-1 of the expanded sequence like tokens.
- The regression head reads the final (post-``ln_f``) state at the ``<M>`` token's own position, the one right before
  its value.
- The release runs one sentence at a time: the reference does too (unpadded), while our model runs right-padded
  batches whose rows hold different numbers of values.
- Released presets: ``dna_gpt0.1b_m`` block 512, 12 layers, 12 heads, D 768, dynamic vocabulary (19,564 ids);
  ``dna_gpt0.1b_h`` block 4096, 12/12/768, fixed 6-mer vocabulary (15,659 ids).

What the comparison reads from our side is our documented API: ``logits[:, t]`` is the prediction after token t and
all the values attached to it (the reference's logits at the last of those expanded positions); ``value_pred`` is the
regression head at the ``<M>`` tokens named by ``reg_pos``; ``generate(temperature=0)`` is greedy with the KV cache.
"""

from __future__ import annotations

import gzip
import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor

from dnagpt.model import DNAGPT, config_from_release_state_dict, generate, load_release_state_dict
from dnagpt.tokenizer import Encoded, KmerTokenizer

BUNDLED = Path(__file__).resolve().parent.parent / "dnagpt" / "resources" / "bundled"
DTYPE = torch.float64
LN_EPS = 1e-5
TOL = dict(rtol=1e-9, atol=1e-9)  # float64: parity is ~1e-14; a wrong fact is > 1e-4

StateDict = dict[str, Tensor]


# ----------------------------------------------------------------------------------- the reference forward


def _layer_norm(x: Tensor, weight: Tensor) -> Tensor:
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + LN_EPS) * weight


def _gelu_tanh(x: Tensor) -> Tensor:
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def _head(sd: StateDict, name: str, x: Tensor) -> Tensor:
    """The release's ``Sequential(Linear, SiLU, LayerNorm, Linear)`` heads."""
    h = x @ sd[f"{name}.0.weight"].T
    h = h * torch.sigmoid(h)
    return _layer_norm(h, sd[f"{name}.2.weight"]) @ sd[f"{name}.3.weight"].T


def _attention(sd: StateDict, prefix: str, x: Tensor, n_head: int) -> Tensor:
    L, D = x.shape
    hs = D // n_head
    q, k, v = (x @ sd[f"{prefix}.c_attn.weight"].T).split(D, dim=1)
    q, k, v = (t.reshape(L, n_head, hs).transpose(0, 1) for t in (q, k, v))  # (nh, L, hs)
    scores = q @ k.transpose(1, 2) / math.sqrt(hs)
    future = torch.ones(L, L, dtype=torch.bool).triu(diagonal=1)
    y = scores.masked_fill(future, float("-inf")).softmax(dim=-1) @ v  # (nh, L, hs)
    return y.transpose(0, 1).reshape(L, D) @ sd[f"{prefix}.c_proj.weight"].T


@dataclass
class Reference:
    """The released network on one sentence, in expanded (number-inserted) coordinates."""

    logits: Tensor  # (L, V) token head at every expanded position
    regression: Tensor  # (L,) regression head at every expanded position
    token_at: list[int]  # expanded position of each token
    after: list[int]  # expanded position of each token's last value (the token itself when it has none)


def reference_forward(sd: StateDict, n_head: int, sentence: Encoded) -> Reference:
    rows: list[Tensor] = []
    token_at, after = [], []
    for t, token in enumerate(sentence.ids.tolist()):
        token_at.append(len(rows))
        rows.append(sd["transformer.wte.weight"][token])
        for value in sentence.values[sentence.value_pos == t].tolist():
            rows.append(_head(sd, "number_embedding", torch.tensor([value], dtype=DTYPE)))
        after.append(len(rows) - 1)
    x = torch.stack(rows) + sd["transformer.wpe.weight"][: len(rows)]
    n_layer = len({k.split(".")[2] for k in sd if k.startswith("transformer.h.")})
    for i in range(n_layer):
        p = f"transformer.h.{i}"
        x = x + _attention(sd, f"{p}.attn", _layer_norm(x, sd[f"{p}.ln_1.weight"]), n_head)
        h = _gelu_tanh(_layer_norm(x, sd[f"{p}.ln_2.weight"]) @ sd[f"{p}.mlp.c_fc.weight"].T)
        x = x + h @ sd[f"{p}.mlp.c_proj.weight"].T
    x = _layer_norm(x, sd["transformer.ln_f.weight"])
    return Reference(_head(sd, "mlm_head", x), _head(sd, "num_regression", x).squeeze(-1), token_at, after)


def reference_greedy(sd: StateDict, n_head: int, prompt: Encoded, n_new: int) -> np.ndarray:
    """The release's decoding loop: rerun the whole sentence, append the argmax; new tokens carry no values."""
    ids = prompt.ids
    for _ in range(n_new):
        ref = reference_forward(sd, n_head, Encoded(ids, prompt.values, prompt.value_pos))
        ids = np.append(ids, int(ref.logits[ref.after[-1]].argmax()))
    return ids


def release_state_dict(vocab: int, block_size: int, n_layer: int, n_embd: int, seed: int = 0) -> StateDict:
    """Random weights under the release's names and shapes, scaled so every nonlinearity works in its curved range."""
    g = torch.Generator().manual_seed(seed)
    D = n_embd

    def linear(out_features: int, in_features: int) -> Tensor:
        return torch.randn(out_features, in_features, generator=g, dtype=DTYPE) / math.sqrt(in_features)

    def norm() -> Tensor:
        return 1.0 + 0.2 * torch.randn(D, generator=g, dtype=DTYPE)

    def head(name: str, in_features: int, out_features: int) -> StateDict:
        return {f"{name}.0.weight": linear(D, in_features), f"{name}.2.weight": norm(),
                f"{name}.3.weight": linear(out_features, D)}  # fmt: skip

    sd = {
        "transformer.wte.weight": torch.randn(vocab, D, generator=g, dtype=DTYPE),
        "transformer.wpe.weight": torch.randn(block_size, D, generator=g, dtype=DTYPE),
    }
    for i in range(n_layer):
        p = f"transformer.h.{i}"
        sd |= {f"{p}.ln_1.weight": norm(), f"{p}.attn.c_attn.weight": linear(3 * D, D),
               f"{p}.attn.c_proj.weight": linear(D, D), f"{p}.ln_2.weight": norm(),
               f"{p}.mlp.c_fc.weight": linear(4 * D, D), f"{p}.mlp.c_proj.weight": linear(D, 4 * D)}  # fmt: skip
    sd["transformer.ln_f.weight"] = norm()
    return sd | head("number_embedding", 1, D) | head("mlm_head", D, vocab) | head("num_regression", D, 1)


# ------------------------------------------------------------------------------------------- sentences


@cache
def excerpt(species: str) -> str:
    """The first 2,000 bp of a bundled real genome excerpt (soft-masking kept: the tokenizer upper-cases it)."""
    with gzip.open(BUNDLED / f"{species}.fa.gz", "rt") as f:
        next(f)
        seq = ""
        while len(seq) < 2000:
            seq += next(f).strip()
    return seq[:2000]


def plain_texts() -> list[str]:
    """Species token + real DNA, of different lengths (right padding) and k-mer tails."""
    return [
        "<Human>" + excerpt("human")[:300],
        "<Yeast>" + excerpt("yeast")[100:301],
        "<Fruitfly>" + excerpt("fruitfly")[:251],
        "<Worm>" + excerpt("worm")[500:597],
    ]


def number_texts() -> list[str]:
    """Sentences with ``<M>`` values: 8, 3, 0 and 3 values, several ``<M>`` per row, different lengths."""
    return [
        "<Human>" + excerpt("human")[:60] + "<+><M>-0.3484,1.2,0.05,-2.5,0.731,-0.0042,3.25,-1<=><M>",
        "<Mouse>" + excerpt("mouse")[:18] + "<M>0.25" + excerpt("mouse")[18:30] + "<M>-2,7.5<=><M>",
        "<Yeast>" + excerpt("yeast")[:42] + "<=><M>",
        "<Ecoli><M>1e-3,-0.5<+>" + excerpt("ecoli")[:30] + "<M>4",
    ]


def padded(tok: KmerTokenizer, sentences: list[Encoded]) -> dict[str, Tensor]:
    batch = {k: torch.from_numpy(v) for k, v in tok.pad_batch(sentences).items()}
    del batch["attention_mask"]  # right padding needs no mask under causal attention
    return batch


def regression_positions(tok: KmerTokenizer, sentences: list[Encoded]) -> Tensor:
    """(B, R): every ``<M>`` of each row, the short rows repeating their last one."""
    at = [np.flatnonzero(s.ids == tok.number_id).tolist() for s in sentences]
    width = max(map(len, at))
    return torch.tensor([row + row[-1:] * (width - len(row)) for row in at])


# ------------------------------------------------------------------------------------------ our model


def load_ours(release: StateDict | Path, n_head: int | None) -> DNAGPT:
    """Our model from a released state dict (or ``.pth`` file) through the public loader, in float64."""
    model = DNAGPT(config_from_release_state_dict(release, n_head=n_head)).to(DTYPE).eval()
    return load_release_state_dict(model, release)


def assert_parity(model: DNAGPT, sd: StateDict, n_head: int, tok: KmerTokenizer, texts: list[str]) -> None:
    """Logits at every token and the regression head at every ``<M>`` equal the reference's, row by row."""
    sentences = [tok.encode(t) for t in texts]
    has_m = all((s.ids == tok.number_id).any() for s in sentences)
    reg_pos = regression_positions(tok, sentences) if has_m else None
    with torch.no_grad():
        out = model(**padded(tok, sentences), reg_pos=reg_pos)
    assert out.logits is not None
    for r, sentence in enumerate(sentences):
        ref = reference_forward(sd, n_head, sentence)
        n = len(sentence.ids)
        torch.testing.assert_close(out.logits[r, :n], ref.logits[ref.after], **TOL)
        if reg_pos is not None:
            assert out.value_pred is not None
            at_m = [ref.token_at[t] for t in reg_pos[r].tolist()]
            torch.testing.assert_close(out.value_pred[r], ref.regression[at_m], **TOL)


# ------------------------------------------------------------------------------------------------ tests

SMALL = dict(block_size=128, n_layer=3, n_embd=32)
SMALL_HEADS = 4
TOK = KmerTokenizer()


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[DNAGPT, StateDict]:
    sd = release_state_dict(len(TOK), **SMALL)
    path = tmp_path_factory.mktemp("release") / "small.pth"
    torch.save({"model": sd}, path)  # the release's wrapped form, read from disk
    return load_ours(path, SMALL_HEADS), sd


def test_release_file_gives_the_release_config(small: tuple[DNAGPT, StateDict]) -> None:
    """A ``{"model": sd}`` file of a custom shape: shapes, no biases, dropout 0 and the release's ``<M>`` id 18."""
    cfg = small[0].config
    assert (cfg.block_size, cfg.vocab_size, cfg.n_layer, cfg.n_head, cfg.n_embd) == (128, 19_564, 3, 4, 32)
    assert not cfg.bias and cfg.dropout == 0.0 and cfg.number_token_id == 18


def test_plain_dna_logits_match_reference(small: tuple[DNAGPT, StateDict]) -> None:
    model, sd = small
    assert_parity(model, sd, SMALL_HEADS, TOK, plain_texts())


def test_inserted_numbers_logits_and_regression_match_reference(small: tuple[DNAGPT, StateDict]) -> None:
    model, sd = small
    assert_parity(model, sd, SMALL_HEADS, TOK, number_texts())


def test_cached_greedy_generation_matches_reference_loop(small: tuple[DNAGPT, StateDict]) -> None:
    """Equal-length prompts holding 2 and 1 values: our batched KV-cache decoding picks the reference's tokens."""
    model, sd = small
    prompts = [TOK.encode("<Human>" + excerpt("human")[:24] + "<+><M>0.5,-1.25<=>"),
               TOK.encode("<Mouse>" + excerpt("mouse")[:24] + "<+><M>2<=>")]  # fmt: skip
    batch = padded(TOK, prompts)
    n_new = 10
    ours = generate(model, batch.pop("input_ids"), n_new, temperature=0.0, **batch)
    for r, prompt in enumerate(prompts):
        expected = reference_greedy(sd, SMALL_HEADS, prompt, n_new)
        assert ours[r].tolist() == expected.tolist()
    assert len(set(ours[:, -n_new:].flatten().tolist())) > 2  # the continuation is not one token repeated


RELEASED_PRESETS = {  # name: (vocabulary, block_size, n_layer, n_head, n_embd)
    "dnagpt_0.1b_m": ("dynamic", 512, 12, 12, 768),
    "dnagpt_0.1b_h": ("fixed", 4096, 12, 12, 768),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(RELEASED_PRESETS))
def test_released_preset_shape_matches_reference(name: str) -> None:
    """At a released shape (random weights): the preset, heads included, is inferred from the weights alone."""
    vocab, block_size, n_layer, n_head, n_embd = RELEASED_PRESETS[name]
    tok = KmerTokenizer(vocab)  # number_texts() cuts DNA at multiples of 6: the fixed vocabulary has no tails
    sd = release_state_dict(len(tok), block_size, n_layer, n_embd)
    model = load_ours(sd, n_head=None)
    assert model.config.name == name and model.config.n_head == n_head
    assert_parity(model, sd, n_head, tok, number_texts())

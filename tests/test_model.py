"""GPTConfig and the DNAGPT network: shapes, names, causality, number insertion, attention maps."""

from __future__ import annotations

import math

import pytest
import torch

from dnagpt.model import DNAGPT, GPTConfig
from dnagpt.model.numbers import insertion_layout
from dnagpt.tokenizer import KmerTokenizer
from dnagpt.utils.errors import ConfigError, InputError

TOK = KmerTokenizer()
M, P, R, PLUS, EQ = TOK.number_id, TOK.pad_id, TOK.token_id("<R>"), TOK.plus_id, TOK.eq_id
DNA = (3939, 19563)  # range of dynamic-vocabulary 6-mer ids


def tiny(**overrides) -> DNAGPT:
    torch.manual_seed(0)
    cfg = dict(n_layer=2, n_head=2, n_embd=32, block_size=64) | overrides
    return DNAGPT(GPTConfig(**cfg)).eval()


def dna(n: int, seed: int) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(*DNA, (n,), generator=g).tolist()


# ----------------------------------------------------------------------------------------------- config


def test_presets_record_release_shapes() -> None:
    h, m, big = (GPTConfig.from_name(n) for n in ("dnagpt_0.1b_h", "dnagpt_0.1b_m", "dnagpt_3b_m"))
    assert (h.block_size, h.vocab_size, h.n_layer, h.n_head, h.n_embd) == (4096, 15_659, 12, 12, 768)
    assert (m.block_size, m.vocab_size, m.n_layer, m.n_head, m.n_embd) == (512, 19_564, 12, 12, 768)
    assert (big.block_size, big.vocab_size, big.n_layer, big.n_head, big.n_embd) == (512, 19_564, 60, 64, 2048)
    assert not (h.bias or m.bias or big.bias) and h.dropout == 0.0
    assert GPTConfig.from_name("dnagpt_0.1b_m", block_size=512, dropout=0.1).dropout == 0.1  # restated: fine


def test_from_name_errors() -> None:
    with pytest.raises(ValueError, match=r"unknown GPTConfig preset 'nope'.*dnagpt_0\.1b_h.*tiny"):
        GPTConfig.from_name("nope")
    with pytest.raises(ValueError, match="fixed 6-mer vocabulary"):
        GPTConfig.from_name("dnagpt_0.1b_h", vocab_size=19_564)
    with pytest.raises(ValueError, match="dynamic 1..6-mer vocabulary"):
        GPTConfig.from_name("dnagpt_3b_m", vocab_size=15_659)
    with pytest.raises(ValueError, match="block_size=512, got 1024"):
        GPTConfig.from_name("dnagpt_0.1b_m", block_size=1024)
    with pytest.raises(ValueError, match=r"unknown GPTConfig field\(s\) \['n_embed'\]"):
        GPTConfig.from_name("tiny", n_embed=64)
    assert GPTConfig.from_name("tiny", vocab_size=15_659, block_size=1100).vocab_size == 15_659
    with pytest.raises(ConfigError, match="preset 'dnagpt_0.1b_m' has number_token_id=18, got 5"):
        GPTConfig.from_name("dnagpt_0.1b_m", number_token_id=5)  # the release's weights read <M> as id 18


def test_number_token_id_is_the_tokenizers() -> None:
    """No literal: the default, every preset and the pipeline's explicit override all give the tokenizer's <M> id."""
    assert GPTConfig().number_token_id == KmerTokenizer.number_id == TOK.token_id("<M>")
    for name in ("tiny", "dnagpt_0.1b_h", "dnagpt_0.1b_m", "dnagpt_3b_m"):
        tok = KmerTokenizer("fixed" if name == "dnagpt_0.1b_h" else "dynamic")
        cfg = GPTConfig.from_name(name, vocab_size=len(tok), number_token_id=tok.number_id)
        assert cfg.number_token_id == tok.number_id
    saved = GPTConfig.from_name("tiny").to_dict()  # a checkpoint's dict records the id it was trained with
    assert saved["number_token_id"] == 18 and GPTConfig.from_dict(saved).number_token_id == TOK.number_id


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_embd": 30, "n_head": 4}, "divisible by n_head"),
        ({"n_layer": 0}, "n_layer must be a positive int"),
        ({"block_size": -1}, "block_size must be a positive int"),
        ({"vocab_size": 100, "padded_vocab_size": 64}, "padded_vocab_size"),
        ({"dropout": 1.0}, "dropout must be in"),
        ({"vocab_size": 10}, "number_token_id"),
    ],
)
def test_config_validation(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        GPTConfig(**kwargs)


def test_config_dict_round_trip() -> None:
    cfg = GPTConfig.from_name("tiny", padded_vocab_size=19_584, dropout=0.1)
    assert GPTConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown GPTConfig field"):
        GPTConfig.from_dict(cfg.to_dict() | {"max_len": 3})


# ------------------------------------------------------------------------------------ parameters, names


@pytest.mark.parametrize(
    ("name", "millions"), [("dnagpt_0.1b_h", 114), ("dnagpt_0.1b_m", 117), ("dnagpt_3b_m", 3_110)]
)
def test_preset_parameter_counts(name: str, millions: int) -> None:
    with torch.device("meta"):  # shapes only: the 3B model allocates nothing
        model = DNAGPT(GPTConfig.from_name(name))
    n = model.num_params()
    assert n == sum(p.numel() for p in model.parameters())
    assert abs(n / 1e6 - millions) < 0.01 * millions, n


def test_state_dict_names_and_shapes() -> None:
    V, D, blk = 19_564, 32, 64
    expected = {
        "transformer.wte.weight": (V, D),
        "transformer.wpe.weight": (blk, D),
        "transformer.ln_f.weight": (D,),
    }
    for i in range(2):
        expected |= {
            f"transformer.h.{i}.ln_1.weight": (D,),
            f"transformer.h.{i}.attn.c_attn.weight": (3 * D, D),
            f"transformer.h.{i}.attn.c_proj.weight": (D, D),
            f"transformer.h.{i}.ln_2.weight": (D,),
            f"transformer.h.{i}.mlp.c_fc.weight": (4 * D, D),
            f"transformer.h.{i}.mlp.c_proj.weight": (D, 4 * D),
        }
    for head, (n_in, n_out) in {
        "number_embedding": (1, D),
        "token_head": (D, V),
        "regression_head": (D, 1),
    }.items():
        expected |= {f"{head}.0.weight": (D, n_in), f"{head}.2.weight": (D,), f"{head}.3.weight": (n_out, D)}
    got = {k: tuple(v.shape) for k, v in tiny().state_dict().items()}
    assert got == expected
    with_bias = tiny(bias=True).state_dict()
    assert "transformer.h.0.attn.c_attn.bias" in with_bias and "token_head.2.bias" in with_bias


def test_init_scales_residual_projections() -> None:
    model = tiny(n_layer=8, n_embd=128, n_head=4)
    c_proj = model.transformer.h[3].mlp.c_proj.weight
    c_fc = model.transformer.h[3].mlp.c_fc.weight
    assert c_proj.std().item() == pytest.approx(0.02 / math.sqrt(16), rel=0.05)
    assert c_fc.std().item() == pytest.approx(0.02, rel=0.05)


def test_param_groups() -> None:
    model = tiny()
    decay, no_decay = model.param_groups(0.1)
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() < 2 for p in no_decay["params"])
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (0.1, 0.0)
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    opt = torch.optim.AdamW(model.param_groups(0.1), lr=1e-3)
    assert opt.param_groups[0]["lr"] == 1e-3


def test_layer_lr_decay_scales_each_depth_and_keeps_every_parameter_once() -> None:
    model = tiny()  # 2 blocks: embeddings at depth 0, blocks at 1 and 2, ln_f and heads at 3
    groups = model.param_groups(0.1, layer_lr_decay=0.5)
    params = [id(p) for g in groups for p in g["params"]]
    assert len(params) == len(set(params)) == len(list(model.parameters()))
    scale = {id(p): (g["lr_scale"], g["weight_decay"]) for g in groups for p in g["params"]}
    assert scale[id(model.token_head[3].weight)] == (1.0, 0.1) and scale[id(model.transformer.ln_f.weight)] == (1.0, 0.0)
    assert groups[0]["lr_scale"] == groups[1]["lr_scale"] == 1.0  # the top pair first: tasks append their heads there
    assert scale[id(model.transformer.h[1].mlp.c_fc.weight)] == (0.5, 0.1)
    assert scale[id(model.transformer.h[0].ln_1.weight)] == (0.25, 0.0)
    assert scale[id(model.transformer.wte.weight)] == scale[id(model.number_embedding[0].weight)] == (0.125, 0.1)
    with pytest.raises(ValueError, match="layer_lr_decay must lie in"):
        model.param_groups(0.1, layer_lr_decay=0.0)


# ----------------------------------------------------------------------------------------- forward


def test_output_shapes_and_padded_vocab() -> None:
    model = tiny(padded_vocab_size=19_584)
    assert model.transformer.wte.weight.shape[0] == 19_584
    ids = torch.tensor([[R] + dna(5, 1) + [M]])
    out = model(ids, values=torch.tensor([[0.5]]), value_pos=torch.tensor([[6]]), reg_pos=torch.tensor([[6, 0]]))
    assert out.hidden.shape == (1, 7, 32)
    assert out.logits is not None and out.logits.shape == (1, 7, 19_564)
    assert out.value_pred is not None and out.value_pred.shape == (1, 2)
    assert out.attentions is None
    assert out.token_pos.tolist() == [[0, 1, 2, 3, 4, 5, 6]]
    assert model(ids, compute_logits=False).logits is None


def test_causality_tokens() -> None:
    model = tiny()
    ids = torch.tensor([[R] + dna(11, 2)])
    changed = ids.clone()
    changed[0, 6] = 40
    a, b = model(ids).logits, model(changed).logits
    torch.testing.assert_close(a[:, :6], b[:, :6], rtol=0, atol=0)
    assert not torch.allclose(a[:, 6:], b[:, 6:])


def test_causality_with_numbers() -> None:
    """A value attached to <M> at index 4 changes nothing before it, nor the regression read *at* that <M>."""
    model = tiny()
    ids = torch.tensor([[R] + dna(3, 3) + [M, EQ, M] + dna(3, 4)])
    kw = dict(value_pos=torch.tensor([[4, 4]]), reg_pos=torch.tensor([[4, 6]]))
    a = model(ids, values=torch.tensor([[0.3, -1.2]]), **kw)
    b = model(ids, values=torch.tensor([[0.3, 2.5]]), **kw)
    torch.testing.assert_close(a.hidden[:, :4], b.hidden[:, :4], rtol=0, atol=0)
    assert a.value_pred is not None and b.value_pred is not None
    assert a.value_pred[0, 0] == b.value_pred[0, 0]  # read before the values: cannot see them
    assert not torch.allclose(a.hidden[:, 4:], b.hidden[:, 4:])  # the predictor of token 5 saw them
    assert a.value_pred[0, 1] != b.value_pred[0, 1]


# --------------------------------------------------------------------- number insertion vs a loop


def reference_forward(model: DNAGPT, ids: list[int], values: dict[int, list[float]], reg: list[int]):
    """The release's semantics, one sample at a time: tokens up to <M>, its values, the rest; then wpe."""
    emb, tok_at, pred_at = [], [], []
    for t, token in enumerate(ids):
        tok_at.append(len(emb))
        emb.append(model.transformer.wte.weight[token])
        for v in values.get(t, []):
            emb.append(model.number_embedding(torch.tensor([v])))
        pred_at.append(len(emb) - 1)
    x = torch.stack(emb)[None] + model.transformer.wpe.weight[: len(emb)]
    for block in model.transformer.h:
        x = block(x)[0]
    x = model.transformer.ln_f(x)[0]
    return x[pred_at], model.regression_head(x[[tok_at[r] for r in reg]]).squeeze(-1)


def ragged_batch() -> tuple[list[dict], dict[str, torch.Tensor]]:
    """Three rows: plain DNA, two <M> with values, and the mRNA layout <R> dna <+> <M> v1..v8 <=> <M>."""
    g = torch.Generator().manual_seed(5)
    rows = [
        {"ids": [R] + dna(8, 10), "values": {}, "reg": [0]},
        {"ids": [R] + dna(3, 11) + [M] + dna(2, 12) + [M, PLUS], "values": {4: [0.7], 7: [-0.4, 1.9]}, "reg": [4]},
        {"ids": [R] + dna(5, 13) + [PLUS, M, EQ, M], "values": {7: torch.randn(8, generator=g).tolist()}, "reg": [9]},
    ]
    B, T, V = len(rows), max(len(r["ids"]) for r in rows), 10
    batch = {
        "input_ids": torch.full((B, T), P),
        "values": torch.zeros(B, V),
        "value_pos": torch.zeros(B, V, dtype=torch.long),
        "value_mask": torch.zeros(B, V, dtype=torch.bool),
        "reg_pos": torch.tensor([r["reg"] for r in rows]),
    }
    for b, row in enumerate(rows):
        batch["input_ids"][b, : len(row["ids"])] = torch.tensor(row["ids"])
        flat = [(p, v) for p, vs in sorted(row["values"].items()) for v in vs]
        for j, (p, v) in enumerate(flat):
            batch["values"][b, j], batch["value_pos"][b, j], batch["value_mask"][b, j] = v, p, True
    return rows, batch


def test_number_insertion_matches_per_sample_reference() -> None:
    model = tiny()
    rows, batch = ragged_batch()
    with torch.no_grad():
        out = model(**batch)
        for b, row in enumerate(rows):
            hidden, value_pred = reference_forward(model, row["ids"], row["values"], row["reg"])
            n = len(row["ids"])
            torch.testing.assert_close(out.hidden[b, :n], hidden, rtol=0, atol=1e-5)
            assert out.value_pred is not None
            torch.testing.assert_close(out.value_pred[b], value_pred, rtol=0, atol=1e-5)


def test_padding_invariance_and_pads_never_attended() -> None:
    model = tiny()
    rows, batch = ragged_batch()
    with torch.no_grad():
        out = model(**batch)
        # more token padding, more (invalid) value slots, and garbage ids in the pad region
        B, T = batch["input_ids"].shape
        wider = {k: v.clone() for k, v in batch.items()}
        wider["input_ids"] = torch.cat([batch["input_ids"], torch.full((B, 6), P)], dim=1)
        wider["input_ids"][0, len(rows[0]["ids"]) :] = torch.tensor(dna(T + 6 - len(rows[0]["ids"]), 20))
        for k, fill in (("values", 9.0), ("value_pos", 0), ("value_mask", False)):
            wider[k] = torch.cat([batch[k], torch.full((B, 4), fill, dtype=batch[k].dtype)], dim=1)
        padded = model(**wider)
        for b, row in enumerate(rows):
            n = len(row["ids"])
            single = model(torch.tensor([row["ids"]]), **_row_numbers(batch, b), reg_pos=batch["reg_pos"][b : b + 1])
            for other in (out, padded):
                torch.testing.assert_close(other.hidden[b, :n], single.hidden[0], rtol=0, atol=1e-5)
                torch.testing.assert_close(other.value_pred[b], single.value_pred[0], rtol=0, atol=1e-5)


def _row_numbers(batch: dict[str, torch.Tensor], b: int) -> dict[str, torch.Tensor]:
    keep = batch["value_mask"][b]
    return {k: batch[k][b : b + 1, keep] for k in ("values", "value_pos", "value_mask")}


def test_gradients_reach_number_embedding() -> None:
    model = tiny().train()
    _, batch = ragged_batch()
    out = model(**batch)
    assert out.value_pred is not None
    (out.logits.logsumexp(-1).mean() + out.value_pred.pow(2).mean()).backward()
    assert model.number_embedding[0].weight.grad is not None
    assert model.number_embedding[0].weight.grad.abs().sum() > 0


def test_insertion_layout_places_tokens_and_values() -> None:
    """Row 0: <R> a <M>(v0, v1) b; row 1: <R> <M>(v2) c d, its spare value slot invalid. Expanded widths 6 and 5."""
    ids = torch.tensor([[R, 40, M, 41], [R, M, 42, 43]])
    value_pos = torch.tensor([[2, 2], [1, 0]])
    value_mask = torch.tensor([[True, True], [True, False]])
    layout = insertion_layout(ids, value_pos, value_mask)
    assert layout.width == 6 and layout.length.tolist() == [6, 5]
    assert layout.token_pos.tolist() == [[0, 1, 2, 5], [0, 1, 3, 4]]
    assert layout.pred_pos.tolist() == [[0, 1, 4, 5], [0, 2, 3, 4]]  # after the values attached to each token
    # rows of cat([4 tokens, 2 values, zero]): value j is row 4 + j, the zero row 6 pads row 1
    assert layout.source is not None and layout.source.tolist() == [[0, 1, 2, 4, 5, 3], [0, 1, 4, 2, 3, 6]]
    tokens, values = torch.randn(2, 4, 3), torch.randn(2, 2, 3)
    expanded = layout.insert(tokens, values)
    torch.testing.assert_close(expanded[0, 3:5], values[0])
    torch.testing.assert_close(expanded[1, 2], values[1, 0])
    assert expanded[1, 5].abs().sum() == 0
    plain = insertion_layout(ids, None, None)
    assert plain.source is None and plain.width == 4 and plain.insert(tokens, values) is tokens


# ------------------------------------------------------------------------------------------ errors


def _one_m() -> dict[str, torch.Tensor]:
    return {
        "input_ids": torch.tensor([[R, 40, M, 41], [R, M, 42, 43]]),
        "values": torch.tensor([[0.1], [0.2]]),
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"value_pos": torch.tensor([[2], [2]])}, r"value without <M>: values\[1, 0\] follows input_ids\[1, 2\]"),
        ({"value_pos": torch.tensor([[2], [4]])}, r"value_pos\[1, 0\] = 4 is not a token index in \[0, 4\)"),
        ({"value_pos": torch.tensor([[2.0], [1.0]])}, "value_pos must be an integer tensor"),
        ({"values": torch.tensor([[0.1], [float("nan")]]), "value_pos": torch.tensor([[2], [1]])}, "not finite"),
        ({"value_pos": None}, "values and value_pos must be given together"),
        ({"value_pos": torch.tensor([[2], [1]]), "reg_pos": torch.tensor([[0], [9]])}, r"reg_pos\[1, 0\] = 9"),
        ({"value_pos": torch.tensor([[2], [1]]), "value_mask": torch.ones(2, 1)}, "value_mask must be a bool"),
        ({"input_ids": torch.tensor([[R, 40, M, 19_564], [R, M, 42, 43]])}, r"input_ids\[0, 3\] = 19564 is outside"),
        ({"input_ids": torch.zeros(2, 0, dtype=torch.long)}, "non-empty"),
    ],
)
def test_bad_inputs_raise(change: dict, message: str) -> None:
    kwargs = _one_m() | {"value_pos": torch.tensor([[2], [1]])} | change
    ids = kwargs.pop("input_ids")
    with pytest.raises(InputError, match=message):
        tiny()(ids, **kwargs)


def test_value_pos_must_not_decrease() -> None:
    ids = torch.tensor([[R, M, 40, M]])
    with pytest.raises(ValueError, match=r"value_pos\[0\] must be non-decreasing.*value 1"):
        tiny()(ids, values=torch.tensor([[0.1, 0.2]]), value_pos=torch.tensor([[3, 1]]))


def test_too_long_after_insertion() -> None:
    model = tiny(block_size=16)
    ids = torch.tensor([[R] + dna(12, 7) + [M]])
    model(ids)  # 14 tokens fit
    with pytest.raises(InputError, match=r"17 positions long after number insertion \(14 tokens \+ 3 values\).*16"):
        model(ids, values=torch.ones(1, 3), value_pos=torch.full((1, 3), 13))


# ------------------------------------------------------------------------------------------ attention


def test_attention_maps_are_causal_distributions_and_match_sdpa() -> None:
    model = tiny()
    _, batch = ragged_batch()
    with torch.no_grad():
        fast = model(**batch)
        out = model(**batch, return_attentions=True)
    L = int(batch["input_ids"].size(1) + batch["value_mask"].sum(1).max())
    assert out.attentions is not None and len(out.attentions) == 2
    for att in out.attentions:
        assert att.shape == (3, 2, L, L)
        torch.testing.assert_close(att.sum(-1), torch.ones(3, 2, L))
        assert att.triu(diagonal=1).abs().max() == 0
    torch.testing.assert_close(out.hidden, fast.hidden, rtol=0, atol=1e-5)
    torch.testing.assert_close(out.value_pred, fast.value_pred, rtol=0, atol=1e-5)


def test_bf16_cpu_attention_kernel_matches_sdpa(monkeypatch: pytest.MonkeyPatch) -> None:
    """The explicit attention kernel (bf16 on some CPUs, see kernels.py) must agree with SDPA's; the choice itself is
    tested in test_attention.py."""
    from dnagpt.model import gpt

    model = tiny()
    _, batch = ragged_batch()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        monkeypatch.setattr(gpt, "explicit_attention_is_faster", lambda q: True)
        manual = model(**batch)
        monkeypatch.setattr(gpt, "explicit_attention_is_faster", lambda q: False)
        sdpa = model(**batch)
    torch.testing.assert_close(manual.hidden, sdpa.hidden, rtol=0, atol=3e-2)
    torch.testing.assert_close(manual.value_pred, sdpa.value_pred, rtol=0, atol=3e-2)


@pytest.mark.slow
def test_torch_compile_smoke() -> None:
    model = tiny()
    compiled = torch.compile(model)
    _, batch = ragged_batch()
    with torch.no_grad():
        torch.testing.assert_close(compiled(**batch).hidden, model(**batch).hidden, rtol=1e-4, atol=1e-4)

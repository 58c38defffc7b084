"""KV cache and sampling: cached == uncached, the lean decode step, bf16 decoding, sampling controls, constraints, stop
tokens, errors."""

from __future__ import annotations

import pytest
import torch

from dnagpt.data.fasta import iter_records
from dnagpt.model import DNAGPT, GPTConfig, KVCache, generate
from dnagpt.model.generate import PackedLinear, _packs, _sample, decoding_model
from dnagpt.model.kv_cache import cache_step, decode_mask
from dnagpt.tokenizer import KmerTokenizer
from dnagpt.utils.errors import InputError
from dnagpt.utils.resolvers import resource_path

TOK = KmerTokenizer()
M, P, R, PLUS, EQ = TOK.number_id, TOK.pad_id, TOK.token_id("<R>"), TOK.plus_id, TOK.eq_id
V = len(TOK)


def tiny(**overrides) -> DNAGPT:
    torch.manual_seed(0)
    return DNAGPT(GPTConfig(**(dict(n_layer=2, n_head=2, n_embd=32, block_size=64) | overrides))).eval()


def numeric_prompt() -> dict[str, torch.Tensor]:
    """Two equal-length prompts whose rows carry 3 and 1 inserted values (ragged expanded lengths)."""
    ids = torch.tensor([[R, 4000, 5000, M, PLUS, M, EQ], [R, 6000, M, 7000, 8000, 9000, EQ]])
    return {
        "input_ids": ids,
        "values": torch.tensor([[0.5, -1.0, 2.0], [0.3, 0.0, 0.0]]),
        "value_pos": torch.tensor([[3, 3, 5], [2, 0, 0]]),
        "value_mask": torch.tensor([[True, True, True], [True, False, False]]),
    }


# --------------------------------------------------------------------------------------- KV cache


def test_cached_decoding_matches_full_forward_per_step() -> None:
    model = tiny()
    prompt = numeric_prompt()
    ids, numbers = prompt["input_ids"], {k: v for k, v in prompt.items() if k != "input_ids"}
    start = ids.size(1) + numbers["value_mask"].sum(1)  # (B,) expanded prompt lengths: 10 and 8
    model.set_kv_cache(2)
    with torch.no_grad():
        step_logits = [model(ids, **numbers, input_pos=0).logits[:, -1]]
        g = torch.Generator().manual_seed(1)
        new = torch.randint(34, V, (2, 6), generator=g)
        for s in range(new.size(1)):
            step_logits.append(model(new[:, s : s + 1], input_pos=start + s).logits[:, -1])
        model.clear_kv_cache()
        full = model(torch.cat([ids, new], dim=1), **numbers).logits
    T0 = ids.size(1)
    for s, logits in enumerate(step_logits):
        torch.testing.assert_close(logits, full[:, T0 - 1 + s], rtol=0, atol=1e-5)


def test_cached_multi_token_chunks_and_attention_maps() -> None:
    """A chunk of several tokens continues the cache; its attention rows see exactly the past."""
    model = tiny()
    ids = torch.tensor([[R] + list(range(4000, 4011))])
    model.set_kv_cache(1, max_seq_length=20)
    with torch.no_grad():
        model(ids[:, :5], input_pos=0)
        out = model(ids[:, 5:], input_pos=5, return_attentions=True)
        model.clear_kv_cache()
        full = model(ids)
    torch.testing.assert_close(out.logits, full.logits[:, 5:], rtol=0, atol=1e-5)
    att = out.attentions[0]  # (1, nh, 7, 12): queries 5..11 over keys 0..11
    assert att.shape == (1, 2, 7, 12)
    for q in range(7):
        assert att[..., q, 5 + q + 1 :].abs().sum() == 0 and att[..., q, 5 + q].min() > 0
        torch.testing.assert_close(att[..., q, :].sum(-1), torch.ones(1, 2))


def test_cache_step_slots_and_mask() -> None:
    """Rows at different write positions: only valid items get a slot, each query sees the slots up to its own."""
    caches = [KVCache.zeros((2, 1, 8, 4), torch.device("cpu"), torch.float32)]
    step = cache_step(caches, length=torch.tensor([2, 1]), width=2, input_pos=torch.tensor([3, 5]), block_size=8)
    assert (step.rows.tolist(), step.items.tolist(), step.slots.tolist()) == ([0, 0, 1], [0, 1, 0], [3, 4, 5])
    assert step.kv_len == 6 and step.mask.shape == (2, 1, 2, 6)
    assert step.mask[0, 0].sum(-1).tolist() == [4, 5] and step.mask[1, 0, 0].sum() == 6
    assert step.positions.tolist() == [[3, 4], [5, 6]]  # row 1's padding item: a valid wpe index, never written
    k = torch.arange(2 * 2 * 4, dtype=torch.float32).view(2, 1, 2, 4)
    seen_k, _ = caches[0].update(k, -k, step)
    assert seen_k.shape == (2, 1, 6, 4)
    torch.testing.assert_close(seen_k[0, 0, 3:5], k[0, 0])
    torch.testing.assert_close(seen_k[1, 0, 5], k[1, 0, 0])
    assert caches[0].k[1, 0, 6].abs().sum() == 0  # the padding item was not written


def test_cache_errors() -> None:
    model = tiny(block_size=16)
    ids = torch.tensor([[R, 4000]])
    with pytest.raises(ValueError, match="no KV cache is set"):
        model(ids, input_pos=0)
    with pytest.raises(ValueError, match=r"max_seq_length must be in \[1, block_size=16\]"):
        model.set_kv_cache(1, max_seq_length=17)
    model.set_kv_cache(1, max_seq_length=8)
    with pytest.raises(ValueError, match="batch size 2 differs from the KV cache's 1"):
        model(ids.repeat(2, 1), input_pos=0)
    with pytest.raises(ValueError, match=r"needs positions \[7, 9\) but the KV cache holds 8"):
        model(ids, input_pos=7)


def test_decode_step_matches_full_forward_with_ragged_prompts() -> None:
    """Decode steps write every row at one slot after the longest prompt (its position rides in the embedding); the
    fixed mask hides the shorter prompt's unwritten tail. The states equal a full forward's."""
    model = tiny()
    prompt = numeric_prompt()
    ids, numbers = prompt["input_ids"], {k: v for k, v in prompt.items() if k != "input_ids"}
    length = ids.size(1) + numbers["value_mask"].sum(1)  # (B,) expanded prompt lengths: 10 and 8
    width, n = int(length.max()), 6
    new = torch.randint(34, V, (2, n), generator=torch.Generator().manual_seed(5))
    mask = decode_mask(length, width + n)
    assert mask is not None and mask.shape == (2, 1, 1, width + n)
    assert mask[0].all() and mask[1, 0, 0, 8:width].sum() == 0 and mask[1, 0, 0, width:].all()
    assert decode_mask(torch.tensor([7, 7]), 12) is None  # equal prompts: attention runs without a mask
    model.set_kv_cache(2, width + n)
    with torch.no_grad():
        model(ids, **numbers, input_pos=0)
        steps = [model.logits(model.decode_step(new[:, s], length + s, width + s, mask)) for s in range(n)]
        model.clear_kv_cache()
        full = model(torch.cat([ids, new], dim=1), **numbers).logits[:, ids.size(1) :]
    torch.testing.assert_close(torch.stack(steps, dim=1), full, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="decode_step needs a KV cache"):
        model.decode_step(new[:, 0], length, width)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_decoding_model_casts_once_and_leaves_the_model_alone(dtype: torch.dtype) -> None:
    model = tiny()
    twin = decoding_model(model, dtype, rows=4)
    assert {p.dtype for p in twin.parameters()} == {dtype}
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert not any(isinstance(m, PackedLinear) for m in model.modules())
    shared = twin.transformer.h[0].mlp.c_fc.weight is model.transformer.h[0].mlp.c_fc.weight
    assert shared == (dtype == torch.float32)  # fp32 decoding copies no weight
    packed = {name for name, m in twin.named_modules() if isinstance(m, PackedLinear)}
    if _packs(torch.device("cpu"), dtype):  # oneDNN on this CPU: the head always, the blocks' matmuls in bf16
        assert "token_head.3" in packed and ("transformer.h.0.attn.c_attn" in packed) == (dtype == torch.bfloat16)
    hidden = torch.randn(4, 32)
    tol = {"rtol": 0, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 0.02, "atol": 0.02 * 0.3}
    torch.testing.assert_close(twin.logits(hidden.to(dtype)).float(), model.logits(hidden), **tol)
    ids = torch.tensor([5, 900, 35])
    torch.testing.assert_close(twin.logits_at(hidden.to(dtype), ids).float(), model.logits_at(hidden, ids), **tol)


@pytest.fixture(scope="module")
def reciter() -> tuple[DNAGPT, torch.Tensor]:
    """A tiny model trained to recite 24 tokens of the shipped human excerpt: greedy margins of nats, where a random
    model's logits are near-ties that any rounding flips (a random tiny model: top-2 gaps of 0.001-0.01 against bf16
    errors of 0.003-0.1)."""
    _, seq = next(iter_records(resource_path("bundled/human.fa.gz")))
    ids = torch.tensor([[R, *TOK.encode_dna(seq[100_000 : 100_000 + 6 * 24]).tolist()]])
    model = tiny().train()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-2)
    for _ in range(30):
        loss = model.token_loss(model(ids[:, :-1], compute_logits=False).hidden[0], ids[0, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), ids


def test_bf16_decoding_gives_fp32_greedy_tokens_where_margins_allow(reciter: tuple[DNAGPT, torch.Tensor]) -> None:
    """bf16 keeps 8 significant bits: its logits stay within 2% of the logit range of fp32's (measured 0.4-0.9%), so
    greedy tokens agree wherever fp32's top-2 margin exceeds twice that error, here at every step."""
    model, ids = reciter
    prompt, n = ids[:, :4], ids.size(1) - 4
    fp32 = generate(model, prompt, n, temperature=0.0)
    bf16 = generate(model, prompt, n, temperature=0.0, dtype=torch.bfloat16)
    assert torch.equal(fp32, ids)  # it recites: the margins are real
    twin = decoding_model(model, torch.bfloat16, rows=1)  # bf16 logits along the fp32 tokens, through the decode path
    twin.set_kv_cache(1, ids.size(1))
    with torch.no_grad():
        hidden = [twin(prompt, input_pos=0, compute_logits=False).hidden[:, -1]]
        hidden += [twin.decode_step(ids[:, t], torch.tensor([t]), t) for t in range(4, ids.size(1) - 1)]
        low = twin.logits(torch.stack(hidden, dim=1)).float()
        full = model(ids[:, :-1]).logits[:, 3:]
    err = (low - full).abs().max()
    assert err <= 0.02 * full.abs().max()
    top2 = full.topk(2, dim=-1).values
    assert (top2[..., 0] - top2[..., 1]).min() > 2 * err
    assert torch.equal(bf16, fp32)


# ------------------------------------------------------------------------------------- generation


def test_greedy_cached_equals_uncached_with_numbers() -> None:
    model = tiny()
    kw = numeric_prompt() | {"temperature": 0.0}
    cached = generate(model, max_new_tokens=12, **kw)
    uncached = generate(model, max_new_tokens=12, use_cache=False, **kw)
    assert cached.shape == (2, 7 + 12)
    torch.testing.assert_close(cached, uncached, rtol=0, atol=0)
    assert model.kv_caches is None


def test_sampling_cached_equals_uncached_with_same_seed() -> None:
    model = tiny()
    kw = numeric_prompt() | {"top_k": 50, "top_p": 0.9, "temperature": 1.3}
    a = generate(model, max_new_tokens=8, generator=torch.Generator().manual_seed(3), **kw)
    b = generate(model, max_new_tokens=8, generator=torch.Generator().manual_seed(3), use_cache=False, **kw)
    c = generate(model, max_new_tokens=8, generator=torch.Generator().manual_seed(4), **kw)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, c)


def test_top_k_one_and_tiny_top_p_are_greedy() -> None:
    model = tiny()
    prompt = torch.tensor([[R, 4000, 5000], [R, 6000, 7000]])
    greedy = generate(model, prompt, 10, temperature=0)
    assert torch.equal(generate(model, prompt, 10, top_k=1, generator=torch.Generator().manual_seed(0)), greedy)
    assert torch.equal(generate(model, prompt, 10, top_p=1e-9, generator=torch.Generator().manual_seed(0)), greedy)


def test_sample_respects_top_k_top_p_and_temperature() -> None:
    logits = torch.log(torch.tensor([[0.05, 0.4, 0.1, 0.3, 0.15]])).repeat(4000, 1)
    g = torch.Generator().manual_seed(0)
    assert set(_sample(logits, 1.0, 2, None, g).tolist()) == {1, 3}
    assert set(_sample(logits, 1.0, None, 0.5, g).tolist()) == {1, 3}  # 0.4 < 0.5 <= 0.4 + 0.3
    assert set(_sample(logits, 1.0, None, None, g).tolist()) == {0, 1, 2, 3, 4}
    hot = (_sample(logits, 5.0, None, None, g) == 0).float().mean()
    cold = (_sample(logits, 0.2, None, None, g) == 0).float().mean()
    assert cold < 0.01 < 0.05 < hot  # temperature flattens / sharpens the distribution
    assert _sample(logits[:2], 0.0, None, None, g).tolist() == [1, 1]


@pytest.mark.parametrize(("form", "dtype"), [("steps", None), ("rows", None), ("callable", None), ("rows", torch.bfloat16)])
def test_allowed_mask_is_never_violated(form: str, dtype: torch.dtype | None) -> None:
    model = tiny()
    n, B = 6, 8
    g = torch.Generator().manual_seed(2)
    table = torch.rand(B, n, V, generator=g) < 0.001  # a few allowed ids per row and step
    table[..., 35:39] |= torch.arange(n)[None, :, None] % 2 == 0  # plus A G C T on even steps
    seen: list[tuple[int, tuple[int, ...]]] = []

    def rule(step: int, generated: torch.Tensor) -> torch.Tensor:
        seen.append((step, tuple(generated.shape)))
        return table[:, step]

    allowed = {"steps": table[0], "rows": table, "callable": rule}[form]
    prompt = torch.tensor([[R, 4000]]).repeat(B, 1)
    for seed in range(5):
        out = generate(model, prompt, n, allowed=allowed, generator=torch.Generator().manual_seed(seed), dtype=dtype)
        new = out[:, 2:]
        rows = table[0].expand(B, n, V) if form == "steps" else table
        assert rows.gather(2, new[..., None]).all()
    if form == "callable":
        assert seen[:3] == [(0, (B, 0)), (1, (B, 1)), (2, (B, 2))]


def test_constrained_greedy_equals_masked_full_vocabulary_argmax() -> None:
    """The head scores only the allowed ids; the choice must be the argmax of the masked full logits."""
    model = tiny()
    n, B = 5, 3
    table = torch.rand(B, n, V, generator=torch.Generator().manual_seed(3)) < 0.01
    prompt = torch.tensor([[R, 4000]]).repeat(B, 1)
    out = generate(model, prompt, n, temperature=0.0, allowed=table)
    seq = prompt
    for step in range(n):
        with torch.no_grad():
            logits = model(seq).logits[:, -1].masked_fill(~table[:, step], float("-inf"))
        seq = torch.cat([seq, logits.argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out, seq)
    hidden = torch.randn(4, 32)
    ids = torch.tensor([5, 900, 35])
    torch.testing.assert_close(model.logits_at(hidden, ids), model.logits(hidden)[:, ids])


def test_stop_tokens_pad_finished_rows_and_stop_early() -> None:
    model = tiny()
    allowed = torch.zeros(3, 10, V, dtype=torch.bool)
    allowed[:, :, 4000] = True
    allowed[0, 1, :] = False
    allowed[0, 1, EQ] = True  # row 0 must stop at step 1
    allowed[0, 2:, :] = False  # and may emit nothing afterwards: finished rows ignore the constraint
    allowed[1, 3, :] = False
    allowed[1, 3, PLUS] = True  # row 1 stops at step 3 with the other stop id
    allowed[2, 2, :] = False
    allowed[2, 2, EQ] = True  # row 2 at step 2: then all rows are done
    prompt = torch.tensor([[R, 5000]]).repeat(3, 1)
    out = generate(model, prompt, 10, allowed=allowed, stop_ids=(EQ, PLUS), pad_id=P)
    assert out[:, 2:].tolist() == [[4000, EQ, P, P], [4000, 4000, 4000, PLUS], [4000, 4000, EQ, P]]


def test_generate_restores_mode_and_handles_zero_tokens() -> None:
    model = tiny().train()
    prompt = torch.tensor([[R, 5000]])
    assert torch.equal(generate(model, prompt, 0), prompt)
    generate(model, prompt, 3)
    assert model.training and model.kv_caches is None


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"input_ids": torch.zeros(1, 0, dtype=torch.long)}, ValueError, "empty prompt"),
        ({"temperature": -0.5}, ValueError, "temperature must be finite and >= 0"),
        ({"temperature": float("inf")}, ValueError, "temperature"),
        ({"top_p": 0.0}, ValueError, r"top_p must be in \(0, 1\]"),
        ({"top_p": 1.5}, ValueError, "top_p"),
        ({"top_k": 0}, ValueError, "top_k must be >= 1"),
        ({"max_new_tokens": 60}, ValueError, r"3 positions .* \+ 60 new tokens needs 62 positions.*block_size 16"),
        ({"input_ids": torch.tensor([[R, 4000, P]])}, ValueError, r"equal length.*input_ids\[0, 2\] is pad_id 20"),
        ({"stop_ids": (V,)}, ValueError, "stop id 19564 is outside the vocabulary"),
        (
            {"allowed": torch.ones(4, 100, dtype=torch.bool)},
            ValueError,
            r"allowed has \(4, 100\) torch.bool; expected .* shape \(4, 19564\) or \(1, 4, 19564\)",
        ),
        ({"allowed": lambda s, g: torch.ones(V)}, ValueError, r"returned \(19564,\) torch.float32; expected"),
        ({"allowed": torch.zeros(4, V, dtype=torch.bool)}, ValueError, "permits no token for row 0 at step 0"),
        ({"dtype": torch.int64}, ValueError, "dtype must be a floating-point dtype"),
    ],
)
def test_generate_errors(kwargs: dict, error: type, message: str) -> None:
    model = tiny(block_size=16)
    args = {"input_ids": torch.tensor([[R, 4000, 5000]]), "max_new_tokens": 4} | kwargs
    with pytest.raises(error, match=message) as raised:
        generate(model, **args)
    assert isinstance(raised.value, InputError)  # a bad value, reported without a traceback by the entry points
    assert model.kv_caches is None

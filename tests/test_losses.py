"""The chunked fused head + cross-entropy equals the plain path: loss and every gradient, fp32 and bf16 autocast."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import dnagpt.model.losses as losses
from dnagpt.model import DNAGPT, GPTConfig
from dnagpt.model.losses import linear_cross_entropy


def _grads(fn, *tensors: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    leaves = [t.detach().clone().requires_grad_(True) for t in tensors]
    loss = fn(*leaves)
    (loss * 3.0).backward()  # a non-unit upstream gradient checks the backward's scaling
    return loss.detach(), [leaf.grad for leaf in leaves]


@pytest.mark.parametrize("chunk", [7 * 11, 10**6])  # several chunks with a remainder (7 rows of 11 ids) / one chunk
@pytest.mark.parametrize("with_bias", [True, False])
def test_matches_linear_then_cross_entropy_fp32(monkeypatch: pytest.MonkeyPatch, chunk: int, with_bias: bool) -> None:
    monkeypatch.setattr(losses, "CHUNK_ELEMENTS", chunk)
    g = torch.Generator().manual_seed(0)
    h, w, b = torch.randn(30, 8, generator=g), torch.randn(11, 8, generator=g), torch.randn(11, generator=g)
    t = torch.randint(0, 11, (30,), generator=g)
    bias = [b] if with_bias else []
    ref, ref_grads = _grads(lambda h, w, *b: F.cross_entropy(F.linear(h, w, *b), t), h, w, *bias)
    out, out_grads = _grads(lambda h, w, *b: linear_cross_entropy(h, w, b[0] if b else None, t), h, w, *bias)
    torch.testing.assert_close(out, ref)
    for got, want in zip(out_grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want)
    with torch.no_grad():  # evaluation: the loss alone, equal all the same
        torch.testing.assert_close(linear_cross_entropy(h, w, b if with_bias else None, t), ref)


def test_model_token_loss_matches_logits_path_under_bf16_autocast() -> None:
    torch.manual_seed(0)
    model = DNAGPT(GPTConfig(name="t", block_size=16, vocab_size=100, padded_vocab_size=128, n_layer=1, n_head=2,
                             n_embd=32, bias=True))  # fmt: skip
    hidden = torch.randn(40, 32)
    targets = torch.randint(0, 100, (40,))
    for bf16 in (False, True):
        grads = []
        for fused in (True, False):
            model.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = (model.token_loss(hidden, targets) if fused
                        else F.cross_entropy(model.logits(hidden).float(), targets))  # fmt: skip
            loss.backward()
            grads.append((loss.detach(), [p.grad.clone() for p in model.token_head.parameters()]))
        (fused_loss, fused_grads), (ref_loss, ref_grads) = grads
        tol = dict(rtol=2e-2, atol=2e-3) if bf16 else dict(rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(fused_loss, ref_loss, **tol)
        for got, want in zip(fused_grads, ref_grads, strict=True):
            torch.testing.assert_close(got, want, **tol)
        assert fused_grads[-1][100:].abs().max() == 0  # padded rows of the output layer get no gradient


def test_bad_shapes_raise() -> None:
    with pytest.raises(ValueError, match="hidden must be"):
        linear_cross_entropy(torch.randn(2, 3, 4), torch.randn(5, 4), None, torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="at least one target"):
        linear_cross_entropy(torch.randn(0, 4), torch.randn(5, 4), None, torch.zeros(0, dtype=torch.long))


def test_only_the_tensors_that_require_grad_get_one() -> None:
    h, w, t = torch.randn(6, 4), torch.randn(9, 4, requires_grad=True), torch.randint(0, 9, (6,))
    linear_cross_entropy(h, w, None, t).backward()
    ref = w.detach().clone().requires_grad_(True)
    F.cross_entropy(h @ ref.T, t).backward()
    assert h.grad is None
    torch.testing.assert_close(w.grad, ref.grad)


def _exact(h: torch.Tensor, w: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Loss and gradients in float64: the yardstick for both compute dtypes."""
    return _grads(lambda h, w: F.cross_entropy(h @ w.T, t), h.double(), w.double())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_several_chunks_match_float64(monkeypatch: pytest.MonkeyPatch, dtype: torch.dtype) -> None:
    """Values exact in bf16 (multiples of 1/8 and 1/16), so both dtypes see the same logits; what is left is rounding:
    fp32's in fp32; in bf16 the loss within 2**-8 relative, the gradients within 2**-7 of their largest element."""
    monkeypatch.setattr(losses, "CHUNK_ELEMENTS", 4 * 37)  # fp32: 4 rows per block, bf16: 8; 30 rows, a remainder
    g = torch.Generator().manual_seed(1)
    h = torch.randint(-16, 17, (30, 8), generator=g) / 8
    w = torch.randint(-16, 17, (37, 8), generator=g) / 16
    t = torch.randint(0, 37, (30,), generator=g)
    ref, ref_grads = _exact(h, w, t)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        out, out_grads = _grads(lambda h, w: linear_cross_entropy(h, w, None, t), h, w)
    bf16 = dtype == torch.bfloat16
    torch.testing.assert_close(out.double(), ref, rtol=2**-8 if bf16 else 1e-6, atol=0)
    for got, want in zip(out_grads, ref_grads, strict=True):  # bf16 gradients: products rounded, sums cancel
        torch.testing.assert_close(got.double(), want, rtol=0, atol=(2**-7 if bf16 else 1e-6) * want.abs().max())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("row", [[12.0, 0.0], [0.0, 100.0]], ids=["confident", "hopeless"])
def test_confident_and_hopeless_rows_keep_their_loss(dtype: torch.dtype, row: list[float]) -> None:
    """40 ids; id 0 has logit 12 for the confident row (p = 1 - 2.4e-4 for its target 0: taken from p itself, 1 - p
    would round to 0 in bf16), id 1 has logit -100 for the hopeless row (p = e^-100 / 39 for its target 1 underflows
    even in fp32; the loss is 103.7); every other logit is 0."""
    w = torch.zeros(40, 2)
    w[0, 0], w[1, 1] = 1.0, -1.0
    h, t = torch.tensor([row]), torch.tensor([0 if row[0] else 1])
    ref, ref_grads = _exact(h, w, t)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        out, out_grads = _grads(lambda h, w: linear_cross_entropy(h, w, None, t), h, w)
    tol = dict(rtol=1e-5 if dtype == torch.float32 else 2**-8, atol=1e-9)
    torch.testing.assert_close(out.double(), ref, **tol)
    for got, want in zip(out_grads, ref_grads, strict=True):
        torch.testing.assert_close(got.double(), want, **tol)

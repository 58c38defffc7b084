"""Attention maps of GSR windows: coordinates, layer/head selection, averaging by label, the files written.

Also what every plotting module of ours owes its importer: no matplotlib backend chosen for it; and the attention
kernels behind the maps (``dnagpt.model.kernels``): the explicit one equals SDPA, and which one runs where.
"""

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dnagpt.data.gsr import GSRDataset
from dnagpt.data.gsr_table import read_gsr_tsv
from dnagpt.eval.attention import AttentionMaps, reduce_attention, token_edges
from dnagpt.model import kernels
from dnagpt.model.config import GPTConfig
from dnagpt.tasks.gsr import GSRTask
from dnagpt.tokenizer import KmerTokenizer
from dnagpt.utils.resolvers import resource_path

TOK = KmerTokenizer()


@pytest.fixture(scope="module")
def task_and_data():
    cfg = GPTConfig.from_name("tiny", block_size=128, n_layer=2, n_head=2, n_embd=32, vocab_size=len(TOK))
    torch.manual_seed(0)
    task = GSRTask(cfg.to_dict(), TOK.to_dict())
    t = read_gsr_tsv(resource_path("gsr/pas_subset.tsv.gz"), "pas").take(np.arange(0, 8000, 800))
    return task, SimpleNamespace(datasets={"test": GSRDataset(t, TOK, sorted(set(t.motif)))})


def test_token_edges_put_the_signal_between_token_49_and_50() -> None:
    edges = token_edges(100)
    assert edges[0] == -300 and edges[-1] == 300 and edges[50] == 0
    assert np.all(np.diff(edges) == 6)


def test_reduce_attention_picks_or_averages() -> None:
    att = [torch.rand(2, 3, 5, 5) for _ in range(4)]
    torch.testing.assert_close(reduce_attention(att, 1, 2), att[1][:, 2])
    torch.testing.assert_close(reduce_attention(att, -1, None), att[3].mean(1))
    torch.testing.assert_close(reduce_attention(att, None, None), torch.stack(att).mean((0, 2)))
    with pytest.raises(ValueError, match="layer 4 out of range: the model has 4 layers"):
        reduce_attention(att, 4, None)
    with pytest.raises(ValueError, match="head -4 out of range"):
        reduce_attention(att, None, -4)


def test_profile_is_the_answer_row_averaged_by_label(task_and_data) -> None:
    task, dm = task_and_data
    ds = dm.datasets["test"]
    means = AttentionMaps(layer=-1, head=0, batch_size=3).collect(task, torch.utils.data.DataLoader(ds, batch_size=3))
    with torch.no_grad():
        att = task.model(ds.input_ids, return_attentions=True).attentions[-1][:, 0]  # (N, L, L)
    for lab in (0, 1):
        rows = (ds.label == lab).nonzero().flatten()
        want = att[rows, 101, 1:101].mean(0).numpy()
        np.testing.assert_allclose(means[lab]["profile"], want, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(means[lab]["map"], att[rows][:, 1:101, 1:101].mean(0).numpy(), rtol=1e-5, atol=1e-7)
        assert means[lab]["n"] == len(rows)
    capped = AttentionMaps(max_windows=2).collect(task, torch.utils.data.DataLoader(ds, batch_size=4))
    assert capped[0]["n"] == capped[1]["n"] == 2


def test_writes_profile_and_maps(task_and_data, tmp_path: Path) -> None:
    task, dm = task_and_data
    metrics = AttentionMaps(batch_size=4)(task, dm, None, tmp_path)
    for name in ("attention_profile.png", "attention_map_true.png", "attention_map_false.png"):
        assert (tmp_path / name).stat().st_size > 5000
    lines = (tmp_path / "attention_profile.csv").read_text().splitlines()
    assert lines[0] == "bp_from,bp_to,true_attention,false_attention" and len(lines) == 101
    assert 0.0 < metrics["attention/true/near_signal_frac"] < 1.0
    with pytest.raises(ValueError, match="max_windows"):
        AttentionMaps(max_windows=0)


@pytest.mark.slow  # a real run / a fresh interpreter: seconds
def test_importing_the_plotting_modules_keeps_the_programs_backend() -> None:
    """We draw on ``Figure`` objects, so a program that chose a backend keeps it after importing us."""
    modules = "dnagpt.callbacks, dnagpt.eval.attention, dnagpt.eval.expression, dnagpt.eval.genomes, dnagpt.eval.gsr"
    code = f"import matplotlib; matplotlib.use('svg'); import {modules}; print(matplotlib.get_backend())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    assert out.stdout.strip() == "svg"


def _qkv(dtype: torch.dtype, B: int = 2, nh: int = 3, L: int = 37, hs: int = 16) -> list[torch.Tensor]:
    """Queries, keys, values in the (B, nh, L, hs) layout the model makes: views into one (B, L, 3 nh hs) tensor."""
    x = torch.randn(B, L, 3, nh, hs, generator=torch.Generator().manual_seed(0)).to(dtype)
    return [t.transpose(1, 2) for t in x.unbind(2)]


def _attend(fn, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    leaves = [t.detach().clone().requires_grad_(True) for t in (q, k, v)]
    y = fn(*leaves)
    y.backward(torch.linspace(-1, 1, y.numel()).view_as(y).to(y.dtype))  # not a sum: checks every weight's gradient
    return y.detach(), [t.grad for t in leaves]


@pytest.mark.parametrize("mask_kind", ["causal", "cache"])
def test_explicit_attention_equals_sdpa_fp32(mask_kind: str) -> None:
    """Outputs and the gradients of q, k and v; ``cache`` is a per-row (B, 1, L, S) mask as cached decoding makes."""
    q, k, v = _qkv(torch.float32)
    L = q.size(-2)
    mask = None
    if mask_kind == "cache":
        mask = (torch.arange(L) <= torch.arange(L)[:, None])[None, None].repeat(2, 1, 1, 1)
        mask[1, :, :, 30:] = False  # row 1: a shorter prompt, its last slots unwritten
        mask[1, :, :, 0] = True
    explicit = _attend(lambda *t: kernels.explicit_attention(*t, mask)[0], q, k, v)
    sdpa = _attend(lambda *t: F.scaled_dot_product_attention(*t, attn_mask=mask, is_causal=mask is None), q, k, v)
    torch.testing.assert_close(explicit, sdpa, rtol=1e-5, atol=1e-5)
    weights = kernels.explicit_attention(q, k, v, mask)[1]
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 3, L))
    assert weights.triu(diagonal=1).abs().max() == 0


def test_explicit_attention_in_bf16_is_as_close_to_fp32_as_sdpa() -> None:
    """bf16 against the fp32 result: the explicit kernel's error at most 3x SDPA's, and below 2**-6 of the largest
    element (bf16 keeps 8 bits; the kernels round at different places)."""
    ref = _attend(lambda *t: F.scaled_dot_product_attention(*t, is_causal=True), *_qkv(torch.float32))
    for_each = {}
    for name, fn in (("explicit", lambda *t: kernels.explicit_attention(*t, None)[0]),
                     ("sdpa", lambda *t: F.scaled_dot_product_attention(*t, is_causal=True))):  # fmt: skip
        y, grads = _attend(fn, *_qkv(torch.bfloat16))
        for_each[name] = [((a.float() - b).abs().max() / b.abs().max()).item() for a, b in
                          zip([y, *grads], [ref[0], *ref[1]], strict=True)]  # fmt: skip
    for explicit_err, sdpa_err in zip(for_each["explicit"], for_each["sdpa"], strict=True):
        assert explicit_err < 2**-6 and explicit_err <= 3 * sdpa_err


def test_kernel_choice_follows_dtype_length_and_cpu() -> None:
    if Path("/proc/cpuinfo").exists():  # Linux: the flags the choice must agree with
        flags = set(next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
                    .split())  # fmt: skip
        avx512 = torch.backends.cpu.get_cpu_capability().startswith("AVX512")
        want = "amx" if "amx_tile" in flags else "avx512_bf16" if "avx512_bf16" in flags else None
        assert kernels.CPU_BF16_MATMUL == (want if avx512 else None)
    q = torch.zeros(1, 1, 8, 4)
    assert kernels.explicit_attention_is_faster(q.bfloat16()) == (kernels.CPU_BF16_MATMUL is not None)
    assert not kernels.explicit_attention_is_faster(q)  # fp32: SDPA everywhere
    long = torch.zeros(1, 1, kernels.MANUAL_ATTENTION_MAX_LEN + 1, 4, dtype=torch.bfloat16)
    assert not kernels.explicit_attention_is_faster(long)


@pytest.mark.slow  # a fresh interpreter: seconds
def test_avx2_capability_means_no_bf16_matrix_instructions() -> None:
    """``ATEN_CPU_CAPABILITY=avx2`` (what an AVX2-only CPU reports): neither AMX nor AVX512-BF16 is used."""
    code = "from dnagpt.model import kernels; print(kernels.CPU_BF16_MATMUL)"
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env, timeout=300)
    assert out.stdout.strip() == "None"

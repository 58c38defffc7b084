"""Training-step speed: ours vs Hugging Face GPT-2 vs a nanoGPT-style reference at equal shape, fp32 and bf16, and MFU.

    python -m bench.train_step [--shapes tiny 0.1b] [--rounds 3] [--compile] [--json PATH]

One step = forward + next-token cross-entropy + backward + fused AdamW, on random DNA ids (the cost does not depend on
the values). All three models have the same width, depth, heads, context and vocabulary; each runs its own usual path
(ours: the chunked fused head + loss and the attention kernel chosen per dtype; GPT-2 and the reference: full logits and
``F.cross_entropy``). Model FLOPs utilisation (MFU) divides our model FLOPs/s by the matmul peak measured at the start.
``transformers`` is a bench-only dependency (``pip install -e .[bench]``): it adds import time to every run.
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.common import Row, interleaved_seconds, report, status_mb
from bench.reference_gpt import ReferenceGPT
from dnagpt.model import DNAGPT, GPTConfig
from dnagpt.model.config import DYNAMIC_VOCAB_SIZE, FIXED_VOCAB_SIZE

T = 512
SHAPES = {  # name -> (n_layer, n_head, n_embd, vocab, batch); 0.1b = the released DNAGPT-H body at T=512
    "tiny": (4, 4, 256, DYNAMIC_VOCAB_SIZE, 8),
    "0.1b": (12, 12, 768, FIXED_VOCAB_SIZE, 2),
}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def matmul_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of the best of ``repeats`` square ``n``-matmuls in ``dtype``: the ceiling MFU is measured against."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def flops_per_token(n_layer: int, n_embd: int, vocab: int) -> float:
    """Training FLOPs per token of our model (PaLM appendix B): 6 x matmul weights + 12 x layers x width x context.

    Matmul weights: 12 D^2 per block, the head's D^2 + D V; embedding lookups do no FLOPs.
    """
    weights = 12 * n_layer * n_embd**2 + n_embd**2 + n_embd * vocab
    return 6 * weights + 12 * n_layer * n_embd * T


def build_model(name: str, shape: str) -> torch.nn.Module | None:
    """One of the compared models at ``shape`` (None for GPT-2 without ``transformers``)."""
    n_layer, n_head, n_embd, vocab, _ = SHAPES[shape]
    torch.manual_seed(0)
    if name == "ours":
        return DNAGPT(GPTConfig(name=shape, block_size=T, vocab_size=vocab, n_layer=n_layer, n_head=n_head,
                                n_embd=n_embd))  # fmt: skip
    if name == "nanoGPT-style":
        return ReferenceGPT(vocab, T, n_layer, n_head, n_embd)
    try:
        from transformers import GPT2Config, GPT2LMHeadModel
    except ImportError:
        return None  # the caller reports the missing baseline
    hf = GPT2Config(vocab_size=vocab, n_positions=T, n_embd=n_embd, n_layer=n_layer, n_head=n_head, resid_pdrop=0.0,
                    embd_pdrop=0.0, attn_pdrop=0.0, use_cache=False, bos_token_id=0, eos_token_id=0,
                    attn_implementation="sdpa")  # fmt: skip
    return GPT2LMHeadModel(hf)


def build_models(shape: str) -> dict[str, torch.nn.Module]:
    models = {name: build_model(name, shape) for name in ("ours", "nanoGPT-style", "HF GPT-2")}
    return {name: m for name, m in models.items() if m is not None}


def step_memory_mb(name: str, shape: str, dtype_key: str) -> float | None:
    """Peak resident memory a training step adds to a fresh process (model, AdamW state, activations), MB.

    Run in a spawned process (``memory_rows``): peak RSS only grows, so each model needs its own process.
    """
    before = status_mb("VmRSS")["VmRSS"]
    model = build_model(name, shape)
    if model is None:
        return None
    ids = torch.randint(34, SHAPES[shape][3], (SHAPES[shape][4], T + 1))
    make_step(name, model, ids, DTYPES[dtype_key], steps=2)()
    return status_mb("VmHWM")["VmHWM"] - before  # VmHWM is this process image's own peak (ru_maxrss survives exec)


def memory_rows(shape: str, dtype_key: str) -> list[Row]:
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        mb = {name: pool.submit(step_memory_mb, name, shape, dtype_key).result() for name in ("ours", "HF GPT-2")}
    if mb["HF GPT-2"] is None:
        return []
    return [Row("memory", f"{shape} {dtype_key} training step, ours", mb["ours"], "MB", "HF GPT-2", mb["HF GPT-2"],
                note="peak RSS above a fresh process (lower is better): no (N, vocab) logits in ours")]  # fmt: skip


def loss_fn(name: str, model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    if name == "ours":
        hidden = model(ids[:, :-1], compute_logits=False).hidden
        return model.token_loss(hidden.flatten(0, 1), ids[:, 1:].flatten())
    if name == "HF GPT-2":
        logits = model(input_ids=ids[:, :-1]).logits
        return F.cross_entropy(logits.flatten(0, 1).float(), ids[:, 1:].flatten())
    return model.loss(ids)


def make_step(name: str, model: torch.nn.Module, ids: torch.Tensor, dtype: torch.dtype, steps: int):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)  # the same optimiser for every model

    def run() -> None:
        for _ in range(steps):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
                loss = loss_fn(name, model, ids)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

    return run


def compiled_rows(ids: torch.Tensor, rounds: int, steps: int) -> list[Row]:
    """``torch.compile`` of our tiny model in bf16 against eager, compile time reported (it is paid at every start)."""
    eager, compiled = build_model("ours", "tiny"), build_model("ours", "tiny")
    start = time.perf_counter()
    compiled.compile()
    make_step("ours", compiled, ids, torch.bfloat16, 1)()
    compile_s = time.perf_counter() - start
    secs = interleaved_seconds({"eager": make_step("ours", eager, ids, torch.bfloat16, steps),
                                "compiled": make_step("ours", compiled, ids, torch.bfloat16, steps)}, rounds)  # fmt: skip
    n = ids[:, 1:].numel() * steps
    return [Row("train step", "tiny bf16 ours + torch.compile", n / secs["compiled"], "tokens/s", "ours eager",
                n / secs["eager"], note=f"compile time {compile_s:.0f} s (first step included)")]  # fmt: skip


def run(shapes: list[str], rounds: int, steps: int, compile: bool = False, memory: bool = True) -> list[Row]:
    peaks = {key: matmul_peak(dtype) for key, dtype in DTYPES.items()}
    rows = []
    for shape in shapes:
        n_layer, _, n_embd, vocab, batch = SHAPES[shape]
        ids = torch.randint(34, vocab, (batch, T + 1))
        models = build_models(shape)
        fns = {(name, key): make_step(name, m, ids, dtype, steps) for key, dtype in DTYPES.items()
               for name, m in models.items()}  # fmt: skip
        tps = {k: batch * T * steps / s for k, s in interleaved_seconds(fns, rounds).items()}
        for key in DTYPES:
            for base in ("HF GPT-2", "nanoGPT-style"):
                if (base, key) in tps:
                    rows.append(Row("train step", f"{shape} {key} ours", tps["ours", key], "tokens/s", base,
                                    tps[base, key], target=1.15 if base == "HF GPT-2" else None))  # fmt: skip
            if ("HF GPT-2", key) not in tps:
                rows.append(Row("train step", f"{shape} {key} ours", tps["ours", key], "tokens/s",
                                note="transformers not installed: pip install -e .[bench]"))  # fmt: skip
        rows.append(Row("train step", f"{shape} bf16 ours", tps["ours", "bf16"], "tokens/s", f"{shape} fp32 ours",
                        tps["ours", "fp32"], target=2.2))  # fmt: skip
        per_token = flops_per_token(n_layer, n_embd, vocab)
        for key, dtype in DTYPES.items():
            peaks[key] = max(peaks[key], matmul_peak(dtype))  # the best of start and now: load only lowers it
            rows.append(Row("MFU", f"{shape} {key} ours", tps["ours", key] * per_token / 1e9, "GFLOP/s",
                            f"matmul peak {key}", peaks[key] / 1e9,
                            target=0.4 if (shape, key) == ("0.1b", "bf16") else None))  # fmt: skip
    if memory:
        rows += memory_rows(shapes[0], "bf16")
    if compile:
        rows += compiled_rows(torch.randint(34, DYNAMIC_VOCAB_SIZE, (8, T + 1)), rounds, steps)
    return rows


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds (median)")
    parser.add_argument("--steps", type=int, default=1, help="training steps per timed call")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (tens of seconds to compile)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    return report(run(args.shapes, args.rounds, args.steps, args.compile), args.json)


if __name__ == "__main__":
    main()

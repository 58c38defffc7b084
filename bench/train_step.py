"""Training-step speed: ours vs Hugging Face GPT-2 vs a nanoGPT-style reference at equal shape, fp32 and bf16, and MFU.

    python -m bench.train_step [--device cuda] [--shapes tiny 0.1b] [--rounds 3] [--compile] [--json PATH]

One step = forward + next-token cross-entropy + backward + fused AdamW, on random DNA ids (the cost does not depend on
the values). All three models have the same width, depth, heads, context and vocabulary; each runs its own usual path
(ours: the chunked fused head + loss and the attention kernel chosen per device and dtype, SDPA/flash on CUDA; GPT-2 and
the reference: full logits and ``F.cross_entropy``). Model FLOPs utilisation (MFU) divides our model FLOPs/s by the
matmul peak measured on the same device in the same run. On CUDA, steps are timed with CUDA events (``bench.common``),
batches are larger (``CUDA_BATCH``: the CPU batches leave a GPU idle) and fp32 means torch's float32 matmul precision
(TF32 under "high", what training sets). ``transformers`` is a bench-only dependency (``pip install -e .[bench]``).
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
import torch.nn.functional as F

from bench import allocator
from bench.common import Row, device_seconds, interleaved_seconds, is_cuda, report, status_mb
from bench.reference_gpt import ReferenceGPT, hf_gpt2
from dnagpt.model import DNAGPT, GPTConfig, losses
from dnagpt.model.config import DYNAMIC_VOCAB_SIZE, FIXED_VOCAB_SIZE
from dnagpt.utils.heap import keep_freed_memory

T = 512
SHAPES = {  # name -> (n_layer, n_head, n_embd, vocab, batch); 0.1b = the released DNAGPT-H body at T=512
    "tiny": (4, 4, 256, DYNAMIC_VOCAB_SIZE, 8),
    "0.1b": (12, 12, 768, FIXED_VOCAB_SIZE, 2),
}
CUDA_BATCH = {"tiny": 64, "0.1b": 32}  # rows per step on a GPU: 32 x 512 tokens keep an H100 busy at the 0.1B shape
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def batch_size(shape: str, device: str) -> int:
    return CUDA_BATCH[shape] if is_cuda(device) and shape in CUDA_BATCH else SHAPES[shape][4]


def matmul_peak(dtype: torch.dtype, device: str = "cpu", n: int | None = None, repeats: int = 5) -> float:
    """FLOP/s of the best of ``repeats`` square ``n``-matmuls in ``dtype`` on ``device``: the ceiling MFU is measured
    against (n 8192 on CUDA, where 2048 is too small to fill the GPU; 2048 on CPU)."""
    n = n or (8192 if is_cuda(device) else 2048)
    a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
    best = min(device_seconds(lambda: a @ b, device) for _ in range(repeats + 1))  # the first call warms up
    return 2 * n**3 / best


def flops_per_token(n_layer: int, n_embd: int, vocab: int) -> float:
    """Training FLOPs per token of our model (PaLM appendix B): 6 x matmul weights + 12 x layers x width x context.

    Matmul weights: 12 D^2 per block, the head's D^2 + D V; embedding lookups do no FLOPs.
    """
    weights = 12 * n_layer * n_embd**2 + n_embd**2 + n_embd * vocab
    return 6 * weights + 12 * n_layer * n_embd * T


def build_model(name: str, shape: str, device: str = "cpu") -> torch.nn.Module | None:
    """One of the compared models at ``shape`` on ``device`` (None for GPT-2 without ``transformers``)."""
    n_layer, n_head, n_embd, vocab, _ = SHAPES[shape]
    torch.manual_seed(0)
    if name == "ours":
        model = DNAGPT(GPTConfig(name=shape, block_size=T, vocab_size=vocab, n_layer=n_layer, n_head=n_head,
                                 n_embd=n_embd))  # fmt: skip
    elif name == "nanoGPT-style":
        model = ReferenceGPT(vocab, T, n_layer, n_head, n_embd)
    else:
        model = hf_gpt2(vocab, T, n_layer, n_head, n_embd)
        if model is None:
            return None  # the caller reports the missing baseline
    return model.to(device)


def build_models(shape: str, device: str = "cpu") -> dict[str, torch.nn.Module]:
    models = {name: build_model(name, shape, device) for name in ("ours", "nanoGPT-style", "HF GPT-2")}
    return {name: m for name, m in models.items() if m is not None}


def step_memory_mb(name: str, shape: str, dtype_key: str, device: str = "cpu") -> float | None:
    """Peak memory a training step adds (model, AdamW state, activations), MB: of the GPU's allocator on CUDA, else of
    the resident set of a fresh process.

    On CPU, run in a spawned process (``memory_rows``): peak RSS only grows, so each model needs its own process; the
    CUDA allocator's peak can be reset, so there the models are measured one after the other in this process.
    """
    if is_cuda(device):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device) / 2**20
    else:
        before = status_mb("VmRSS")["VmRSS"]
    model = build_model(name, shape, device)
    if model is None:
        return None
    ids = torch.randint(34, SHAPES[shape][3], (batch_size(shape, device), T + 1), device=device)
    make_step(name, model, ids, DTYPES[dtype_key], steps=2)()
    if is_cuda(device):
        return torch.cuda.max_memory_allocated(device) / 2**20 - before
    return status_mb("VmHWM")["VmHWM"] - before  # VmHWM is this process image's own peak (ru_maxrss survives exec)


def memory_rows(shape: str, dtype_key: str, device: str = "cpu") -> list[Row]:
    names = ("ours", "HF GPT-2")
    if is_cuda(device):
        mb = {name: step_memory_mb(name, shape, dtype_key, device) for name in names}
    else:
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            mb = {name: pool.submit(step_memory_mb, name, shape, dtype_key).result() for name in names}
    if mb["HF GPT-2"] is None:
        return []
    what = "peak CUDA allocator memory" if is_cuda(device) else "peak RSS above a fresh process"
    return [Row("memory", f"{shape} {dtype_key} training step, ours", mb["ours"], "MB", "HF GPT-2", mb["HF GPT-2"],
                note=f"{what} (lower is better): no (N, vocab) logits in ours")]  # fmt: skip


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
            with torch.autocast(ids.device.type, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
                loss = loss_fn(name, model, ids)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

    return run


def compiled_rows(shape: str, rounds: int, steps: int, device: str = "cpu", batch: int | None = None) -> list[Row]:
    """``torch.compile`` of our model in bf16 against eager, compile time reported (it is paid at every start).

    Compilation is off by default in training; on a GPU it has to reach 1.2x eager to be worth turning on there.
    """
    vocab = SHAPES[shape][3]
    ids = torch.randint(34, vocab, (batch or batch_size(shape, device), T + 1), device=device)
    eager, compiled = build_model("ours", shape, device), build_model("ours", shape, device)
    start = time.perf_counter()
    compiled.compile()
    make_step("ours", compiled, ids, torch.bfloat16, 1)()
    compile_s = time.perf_counter() - start
    secs = interleaved_seconds({"eager": make_step("ours", eager, ids, torch.bfloat16, steps),
                                "compiled": make_step("ours", compiled, ids, torch.bfloat16, steps)}, rounds,
                               device)  # fmt: skip
    n = ids[:, 1:].numel() * steps
    return [Row("train step", f"{shape} bf16 ours + torch.compile", n / secs["compiled"], "tokens/s", "ours eager",
                n / secs["eager"], target=1.2 if is_cuda(device) else None,
                note=f"compile time {compile_s:.0f} s (first step included); off by default")]  # fmt: skip


def chunk_rows(shape: str, rounds: int, steps: int, device: str = "cpu", batch: int | None = None,
               factor: int = 16) -> list[Row]:  # fmt: skip
    """Our bf16 step with the chunked head/CE's blocks ``factor`` times larger, against ours as shipped, interleaved.

    The block size (``losses.CHUNK_ELEMENTS``) was chosen on CPU, where large blocks cost page faults; on a GPU with
    memory to spare, fewer and larger blocks mean fewer kernel launches (the tiny shape at 64 x 512 walks 39 blocks).
    """
    ids = torch.randint(34, SHAPES[shape][3], (batch or batch_size(shape, device), T + 1), device=device)
    step = make_step("ours", build_model("ours", shape, device), ids, torch.bfloat16, steps)
    shipped = losses.CHUNK_ELEMENTS

    def larger_blocks() -> None:
        losses.CHUNK_ELEMENTS = shipped * factor
        try:
            step()
        finally:
            losses.CHUNK_ELEMENTS = shipped

    secs = interleaved_seconds({"shipped": step, "larger": larger_blocks}, rounds, device)
    n = ids[:, 1:].numel() * steps
    return [Row("train step", f"{shape} bf16 ours, head/CE blocks x{factor}", n / secs["larger"], "tokens/s",
                "ours as shipped", n / secs["shipped"],
                note=f"losses.CHUNK_ELEMENTS {shipped * factor:,} vs {shipped:,} (fp32 logits; bf16 blocks hold twice)")]


def run(shapes: list[str], rounds: int, steps: int, compile: bool = False, memory: bool = True, device: str = "cpu",
        batch: int | None = None) -> list[Row]:  # fmt: skip
    """Every shape's rows; ``batch`` overrides the per-shape batch (CPU: ``SHAPES``, CUDA: ``CUDA_BATCH``)."""
    peaks = {key: matmul_peak(dtype, device) for key, dtype in DTYPES.items()}
    cuda = is_cuda(device)
    rows = []
    for shape in shapes:
        n_layer, _, n_embd, vocab, _ = SHAPES[shape]
        rows_per_step = batch or batch_size(shape, device)
        ids = torch.randint(34, vocab, (rows_per_step, T + 1), device=device)
        models = build_models(shape, device)
        fns = {(name, key): make_step(name, m, ids, dtype, steps) for key, dtype in DTYPES.items()
               for name, m in models.items()}  # fmt: skip
        tps = {k: rows_per_step * T * steps / s for k, s in interleaved_seconds(fns, rounds, device).items()}
        del models, fns  # the next shape's models need the memory (on a GPU above all)
        for key in DTYPES:
            for base in ("HF GPT-2", "nanoGPT-style"):
                if (base, key) in tps:
                    rows.append(Row("train step", f"{shape} {key} ours", tps["ours", key], "tokens/s", base,
                                    tps[base, key], target=1.15 if base == "HF GPT-2" else None))  # fmt: skip
            if ("HF GPT-2", key) not in tps:
                rows.append(Row("train step", f"{shape} {key} ours", tps["ours", key], "tokens/s",
                                note="transformers not installed: pip install -e .[bench]"))  # fmt: skip
        rows.append(Row("train step", f"{shape} bf16 ours", tps["ours", "bf16"], "tokens/s", f"{shape} fp32 ours",
                        tps["ours", "fp32"], target=None if cuda else 2.2,
                        note=f"batch {rows_per_step} x {T}" + (f"; fp32 = {torch.get_float32_matmul_precision()} "
                                                              "float32 matmul precision" if cuda else "")))  # fmt: skip
        per_token = flops_per_token(n_layer, n_embd, vocab)
        mfu_target = 0.45 if cuda else 0.4  # the GPU target (H100 class) and the CPU one, both at the 0.1B shape in bf16
        for key, dtype in DTYPES.items():
            peaks[key] = max(peaks[key], matmul_peak(dtype, device))  # the best of start and now: load only lowers it
            rows.append(Row("MFU", f"{shape} {key} ours", tps["ours", key] * per_token / 1e9, "GFLOP/s",
                            f"matmul peak {key}", peaks[key] / 1e9,
                            target=mfu_target if (shape, key) == ("0.1b", "bf16") else None))  # fmt: skip
    if memory:
        if not cuda:  # the host allocator's thresholds: a GPU step's memory is the CUDA caching allocator's
            rows += [row for shape in shapes for row in allocator.rows(shape, rounds, steps)]
        rows += memory_rows(shapes[0], "bf16", device)
    if compile:
        rows += compiled_rows("0.1b" if cuda else "tiny", rounds, steps, device)
    return rows


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds (median)")
    parser.add_argument("--steps", type=int, default=1, help="training steps per timed call")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (tens of seconds to compile)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    keep_freed_memory()  # what training sets (extras.keep_freed_memory): the bench times that
    return report(run(args.shapes, args.rounds, args.steps, args.compile, device=args.device), args.json)


if __name__ == "__main__":
    main()

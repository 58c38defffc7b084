"""Generation speed at equal precision: our KV-cached decoding vs Hugging Face GPT-2 ``generate``, fp32 and bf16, and
batched haplotype generation.

    python -m bench.generate [--new-tokens 1024] [--batch 4] [--haplotypes 5008] [--device cpu] [--json PATH]

The tiny preset's shape (4 layers, 4 heads, D 256, dynamic vocabulary), ``block_size`` 1,100, a 16-token prompt and
1,024 greedy new tokens. Each precision is compared with itself: ours with ``generate(..., dtype=torch.bfloat16)``
(weights cast once) against GPT-2 cast with ``.to(torch.bfloat16)``. GPT-2 has the same shape but its own (tied,
linear) head and its own random weights, so its tokens cannot be compared with ours: the correctness check is ours
cached against ours uncached (identical greedy tokens in fp32, or the run stops). The nanoGPT-style reference decodes
with a concatenating cache, fp32. Haplotypes: the 805-SNP genomes model's shape (D 128, 136 positions) samples 5,008
haplotypes of 135 tokens, constrained to each SNP's alleles, in batches of 256, against batches of 8 (what a loop over
a handful of prompts gives) on a subset.
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable
from pathlib import Path

import torch

from bench.common import Row, report
from bench.reference_gpt import ReferenceGPT, hf_gpt2
from dnagpt.data.genomes_panel import read_legend
from dnagpt.eval.genomes import generate_haplotypes
from dnagpt.model import DNAGPT, GPTConfig, generate
from dnagpt.tokenizer import KmerTokenizer
from dnagpt.utils.resolvers import resource_path

PROMPT, BLOCK = 16, 1100
ROUNDS = {"cpu": 3, "cuda": 2}  # a shared CPU is noisy; on an H200 each decoder's 1,024 steps take seconds, rounds agree
FP32, BF16 = torch.float32, torch.bfloat16


def _seconds(fn: Callable[[], object], device: str) -> tuple[object, float]:
    """One call's result and wall seconds; on CUDA the queue is drained before the clock is read."""
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    out = fn()
    sync()
    return out, time.perf_counter() - start


def decoding_runs(new_tokens: int, batch: int, device: str = "cpu"
                  ) -> tuple[DNAGPT, dict[str, Callable[[int], torch.Tensor]]]:  # fmt: skip
    """Our model and the greedy decoders of the bench shape, each ``n -> (batch, PROMPT + n)`` tokens: ours fp32 and bf16
    (cached), ours uncached (fp32), the nanoGPT-style reference and, with ``transformers``, GPT-2 fp32 and bf16."""
    torch.manual_seed(0)
    config = GPTConfig.from_name("tiny", block_size=BLOCK)
    model = DNAGPT(config).eval().to(device)
    prompt = torch.randint(34, config.vocab_size, (batch, PROMPT), device=device)
    prompt[:, 0] = KmerTokenizer().token_id("<R>")
    reference = ReferenceGPT(config.vocab_size, BLOCK, config.n_layer, config.n_head, config.n_embd).eval().to(device)
    runs = {
        "ours fp32": lambda n: generate(model, prompt, n, temperature=0.0),
        "ours bf16": lambda n: generate(model, prompt, n, temperature=0.0, dtype=BF16),
        "ours uncached": lambda n: generate(model, prompt, n, temperature=0.0, use_cache=False),
        "nanoGPT-style": lambda n: reference.generate(prompt, n),
    }
    hf = hf_gpt2(config.vocab_size, config.block_size, config.n_layer, config.n_head, config.n_embd, use_cache=True)
    if hf is not None:
        hf.eval()
        for name, net in (("HF fp32", hf.to(device)), ("HF bf16", copy.deepcopy(hf).to(device, BF16))):
            runs[name] = lambda n, net=net: net.generate(prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                                         pad_token_id=0, eos_token_id=None)  # fmt: skip
    return model, runs


@torch.inference_mode()
def near_tie_flips(model: DNAGPT, cached: torch.Tensor, uncached: torch.Tensor, tolerance: float = 1e-3) -> int | None:
    """How many rows of greedy tokens the cached and uncached decoders part in, or None if any parts at a real
    difference. A row may part only where its two tokens' logits tie within ``tolerance`` of the logits' scale, scored by
    one full forward over the shared prefix: on CPU the two agree exactly, but on a GPU's TF32 matmuls the one-token and
    full products round differently, and with random weights a near-tie in 1,024 steps is common."""
    flips = 0
    for a, b in zip(cached, uncached, strict=True):
        parted = (a != b).nonzero()
        if len(parted) == 0:
            continue
        i = int(parted[0])
        logits = model(a[None, :i]).logits[0, -1].float()
        if (logits[a[i]] - logits[b[i]]).abs() > tolerance * logits.abs().max():
            return None
        flips += 1
    return flips


def decoding_rows(new_tokens: int, batch: int, device: str = "cpu") -> list[Row]:
    """Tokens/s of each decoder, best of ``ROUNDS`` alternated rounds (the slow uncached run once), as ratio rows."""
    rounds = ROUNDS[torch.device(device).type]
    model, runs = decoding_runs(new_tokens, batch, device)
    out: dict[str, torch.Tensor] = {}
    secs: dict[str, float] = {}
    with torch.inference_mode():
        for fn in runs.values():  # warm-up: allocator, kernels
            fn(8)
        for round_ in range(rounds):
            for name, fn in runs.items():
                if round_ == 0 or name != "ours uncached":
                    out[name], s = _seconds(lambda fn=fn: fn(new_tokens), device)
                    secs[name] = min(s, secs.get(name, s))
    flips = near_tie_flips(model, out["ours fp32"], out["ours uncached"])
    if flips is None:
        raise SystemExit("cached and uncached greedy generation differ where the logits do not tie: the cache is wrong, "
                         "the timing meaningless")
    tps = {name: batch * new_tokens / s for name, s in secs.items()}
    agree = (out["ours bf16"] == out["ours fp32"])[:, PROMPT:].float().mean().item()
    figure = f"tiny KV cache, {new_tokens} new x {batch}"
    rows = [Row("generation", f"{figure}, fp32", tps["ours fp32"], "tokens/s", "no cache", tps["ours uncached"],
                target=10, note="cached and uncached greedy tokens identical (fp32)" if not flips else
                f"cached and uncached greedy tokens part in {flips} of {batch} rows, each at a logit tie within rounding "
                "(TF32 matmuls: the cached and full products round differently)")]  # fmt: skip
    for precision in ("fp32", "bf16"):
        if f"HF {precision}" in tps:
            rows.append(Row("generation", f"{figure}, {precision}", tps[f"ours {precision}"], "tokens/s",
                            f"HF GPT-2 {precision} cached", tps[f"HF {precision}"], target=1.5))  # fmt: skip
    rows.append(Row("generation", f"{figure}, fp32", tps["ours fp32"], "tokens/s", "nanoGPT-style cached fp32",
                    tps["nanoGPT-style"]))  # fmt: skip
    rows.append(Row("generation", f"{figure}, bf16", tps["ours bf16"], "tokens/s", "ours fp32", tps["ours fp32"],
                    note=f"bf16 greedy tokens equal to fp32's at {agree:.0%} of positions (random weights: near-tied "
                    "logits, a bf16 rounding flips one and the continuation diverges)"))  # fmt: skip
    return rows


def haplotype_rows(n: int, small_batch_n: int, device: str = "cpu") -> list[Row]:
    torch.manual_seed(0)
    tokenizer = KmerTokenizer()
    legend = read_legend(resource_path("genomes/yelmen805.legend.gz"))
    tokens = -(-len(legend) // tokenizer.k)
    config = GPTConfig.from_name("tiny", vocab_size=len(tokenizer), block_size=tokens + 1, n_embd=128)
    model = DNAGPT(config).eval().to(device)
    with torch.inference_mode():
        generate_haplotypes(model, tokenizer, legend, 8, batch_size=8)  # warm-up
        big = generate_haplotypes(model, tokenizer, legend, n, batch_size=256)
        small = generate_haplotypes(model, tokenizer, legend, small_batch_n, batch_size=8)
    if big.invalid_alleles or small.invalid_alleles:
        raise SystemExit("constrained generation produced non-alleles: the benchmark is meaningless")
    return [Row("generation", f"haplotypes {n} x {tokens} tokens, batch 256", n * tokens / big.seconds, "tokens/s",
                f"batch 8 ({small_batch_n} haplotypes)", small_batch_n * tokens / small.seconds,
                note=f"{n} haplotypes in {big.seconds:.1f} s")]  # fmt: skip


def run(new_tokens: int, batch: int, haplotypes: int, device: str = "cpu") -> list[Row]:
    return decoding_rows(new_tokens, batch, device) + haplotype_rows(haplotypes, 64, device)


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--haplotypes", type=int, default=5008)
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    return report(run(args.new_tokens, args.batch, args.haplotypes, args.device), args.json)


if __name__ == "__main__":
    main()

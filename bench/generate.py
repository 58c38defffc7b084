"""Generation speed: our KV cache vs no cache vs Hugging Face GPT-2 ``generate``, and batched haplotype generation.

    python -m bench.generate [--new-tokens 1024] [--batch 4] [--haplotypes 5008] [--json PATH]

The tiny preset's shape (4 layers, 4 heads, D 256, dynamic vocabulary), ``block_size`` 1,100, a 16-token prompt and
1,024 greedy new tokens; ours cached and uncached must produce identical tokens. GPT-2 and the nanoGPT-style reference
have the same shape and decode greedily with their own caches. Haplotypes: the 805-SNP genomes model's shape (D 128,
136 positions) samples 5,008 haplotypes of 135 tokens, constrained to each SNP's alleles, in batches of 256, against
batches of 8 (what a loop over a handful of prompts gives) on a subset.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from bench.common import Row, report
from bench.reference_gpt import ReferenceGPT
from dnagpt.data.genomes_panel import read_legend
from dnagpt.eval.genomes import generate_haplotypes
from dnagpt.model import DNAGPT, GPTConfig, generate
from dnagpt.tokenizer import KmerTokenizer
from dnagpt.utils.resolvers import resource_path

PROMPT, BLOCK = 16, 1100


def _seconds(fn) -> tuple[object, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def hf_gpt2(config: GPTConfig):
    try:
        from transformers import GPT2Config, GPT2LMHeadModel
    except ImportError:
        return None
    hf = GPT2Config(vocab_size=config.vocab_size, n_positions=config.block_size, n_embd=config.n_embd,
                    n_layer=config.n_layer, n_head=config.n_head, bos_token_id=0, eos_token_id=0,
                    attn_implementation="sdpa")  # fmt: skip
    return GPT2LMHeadModel(hf).eval()


def decoding_rows(new_tokens: int, batch: int) -> list[Row]:
    torch.manual_seed(0)
    config = GPTConfig.from_name("tiny", block_size=BLOCK)
    model = DNAGPT(config).eval()
    prompt = torch.randint(34, config.vocab_size, (batch, PROMPT))
    prompt[:, 0] = 21  # <R>
    reference = ReferenceGPT(config.vocab_size, BLOCK, config.n_layer, config.n_head, config.n_embd).eval()
    runs = {
        "cached": lambda n: generate(model, prompt, n, temperature=0.0),
        "uncached": lambda n: generate(model, prompt, n, temperature=0.0, use_cache=False),
        "nanoGPT-style": lambda n: reference.generate(prompt, n),
    }
    hf = hf_gpt2(config)
    if hf is not None:
        runs["HF GPT-2"] = lambda n: hf.generate(prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                                 pad_token_id=0, eos_token_id=None)  # fmt: skip
    with torch.inference_mode():
        for fn in runs.values():  # warm-up: allocator, kernels
            fn(8)
        out, secs = {}, {}
        for round_ in range(2):  # the fast runs best of two rounds, alternated; the slow uncached run once
            for name, fn in runs.items():
                if round_ == 0 or name != "uncached":
                    out[name], s = _seconds(lambda fn=fn: fn(new_tokens))
                    secs[name] = min(s, secs.get(name, s))
    tps = {name: batch * new_tokens / s for name, s in secs.items()}
    same = bool(torch.equal(out["cached"], out["uncached"]))
    rows = [Row("generation", f"tiny KV cache, {new_tokens} new x {batch}", tps["cached"], "tokens/s", "no cache",
                tps["uncached"], target=10, note=f"cached and uncached greedy tokens identical: {same}")]  # fmt: skip
    for base in ("HF GPT-2", "nanoGPT-style"):
        if base in tps:
            rows.append(Row("generation", f"tiny KV cache, {new_tokens} new x {batch}", tps["cached"], "tokens/s",
                            f"{base} cached", tps[base], target=1.5 if base == "HF GPT-2" else None))  # fmt: skip
    if not same:
        raise SystemExit("cached and uncached greedy generation differ: the cache is wrong, the timing meaningless")
    return rows


def haplotype_rows(n: int, small_batch_n: int) -> list[Row]:
    torch.manual_seed(0)
    tokenizer = KmerTokenizer()
    legend = read_legend(resource_path("genomes/yelmen805.legend.gz"))
    tokens = -(-len(legend) // tokenizer.k)
    model = DNAGPT(GPTConfig.from_name("tiny", vocab_size=len(tokenizer), block_size=tokens + 1, n_embd=128)).eval()
    with torch.inference_mode():
        generate_haplotypes(model, tokenizer, legend, 8, batch_size=8)  # warm-up
        big = generate_haplotypes(model, tokenizer, legend, n, batch_size=256)
        small = generate_haplotypes(model, tokenizer, legend, small_batch_n, batch_size=8)
    if big.invalid_alleles or small.invalid_alleles:
        raise SystemExit("constrained generation produced non-alleles: the benchmark is meaningless")
    return [Row("generation", f"haplotypes {n} x {tokens} tokens, batch 256", n * tokens / big.seconds, "tokens/s",
                f"batch 8 ({small_batch_n} haplotypes)", small_batch_n * tokens / small.seconds,
                note=f"{n} haplotypes in {big.seconds:.1f} s")]  # fmt: skip


def run(new_tokens: int, batch: int, haplotypes: int) -> list[Row]:
    return decoding_rows(new_tokens, batch) + haplotype_rows(haplotypes, 64)


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--haplotypes", type=int, default=5008)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    return report(run(args.new_tokens, args.batch, args.haplotypes), args.json)


if __name__ == "__main__":
    main()

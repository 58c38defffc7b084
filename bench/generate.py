"""Generation speed with and without the KV cache: ``python -m bench.generate [--json PATH]``.

The tiny preset's shape (4 layers, 4 heads, D 256, dynamic vocabulary) with ``block_size`` 1,100, batch 4,
a 16-token prompt and 1,024 greedy new tokens. Both runs are measured in full in the same process, after a
short warm-up, and must produce identical tokens; compare the ratio, not absolute figures, across machines.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from dnagpt.model import DNAGPT, GPTConfig, generate


def _timed(
    model: DNAGPT, prompt: torch.Tensor, new_tokens: int, use_cache: bool
) -> tuple[torch.Tensor, float]:
    start = time.perf_counter()
    out = generate(model, prompt, new_tokens, temperature=0.0, use_cache=use_cache)
    return out, time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--block-size", type=int, default=1100)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    config = GPTConfig.from_name("tiny", block_size=args.block_size)
    model = DNAGPT(config).to(args.device).eval()
    prompt = torch.randint(34, config.vocab_size, (args.batch, args.prompt_tokens), device=args.device)
    prompt[:, 0] = 21  # <R>
    for use_cache in (True, False):  # warm-up: allocator, kernels
        _timed(model, prompt, 8, use_cache)
    cached, t_cached = _timed(model, prompt, args.new_tokens, use_cache=True)
    uncached, t_uncached = _timed(model, prompt, args.new_tokens, use_cache=False)
    n = args.batch * args.new_tokens
    result = {
        "device": args.device,
        "cpu": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "batch": args.batch,
        "prompt_tokens": args.prompt_tokens,
        "new_tokens": args.new_tokens,
        "cached_tokens_per_s": n / t_cached,
        "uncached_tokens_per_s": n / t_uncached,
        "speedup": t_uncached / t_cached,
        "identical_tokens": bool(torch.equal(cached, uncached)),
    }
    print(f"KV cache:    {result['cached_tokens_per_s']:10.1f} new tokens/s ({t_cached:.1f} s)")
    print(f"no cache:    {result['uncached_tokens_per_s']:10.1f} new tokens/s ({t_uncached:.1f} s)")
    print(f"speed-up:    {result['speedup']:10.1f}x   identical greedy tokens: {result['identical_tokens']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()

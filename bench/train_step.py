"""Training-step speed of the tiny preset: precision and optimizer variants, same run.

    python -m bench.train_step [--batch 8] [--tokens 512] [--steps 4] [--json PATH]

Measures tokens/s of forward + backward + AdamW on random DNA ids (the step's cost does not depend on the
values) for fp32 vs bf16 autocast, and the AdamW step alone for the foreach vs fused implementations. Compare the
ratios: the host is shared and absolute figures drift.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from dnagpt.model import DNAGPT, GPTConfig

VOCAB = 19564  # the dynamic vocabulary of the tiny preset


def step_seconds(model: DNAGPT, ids: torch.Tensor, bf16: bool, steps: int) -> float:
    opt = torch.optim.AdamW(model.param_groups(0.1), lr=1e-4, fused=True)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(ids[:, :-1], compute_logits=False)
            loss = F.cross_entropy(model.logits(out.hidden).flatten(0, 1).float(), ids[:, 1:].flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def optimizer_seconds(model: DNAGPT, fused: bool, steps: int = 5) -> float:
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    opt = torch.optim.AdamW(model.param_groups(0.1), lr=1e-4, fused=fused)
    opt.step()  # warm-up (allocates the moments)
    start = time.perf_counter()
    for _ in range(steps):
        opt.step()
    return (time.perf_counter() - start) / steps


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    model = DNAGPT(GPTConfig.from_name("tiny", vocab_size=VOCAB, block_size=args.tokens))
    ids = torch.randint(34, VOCAB, (args.batch, args.tokens + 1))
    n_tokens = args.batch * args.tokens
    fp32 = step_seconds(model, ids, bf16=False, steps=args.steps)
    bf16 = step_seconds(model, ids, bf16=True, steps=args.steps)
    foreach = optimizer_seconds(model, fused=False)
    fused = optimizer_seconds(model, fused=True)
    result = {
        "train_tokens_per_s_fp32": n_tokens / fp32,
        "train_tokens_per_s_bf16": n_tokens / bf16,
        "bf16_over_fp32": fp32 / bf16,
        "adamw_step_ms_foreach": foreach * 1e3,
        "adamw_step_ms_fused": fused * 1e3,
        "fused_over_foreach": foreach / fused,
    }
    print(f"training step, tiny preset, B={args.batch} T={args.tokens}")
    print(f"  fp32            {result['train_tokens_per_s_fp32']:10,.0f} tokens/s")
    print(f"  bf16 autocast   {result['train_tokens_per_s_bf16']:10,.0f} tokens/s   ({result['bf16_over_fp32']:.2f}x fp32)")
    print(f"AdamW step over {sum(p.numel() for p in model.parameters()):,} parameters")
    print(f"  foreach         {result['adamw_step_ms_foreach']:10.1f} ms")
    print(f"  fused           {result['adamw_step_ms_fused']:10.1f} ms   ({result['fused_over_foreach']:.1f}x faster)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()

"""The whole benchmark suite: one table, one JSON; every figure next to a baseline measured in the same run.

    python -m bench [--device cuda] [--quick] [--only train_step generate ...] [--json outputs/bench/results.json]

Sections: ``train_step`` (matmul peak; ours vs HF GPT-2 vs a nanoGPT-style reference at the tiny and 0.1B shapes, fp32
and bf16; MFU; on CPU, the step with freed memory kept vs glibc's default, ``bench.allocator``), ``framework``
(Trainer.fit vs a raw loop), ``generate`` (KV cache vs none vs HF ``generate``; batched haplotypes), ``tokenizer``,
``data`` (pipeline vs training consumption, peak RSS), ``prepare`` (genome cache encoding
of a generated FASTA vs a read-through of it; bytes per base, RSS, concurrent writers, a killed writer),
``time_to_quality`` (minutes to a held-out bits-per-base level, ours vs the reference blocks on the same batches of
the bundled corpus; the CPU recipe on its own corpus is ``python -m bench.time_to_quality --corpus-root ...``). About
20 minutes on 2 idle CPU cores (the 1 GB FASTA of ``prepare`` is most of it); ``--quick`` (tiny shape, fewer tokens,
a 96 Mb FASTA) about 8. ``make bench`` installs the bench-only baseline (``transformers``) first.
``--device cuda`` runs the model sections (train_step with its matmul peak, framework, generate) on the GPU, timed with
CUDA events; tokenizer and data measure the host's pipeline and stay on the CPU. ``make gpu-check`` (``bench.gpu_check``)
is the one script for a GPU lent for a few minutes.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from bench import dataloader, generate, lightning_overhead, prepare_data, time_to_quality, tokenizer, train_step
from bench.common import Row, device_kwargs, report
from dnagpt.utils.heap import keep_freed_memory

SECTIONS = ("train_step", "framework", "generate", "tokenizer", "data", "prepare", "time_to_quality")


def run_section(name: str, quick: bool, device: str = "cpu") -> list[Row]:
    if name == "train_step":
        return train_step.run(["tiny"] if quick else list(train_step.SHAPES), rounds=3, steps=1, device=device)
    if name == "framework":
        return lightning_overhead.run(steps=4 if quick else 6, rounds=3, device=device)
    if name == "generate":
        return generate.run(new_tokens=256 if quick else 1024, batch=4, haplotypes=512 if quick else 5008,
                            **device_kwargs(generate.run, device))  # fmt: skip
    if name == "prepare":
        return prepare_data.run(quick)
    if name == "time_to_quality":
        return time_to_quality.run(quick=True)  # the recipe's own corpus is not shipped
    if name == "tokenizer":
        return tokenizer.rows(tokenizer.run(tokenizer.DEFAULT_FASTA, 3.0 if quick else 12.0, repeats=3))
    args = argparse.Namespace(batches=20 if quick else 40, batch_size=8, block_size=512, workers=[0, 2], steps=3,
                              big=False)  # fmt: skip
    return dataloader.rows(dataloader.run(args))


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny shape only, fewer tokens (about 3 minutes)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] for the model sections (default: cpu)")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--json", type=Path, default=Path("outputs/bench/results.json"))
    args = parser.parse_args(argv)
    keep_freed_memory()  # what training sets (extras.keep_freed_memory): the bench times that
    if args.threads:
        torch.set_num_threads(args.threads)
    rows, seconds = [], {}
    for name in args.only:
        start = time.perf_counter()
        rows += run_section(name, args.quick, args.device)
        seconds[name] = round(time.perf_counter() - start, 1)
    report(rows, args.json, {"quick": args.quick, "device": args.device, "section_seconds": seconds})
    print(f"written to {args.json} (section times: {seconds})")
    return rows


if __name__ == "__main__":
    main()

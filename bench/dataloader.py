"""Pre-training data pipeline throughput against what the tiny model's training step consumes, same run.

    python -m bench.dataloader [--batches 40] [--workers 0 1 2] [--steps 5] [--big] [--json PATH]

Streams batches of 8 sentences (block_size 512) from the bundled corpus with 0, 1 and 2 DataLoader workers and
prints tokens/s, next to the tokens/s of the tiny DNAGPT's default training step (bf16 autocast, fused AdamW) on the
same batches; the ratio pipeline / consumption should be >= 10. ``--big`` builds a >= 1 GB plain FASTA in /tmp from
the shared real genomes (records repeated under new names), encodes it once and streams from it, reporting
resident memory (VmRSS and its private part RssAnon, sampled per batch) next to the bundled run's: it should
not grow with the genome. Absolute numbers depend on the shared host; compare ratios.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import pyfastx
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from bench.common import Row, status_mb
from dnagpt.data.pretrain import PretrainDataModule
from dnagpt.model.config import GPTConfig
from dnagpt.model.gpt import DNAGPT
from dnagpt.tokenizer import KmerTokenizer
from dnagpt.utils.resolvers import register_resolvers

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
BIG_SOURCES = [
    "hsap_GRCh37_chr20.fa.gz",
    "atha_TAIR10_chr1.fa.gz",
    "dmel_dm3_chr2R.fa.gz",
    "cele_ce2_chrX_chrM.fa.gz",
    "scer_S288C_R64_genome.fa.gz",
    "ecoli_K12_MG1655.fa.gz",
]


def peak_rss_mb() -> dict[str, float]:
    """Lifetime peak RSS of this process and of its largest finished child (DataLoader workers), MB."""
    return {
        "self": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "children": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }


def make_dm(corpus: dict, tok: KmerTokenizer, cache: Path, workers: int, block: int, batch: int) -> PretrainDataModule:
    dm = PretrainDataModule(corpus, tok, block_size=block, batch_size=batch, num_workers=workers, cache_dir=cache)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def stream(dm: PretrainDataModule, n_batches: int) -> dict[str, float]:
    """Tokens/s over ``n_batches`` after the first (worker start-up excluded); peak sampled RSS meanwhile."""
    before = status_mb("VmRSS", "RssAnon")
    it = iter(dm.train_dataloader())
    next(it)
    peak = status_mb("VmRSS", "RssAnon")
    tokens, start = 0, time.perf_counter()
    for _ in range(n_batches):
        tokens += next(it)["input_ids"].numel()
        peak = {k: max(v, status_mb("VmRSS", "RssAnon")[k]) for k, v in peak.items()}
    seconds = time.perf_counter() - start
    del it
    return {
        "tokens_per_s": tokens / seconds,
        "VmRSS_mb": peak["VmRSS"],
        "RssAnon_mb": peak["RssAnon"],
        "RssAnon_growth_mb": peak["RssAnon"] - before["RssAnon"],
    }


def train_step_rate(dm: PretrainDataModule, tok: KmerTokenizer, steps: int) -> float:
    """Tokens/s consumed by the tiny preset's default step (bf16 autocast, fused AdamW), warm-up excluded."""
    torch.manual_seed(0)
    model = DNAGPT(GPTConfig.from_name("tiny", vocab_size=len(tok)))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    batches = [b for b, _ in zip(iter(dm.train_dataloader()), range(steps + 1), strict=False)]

    def step(batch: dict[str, torch.Tensor]) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(
                batch["input_ids"], values=batch["values"], value_pos=batch["value_pos"],
                value_mask=batch["value_mask"], reg_pos=batch["value_pos"], compute_logits=False,
            )  # fmt: skip
            target = batch["labels"] != -100
            loss = model.token_loss(out.hidden[target], batch["labels"][target])
            vmask = batch["value_mask"]
            loss = loss + 0.01 * F.mse_loss(out.value_pred[vmask].float(), batch["values"][vmask])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step(batches[0])
    start = time.perf_counter()
    for b in batches[1:]:
        step(b)
    return sum(b["input_ids"].numel() for b in batches[1:]) / (time.perf_counter() - start)


def write_big_fasta(path: Path, min_bytes: int) -> int:
    """Concatenate the shared real genomes, records repeated under new names, up to ``min_bytes`` bases."""
    total, rep = 0, 0
    with open(path, "w") as fh:
        while total < min_bytes:
            for src in BIG_SOURCES:
                for name, seq in pyfastx.Fasta(str(SHARED / src), build_index=False):
                    fh.write(f">r{rep}_{name}\n")
                    for i in range(0, len(seq), 1 << 20):
                        fh.write(seq[i : i + (1 << 20)] + "\n")
                    total += len(seq)
            rep += 1
    return total


def big_run(tok: KmerTokenizer, tmp: Path, args: argparse.Namespace) -> dict[str, float]:
    fasta = tmp / "big.fa"
    t0 = time.perf_counter()
    n_bp = write_big_fasta(fasta, int(args.big_gb * 1e9))
    t1 = time.perf_counter()
    corpus = {"name": "big", "root": str(tmp), "species": {"human": {"fasta": fasta.name}}}
    dm = make_dm(corpus, tok, tmp / "cache", 0, args.block_size, args.batch_size)
    t2 = time.perf_counter()
    res = stream(dm, args.batches)
    return {
        "bp": n_bp,
        "write_s": t1 - t0,
        "encode_and_setup_s": t2 - t1,
        **{f"stream_{k}": v for k, v in res.items()},
    }


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(2)
    register_resolvers()
    corpus = OmegaConf.to_container(OmegaConf.load(ROOT / "dnagpt" / "conf" / "corpus" / "bundled.yaml"), resolve=True)
    tok = KmerTokenizer()
    result: dict = {"block_size": args.block_size, "batch_size": args.batch_size, "pipeline": {}}
    with tempfile.TemporaryDirectory(prefix="dnagpt-bench-") as tmp:
        tmp = Path(tmp)
        for w in args.workers:
            dm = make_dm(corpus, tok, tmp / "cache", w, args.block_size, args.batch_size)
            result["pipeline"][w] = stream(dm, args.batches)
        if args.big:  # before the model exists, so the process memory compares with the bundled runs
            result["big"] = big_run(tok, tmp, args)
        result["train_step_tokens_per_s"] = train_step_rate(dm, tok, args.steps)
    result["peak_rss_mb"] = peak_rss_mb()
    for r in result["pipeline"].values():
        r["ratio"] = r["tokens_per_s"] / result["train_step_tokens_per_s"]
    return result


def rows(result: dict) -> list[Row]:
    consumed = result["train_step_tokens_per_s"]
    out = [Row("data", f"pipeline, {w} workers", r["tokens_per_s"], "tokens/s", "tiny bf16 training step consumes",
               consumed, target=10, note=f"RSS +{r['RssAnon_growth_mb']:.0f} MB while streaming")
           for w, r in result["pipeline"].items()]  # fmt: skip
    if "big" in result:
        b = result["big"]
        out.append(Row("data", f"pipeline, {b['bp'] / 1e9:.2f} Gbp FASTA", b["stream_tokens_per_s"], "tokens/s",
                       note=f"RssAnon +{b['stream_RssAnon_growth_mb']:.0f} MB while streaming"))  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--block-size", type=int, default=512)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=5, help="timed training steps of the tiny model")
    parser.add_argument("--big", action="store_true", help="also stream a >= 1 GB FASTA built in /tmp")
    parser.add_argument("--big-gb", type=float, default=1.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    result = run(args)
    consumed = result["train_step_tokens_per_s"]
    print(f"tiny model training step: {consumed:,.0f} tokens/s (B={args.batch_size}, T~{args.block_size}, bf16)")
    print(f"{'workers':>8} {'pipeline tokens/s':>18} {'x consumption':>14} {'VmRSS MB':>9} {'RssAnon MB':>11}")
    for w, r in result["pipeline"].items():
        rss = f"{r['VmRSS_mb']:>9.0f} {r['RssAnon_mb']:>11.0f}"
        print(f"{w:>8} {r['tokens_per_s']:>18,.0f} {r['ratio']:>14.1f} {rss}")
    if args.big:
        b = result["big"]
        print(
            f"big FASTA {b['bp'] / 1e9:.2f} Gbp: written in {b['write_s']:.0f} s, encoded + set up in "
            f"{b['encode_and_setup_s']:.0f} s; streaming {b['stream_tokens_per_s']:,.0f} tokens/s at VmRSS "
            f"{b['stream_VmRSS_mb']:.0f} MB (RssAnon {b['stream_RssAnon_mb']:.0f} MB, "
            f"+{b['stream_RssAnon_growth_mb']:.0f} MB while streaming)"
        )
    print(f"peak RSS over the run: self {result['peak_rss_mb']['self']:.0f} MB, "
          f"largest child {result['peak_rss_mb']['children']:.0f} MB")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()

"""Tokenizer throughput: our vectorised KmerTokenizer against a straightforward pure-Python one, same run.

    python -m bench.tokenizer [--fasta PATH] [--mb 12] [--repeats 3] [--json PATH]

Reads the first ``--mb`` megabases of a real FASTA with pyfastx and prints MB/s (megabases per second) of
encoding and decoding for both tokenizers, and their ratio. Absolute numbers depend on the (shared) host;
compare the ratios.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from collections.abc import Callable
from pathlib import Path

import pyfastx

from bench.common import Row
from dnagpt.tokenizer import KmerTokenizer
from dnagpt.utils.resolvers import resource_path

# The bundled excerpts (dnagpt/resources/bundled) are 1.5 Mb at most: prefer the shared real data next to the
# repository (>= 10 Mb in one file) where it exists, the bundled human excerpt elsewhere.
SHARED_FASTA = Path(__file__).resolve().parents[2] / "shared" / "data" / "hsap_GRCh37_chr20.fa.gz"
DEFAULT_FASTA = SHARED_FASTA if SHARED_FASTA.exists() else Path(resource_path("bundled/human.fa.gz"))


class PurePythonTokenizer:
    """The obvious implementation: clean with str methods, then one dict lookup per 6-mer."""

    def __init__(self, k: int = 6) -> None:
        words = ["".join(p) for n in range(1, k + 1) for p in itertools.product("NAGCT", repeat=n)]
        self.k = k
        self.inverse = [""] * 34 + words
        self.vocab = {w: i for i, w in enumerate(self.inverse) if w}
        self.iupac = str.maketrans("RYSWKMBDHV", "N" * 10)

    def encode(self, seq: str) -> list[int]:
        clean = seq.upper().translate(self.iupac)
        return [self.vocab[clean[i : i + self.k]] for i in range(0, len(clean), self.k)]

    def decode(self, ids: list[int]) -> str:
        return "".join([self.inverse[i] for i in ids])


def read_prefix(path: Path, n_bp: int) -> str:
    """The first ``n_bp`` bases of a FASTA, records concatenated."""
    parts, total = [], 0
    for _, seq in pyfastx.Fasta(str(path), build_index=False):
        parts.append(seq[: n_bp - total])
        total += len(parts[-1])
        if total >= n_bp:
            break
    return "".join(parts)


def best_seconds(fn: Callable[[], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def run(fasta: Path, mb: float, repeats: int) -> dict:
    if not fasta.exists():
        raise SystemExit(
            f"{fasta} not found; pass --fasta (e.g. dnagpt/resources/bundled/human.fa.gz --mb 1.5)"
        )
    seq = read_prefix(fasta, int(mb * 1e6))
    ours, naive = KmerTokenizer("dynamic"), PurePythonTokenizer()
    ids = ours.encode_dna(seq)
    naive_ids = naive.encode(seq)
    if ids.tolist() != naive_ids or ours.decode_dna(ids) != naive.decode(naive_ids):
        raise SystemExit("ours and the pure-Python tokenizer disagree: benchmark is meaningless")
    timings = {
        "ours_encode": best_seconds(lambda: ours.encode_dna(seq), repeats),
        "ours_decode": best_seconds(lambda: ours.decode_dna(ids), repeats),
        "ours_encode_text": best_seconds(lambda: ours.encode(seq), repeats),
        "python_encode": best_seconds(lambda: naive.encode(seq), repeats),
        "python_decode": best_seconds(lambda: naive.decode(naive_ids), repeats),
    }
    mbps = {name: len(seq) / 1e6 / seconds for name, seconds in timings.items()}
    return {
        "fasta": str(fasta),
        "bp": len(seq),
        "repeats": repeats,
        "mb_per_s": mbps,
        "ratio_encode": mbps["ours_encode"] / mbps["python_encode"],
        "ratio_decode": mbps["ours_decode"] / mbps["python_decode"],
    }


def rows(result: dict) -> list[Row]:
    mbps, mb = result["mb_per_s"], f"{result['bp'] / 1e6:.1f} Mb"
    return [Row("tokenizer", f"encode {mb}", mbps["ours_encode"], "MB/s", "pure Python", mbps["python_encode"]),
            Row("tokenizer", f"decode {mb}", mbps["ours_decode"], "MB/s", "pure Python", mbps["python_decode"])]


def main(argv: list[str] | None = None) -> None:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--fasta", type=Path, default=DEFAULT_FASTA, help="FASTA(.gz) to read")
    parser.add_argument("--mb", type=float, default=12.0, help="megabases to read from the start")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args(argv)
    result = run(args.fasta, args.mb, args.repeats)
    print(f"{result['bp']:,} bp of {result['fasta']} (best of {args.repeats})")
    for name, value in result["mb_per_s"].items():
        print(f"  {name:<18} {value:10.1f} MB/s")
    print(f"  encode: ours / pure Python = {result['ratio_encode']:.1f}x")
    print(f"  decode: ours / pure Python = {result['ratio_decode']:.1f}x")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

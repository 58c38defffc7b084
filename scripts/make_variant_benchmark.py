"""Write the VCF that docs/variants.md times ``python -m dnagpt.score_variants`` on.

    python scripts/make_variant_benchmark.py /tmp/variants.vcf            # 500 variants, seed 0

Real positions of the shipped human excerpt (``dnagpt/resources/bundled/human.fa.gz``, GRCh37 chr20:34,000,001-35,500,000,
record ``20_34000001-35500000``): 60 % SNVs, 20 % deletions and 20 % insertions of 1-10 bp (VCF style, with the anchor
base), at seeded random positions at least 2 kb from the excerpt's ends, never on an N. REF is the excerpt's own base(s),
so the file scores against that FASTA as is. The alleles are drawn, not observed: the file measures speed, not biology.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from dnagpt.data.fasta import iter_records

HUMAN = Path(__file__).resolve().parent.parent / "dnagpt" / "resources" / "bundled" / "human.fa.gz"
MARGIN = 2_000


def variants(seq: str, n: int, seed: int) -> list[tuple[int, str, str]]:
    """``(pos, ref, alt)`` sorted by position, 1-based."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        p = int(rng.integers(MARGIN, len(seq) - MARGIN))
        kind, size = rng.choice(["snv", "del", "ins"], p=[0.6, 0.2, 0.2]), int(rng.integers(1, 11))
        ref = seq[p : p + (size + 1 if kind == "del" else 1)]
        if "N" in ref:
            continue
        if kind == "snv":
            alt = str(rng.choice([b for b in "ACGT" if b != ref]))
        elif kind == "del":
            alt = ref[0]
        else:
            alt = ref + "".join(rng.choice(list("ACGT"), size))
        out.append((p + 1, ref, alt))
    return sorted(set(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    name, seq = next(iter_records(HUMAN))
    lines = ["##fileformat=VCFv4.2", f"##contig=<ID={name},length={len(seq)}>",
             "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO"]  # fmt: skip
    drawn = variants(seq.upper(), args.n, args.seed)
    lines += [f"{name}\t{p}\tv{i}\t{r}\t{a}\t.\tPASS\t." for i, (p, r, a) in enumerate(drawn)]
    args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

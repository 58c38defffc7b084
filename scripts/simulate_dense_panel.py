"""Simulate the dense haplotype panel of the genomes task (offline): 10,000 SNPs in one region of chr22.

stdpopsim gives the human OutOfAfrica_3G09 demography (YRI, CEU, CHB) and its mutation rate; msprime simulates
ancestry over the real HapMap II chr22 recombination map (so LD decays as real linkage does) and JC69 nucleotide
mutations. Biallelic SNPs with minor-allele frequency >= ``--min-maf`` are kept (a genotyping-array-like panel) and
the first ``--snps`` of them in the region are written as ``dense.hapt.gz`` + ``dense.legend.gz`` (a0 = ancestral).

    python scripts/simulate_dense_panel.py ../shared/data            # writes dnagpt/resources/genomes/
"""

import argparse
import logging
from pathlib import Path

import msprime
import numpy as np
import stdpopsim

from dnagpt.data.genomes_panel import Legend, write_hapt, write_legend

log = logging.getLogger("simulate_dense_panel")
MAP_FILE = "hapmap2_genetic_map_hg19_chr22.txt.gz"


def simulate(genetic_map: Path, start: int, end: int, per_population: int, seed: int):
    model = stdpopsim.get_species("HomSap").get_demographic_model("OutOfAfrica_3G09")
    rate_map = msprime.RateMap.read_hapmap(str(genetic_map), position_col=1, rate_col=2)
    region = rate_map.slice(start, end, trim=True)
    samples = {pop.name: per_population for pop in model.populations}
    ts = msprime.sim_ancestry(samples, demography=model.model, recombination_rate=region, ploidy=2, random_seed=seed)
    return msprime.sim_mutations(ts, rate=model.mutation_rate, model=msprime.JC69(), random_seed=seed), samples


def biallelic_snps(ts, start: int, min_maf: float, n_snps: int) -> tuple[np.ndarray, Legend]:
    haps, pos, a0, a1 = [], [], [], []
    for var in ts.variants():
        if len(var.alleles) != 2 or len(var.site.mutations) != 1:
            continue
        freq = var.genotypes.mean()
        if min(freq, 1 - freq) < min_maf:
            continue
        haps.append(var.genotypes.astype(np.uint8))
        pos.append(start + int(var.site.position) + 1)  # 1-based chr22 coordinate
        a0.append(var.alleles[0])
        a1.append(var.alleles[1])
        if len(pos) == n_snps:
            break
    if len(pos) < n_snps:
        raise ValueError(f"only {len(pos)} SNPs with MAF >= {min_maf}; widen the region")
    pos = np.array(pos)
    ids = np.array([f"22:{p}_{x}_{y}" for p, x, y in zip(pos, a0, a1, strict=True)])
    return np.stack(haps, axis=1), Legend(ids, np.full(len(pos), "22"), pos, np.array(a0), np.array(a1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data_dir", type=Path, help=f"directory holding {MAP_FILE}")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "dnagpt/resources/genomes")
    parser.add_argument("--start", type=int, default=20_000_000, help="region start on chr22 (hg19, 0-based)")
    parser.add_argument("--end", type=int, default=26_000_000)
    parser.add_argument("--per-population", type=int, default=150, help="diploid individuals per population")
    parser.add_argument("--snps", type=int, default=10_000)
    parser.add_argument("--min-maf", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=2021)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    ts, samples = simulate(args.data_dir / MAP_FILE, args.start, args.end, args.per_population, args.seed)
    log.info(f"simulated {ts.num_samples} haplotypes, {ts.num_sites} sites, {ts.num_trees} trees")
    haps, legend = biallelic_snps(ts, args.start, args.min_maf, args.snps)
    # sample order of msprime: populations in model order, individuals in order, 2 nodes each
    names = [f"{pop}{i}_{h}" for pop, n in samples.items() for i in range(n) for h in "AB"]
    write_hapt(args.out / "dense.hapt.gz", haps, np.array(names), label="Sim")
    write_legend(args.out / "dense.legend.gz", legend)
    span = legend.position[-1] - legend.position[0]
    log.info(f"wrote {haps.shape[0]} haplotypes x {haps.shape[1]} SNPs over {span:,} bp to {args.out}")


if __name__ == "__main__":
    main()

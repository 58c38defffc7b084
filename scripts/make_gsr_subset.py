"""Build the GSR subsets shipped in dnagpt/resources/gsr from the full shared files (reproducible, seeded).

    python scripts/make_gsr_subset.py /path/to/shared/data [--out dnagpt/resources/gsr] [--pas-per-species 2000]

Each subset keeps the source rows unchanged (same columns), after the same hygiene as the DataModule: exact duplicates
dropped within species, labels balanced per motif. PAS: ``--pas-per-species`` rows per species, half positive, spread
over motifs in proportion to their size. TIS: ``--tis-per-species`` rows per species (all fly rows: there are 214),
drawn from every chromosome so a chromosome hold-out stays meaningful.
"""

import argparse
import gzip
import logging
from pathlib import Path

import numpy as np

from dnagpt.data.gsr_table import GSRTable, balance, deduplicate, read_gsr_tsv

log = logging.getLogger("make_gsr_subset")

SOURCES = {"pas": "gsr_pas_deepgsr_4species.tsv.gz", "tis": "gsr_tis_3species.tsv.gz"}
OUTPUTS = {"pas": "pas_subset.tsv.gz", "tis": "tis_subset.tsv.gz"}


def pick(table: GSRTable, per_species: int, rng: np.random.Generator) -> np.ndarray:
    """Row indices: per species, ``per_species`` rows balanced by label, motifs in proportion to their size."""
    chosen = []
    for species in sorted(set(table.species)):
        rows = np.flatnonzero(table.species == species)
        motifs, sizes = np.unique(table.motif[rows], return_counts=True)
        quota = np.floor(sizes / sizes.sum() * per_species / 2).astype(int)  # pairs per motif
        quota[np.argmax(sizes)] += per_species // 2 - quota.sum()  # rounding rest goes to the largest motif
        for motif, q in zip(motifs, quota, strict=True):
            for label in (1, 0):
                pool = rows[(table.motif[rows] == motif) & (table.label[rows] == label)]
                chosen.append(rng.permutation(pool)[: min(q, len(pool))])
    return np.sort(np.concatenate(chosen))


def write_subset(src: Path, signal: str, per_species: int, out: Path, seed: int) -> None:
    table = read_gsr_tsv(src, signal)
    table, dropped = deduplicate(table)
    table = balance(table, seed)
    index = pick(table, per_species, np.random.default_rng(seed))
    lines = set(table.line[index].tolist())
    with gzip.open(src, "rt") as fh, open(out, "wb") as raw:
        # mtime=0 and no file name in the gzip header: a re-run gives a byte-identical file
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0) as gz:
            gz.write("".join(line for n, line in enumerate(fh, start=1) if n == 1 or n in lines).encode())
    log.info(f"{out}: {len(lines)} rows from {src} (duplicates dropped first: {dict(dropped)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("shared_data", type=Path, help="directory holding the full GSR TSV files")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "dnagpt/resources/gsr")
    parser.add_argument("--pas-per-species", type=int, default=2000)
    parser.add_argument("--tis-per-species", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=20230712)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    for signal, per_species in (("pas", args.pas_per_species), ("tis", args.tis_per_species)):
        write_subset(args.shared_data / SOURCES[signal], signal, per_species, args.out / OUTPUTS[signal], args.seed)


if __name__ == "__main__":
    main()

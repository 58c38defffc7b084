"""Build the example table of task=classification shipped in dnagpt/resources/species_windows: which of the bundled
genomes a 600 bp window comes from.

    python scripts/make_species_windows.py [--out dnagpt/resources/species_windows] [--seed 20240601]

Windows are cut from the bundled corpus (``dnagpt/resources/bundled``, ``corpus=bundled``), cleaned as the tokenizer
cleans (upper case, IUPAC codes to N); windows with more than the corpus' ``n_policy.max_n_frac`` of N are skipped.
The splits follow the corpus' own held-out regions (``holdout`` of ``dnagpt/conf/corpus/bundled.yaml``), so no
window of one split shares a base with another and none of the dev or test bases was seen in pre-training:

* dev: non-overlapping windows tiling each species' validation regions, at most ``--dev`` of them (seeded choice);
* test: the same in the test regions, at most ``--test``;
* train: ``--train`` distinct windows at seeded random positions of the training regions (everything else; training
  windows may overlap each other).

Writes ``train.csv.gz``, ``dev.csv.gz`` and ``test.csv.gz`` (the GUE layout: ``sequence,label``, plus the provenance
columns ``record`` and ``start``, 1-based) byte-reproducibly, and logs the counts for the README.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import logging
import tempfile
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from dnagpt.data.corpus import Corpus, plan_species
from dnagpt.data.fasta import EncodedGenome, Region, build_cache
from dnagpt.tokenizer import KmerTokenizer
from dnagpt.utils.resolvers import register_resolvers

log = logging.getLogger("make_species_windows")

ROOT = Path(__file__).resolve().parent.parent
WINDOW = 600
N_BYTE = ord("N")


class Windows:
    """The windows of one species' genome that pass the N policy."""

    def __init__(self, genome: EncodedGenome, max_n: int) -> None:
        self.genome, self.max_n = genome, max_n

    def get(self, record: int, start: int) -> str | None:
        codes = self.genome.window(record, start, start + WINDOW)
        return None if np.count_nonzero(codes == N_BYTE) > self.max_n else codes.tobytes().decode("ascii")

    def tiles(self, regions: list[Region], cap: int, rng: np.random.Generator) -> list[tuple[int, int, str]]:
        """Non-overlapping windows tiling ``regions``, at most ``cap`` of them (a seeded choice, in genome order)."""
        found = []
        for r in regions:
            for start in range(r.start, r.end - WINDOW + 1, WINDOW):
                if (seq := self.get(r.record, start)) is not None:
                    found.append((r.record, start, seq))
        keep = np.sort(rng.permutation(len(found))[:cap])
        return [found[i] for i in keep]

    def random(self, regions: list[Region], n: int, rng: np.random.Generator) -> list[tuple[int, int, str]]:
        """``n`` distinct windows at random positions inside ``regions`` (in genome order)."""
        fits = [r for r in regions if len(r) >= WINDOW]
        starts = np.array([len(r) - WINDOW + 1 for r in fits])
        chosen: dict[str, tuple[int, int, str]] = {}
        for _ in range(50 * n):
            if len(chosen) == n:
                break
            k = int(rng.integers(starts.sum()))
            i = int(np.searchsorted(np.cumsum(starts), k, side="right"))
            start = fits[i].start + k - int(starts[:i].sum())
            if (seq := self.get(fits[i].record, start)) is not None:
                chosen.setdefault(seq, (fits[i].record, start, seq))
        if len(chosen) < n:
            raise RuntimeError(f"only {len(chosen)} distinct training windows found, {n} asked")
        return sorted(chosen.values())


def write_csv(path: Path, rows: list[list[str]]) -> None:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["sequence", "label", "record", "start"])
    writer.writerows(rows)
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0) as gz:
        gz.write(text.getvalue().encode())  # no name or time in the gzip header: a re-run gives the same bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "dnagpt" / "resources" / "species_windows")
    parser.add_argument("--train", type=int, default=400, help="training windows per species")
    parser.add_argument("--dev", type=int, default=50, help="at most this many dev windows per species")
    parser.add_argument("--test", type=int, default=100, help="at most this many test windows per species")
    parser.add_argument("--seed", type=int, default=20240601)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    register_resolvers()
    corpus = Corpus.from_config(OmegaConf.load(ROOT / "dnagpt" / "conf" / "corpus" / "bundled.yaml"))
    tokenizer, rng = KmerTokenizer(), np.random.default_rng(args.seed)
    rows: dict[str, list[list[str]]] = {"train": [], "dev": [], "test": []}
    with tempfile.TemporaryDirectory() as cache:
        for entry in corpus.available_species():
            genome = EncodedGenome(build_cache(entry.fasta, cache, tokenizer))
            plan = plan_species(entry, genome, corpus.name)
            windows = Windows(genome, int(corpus.max_n_frac * WINDOW))
            picked = {
                "train": windows.random(plan.train, args.train, rng),
                "dev": windows.tiles(plan.val, args.dev, rng),
                "test": windows.tiles(plan.test, args.test, rng),
            }
            for split, found in picked.items():
                rows[split] += [[seq, entry.name, genome.names[rec], str(start + 1)] for rec, start, seq in found]
            log.info(f"{entry.name}: " + ", ".join(f"{s} {len(w)}" for s, w in picked.items()))
    args.out.mkdir(parents=True, exist_ok=True)
    for split, split_rows in rows.items():
        write_csv(args.out / f"{split}.csv.gz", split_rows)
        log.info(f"{args.out / f'{split}.csv.gz'}: {len(split_rows)} rows")


if __name__ == "__main__":
    main()

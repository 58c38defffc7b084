"""Rebuild the bundled corpus (``dnagpt/resources/bundled``) from the shared real-data folder.

    python scripts/make_bundled.py ../shared/data            # writes the FASTA files and README.md

Each species gets one gzipped FASTA of real excerpts (about 0.2-1.5 Mb) with soft-masking and IUPAC codes kept
as in the source. The output is byte-reproducible (gzip without name or time stamp, 60 bases per line), and
README.md lists each excerpt's source, coordinates, licence and sha256.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import pyfastx

log = logging.getLogger("make_bundled")

OUT_DIR = Path(__file__).resolve().parent.parent / "dnagpt" / "resources" / "bundled"
LINE = 60


@dataclass(frozen=True)
class Excerpt:
    source: str  # file in the shared data folder
    record: str  # record name in that file
    start: int | None = None  # 1-based inclusive; None = the whole record
    end: int | None = None
    licence: str = ""

    @property
    def out_name(self) -> str:
        return self.record if self.start is None else f"{self.record}_{self.start}-{self.end}"


SPECIES: dict[str, list[Excerpt]] = {
    # 34.00-35.50 Mb keeps a real 50 kb assembly gap (N), which the N policy must skip and count
    "human": [Excerpt("hsap_GRCh37_chr20.fa.gz", "20", 34_000_001, 35_500_000, "MIT")],
    "mouse": [
        Excerpt("vertebrates8_orthologous_regions_augustus_cgp.fa.gz", "mm10_chr17", licence="Artistic"),
        Excerpt("mmus_chrM.fa.gz", "mouseMito", licence="GPL-3+"),
    ],
    "cow": [Excerpt("vertebrates8_orthologous_regions_augustus_cgp.fa.gz", "bosTau8_chr25", licence="Artistic")],
    "fruitfly": [Excerpt("dmel_dm6_chr4.fa.gz", "NC_004353.4", licence="MIT")],
    "worm": [Excerpt("cele_ce2_chrX_chrM.fa.gz", "chrX", 5_000_001, 6_500_000, "Artistic-2.0")],
    # 15.0-16.5 Mb of chr1 holds 396 of the chromosome's 401 IUPAC codes
    "arabidopsis": [Excerpt("atha_TAIR10_chr1.fa.gz", "NC_003070.9", 15_000_001, 16_500_000, "MIT")],
    "yeast": [
        Excerpt("scer_S288C_R64_genome.fa.gz", name, licence="BSD-3-Clause")
        for name in ("BK006935.2", "BK006937.2", "BK006940.2", "BK006942.2")  # chrI, chrIII, chrVI, chrIX
    ],
    "ecoli": [Excerpt("ecoli_K12_MG1655.fa.gz", "K-12-MG1655", 1, 1_500_000, "BSD-3-Clause")],
}


def read_record(path: Path, name: str) -> str:
    for rec_name, seq in pyfastx.Fasta(str(path), build_index=False):
        if rec_name == name:
            return seq
    raise ValueError(f"{path}: no record {name!r}")


def write_species(species: str, excerpts: list[Excerpt], data_dir: Path) -> tuple[Path, list[str]]:
    out = OUT_DIR / f"{species}.fa.gz"
    rows = []
    with open(out, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        for ex in excerpts:
            seq = read_record(data_dir / ex.source, ex.record)
            start, end = (1, len(seq)) if ex.start is None else (ex.start, ex.end)
            if end > len(seq):
                raise ValueError(f"{ex.source}:{ex.record} has {len(seq)} bp, excerpt ends at {end}")
            piece = seq[start - 1 : end]
            gz.write(f">{ex.out_name} source={ex.source}:{ex.record}:{start}-{end}\n".encode())
            for i in range(0, len(piece), LINE):
                gz.write(piece[i : i + LINE].encode() + b"\n")
            cells = [
                species,
                f"`{ex.out_name}`",
                f"`{ex.source}`",
                f"`{ex.record}:{start}-{end}`",
                f"{len(piece):,}",
            ]
            rows.append("| " + " | ".join([*cells, ex.licence]) + " |")
    return out, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path, help="the shared real-data folder (e.g. ../shared/data)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    table, sums = [], []
    for species, excerpts in SPECIES.items():
        out, rows = write_species(species, excerpts, args.data_dir)
        table += rows
        digest = hashlib.sha256(out.read_bytes()).hexdigest()
        sums.append(f"| `{out.name}` | {out.stat().st_size:,} | `{digest}` |")
        log.info("%s: %s", out.name, digest)
    readme = README.format(table="\n".join(table), sums="\n".join(sums))
    (OUT_DIR / "README.md").write_text(readme)


README = """# Bundled corpus: real genome excerpts

The default corpus (`dnagpt/conf/corpus/bundled.yaml`): small real excerpts of the DNAGPT-M species available
offline, so `python train.py` runs with no download. Rebuilt byte for byte by `python scripts/make_bundled.py
../shared/data` from the shared real-data folder, whose README gives where each source file came from (Debian
packages, PyPI wheels). Sequences are copied unchanged (soft-masking and IUPAC codes kept; coordinates 1-based
inclusive); only the record name changes to `<source record>_<start>-<end>` for partial records. The genome
sequences themselves are public data without use restrictions; the licence given is that of the package that
carried the source file.

Zebrafish (*Danio rerio*) is listed in the corpus without a file: no sequence of useful size was available
offline, so the loader skips it with a warning. Validation and test regions are set in
`dnagpt/conf/corpus/bundled.yaml` (`holdout`).

| species | record | source file | source coordinates | bp | licence |
|---|---|---|---|---|---|
{table}

| file | bytes | sha256 |
|---|---|---|
{sums}
"""


if __name__ == "__main__":
    main()

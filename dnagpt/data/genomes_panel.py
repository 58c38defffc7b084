"""The genomes panel: phased haplotypes and their SNP legend read, checked and written, and split by individual.

Two on-disk layouts are read:

* Yelmen et al.'s ``.hapt`` (one line per haplotype: ``<label> <name> g1 ... gL``, 0/1) plus a legend
  (``id position a0 a1``, one SNP per line, in column order; ``id`` starts with ``<chrom>:``);
* phased VCF through scikit-allel (REF/ALT are the alleles; each sample gives haplotypes ``<sample>_A``/``_B``).

Both text layouts are read through :func:`dnagpt.data.tables.text_lines`, so a bad line, byte or gzip stream is an
``InputError`` naming the file and line; the VCF reader reports the same gzip and encoding faults for its file.

Splits are drawn over *individuals* (both haplotypes of a person on the same side, seeded), so held-out real
haplotypes never have a sibling haplotype in training.
"""

from __future__ import annotations

import gzip
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dnagpt.data.splits import SPLITS, grouped_split
from dnagpt.data.tables import GZIP_ERRORS, check_gzip, parse_int, text_lines, unreadable
from dnagpt.utils.errors import ConfigError, InputError, MissingFileError

__all__ = [
    "HaplotypePanel", "Legend", "individuals_of", "load_hapt_panel", "load_vcf_panel", "read_hapt", "read_legend",
    "split_individuals", "write_hapt", "write_legend", "write_vcf",
]  # fmt: skip

_NUCLEOTIDES = set("ACGT")
_HAP_SUFFIX = re.compile(r"_[AB]$")


@dataclass(frozen=True)
class Legend:
    """One row per SNP, in haplotype-column order."""

    ids: np.ndarray  # (L,) str
    chrom: np.ndarray  # (L,) str
    position: np.ndarray  # (L,) int64
    a0: np.ndarray  # (L,) single-nucleotide str: the allele written for 0
    a1: np.ndarray  # (L,) the allele written for 1

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: slice | np.ndarray) -> Legend:
        return Legend(self.ids[index], self.chrom[index], self.position[index], self.a0[index], self.a1[index])

    def allele_bytes(self) -> np.ndarray:
        """(2, L) uint8 ASCII of ``a0`` / ``a1``: row h is the nucleotide written for allele h."""
        return np.frombuffer("".join([*self.a0, *self.a1]).encode("ascii"), dtype=np.uint8).reshape(2, -1)


@dataclass(frozen=True)
class HaplotypePanel:
    """Haplotypes (n, L) uint8 0/1, their names and individuals, and the legend of the L SNPs."""

    haplotypes: np.ndarray
    names: np.ndarray
    individuals: np.ndarray
    legend: Legend

    def rows(self, index: np.ndarray) -> HaplotypePanel:
        return HaplotypePanel(self.haplotypes[index], self.names[index], self.individuals[index], self.legend)

    def first_snps(self, n: int) -> HaplotypePanel:
        """The panel restricted to its first ``n`` SNPs (reduced panels for tests and quick runs)."""
        if not 1 <= n <= len(self.legend):
            raise ConfigError(f"max_snps={n} must be in 1..{len(self.legend)} (SNPs of the panel)")
        return HaplotypePanel(self.haplotypes[:, :n], self.names, self.individuals, self.legend[:n])


def _check_alleles(a0: np.ndarray, a1: np.ndarray, ids: np.ndarray, path: Path, lines: list[int] | None = None) -> None:
    for i, (x, y) in enumerate(zip(a0, a1, strict=True)):
        if x not in _NUCLEOTIDES or y not in _NUCLEOTIDES or x == y:
            raise InputError(
                f"SNP {i} ({ids[i]}) has alleles a0={str(x)!r} a1={str(y)!r}; each SNP needs two different single "
                "nucleotides A/C/G/T (one nucleotide per SNP in the sentence)",
                path, lines[i] if lines else None,
            )  # fmt: skip


def read_legend(path: str | Path) -> Legend:
    """A legend ``id position a0 a1`` (header line first); the chromosome is the part of ``id`` before ``:``."""
    path = Path(path)
    rows, lines = [], []
    for line, text in enumerate(text_lines(path), start=1):
        fields = text.split()
        if line == 1:
            if fields[:4] != ["id", "position", "a0", "a1"]:
                raise InputError(f"must be the header 'id position a0 a1', got {' '.join(fields)!r}", path, 1)
        elif fields:
            if len(fields) < 4:
                raise InputError(f"{len(fields)} fields, expected 'id position a0 a1'", path, line)
            position = parse_int(fields[1], path, line, "position")
            if position < 0:
                raise InputError(f"{position} is not a non-negative position", path, line, "position")
            rows.append((fields[0], position, fields[2], fields[3]))
            lines.append(line)
    if not lines:
        raise InputError("the legend lists no SNP (expected the header 'id position a0 a1', then one line per SNP)", path)
    ids, pos, a0, a1 = (np.array(c) for c in zip(*rows, strict=True))
    a0, a1 = np.char.upper(a0), np.char.upper(a1)
    _check_alleles(a0, a1, ids, path, lines)
    chrom = np.array([i.split(":", 1)[0] if ":" in i else "" for i in ids])
    return Legend(ids, chrom, pos.astype(np.int64), a0, a1)


def read_hapt(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Names (n,) and haplotypes (n, L) uint8 of a ``.hapt`` file; ragged rows or symbols other than 0/1 are errors."""
    path = Path(path)
    names, rows, first = [], [], 0
    for line, text in enumerate(text_lines(path), start=1):
        parts = text.split(maxsplit=2)
        if not parts:
            continue
        if len(parts) < 3:
            raise InputError("no genotypes (expected '<label> <name> g1 ... gL')", path, line)
        symbols = parts[2].split()
        joined = "".join(symbols)
        if len(joined) != len(symbols) or set(joined) - {"0", "1"}:
            col = next(j for j, s in enumerate(symbols) if s not in ("0", "1"))
            raise InputError(
                f"haplotype {parts[1]}, SNP column {col + 1}: symbol {symbols[col]!r}; a haplotype holds only 0 and 1",
                path, line,
            )  # fmt: skip
        if not rows:
            first = line
        elif len(symbols) != len(rows[0]):
            raise InputError(
                f"haplotype {parts[1]} has {len(symbols)} SNPs but line {first} has {len(rows[0])}: ragged rows", path, line
            )
        names.append(parts[1])
        rows.append(np.frombuffer(joined.encode("ascii"), dtype=np.uint8) - ord("0"))
    if not rows:
        raise InputError("holds no haplotype (expected lines '<label> <name> g1 ... gL')", path)
    return np.array(names), np.stack(rows)


def individuals_of(names: np.ndarray) -> np.ndarray:
    """The individual of each haplotype name: ``X_A`` and ``X_B`` are both ``X`` (Yelmen's and our VCF naming)."""
    return np.array([_HAP_SUFFIX.sub("", str(n)) for n in names])


def load_hapt_panel(hapt: str | Path, legend: str | Path) -> HaplotypePanel:
    names, haps = read_hapt(hapt)
    leg = read_legend(legend)
    if haps.shape[1] != len(leg):
        raise InputError(
            f"{hapt} has {haps.shape[1]} SNP columns but the legend {legend} lists {len(leg)} SNPs; "
            "they must describe the same SNPs in the same order"
        )
    return HaplotypePanel(haps, names, individuals_of(names), leg)


def _read_vcf(path: Path, fields: list[str]) -> dict | None:
    """scikit-allel's ``read_vcf``, with an unreadable file an ``InputError`` naming it instead of a traceback."""
    import allel  # deferred: only VCF users pay for the import

    check_gzip(path)
    try:  # GT as raw text keeps the phase separator, which scikit-allel's integer parser drops
        return allel.read_vcf(str(path), fields=fields, types={"calldata/GT": "S8"}, alt_number=1)
    except GZIP_ERRORS as err:
        raise unreadable(err, path) from None
    except UnicodeDecodeError as err:
        raise InputError(f"byte 0x{err.object[err.start]:02x} is not UTF-8 text", path) from None
    except RuntimeError as err:  # scikit-allel's word for a malformed header
        raise InputError(f"is not a readable VCF ({err})", path) from None


def load_vcf_panel(path: str | Path) -> HaplotypePanel:
    """Biallelic SNPs of a phased VCF via scikit-allel; unphased or missing genotypes are errors naming the call."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path} is not a file")
    fields = ["samples", "variants/CHROM", "variants/POS", "variants/ID", "variants/REF", "variants/ALT", "calldata/GT"]
    data = _read_vcf(path, fields)
    if data is None or "calldata/GT" not in data:
        raise InputError("no variant with a GT field (a phased VCF needs FORMAT GT like 0|1)", path)
    gt = data["calldata/GT"][..., 0] if data["calldata/GT"].ndim == 3 else data["calldata/GT"]  # (L, S) bytes
    samples, ids = data["samples"], data["variants/ID"]
    ok = np.isin(gt, [b"0|0", b"0|1", b"1|0", b"1|1"])
    if not ok.all():
        v, s = (int(i) for i in np.argwhere(~ok)[0])
        call = gt[v, s].decode()
        why = "unphased (use '|', not '/')" if "/" in call else "not a phased biallelic call 0|0, 0|1, 1|0 or 1|1"
        raise InputError(
            f"variant {v + 1} (CHROM {data['variants/CHROM'][v]} POS {data['variants/POS'][v]}), "
            f"sample {samples[s]}: GT {call!r} is {why}",
            path,
        )
    a0 = np.char.upper(data["variants/REF"].astype(str))
    a1 = np.char.upper(data["variants/ALT"].astype(str))
    chrom = data["variants/CHROM"].astype(str)
    pos = data["variants/POS"].astype(np.int64)
    rows = zip(ids, chrom, pos, a0, a1, strict=True)
    ids = np.array([i if i not in ("", ".") else f"{c}:{p}_{x}_{y}" for i, c, p, x, y in rows])
    _check_alleles(a0, a1, ids, path)
    # haplotype matrix (2S, L): sample s gives rows 2s (_A, left of '|') and 2s+1 (_B)
    codes = np.frombuffer(gt.astype("S3").tobytes(), dtype=np.uint8).reshape(*gt.shape, 3)
    haps = (codes[..., [0, 2]] - ord("0")).transpose(1, 2, 0).reshape(-1, len(pos))
    names = np.array([f"{s}_{h}" for s in samples for h in "AB"])
    return HaplotypePanel(haps.astype(np.uint8), names, individuals_of(names), Legend(ids, chrom, pos, a0, a1))


def write_legend(path: str | Path, legend: Legend) -> None:
    rows = (f"{i} {p} {x} {y}" for i, p, x, y in zip(legend.ids, legend.position, legend.a0, legend.a1, strict=True))
    _write_text(path, "id position a0 a1\n" + "\n".join(rows) + "\n")


def write_hapt(path: str | Path, haplotypes: np.ndarray, names: np.ndarray, label: str = "Real") -> None:
    """Yelmen's layout; ``label`` is the first field (``Real`` for data, ``AG`` for artificial genomes)."""
    lines = (f"{label} {n} {' '.join(h.astype(str))}" for n, h in zip(names, haplotypes, strict=True))
    _write_text(path, "\n".join(lines) + "\n")


def write_vcf(path: str | Path, haplotypes: np.ndarray, legend: Legend, sample_prefix: str = "AG") -> None:
    """Phased VCF: consecutive haplotypes pair into diploid samples (an odd last one is a haploid call)."""
    n = len(haplotypes)
    samples = [f"{sample_prefix}{i}" for i in range((n + 1) // 2)]
    header = [
        "##fileformat=VCFv4.2",
        "##source=dnagpt",
        '##FORMAT=<ID=GT,Number=1,Type=String,Description="Phased genotype">',
        "\t".join(["#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO", "FORMAT", *samples]),
    ]
    h = haplotypes.astype(str)
    calls = np.char.add(np.char.add(h[0 : n - n % 2 : 2], "|"), h[1 : n - n % 2 : 2])  # (n//2, L)
    if n % 2:
        calls = np.concatenate([calls, h[-1:]])
    body = (
        "\t".join([c, str(p), i, x, y, ".", "PASS", ".", "GT", *calls[:, j]])
        for j, (c, p, i, x, y) in enumerate(
            zip(legend.chrom, legend.position, legend.ids, legend.a0, legend.a1, strict=True)
        )
    )
    _write_text(path, "\n".join([*header, *body]) + "\n")


def _write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        with gzip.open(path, "wt", compresslevel=9) as fh:
            fh.write(text)
    else:
        path.write_text(text)


def check_split_fractions(val_fraction: float, test_fraction: float) -> None:
    """Fractions of individuals: test > 0, val >= 0, and some left for training."""
    if not (0 <= val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ConfigError(
            f"val_fraction={val_fraction}, test_fraction={test_fraction}: need fractions in [0, 1) with test > 0 and "
            "val + test < 1"
        )


def split_individuals(individuals: np.ndarray, val_fraction: float, test_fraction: float, seed: int) -> dict:
    """Row indices per split; an individual's haplotypes all land in one split (seeded order of individuals)."""
    check_split_fractions(val_fraction, test_fraction)
    n_people = len(np.unique(individuals))
    n_test = max(1, round(test_fraction * n_people))
    n_val = round(val_fraction * n_people)
    if n_test + n_val >= n_people:
        raise ConfigError(f"{n_people} individuals are too few for val={n_val} and test={n_test} individuals")
    code = grouped_split(individuals, {"test": n_test, "val": n_val}, np.random.default_rng(seed), count="groups")
    return {name: np.flatnonzero(code == i) for i, name in enumerate(SPLITS)}

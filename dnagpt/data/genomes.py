"""Phased human haplotypes as DNA sentences: readers, writers, individual-level splits and the DataModule.

Two on-disk layouts are read:

* Yelmen et al.'s ``.hapt`` (one line per haplotype: ``<label> <name> g1 ... gL``, 0/1) plus a legend
  (``id position a0 a1``, one SNP per line, in column order; ``id`` starts with ``<chrom>:``);
* phased VCF through scikit-allel (REF/ALT are the alleles; each sample gives haplotypes ``<sample>_A``/``_B``).

A haplotype becomes the sentence ``<R>`` + one nucleotide per SNP (``a0`` for 0, ``a1`` for 1), cut into
non-overlapping k-mers like any DNA, so 805 SNPs are 1 + 135 tokens. Every sentence of a panel has the same length:
batches need no padding, and generation knows at each step which SNPs it is writing.

Splits are drawn over *individuals* (both haplotypes of a person on the same side, seeded), so held-out real
haplotypes never have a sibling haplotype in training.
"""

from __future__ import annotations

import gzip
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from dnagpt.data.batching import SplitLoaders, per_device_batch_size
from dnagpt.tokenizer import KmerTokenizer

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
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
            raise ValueError(f"max_snps={n} must be in 1..{len(self.legend)} (SNPs of the panel)")
        return HaplotypePanel(self.haplotypes[:, :n], self.names, self.individuals, self.legend[:n])


def _open_text(path: Path):
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    return gzip.open(path, "rt") if path.suffix == ".gz" else open(path)


def _check_alleles(a0: np.ndarray, a1: np.ndarray, ids: np.ndarray, source: str) -> None:
    for i, (x, y) in enumerate(zip(a0, a1, strict=True)):
        if x not in _NUCLEOTIDES or y not in _NUCLEOTIDES or x == y:
            raise ValueError(
                f"{source}: SNP {i} ({ids[i]}) has alleles a0={str(x)!r} a1={str(y)!r}; each SNP needs two different "
                "single nucleotides A/C/G/T (one nucleotide per SNP in the sentence)"
            )


def read_legend(path: str | Path) -> Legend:
    """A legend ``id position a0 a1`` (header line first); the chromosome is the part of ``id`` before ``:``."""
    path = Path(path)
    with _open_text(path) as fh:
        header = fh.readline().split()
        if header[:4] != ["id", "position", "a0", "a1"]:
            raise ValueError(f"{path}: line 1 must be the header 'id position a0 a1', got {' '.join(header)!r}")
        rows = []
        for lineno, line in enumerate(fh, start=2):
            fields = line.split()
            if not fields:
                continue
            if len(fields) < 4:
                raise ValueError(f"{path}: line {lineno} has {len(fields)} fields, expected 'id position a0 a1'")
            if not fields[1].isdigit():
                raise ValueError(f"{path}: line {lineno}: position {fields[1]!r} is not a non-negative integer")
            rows.append(fields[:4])
    if not rows:
        raise ValueError(f"{path}: the legend lists no SNP")
    ids, pos, a0, a1 = (np.array(c) for c in zip(*rows, strict=True))
    a0, a1 = np.char.upper(a0), np.char.upper(a1)
    _check_alleles(a0, a1, ids, str(path))
    chrom = np.array([i.split(":", 1)[0] if ":" in i else "" for i in ids])
    return Legend(ids, chrom, pos.astype(np.int64), a0, a1)


def read_hapt(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Names (n,) and haplotypes (n, L) uint8 of a ``.hapt`` file; ragged rows or symbols other than 0/1 are errors."""
    path = Path(path)
    names, rows, width = [], [], None
    with _open_text(path) as fh:
        for lineno, line in enumerate(fh, start=1):
            parts = line.split(maxsplit=2)
            if not parts:
                continue
            if len(parts) < 3:
                raise ValueError(f"{path}: line {lineno} has no genotypes (expected '<label> <name> g1 ... gL')")
            symbols = parts[2].split()
            joined = "".join(symbols)
            if len(joined) != len(symbols) or set(joined) - {"0", "1"}:
                col = next(j for j, s in enumerate(symbols) if s not in ("0", "1"))
                raise ValueError(
                    f"{path}: line {lineno} ({parts[1]}), SNP column {col + 1}: symbol {symbols[col]!r}; "
                    "a haplotype holds only 0 and 1"
                )
            if width is None:
                width = len(symbols)
            elif len(symbols) != width:
                raise ValueError(
                    f"{path}: line {lineno} ({parts[1]}) has {len(symbols)} SNPs but line 1 has {width}: ragged rows"
                )
            names.append(parts[1])
            rows.append(np.frombuffer(joined.encode("ascii"), dtype=np.uint8) - ord("0"))
    if not rows:
        raise ValueError(f"{path}: no haplotype")
    return np.array(names), np.stack(rows)


def individuals_of(names: np.ndarray) -> np.ndarray:
    """The individual of each haplotype name: ``X_A`` and ``X_B`` are both ``X`` (Yelmen's and our VCF naming)."""
    return np.array([_HAP_SUFFIX.sub("", str(n)) for n in names])


def load_hapt_panel(hapt: str | Path, legend: str | Path) -> HaplotypePanel:
    names, haps = read_hapt(hapt)
    leg = read_legend(legend)
    if haps.shape[1] != len(leg):
        raise ValueError(
            f"{hapt} has {haps.shape[1]} SNP columns but the legend {legend} lists {len(leg)} SNPs; "
            "they must describe the same SNPs in the same order"
        )
    return HaplotypePanel(haps, names, individuals_of(names), leg)


def load_vcf_panel(path: str | Path) -> HaplotypePanel:
    """Biallelic SNPs of a phased VCF via scikit-allel; unphased or missing genotypes are errors naming the call."""
    import allel  # deferred: only VCF users pay for the import

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    fields = ["samples", "variants/CHROM", "variants/POS", "variants/ID", "variants/REF", "variants/ALT", "calldata/GT"]
    # GT as raw text keeps the phase separator, which scikit-allel's integer parser drops
    data = allel.read_vcf(str(path), fields=fields, types={"calldata/GT": "S8"}, alt_number=1)
    if data is None or "calldata/GT" not in data:
        raise ValueError(f"{path}: no variant with a GT field (a phased VCF needs FORMAT GT like 0|1)")
    gt = data["calldata/GT"][..., 0] if data["calldata/GT"].ndim == 3 else data["calldata/GT"]  # (L, S) bytes
    samples, ids = data["samples"], data["variants/ID"]
    ok = np.isin(gt, [b"0|0", b"0|1", b"1|0", b"1|1"])
    if not ok.all():
        v, s = (int(i) for i in np.argwhere(~ok)[0])
        call = gt[v, s].decode()
        why = "unphased (use '|', not '/')" if "/" in call else "not a phased biallelic call 0|0, 0|1, 1|0 or 1|1"
        raise ValueError(
            f"{path}: variant {v + 1} (CHROM {data['variants/CHROM'][v]} POS {data['variants/POS'][v]}), "
            f"sample {samples[s]}: GT {call!r} is {why}"
        )
    a0 = np.char.upper(data["variants/REF"].astype(str))
    a1 = np.char.upper(data["variants/ALT"].astype(str))
    chrom = data["variants/CHROM"].astype(str)
    pos = data["variants/POS"].astype(np.int64)
    rows = zip(ids, chrom, pos, a0, a1, strict=True)
    ids = np.array([i if i not in ("", ".") else f"{c}:{p}_{x}_{y}" for i, c, p, x, y in rows])
    _check_alleles(a0, a1, ids, str(path))
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


def split_individuals(individuals: np.ndarray, val_fraction: float, test_fraction: float, seed: int) -> dict:
    """Row indices per split; an individual's haplotypes all land in one split (seeded permutation of individuals)."""
    if not (0 <= val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(f"val_fraction={val_fraction}, test_fraction={test_fraction}: need fractions in [0, 1) "
                         "with test > 0 and val + test < 1")
    people, which = np.unique(individuals, return_inverse=True)
    order = np.random.default_rng(seed).permutation(len(people))
    n_test = max(1, round(test_fraction * len(people)))
    n_val = round(val_fraction * len(people))
    if n_test + n_val >= len(people):
        raise ValueError(f"{len(people)} individuals are too few for val={n_val} and test={n_test} individuals")
    side = np.empty(len(people), dtype=np.int8)
    side[order[:n_test]], side[order[n_test : n_test + n_val]], side[order[n_test + n_val :]] = 2, 1, 0
    return {name: np.flatnonzero(side[which] == i) for i, name in enumerate(SPLITS)}


def encode_haplotypes(
    haplotypes: np.ndarray, legend: Legend, tokenizer: KmerTokenizer, species: str = "human"
) -> np.ndarray:
    """Sentences (n, 1 + ceil(L / k)) int64: the species token, then the allele nucleotides cut into k-mers."""
    if haplotypes.ndim != 2 or haplotypes.shape[1] != len(legend):
        raise ValueError(f"haplotypes of shape {haplotypes.shape} do not match the {len(legend)} SNPs of the legend")
    if haplotypes.size and haplotypes.max() > 1:
        raise ValueError("haplotypes must hold only 0 and 1")
    alleles = legend.allele_bytes()
    seqs = np.where(haplotypes == 1, alleles[1], alleles[0]).astype(np.uint8)
    first = tokenizer.species_id(species)
    return np.stack([np.concatenate([[first], tokenizer.encode_dna(s)]) for s in seqs])


def decode_haplotypes(dna_ids: np.ndarray, legend: Legend, tokenizer: KmerTokenizer) -> tuple[np.ndarray, np.ndarray]:
    """Haplotypes (n, L) from the DNA tokens of sentences (no species token), and a bool mask of invalid alleles.

    A position whose nucleotide is neither ``a0`` nor ``a1`` of its SNP is invalid (its haplotype value is 0), and so
    is every position of a sentence that holds a reserved token or does not spell exactly L nucleotides (free,
    unconstrained sampling can produce both).
    """
    alleles = legend.allele_bytes()
    haps = np.zeros((len(dna_ids), len(legend)), dtype=np.uint8)
    invalid = np.ones_like(haps, dtype=bool)
    for r, ids in enumerate(dna_ids):
        try:
            seq = np.frombuffer(tokenizer.decode_dna(ids).encode("ascii"), dtype=np.uint8)
        except ValueError:  # a reserved token (e.g. <P>) among the DNA tokens
            continue
        if len(seq) != len(legend):
            continue
        haps[r] = seq == alleles[1]
        invalid[r] = (seq != alleles[0]) & (seq != alleles[1])
    return haps, invalid


class _Sentences(Dataset):
    def __init__(self, ids: np.ndarray) -> None:
        self.ids = torch.from_numpy(ids)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.ids[i]


def collate_sentences(rows: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Equal-length sentences → ``input_ids``, shifted ``labels`` (−100 on the last position) and ``attention_mask``."""
    ids = torch.stack(rows)
    labels = torch.full_like(ids, -100)
    labels[:, :-1] = ids[:, 1:]
    return {"input_ids": ids, "labels": labels, "attention_mask": torch.ones_like(ids, dtype=torch.bool)}


class GenomesDataModule(SplitLoaders, L.LightningDataModule):
    """Haplotype sentences of one panel (``.hapt`` + legend, or a phased VCF), split by individual."""

    def __init__(
        self,
        tokenizer: KmerTokenizer,
        block_size: int,
        panel: str = "yelmen805",
        hapt: str | None = None,
        legend: str | None = None,
        vcf: str | None = None,
        max_snps: int | None = None,
        species: str = "human",
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        batch_size: int = 32,
        num_workers: int = 0,
        pin_memory: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if vcf is None and (hapt is None or legend is None):
            raise ValueError(f"panel {panel!r}: give hapt= and legend=, or vcf=")
        self.tokenizer, self.block_size, self.panel_name = tokenizer, block_size, panel
        self.hapt, self.legend_path, self.vcf, self.max_snps, self.species = hapt, legend, vcf, max_snps, species
        self.val_fraction, self.test_fraction, self.seed = val_fraction, test_fraction, seed
        self.batch_size, self.num_workers, self.pin_memory = batch_size, num_workers, pin_memory
        self.panel: HaplotypePanel | None = None
        self.splits: dict[str, np.ndarray] = {}
        self.sentences: np.ndarray | None = None

    def setup(self, stage: str | None = None) -> None:
        """Loads every split whatever the stage: the genome evaluation needs train, val and test together."""
        self.per_device_batch = per_device_batch_size(self.batch_size, self.trainer)
        if self.panel is not None:
            return
        panel = load_vcf_panel(self.vcf) if self.vcf else load_hapt_panel(self.hapt, self.legend_path)
        if self.max_snps is not None:
            panel = panel.first_snps(self.max_snps)
        sentences = encode_haplotypes(panel.haplotypes, panel.legend, self.tokenizer, self.species)
        if sentences.shape[1] > self.block_size:
            raise ValueError(
                f"panel {self.panel_name!r}: {len(panel.legend)} SNPs make sentences of {sentences.shape[1]} tokens, "
                f"more than block_size={self.block_size}; raise model.block_size or set data.max_snps"
            )
        self.panel, self.sentences = panel, sentences
        self.splits = split_individuals(panel.individuals, self.val_fraction, self.test_fraction, self.seed)
        sizes = ", ".join(f"{s} {len(i)}" for s, i in self.splits.items())
        log.info(f"panel {self.panel_name}: {len(panel.legend)} SNPs, {sentences.shape[1]} tokens; haplotypes {sizes}")

    def haplotypes(self, split: str) -> np.ndarray:
        return self.panel.haplotypes[self.splits[split]]

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if not len(self.splits[split]):
            raise ValueError(f"split {split!r} is empty (val_fraction={self.val_fraction})")
        return DataLoader(
            _Sentences(self.sentences[self.splits[split]]),
            batch_size=self.per_device_batch,
            shuffle=shuffle,
            collate_fn=collate_sentences,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            drop_last=shuffle,
            generator=torch.Generator().manual_seed(self.seed) if shuffle else None,
        )

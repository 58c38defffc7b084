"""Phased human haplotypes as DNA sentences: encoding, decoding, batches and the DataModule.

A haplotype becomes the sentence ``<R>`` + one nucleotide per SNP (``a0`` for 0, ``a1`` for 1), cut into
non-overlapping k-mers like any DNA, so 805 SNPs are 1 + 135 tokens. Every sentence of a panel has the same length:
batches need no padding, and generation knows at each step which SNPs it is writing.

The panel comes from :mod:`dnagpt.data.genomes_panel` (``.hapt`` + legend or a phased VCF; readers, writers and the
split by individual); the names evaluators and scripts use are exported here too, so ``dnagpt.data.genomes`` is the
task's one data interface.
"""

from __future__ import annotations

import logging

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from dnagpt.data.batching import SplitLoaders, ignore_preemption_signals, per_device_batch_size
from dnagpt.data.genomes_panel import (
    HaplotypePanel,
    Legend,
    check_split_fractions,
    load_hapt_panel,
    load_vcf_panel,
    split_individuals,
)
from dnagpt.data.tables import require_file
from dnagpt.tokenizer import IGNORE_INDEX, KmerTokenizer
from dnagpt.utils.errors import ConfigError

__all__ = ["GenomesDataModule", "collate_sentences", "decode_haplotypes", "encode_haplotypes"]

log = logging.getLogger(__name__)


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
    labels = torch.full_like(ids, IGNORE_INDEX)
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
            raise ConfigError(f"panel {panel!r}: give hapt= and legend=, or vcf=")
        for key, path in [("vcf", vcf)] if vcf else [("hapt", hapt), ("legend", legend)]:
            require_file(key, path)  # read in setup; a wrong path fails here, when the config is built
        check_split_fractions(val_fraction, test_fraction)
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
            raise ConfigError(
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
            raise ConfigError(f"split {split!r} is empty (val_fraction={self.val_fraction})")
        dataset = _Sentences(self.sentences[self.splits[split]])
        return DataLoader(
            dataset,
            batch_size=self.per_device_batch,
            sampler=self._sampler(dataset, self.per_device_batch, shuffle),
            collate_fn=collate_sentences,
            num_workers=self.num_workers,
            worker_init_fn=ignore_preemption_signals,
            pin_memory=self.pin_memory,
            drop_last=shuffle,
        )

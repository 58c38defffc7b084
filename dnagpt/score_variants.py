"""Zero-shot variant-effect scores of a VCF.

    python -m dnagpt.score_variants ckpt=<ckpt> vcf=<calls.vcf.gz> reference=<genome.fa>

For every SNV, MNV and indel, the log-likelihood ratio of the window with the ALT allele against the window with the REF
allele (what exactly is scored: :mod:`dnagpt.variants`, docs/variants.md), written as a TSV (one row per ALT allele) and
as a copy of the VCF with a ``DNAGPT_LLR`` INFO field (one value per ALT); both are renamed into place at the end, so a
run stopped by bad input leaves neither. ``ckpt`` is anything ``read_checkpoint`` reads: a Lightning checkpoint of ours,
a ``save_pretrained`` directory, or a released ``.pth`` (whose shapes give the preset and the vocabulary). The settings
are in ``dnagpt/conf/score_variants.yaml``; :func:`score_variants` is the same run from Python.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig

from dnagpt.checkpointing import atomic_path, read_checkpoint
from dnagpt.commands import hydra_command
from dnagpt.data.tables import require_file
from dnagpt.model.config import FIXED_VOCAB_SIZE, GPTConfig
from dnagpt.model.gpt import DNAGPT
from dnagpt.model.pretrained import config_from_release_state_dict, load_release_state_dict
from dnagpt.tokenizer import KmerTokenizer
from dnagpt.utils.errors import CheckpointError, ConfigError
from dnagpt.variants import TSV_COLUMNS, Reference, VariantScorer
from dnagpt.vcf import VcfReader, VcfWriter

__all__ = ["ScoreSummary", "load_model", "main", "score_variants"]

log = logging.getLogger(__name__)


@dataclass
class ScoreSummary:
    """What a run scored, skipped and wrote, and how fast (``seconds`` covers reading, scoring and writing, not the
    model load or the one-off encoding of the reference)."""

    records: int = 0
    alleles_scored: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # ALT alleles not scored, by reason
    seconds: float = 0.0
    tsv: Path | None = None
    vcf: Path | None = None

    @property
    def alleles_per_second(self) -> float:
        return self.alleles_scored / self.seconds if self.seconds > 0 else 0.0


def load_model(ckpt: str | os.PathLike, device: str = "cpu") -> tuple[DNAGPT, KmerTokenizer]:
    """The network of any checkpoint ``read_checkpoint`` reads, in eval mode on ``device``, with its tokenizer."""
    checkpoint = read_checkpoint(ckpt, key="ckpt")
    if checkpoint.model_cfg is not None and checkpoint.tokenizer_spec is not None:
        config = GPTConfig.from_dict(dict(checkpoint.model_cfg))
        tokenizer = KmerTokenizer.from_dict(dict(checkpoint.tokenizer_spec))
    else:  # a released .pth: the shapes give the preset, the vocabulary size which vocabulary
        config = config_from_release_state_dict(checkpoint.state_dict)
        tokenizer = KmerTokenizer("fixed" if config.vocab_size == FIXED_VOCAB_SIZE else "dynamic")
    if len(tokenizer) != config.vocab_size:
        raise CheckpointError(f"ckpt={ckpt}: its tokenizer has {len(tokenizer)} ids, its model {config.vocab_size}")
    try:
        model = load_release_state_dict(DNAGPT(config), checkpoint.state_dict)
    except ValueError as err:
        raise CheckpointError(f"ckpt={ckpt}: {err}") from None
    return model.to(_device(device)).eval(), tokenizer


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError as err:
        raise ConfigError(f"device={name!r}: {err}") from None


def score_variants(
    ckpt: str | os.PathLike,
    vcf: str | os.PathLike,
    reference: str | os.PathLike,
    tsv: str | os.PathLike | None = None,
    out_vcf: str | os.PathLike | None = None,
    *,
    species: str = "human",
    flank: int = 512,
    strand: str = "both",
    phases: int = 1,
    batch_size: int = 32,
    device: str = "cpu",
    cache_dir: str | os.PathLike | None = None,
) -> ScoreSummary:
    """Score every sequence ALT allele of ``vcf`` against ``reference`` and write the TSV and/or the annotated VCF.

    ``cache_dir`` keeps the encoded reference for the next run (by default it is encoded into a temporary directory and
    removed). Bad input is an ``InputError`` naming the VCF line and column: a contig the reference lacks, a REF that
    does not match it, a variant outside its contig.
    """
    if tsv is None and out_vcf is None:
        raise ConfigError("score_variants writes its scores to tsv=, out_vcf= or both; neither was given")
    vcf, reference = require_file("vcf", vcf), require_file("reference", reference)
    model, tokenizer = load_model(ckpt, device)
    summary = ScoreSummary(tsv=None if tsv is None else Path(tsv), vcf=None if out_vcf is None else Path(out_vcf))
    with ExitStack() as stack:
        if cache_dir is None:
            cache_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="dnagpt-reference-"))
        scorer = VariantScorer(
            model, tokenizer, Reference(reference, cache_dir, tokenizer), species, flank, strand, phases, batch_size
        )
        reader = VcfReader(vcf)
        description = (
            f"DNAGPT zero-shot log-likelihood ratio ln P(alt window) - ln P(ref window) in nats (model {ckpt}; "
            f"species={species}, flank={flank}, strand={strand}, phases={phases}; dnagpt docs/variants.md)"
        )
        vcf_out = tsv_out = None  # each written beside its name and renamed at the end: a failed run leaves neither
        if summary.vcf is not None:
            partial = stack.enter_context(atomic_path(summary.vcf))
            vcf_out = stack.enter_context(VcfWriter(partial, reader, description, compress=summary.vcf.suffix == ".gz"))
        if summary.tsv is not None:
            tsv_out = stack.enter_context(open(stack.enter_context(atomic_path(summary.tsv)), "w"))
            tsv_out.write("\t".join(TSV_COLUMNS) + "\n")
        start = time.perf_counter()
        for record, scores in scorer.score(reader):
            summary.records += 1
            if vcf_out is not None:
                vcf_out.write(record, [None if s is None else s.llr for s in scores])
            for score in filter(None, scores):
                summary.alleles_scored += 1
                if tsv_out is not None:
                    tsv_out.write("\t".join(score.tsv_row(record)) + "\n")
            if summary.records % 10_000 == 0:
                log.info(f"{summary.records:,} records, {summary.alleles_scored:,} alleles scored")
        summary.seconds = time.perf_counter() - start
    summary.skipped = dict(reader.skipped + scorer.skipped)
    _report(summary, reader, scorer)
    return summary


def _report(summary: ScoreSummary, reader: VcfReader, scorer: VariantScorer) -> None:
    """One line for what was scored, one per reason something was not: nothing is left out silently."""
    log.info(
        f"Scored {summary.alleles_scored:,} ALT alleles of {summary.records:,} records in {summary.seconds:.1f} s "
        f"({summary.alleles_per_second:.1f} alleles/s); wrote {', '.join(str(p) for p in (summary.tsv, summary.vcf) if p)}"
    )
    if reader.skipped:
        kinds = ", ".join(f"{kind}: {n}" for kind, n in sorted(reader.skipped.items()))
        log.warning(f"{reader.skipped.total()} ALT entries are not sequences and were not scored ({kinds})")
    if scorer.skipped:
        reasons = ", ".join(f"{why}: {n}" for why, n in sorted(scorer.skipped.items()))
        log.warning(
            f"{scorer.skipped.total()} sequence alleles were not scored ({reasons}): within a word of a contig end, or "
            f"too long for the model's context with flank={scorer.flank}"
        )


def run(cfg: DictConfig) -> ScoreSummary:
    """The run ``python -m dnagpt.score_variants`` makes of its composed config."""
    from dnagpt.pipeline import apply_extras  # the Lightning stack only for the command line, not for the library

    apply_extras(cfg)
    return score_variants(
        cfg.ckpt, cfg.vcf, cfg.reference, cfg.output.tsv, cfg.output.vcf,
        species=cfg.species, flank=cfg.flank, strand=cfg.strand, phases=cfg.phases, batch_size=cfg.batch_size,
        device=cfg.device, cache_dir=cfg.cache_dir,
    )  # fmt: skip


main = hydra_command("score_variants", run)  # the command: python -m dnagpt.score_variants <overrides>


if __name__ == "__main__":
    main()

"""Zero-shot variant-effect scores: how much likelier the model finds the DNA around a variant with the ALT allele than
with the REF allele.

What is scored. For each ALT allele and each reading direction (strand), two windows of the reference that differ only
in the allele: ``ref = A + REF + F_ref`` and ``alt = A + ALT + F_alt`` as read in that direction, where

- ``A``, the *anchor flank*, is the ``flank`` (+ ``phase``) reference bases read *before* the allele, the same in both
  windows: both start at the same base, so their words (non-overlapping k-mers cut from the window start) up to the
  allele are identical and, for an SNV or any equal-length allele, every word boundary is the same;
- ``F``, the *far flank*, is the ``flank`` reference bases read *after* the allele, plus 0 to k-1 more so that the
  window is a whole number of words. Pre-training only ever showed the model whole k-mers (the windows are cut at word
  boundaries), so a shorter tail word would be scored out of distribution; for an indel the two far flanks therefore
  differ by up to k-1 bases at their very end. Past a contig end the far flank is cut back to a whole word instead;
  an allele closer to the contig end than that is skipped (counted as ``contig end``).

Forward reads left to right on the reference (the anchor is upstream); reverse reads the reverse complement of the
window anchored downstream of the allele, so on each strand the words before the allele are shared. After an indel the
words downstream in the reading direction are cut in another phase (a shift by the length difference mod k): that is
part of what is scored, exactly as the model would read the ALT haplotype from the same start.

The score is the log-likelihood ratio ``ln P(alt window) - ln P(ref window)`` (natural log, not normalised), where
``ln P`` sums the log-probabilities of the window's words after the species token (``<R>`` for human: how every
pre-training sentence starts), teacher-forced. The words before the first one that touches the allele are identical
in both windows and cancel exactly, so only the words from there on go through the token head. No length
normalisation: the ratio then compares two sequences under the same model and flanks; an inserted base costs about
``ln 4`` (1.39 nats) under a model that has learned nothing about it, so compare indels with indels and SNVs with SNVs.
``strand=both`` averages the forward and reverse LLRs; ``phases=p`` averages over anchor flanks of ``flank`` to
``flank + p - 1`` bases (the allele in p different positions of its word), smoothing out the arbitrary word phase.

Exactness: a window is scored once per batch of records (windows are deduplicated and sorted before the forward
passes), so REF as its own ALT scores exactly 0, and scoring the ALT haplotype with REF and ALT swapped gives exactly
the opposite score when the batch holds the same windows.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from dnagpt.data.fasta import EncodedGenome, build_cache, reverse_complement
from dnagpt.model.gpt import DNAGPT
from dnagpt.model.losses import CHUNK_ELEMENTS
from dnagpt.tokenizer import KmerTokenizer
from dnagpt.utils.errors import ConfigError, InputError
from dnagpt.vcf import VcfReader, VcfRecord, allele_kind

__all__ = ["STRANDS", "TSV_COLUMNS", "AlleleScore", "Reference", "VariantScorer", "Window", "variant_kind"]

log = logging.getLogger(__name__)

STRANDS = {"forward": ("forward",), "reverse": ("reverse",), "both": ("forward", "reverse")}
TSV_COLUMNS = ("chrom", "pos", "id", "ref", "alt", "kind", "llr", "llr_forward", "llr_reverse")


def variant_kind(ref: str, alt: str) -> str:
    """``snv``, ``mnv`` (equal lengths), ``ins``/``del`` (the shorter allele starts the longer) or ``complex``.

    >>> [variant_kind(r, a) for r, a in [("A", "G"), ("AC", "GT"), ("A", "ATT"), ("ATT", "A"), ("AC", "GTT")]]
    ['snv', 'mnv', 'ins', 'del', 'complex']
    """
    if len(ref) == len(alt):
        return "snv" if len(ref) == 1 else "mnv"
    if len(alt) > len(ref):
        return "ins" if alt.startswith(ref) else "complex"
    return "del" if ref.startswith(alt) else "complex"


@dataclass(frozen=True)
class Window:
    """A window in reading direction and the index of its first scored token (the species token is token 0)."""

    text: str
    first: int


@dataclass(frozen=True)
class AlleleScore:
    """The scores of one ALT allele; a strand that was not scored is None."""

    alt: str
    kind: str
    llr: float
    llr_forward: float | None
    llr_reverse: float | None

    def tsv_row(self, record: VcfRecord) -> list[str]:
        """The allele's row of the TSV (:data:`TSV_COLUMNS`)."""
        numbers = ["NA" if v is None else f"{v:.6g}" for v in (self.llr, self.llr_forward, self.llr_reverse)]
        return [record.chrom, str(record.pos), record.id, record.ref, self.alt, self.kind, *numbers]


class Reference:
    """Random access to a FASTA through its encoded cache (:func:`dnagpt.data.fasta.build_cache`: built once, read by
    ``pread``; nothing is written next to the FASTA), and the windows around variants."""

    def __init__(self, fasta: str | Path, cache_dir: str | Path, cleaner: KmerTokenizer) -> None:
        self.fasta = Path(fasta)
        self.genome = EncodedGenome(build_cache(self.fasta, cache_dir, cleaner))
        self._index = {name: i for i, name in enumerate(self.genome.names)}

    def fetch(self, index: int, start: int, end: int) -> str:
        return self.genome.window(index, start, end).tobytes().decode("ascii")

    def locate(self, record: VcfRecord, vcf: Path) -> int:
        """The index of the record's contig, once its REF is checked against the reference; else an InputError naming
        the VCF line and column."""
        index = self._index.get(record.chrom)
        if index is None:
            names = self.genome.names
            shown = ", ".join(names[:5]) + (f", ... ({len(names)} records)" if len(names) > 5 else "")
            similar = [n for n in (f"chr{record.chrom}", record.chrom.removeprefix("chr")) if n in self._index]
            hint = f"; the reference has {similar[0]!r}: the two files name contigs differently" if similar else ""
            raise InputError(
                f"record {record}: contig {record.chrom!r} is not in the reference {self.fasta} (its records: {shown})"
                f"{hint}",
                vcf, record.line, "CHROM",
            )  # fmt: skip
        length = int(self.genome.lengths[index])
        start, end = record.pos - 1, record.pos - 1 + len(record.ref)
        if start < 0 or end > length:
            raise InputError(
                f"record {record}: REF covers bases {record.pos}-{end}, outside contig {record.chrom!r} of "
                f"{self.fasta} (1-{length:,})",
                vcf, record.line, "POS",
            )  # fmt: skip
        found = self.fetch(index, start, end)
        if found != record.ref:
            raise InputError(
                f"record {record}: REF {record.ref} does not match the reference, which has {found} at "
                f"{record.chrom}:{record.pos}-{end} in {self.fasta} (is the VCF on another assembly?)",
                vcf, record.line, "REF",
            )  # fmt: skip
        return index

    def window(
        self, index: int, record: VcfRecord, allele: str, flank: int, phase: int, strand: str, k: int
    ) -> Window | None:
        """The window of ``allele`` in place of REF, read on ``strand`` (module docstring); None when the allele is too
        close to a contig end for a whole word after it."""
        start, end = record.pos - 1, record.pos - 1 + len(record.ref)
        length = int(self.genome.lengths[index])
        if strand == "forward":
            anchor = min(start, flank + phase)
            far = _far_flank(length - end, anchor + len(allele), flank, k)
            if far is None:
                return None
            text = self.fetch(index, start - anchor, start) + allele + self.fetch(index, end, end + far)
        else:
            anchor = min(length - end, flank + phase)
            far = _far_flank(start, anchor + len(allele), flank, k)
            if far is None:
                return None
            text = reverse_complement(self.fetch(index, start - far, start) + allele + self.fetch(index, end, end + anchor))
        return Window(text, 1 + anchor // k)


def _far_flank(available: int, before: int, flank: int, k: int) -> int | None:
    """Bases after the allele: ``flank`` plus up to k-1 so that the ``before + far`` bases are whole words; at a contig
    end (``available`` bases left) cut back to a whole word; None when not even that fits."""
    far = flank + (-(before + flank)) % k
    if far > available:
        far = available - (before + available) % k
    return far if far >= 0 else None


class _LogLikelihood:
    """Teacher-forced log-likelihoods of windows under the model, a batch of windows per forward pass."""

    def __init__(self, model: DNAGPT, tokenizer: KmerTokenizer, prompt_id: int, batch_size: int) -> None:
        self.model, self.tokenizer, self.prompt_id, self.batch_size = model, tokenizer, prompt_id, batch_size
        self.device = next(model.parameters()).device

    def __call__(self, windows: Iterable[Window]) -> dict[Window, float]:
        """Each distinct window once, in an order that depends only on the set (so the same set gives the same
        numbers), similar lengths together to pad little."""
        unique = sorted(set(windows), key=lambda w: (len(w.text), w.text, w.first))
        out: dict[Window, float] = {}
        for i in range(0, len(unique), self.batch_size):
            batch = unique[i : i + self.batch_size]
            out.update(zip(batch, self._batch(batch), strict=True))
        return out

    @torch.inference_mode()
    def _batch(self, windows: Sequence[Window]) -> list[float]:
        rows = [np.concatenate([[self.prompt_id], self.tokenizer.encode_dna(w.text)]) for w in windows]
        lengths = torch.tensor([len(r) for r in rows])
        ids = torch.full((len(rows), int(lengths.max())), self.tokenizer.pad_id, dtype=torch.long)
        for r, row in enumerate(rows):
            ids[r, : len(row)] = torch.from_numpy(row)
        ids = ids.to(self.device)
        hidden = self.model(ids, compute_logits=False).hidden[:, :-1]  # row t predicts token t+1
        token = torch.arange(1, ids.size(1), device=self.device)
        first = torch.tensor([w.first for w in windows], device=self.device)
        scored = (token >= first[:, None]) & (token < lengths.to(self.device)[:, None])  # (B, T-1)
        log_probs = torch.zeros(scored.shape, dtype=torch.float64, device=self.device)
        log_probs[scored] = self._token_log_probs(hidden[scored], ids[:, 1:][scored]).double()
        return log_probs.sum(dim=1).tolist()  # a fixed order of additions per row: deterministic

    def _token_log_probs(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """``log_softmax(logits)[target]`` of (N, D) states, a chunk of rows at a time: never the (N, vocab) logits."""
        step = max(1, CHUNK_ELEMENTS // self.model.config.vocab_size)
        pieces = []
        for s in range(0, len(targets), step):
            logits = self.model.logits(hidden[s : s + step]).float()  # fused log-softmax + pick: 2x faster on CPU
            pieces.append(-F.cross_entropy(logits, targets[s : s + step], reduction="none"))
        return torch.cat(pieces) if pieces else hidden.new_zeros(0)


class VariantScorer:
    """Scores the ALT alleles of VCF records against a reference (module docstring for what is scored).

    :attr:`skipped` counts the sequence alleles left unscored, by reason (``contig end``, ``longer than the context``);
    the VCF reader counts the alleles that are not sequences.
    """

    def __init__(
        self,
        model: DNAGPT,
        tokenizer: KmerTokenizer,
        reference: Reference,
        species: str = "human",
        flank: int = 512,
        strand: str = "both",
        phases: int = 1,
        batch_size: int = 32,
    ) -> None:
        if strand not in STRANDS:
            raise ConfigError(f"strand={strand!r}: use one of {', '.join(STRANDS)}")
        if not 1 <= phases <= tokenizer.k:
            raise ConfigError(f"phases={phases}: the number of word phases averaged is 1..{tokenizer.k}")
        if flank < 0 or batch_size < 1:
            raise ConfigError(f"flank={flank} must be >= 0 and batch_size={batch_size} >= 1")
        k, block = tokenizer.k, model.config.block_size
        longest = 1 + -(-(2 * flank + phases + k - 1) // k)  # tokens of the longest window of a 1-bp allele
        if longest > block:
            raise ConfigError(
                f"flank={flank}: a window of a single-base variant takes up to {longest} tokens, more than the "
                f"model's block_size {block}; use flank <= {(k * (block - 1) - phases - k + 1) // 2}"
            )
        try:
            prompt_id = tokenizer.species_id(species)
        except InputError as err:
            raise ConfigError(f"species={species!r}: {err}") from None
        self.model, self.tokenizer, self.reference = model.eval(), tokenizer, reference
        self.flank, self.strands, self.phases, self.batch_size = flank, STRANDS[strand], phases, batch_size
        self.log_likelihood = _LogLikelihood(model, tokenizer, prompt_id, batch_size)
        self.skipped: Counter[str] = Counter()

    def score(self, reader: VcfReader) -> Iterator[tuple[VcfRecord, list[AlleleScore | None]]]:
        """Each record of ``reader`` in file order with one score (None: not scored) per ALT allele."""
        chunk: list[VcfRecord] = []
        for record in reader:
            chunk.append(record)
            if len(chunk) == self.batch_size:
                yield from self._score_chunk(chunk, reader.path)
                chunk = []
        if chunk:
            yield from self._score_chunk(chunk, reader.path)

    def _pairs(self, record: VcfRecord, index: int, alt: str) -> list[tuple[str, Window, Window]] | None:
        """``(strand, ref window, alt window)`` for every strand and phase scored; None when the allele is skipped."""
        pairs = []
        for strand in self.strands:
            for phase in range(self.phases):
                ref, alt_window = (
                    self.reference.window(index, record, allele, self.flank, phase, strand, self.tokenizer.k)
                    for allele in (record.ref, alt)
                )
                if ref is None or alt_window is None:
                    self.skipped["contig end"] += 1
                    return None
                if 1 + max(len(ref.text), len(alt_window.text)) // self.tokenizer.k > self.model.config.block_size:
                    self.skipped["longer than the context"] += 1
                    return None
                pairs.append((strand, ref, alt_window))
        return pairs

    def _score_chunk(self, records: list[VcfRecord], vcf: Path) -> Iterator[tuple[VcfRecord, list[AlleleScore | None]]]:
        plans = []
        for record in records:
            index = self.reference.locate(record, vcf) if any(allele_kind(a) is None for a in record.alts) else -1
            plans.append([self._pairs(record, index, a) if allele_kind(a) is None else None for a in record.alts])
        windows = (w for plan in plans for pairs in plan if pairs for _, ref, alt in pairs for w in (ref, alt))
        ll = self.log_likelihood(windows)
        for record, plan in zip(records, plans, strict=True):
            yield record, [self._allele_score(record, alt, pairs, ll) for alt, pairs in zip(record.alts, plan, strict=True)]

    def _allele_score(
        self, record: VcfRecord, alt: str, pairs: list[tuple[str, Window, Window]] | None, ll: dict[Window, float]
    ) -> AlleleScore | None:
        if pairs is None:
            return None
        per_strand = {
            strand: sum(ll[a] - ll[r] for s, r, a in pairs if s == strand) / self.phases for strand in self.strands
        }
        llr = sum(per_strand.values()) / len(per_strand)
        return AlleleScore(alt, variant_kind(record.ref, alt), llr, per_strand.get("forward"), per_strand.get("reverse"))

"""VCF in and out for variant scoring: a small streaming reader and a writer that adds one INFO field.

Why our own reader rather than scikit-allel (which the genomes panel uses): scoring needs every record in order, with its
line number for the errors and its text for the output VCF, one at a time, whatever the file size; scikit-allel reads
whole columns into memory and drops what it does not parse.

The reader (plain or gzip, through :func:`dnagpt.data.tables.text_lines`) checks what scoring relies on and names the
file, line and column of the first thing wrong: a first line ``##fileformat=VCF...``, a ``#CHROM`` header with the eight
fixed columns in order, records as wide as that header, ``POS`` a whole number, ``REF`` bases (``ACGTN``, any case),
``ALT`` a comma-separated list of alleles. Each ALT allele is either bases (scored) or one of the kinds scoring cannot
read as a sequence: symbolic (``<DEL>``, ``<INS:ME>``), a breakend (``G]17:198982]``), the spanning deletion ``*``; a
record whose ALT is ``.`` has no allele at all (``missing``). Those are kept in the record, counted by kind in
:attr:`VcfReader.skipped` and never scored, so the caller can say how many it left out.

The writer copies the header and every record, adding ``##INFO=<ID=DNAGPT_LLR,Number=A,...>`` and one value per ALT
allele (``.`` where an allele has no score); an earlier ``DNAGPT_LLR`` (a file scored before) is replaced, not doubled.
A name ending in ``.gz`` is written gzip-compressed (plain gzip: ``bgzip`` the plain output for ``tabix``).
"""

from __future__ import annotations

import gzip
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from dnagpt.data.tables import parse_int, text_lines
from dnagpt.utils.errors import InputError

__all__ = ["INFO_ID", "VcfReader", "VcfRecord", "VcfWriter", "allele_kind"]

INFO_ID = "DNAGPT_LLR"
FIXED_COLUMNS = ("#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO")
_BASES = re.compile(r"[ACGTNacgtn]+")
_SYMBOLIC = re.compile(r"<[^<>]+>")
_BREAKEND = re.compile(r"[ACGTNacgtn]*[\[\]].*[\[\]][ACGTNacgtn]*|\.[ACGTNacgtn]+|[ACGTNacgtn]+\.")
# ALT alleles that are not sequences, by the name the log and the docs give them
NOT_SEQUENCE = {"symbolic": _SYMBOLIC, "breakend": _BREAKEND}


def allele_kind(alt: str) -> str | None:
    """``None`` for a base sequence (scored); else why it is not one: ``missing``, ``spanning deletion``,
    ``symbolic`` or ``breakend``; an ALT that is none of these is not a VCF allele (``"invalid"``).

    >>> [allele_kind(a) for a in ("ACG", "<DEL>", "*", ".", "G]17:198982]", "A1")]
    [None, 'symbolic', 'spanning deletion', 'missing', 'breakend', 'invalid']
    """
    if _BASES.fullmatch(alt):
        return None
    if alt == ".":
        return "missing"
    if alt == "*":
        return "spanning deletion"
    for kind, pattern in NOT_SEQUENCE.items():
        if pattern.fullmatch(alt):
            return kind
    return "invalid"


@dataclass(frozen=True)
class VcfRecord:
    """One data line: the fields scoring reads (``ref`` and ``alts`` upper-cased) and the line as written."""

    line: int  # 1-based line number in the file
    chrom: str
    pos: int  # 1-based position of the first REF base
    id: str
    ref: str
    alts: tuple[str, ...]  # () when ALT is '.'
    fields: tuple[str, ...]  # every tab-separated column, unchanged

    def __str__(self) -> str:
        """``chrom:pos ref>alt1,alt2``, how the error messages name a record."""
        return f"{self.chrom}:{self.pos} {self.ref}>{','.join(self.alts) or '.'}"


class VcfReader:
    """The header on construction, then the records on iteration (once); :attr:`skipped` counts the ALT alleles of the
    records read so far that are not sequences, by kind."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lines = enumerate(text_lines(self.path), 1)
        self.meta: list[str] = []  # the '##' lines, without line ends
        self.skipped: Counter[str] = Counter()
        for number, raw in self._lines:
            line = raw.rstrip("\r\n")
            if number == 1 and not line.startswith("##fileformat=VCF"):
                raise InputError(
                    f"not a VCF: the first line must be '##fileformat=VCFv4.x', it is {line[:60]!r}", self.path, 1
                )
            if line.startswith("##"):
                self.meta.append(line)
                continue
            if not line.startswith("#CHROM"):
                raise InputError(f"a record before the '#CHROM' header line: {line[:60]!r}", self.path, number)
            self.header = line.split("\t")
            if tuple(self.header[:8]) != FIXED_COLUMNS:
                raise InputError(
                    f"the header line must start with the 8 tab-separated columns {'  '.join(FIXED_COLUMNS)}, it has "
                    f"{self.header[:8]}",
                    self.path,
                    number,
                )
            return
        raise InputError("no '#CHROM' header line: the file ends before any record", self.path)

    def __iter__(self) -> Iterator[VcfRecord]:
        for number, raw in self._lines:
            line = raw.rstrip("\r\n")
            if line:
                yield self._record(line, number)

    def _record(self, line: str, number: int) -> VcfRecord:
        fields = line.split("\t")
        if len(fields) != len(self.header):
            raise InputError(f"{len(fields)} tab-separated fields, the header has {len(self.header)}", self.path, number)
        chrom, pos_text, vid, ref, alt = fields[:5]
        pos = parse_int(pos_text, self.path, number, "POS")
        if pos < 0:
            raise InputError(f"POS {pos} is negative", self.path, number, "POS")
        if not _BASES.fullmatch(ref):
            raise InputError(f"REF {ref!r} is not a sequence of the bases A, C, G, T, N", self.path, number, "REF")
        alts = () if alt == "." else tuple(alt.split(","))
        if not alts:
            self.skipped["missing"] += 1  # no alternate allele: nothing to score
        for allele in alts:
            kind = allele_kind(allele)
            if kind == "invalid" or (kind == "missing" and len(alts) > 1):
                raise InputError(
                    f"ALT allele {allele!r} is neither bases (A, C, G, T, N) nor a symbolic <ID>, breakend or '*'",
                    self.path,
                    number,
                    "ALT",
                )
            if kind is not None:
                self.skipped[kind] += 1
        return VcfRecord(number, chrom, pos, vid, ref.upper(), tuple(a.upper() for a in alts), tuple(fields))


def _with_info(fields: Sequence[str], values: Sequence[float | None]) -> str:
    """The record's line with ``DNAGPT_LLR=v1,v2`` (one per ALT) in its INFO column."""
    info = [] if fields[7] in ("", ".") else [e for e in fields[7].split(";") if e.split("=")[0] != INFO_ID]
    if values:
        info.append(f"{INFO_ID}=" + ",".join("." if v is None else f"{v:.6g}" for v in values))
    return "\t".join([*fields[:7], ";".join(info) or ".", *fields[8:]])


class VcfWriter:
    """Writes the reader's header with the ``DNAGPT_LLR`` INFO line, then records with their scores; a context manager."""

    def __init__(self, path: str | Path, reader: VcfReader, description: str, compress: bool | None = None) -> None:
        """``compress``: gzip the output (default: when the name ends in ``.gz``)."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        compress = self.path.suffix == ".gz" if compress is None else compress
        self._fh: TextIO = gzip.open(self.path, "wt") if compress else open(self.path, "w")
        ours = f"##INFO=<ID={INFO_ID},"
        meta = [m for m in reader.meta if not m.startswith(ours)]
        meta.append(f'{ours}Number=A,Type=Float,Description="{description}">')
        self._fh.write("\n".join([*meta, "\t".join(reader.header)]) + "\n")

    def write(self, record: VcfRecord, values: Sequence[float | None]) -> None:
        """``values``: one score (or None) per ALT allele of ``record``."""
        self._fh.write(_with_info(record.fields, values) + "\n")

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> VcfWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

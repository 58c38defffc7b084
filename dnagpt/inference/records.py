"""Input records for inference: ``(name, sequence)`` read lazily from a FASTA, a BED with its reference FASTA, or a table.

A :class:`RecordSource` is re-iterable (each pass opens the file again) and never holds more than one record, so the
commands can check every record first, then run the model on a second pass, whatever the input size:

- **FASTA** (``.fa``, ``.fasta``, ``.fna``, ``.fas``, gzipped or not): read by :func:`dnagpt.data.fasta.iter_records`,
  which refuses what pyfastx would read wrong (empty file, empty record, control bytes, ...) and writes no ``.fxi``
  index (the input folder may be read-only). The record name is the first word of its header.
- **BED** (``.bed``, gzipped or not) with ``reference=`` a FASTA: each region ``chrom start end [name [score [strand]]]``
  (0-based, half-open) is cut from the reference, reverse-complemented on strand ``-``. The reference is encoded once
  into ``cache_dir`` (:func:`dnagpt.data.fasta.build_cache`) and regions are read from there with positioned reads.
  Unnamed regions are called ``chrom:start-end`` (``(-)`` appended on the minus strand).
- **Table** (``.tsv``, ``.txt``, ``.csv``, gzipped or not): a header row, then one record per row; the sequence, name
  and species columns are configurable; without a name column a row is named ``line<N>``.

The letters are the tokenizer's to judge; a record that it refuses is an ``InputError`` naming the file, the line (or
the record number of a FASTA) and the record, through :meth:`Record.error`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from dnagpt.data.fasta import DnaCleaner, EncodedGenome, build_cache, iter_records, reverse_complement
from dnagpt.data.tables import parse_int, text_lines, tsv_rows
from dnagpt.utils.errors import ConfigError, InputError, MissingFileError

__all__ = ["FORMATS", "Columns", "Record", "RecordSource", "guess_format"]

Format = Literal["fasta", "bed", "table"]
FORMATS: tuple[str, ...] = ("auto", "fasta", "bed", "table")
_SUFFIXES: dict[str, Format] = {
    **dict.fromkeys((".fa", ".fasta", ".fna", ".fas"), "fasta"),
    ".bed": "bed",
    **dict.fromkeys((".tsv", ".txt", ".csv"), "table"),
}
_BED_HEADER = ("#", "track", "browser")  # lines a BED file may open with: not regions


@dataclass(frozen=True)
class Columns:
    """The table columns a record is read from; ``name`` and ``species`` may be absent from the file (or None)."""

    sequence: str = "sequence"
    name: str | None = "id"
    species: str | None = "species"


@dataclass(frozen=True)
class Record:
    """One input: its 0-based ``row`` in input order, name, sequence text and, when the input says it, species.

    ``path``, ``line`` and ``columns`` place the record in its file for :meth:`error`: a FASTA record has no line (it
    is named with its number), a table row names its column.
    """

    row: int
    name: str
    sequence: str
    species: str | None = None
    path: Path | None = None
    line: int | None = None
    columns: Columns | None = None  # a table's: the error names the column

    def error(self, message: str, column: Literal["sequence", "species"] = "sequence") -> InputError:
        """An ``InputError`` at this record's place: ``reads.fa: record 3 ('chr1_7'): invalid DNA character ...``."""
        what = f"record {self.name!r}" if self.line is not None else f"record {self.row + 1} ({self.name!r})"
        field = getattr(self.columns, column) if self.columns is not None else None
        return InputError(f"{what}: {message}", self.path, self.line, field)


def guess_format(path: str | Path) -> Format:
    """The input format from the file name (``.gz`` aside); a ConfigError when the name says none.

    >>> guess_format("reads.fa.gz"), guess_format("regions.bed"), guess_format("rows.tsv")
    ('fasta', 'bed', 'table')
    """
    name = Path(path).name.lower().removesuffix(".gz")
    suffix = Path(name).suffix
    if suffix not in _SUFFIXES:
        known = ", ".join(sorted(_SUFFIXES))
        raise ConfigError(f"input={path}: cannot tell the format from the name (known: {known}, each optionally .gz); "
                          "give format=fasta, format=bed or format=table")  # fmt: skip
    return _SUFFIXES[suffix]


class RecordSource:
    """The records of one input file, read again on each iteration (see the module docstring).

    ``cleaner`` (the tokenizer) encodes a BED's reference into ``cache_dir``; ``delimiter`` of a table is a comma for
    ``.csv`` and a tab otherwise.
    """

    def __init__(
        self,
        path: str | Path,
        format: str = "auto",
        reference: str | Path | None = None,
        columns: Columns | None = None,
        cache_dir: str | Path | None = None,
        cleaner: DnaCleaner | None = None,
    ) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise MissingFileError(f"input={path} is not a file")
        if format not in FORMATS:
            raise ConfigError(f"format={format!r} must be one of {', '.join(FORMATS)}")
        self.format: Format = guess_format(self.path) if format == "auto" else format  # type: ignore[assignment]
        self.columns = columns or Columns()
        self.reference: Path | None = None
        if self.format == "bed":
            if reference is None:
                raise ConfigError(f"input={path} is a BED file: give reference=<FASTA> that its regions are cut from")
            if not Path(reference).is_file():
                raise MissingFileError(f"reference={reference} is not a file")
            if cache_dir is None or cleaner is None:
                raise ConfigError("a BED input needs cache_dir and the tokenizer to encode its reference once")
            self.reference, self.cache_dir, self.cleaner = Path(reference), Path(cache_dir), cleaner

    def __iter__(self) -> Iterator[Record]:
        if self.format == "fasta":
            return (Record(i, name, seq, path=self.path) for i, (name, seq) in enumerate(iter_records(self.path)))
        if self.format == "bed":
            return self._bed()
        return self._table()

    def _table(self) -> Iterator[Record]:
        c = self.columns
        delimiter = "," if self.path.name.lower().removesuffix(".gz").endswith(".csv") else "\t"
        optional = [column for column in (c.name, c.species) if column is not None]
        rows = tsv_rows(self.path, [c.sequence], optional, delimiter=delimiter)
        for i, (line, row) in enumerate(rows):
            name = row.get(c.name or "") or f"line{line}"
            species = row.get(c.species or "") or None
            yield Record(i, name, row[c.sequence].strip(), species, self.path, line, c)

    def _bed(self) -> Iterator[Record]:
        genome = EncodedGenome(build_cache(self.reference, self.cache_dir, self.cleaner))
        row = 0
        for line, text in enumerate(text_lines(self.path), 1):
            fields = text.split()
            if not fields or fields[0].startswith(_BED_HEADER):
                continue
            yield self._region(genome, fields, row, line)
            row += 1
        if row == 0:
            raise InputError("has no regions (a BED line is: chrom start end [name [score [strand]]])", self.path)

    def _region(self, genome: EncodedGenome, fields: list[str], row: int, line: int) -> Record:
        path = self.path
        if len(fields) < 3:
            raise InputError(f"{len(fields)} field(s); a BED line is: chrom start end [name [score [strand]]]", path, line)
        chrom = fields[0]
        start, end = parse_int(fields[1], path, line, "start"), parse_int(fields[2], path, line, "end")
        strand = fields[5] if len(fields) > 5 else "+"
        if strand not in ("+", "-", "."):
            raise InputError(f"strand {strand!r} must be +, - or .", path, line, "strand")
        try:
            record = genome.record_index(chrom)
        except InputError as err:
            raise InputError(f"chrom {chrom!r} is not in reference={self.reference}: {err}", path, line, "chrom") from None
        length = int(genome.lengths[record])
        if not 0 <= start < end <= length:
            raise InputError(
                f"region {start}-{end} is not inside {chrom} (0 <= start < end <= {length}; BED is 0-based, half-open)",
                path,
                line,
            )
        seq = genome.window(record, start, end)
        if strand == "-":
            seq = reverse_complement(seq)
        name = fields[3] if len(fields) > 3 and fields[3] != "." else f"{chrom}:{start}-{end}" + ("(-)" * (strand == "-"))
        return Record(row, name, seq.tobytes().decode("ascii"), path=path, line=line)

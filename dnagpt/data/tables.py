"""Reading the task tables: text lines of plain or gzipped files, headed TSVs and their numbers, with clear errors.

Every task input (the GSR and expression TSVs, the genomes legend and ``.hapt``) goes through :func:`text_lines`, so
each way a file can be unreadable is reported once, the same way: a missing file is a ``MissingFileError``; a
``.gz`` that is not gzip, a truncated or corrupt gzip stream, and a byte that is not UTF-8 are ``InputError`` naming
the file (and the line, where one is known) instead of an ``EOFError``/``BadGzipFile``/``UnicodeDecodeError``
traceback. :func:`tsv_rows` adds the header rules (present, no used column missing or named twice, every row as wide
as the header, at least one row); :func:`parse_float`/:func:`parse_int` read a cell or name its file, line and column.
"""

from __future__ import annotations

import csv
import gzip
import math
import zlib
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from dnagpt.utils.errors import InputError, MissingFileError

__all__ = [
    "GZIP_ERRORS", "GZIP_MAGIC", "check_gzip", "parse_float", "parse_int", "require_file", "text_lines", "tsv_rows",
    "unreadable",
]  # fmt: skip

GZIP_MAGIC = b"\x1f\x8b"  # the first two bytes of every gzip member
GZIP_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error)  # a truncated or corrupt gzip stream, raised while reading


def require_file(key: str, path: str | Path | None) -> Path:
    """``path`` as a Path, or a ``MissingFileError`` naming the argument (``files.pas=/x.tsv.gz is not a file``).

    DataModule constructors call it so a wrong path fails when the config is built, not after the model is.
    """
    if path is None or not Path(path).is_file():
        raise MissingFileError(f"{key}={path} is not a file")
    return Path(path)


def check_gzip(path: Path) -> None:
    """A ``.gz`` file must start with the gzip magic bytes (an empty one passes: it reads as empty)."""
    if path.suffix == ".gz":
        with open(path, "rb") as fh:
            magic = fh.read(2)
        if magic and magic != GZIP_MAGIC:
            raise InputError(f"is not gzip-compressed although its name ends in .gz (it starts {magic!r})", path)


def unreadable(err: Exception, path: str | Path, lines_read: int | None = None) -> InputError:
    """The ``InputError`` for a gzip stream that breaks off or is corrupt (shared with readers that open files
    themselves, such as the VCF reader); ``lines_read`` says how far reading got, when known."""
    after = f" after line {lines_read}" if lines_read else ""
    if isinstance(err, EOFError):
        return InputError(f"ends early{after}: the gzip stream is truncated (an interrupted download or copy?)", path)
    return InputError(f"holds corrupt gzip data{after} ({err})", path)


def _decoded(fh: BinaryIO, path: Path) -> Iterator[str]:
    """The lines of a binary stream as text; a line that is not UTF-8 or a broken gzip stream is an InputError."""
    line = 0
    while True:
        try:
            raw = fh.readline()
        except GZIP_ERRORS as err:
            raise unreadable(err, path, line) from None
        if not raw:
            return
        line += 1
        try:
            text = raw.decode("utf-8-sig" if line == 1 else "utf-8")  # a byte-order mark is not part of the header
        except UnicodeDecodeError as err:
            hint = "; it looks gzip-compressed: name it *.gz" if line == 1 and raw.startswith(GZIP_MAGIC) else ""
            raise InputError(
                f"byte {err.start + 1} of the line (0x{raw[err.start]:02x}) is not UTF-8 text{hint}", path, line
            ) from None
        yield text


def text_lines(path: str | Path) -> Iterator[str]:
    """The lines of a UTF-8 text file, gunzipped when its name ends in ``.gz``, each with its line ending.

    A generator: the file is opened at the first line and closed when the lines run out.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path} is not a file")
    check_gzip(path)
    with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as fh:
        yield from _decoded(fh, path)


def _columns(header: list[str], path: Path, required: Sequence[str], optional: Sequence[str]) -> dict[str, int]:
    """Index of each used column in the header (line 1); a missing or twice-named column is an error."""
    counts = Counter(header)
    used = dict.fromkeys([*required, *optional])
    for name in used:
        if counts[name] > 1:
            at = " and ".join(str(i + 1) for i, h in enumerate(header) if h == name)
            raise InputError(f"the header names this column {counts[name]} times (fields {at}); keep one", path, 1, name)
    if missing := [c for c in dict.fromkeys(required) if c not in counts]:
        raise InputError(f"missing column(s) {missing}; the header has {header}", path, 1)
    return {name: header.index(name) for name in used if name in counts}


def tsv_rows(
    path: str | Path, required: Sequence[str], optional: Sequence[str] = (), delimiter: str = "\t"
) -> Iterator[tuple[int, dict[str, str]]]:
    """``(line, {column: text})`` for each data row of a headed TSV (or CSV: ``delimiter=","``), holding the
    ``required`` and the present ``optional`` columns. Blank lines are skipped; no header, a row wider or narrower
    than the header, or no row at all is an error."""
    path = Path(path)
    reader = csv.reader(text_lines(path), delimiter=delimiter)
    kind = {"\t": "tab", ",": "comma"}.get(delimiter, repr(delimiter))

    def next_row() -> list[str] | None:
        try:
            return next(reader, None)
        except csv.Error as err:
            raise InputError(f"not a readable TSV row ({err})", path, reader.line_num) from None

    header = next_row()
    if header is None:
        raise InputError(f"is empty: expected a header row naming the {kind}-separated columns", path)
    if not header:
        raise InputError(f"is blank: expected the header row naming the {kind}-separated columns", path, 1)
    columns, n_rows = _columns(header, path, required, optional), 0
    while (fields := next_row()) is not None:
        if not fields:
            continue
        if len(fields) != len(header):
            raise InputError(f"{len(fields)} {kind}-separated fields, the header has {len(header)}", path, reader.line_num)
        n_rows += 1
        yield reader.line_num, {name: fields[i] for name, i in columns.items()}
    if not n_rows:
        raise InputError("has a header but no data rows", path)


def parse_float(text: str, path: str | Path, line: int, column: str) -> float:
    """A finite number from a table cell; anything else (empty, ``NA``, ``nan``, ``inf``) names the cell."""
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"{text!r} is not a number (missing values are not allowed)", path, line, column) from None
    if not math.isfinite(value):
        raise InputError(f"value {text!r} is not finite (NaN/inf are not allowed)", path, line, column)
    return value


def parse_int(text: str, path: str | Path, line: int, column: str) -> int:
    """A whole number from a table cell (``1234`` or ``1234.0``); ``1234.5`` is refused, not truncated."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value.is_integer():  # also NaN and inf
        raise InputError(f"{text!r} is not a whole number", path, line, column)
    return int(value)

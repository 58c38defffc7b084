"""FASTA access for the genome corpora: validated reading, an encoded cache, regions and the reverse complement.

Why an encoded cache: on a shared 2-core host, random 3 kb windows came at about 1,000/s from a ``.fa.gz`` through
pyfastx, 130,000/s from plain FASTA and 1,000,000/s from a uint8 memmap. So each FASTA is streamed once (in
``prepare_data``, :func:`build_cache`) into one flat file of upper-case ``ACGTN`` bytes, cleaned by the tokenizer's
rules (soft-masking removed, IUPAC codes -> ``N``, anything else an error), plus a small JSON manifest of record names,
offsets, lengths and N counts. Workers then read windows with ``os.pread``: no parsing, no per-worker index. Positioned
reads rather than a memmap, because a memmap's touched pages count in each worker's resident memory and grow towards
the genome size over a long run, while ``pread`` copies only the window (the OS page cache still shares the file
between processes); at about 10 windows per batch the few microseconds per read are negligible.

One byte per base, not two bits: the alphabet has five letters (assemblies hold long ``N`` runs, 5 % of GRCh38), so
2 bits would need a side list of N intervals consulted by every window and by the N-fraction filters; and a window
starts at any base, so packed bytes would have to be shifted and unpacked on every read, where now the bytes read are
the bytes used. The cost is 4x the disk and page cache of a packed file (3.1 GB for a human genome).

:func:`build_cache` encodes in one streaming pass over 1 MiB pieces (gunzipped on the fly): the checks of
:func:`check_fasta` and a C-speed byte translation of each piece, appended to the cache file; memory stays at a few
pieces whatever the genome or its longest chromosome. Several processes or nodes may call it at once: one writes (an
``flock``), the others wait and use its cache, and only a finished folder is ever renamed into place (details there).

:func:`check_fasta` refuses what a reader would take silently wrong or fail on obscurely, naming the file and the
line: a cut or corrupt gzip, a ``.gz`` name on a file that is not gzip, a control byte anywhere (pyfastx, C code, ends
a record at a NUL and drops the rest), text before the first ``>`` header, a header line without a name or not in
UTF-8, a space, tab or non-ASCII byte inside a sequence line, a header with no sequence after it, an empty file. The
letters themselves are the tokenizer's to judge.

:func:`iter_records` (whole records as strings, for small inputs) reads with pyfastx after that check, in file order
with ``build_index=False``, so pyfastx writes no ``.fxi`` next to the source (which may be read-only). The cache is
keyed by the file's resolved path, size and modification time: an edited or re-downloaded genome is re-encoded.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

import numpy as np
import pyfastx
from isal import isal_zlib

from dnagpt.data.tables import GZIP_MAGIC, check_gzip
from dnagpt.utils.errors import ConfigError, InputError, MissingFileError
from dnagpt.utils.locks import writer_lock

__all__ = [
    "EncodedGenome", "Region", "build_cache", "cache_path_for", "check_fasta", "iter_records", "parse_region",
    "read_manifest", "reverse_complement",
]  # fmt: skip

log = logging.getLogger(__name__)

_CACHE_VERSION = 2  # 2: files are checked by check_fasta first (a NUL byte no longer cuts a record short)
N_BYTE = ord("N")


class DnaCleaner(Protocol):
    """The one thing this module needs from the tokenizer."""

    def clean(self, seq: str | bytes | np.ndarray) -> np.ndarray: ...


# ----- reverse complement -----------------------------------------------------------------------------------
def _complement_table() -> np.ndarray:
    lut = np.arange(256, dtype=np.uint8)
    for a, b in ("AT", "CG", "NN", "RY", "KM", "SS", "WW", "BV", "DH"):  # IUPAC complements; S, W and N are their own
        for x, y in ((a, b), (a.lower(), b.lower())):
            lut[ord(x)], lut[ord(y)] = ord(y), ord(x)
    return lut


_COMPLEMENT = _complement_table()


def reverse_complement(seq: str | bytes | np.ndarray) -> str | bytes | np.ndarray:
    """Reverse complement, keeping the input's type and case (IUPAC codes complemented too).

    >>> reverse_complement("ACGTN"), reverse_complement("aCgR")
    ('NACGT', 'YcGt')
    """
    if isinstance(seq, str):
        return reverse_complement(seq.encode("ascii")).decode("ascii")
    if isinstance(seq, (bytes, bytearray)):
        return _COMPLEMENT[np.frombuffer(seq, dtype=np.uint8)[::-1]].tobytes()
    if isinstance(seq, np.ndarray) and seq.dtype == np.uint8 and seq.ndim == 1:
        return _COMPLEMENT[seq[::-1]]
    raise TypeError(f"expected str, bytes or a 1-D uint8 array, got {type(seq).__name__}")


# ----- reading ----------------------------------------------------------------------------------------------
_PIECE = 1 << 20  # bytes read, and at most gunzipped, per step of check_fasta: bounded memory for any file
_MAX_HEADER = 1 << 20  # a longer '>' line is no header: the one thing check_fasta holds beyond a piece
_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # control bytes, but tab and the line ends
_NOT_IN_SEQUENCE = re.compile(rb"[\x00-\x09\x0b\x0c\x0e-\x20\x7f-\xff]")  # control, tab, space, not ASCII
_IN_SEQUENCE = bytes(b for b in range(256) if not _NOT_IN_SEQUENCE.match(bytes([b])))  # bytes.translate deletes these
_NOT_BLANK = re.compile(rb"[^\r\n]")


def _pieces(path: Path) -> Iterator[bytes]:
    """The file's content in pieces of at most 1 MiB, gunzipped when it is gzip (every member read to its end).

    pyfastx accepts a cut gzip without complaint and reads a ``.gz`` that is not gzip as plain text, so both are refused
    here. Multi-member files (bgzip) are accepted. Inflated by ISA-L (python-isal), 2.6x zlib's speed here: with zlib
    the inflate alone was slower than the encoder behind it (docs/performance.md).
    """
    check_gzip(path)
    with open(path, "rb") as fh:
        magic = fh.read(2)
        fh.seek(0)
        if magic != GZIP_MAGIC:
            while piece := fh.read(_PIECE):
                yield piece
            return
        d = isal_zlib.decompressobj(wbits=31)
        try:
            while data := fh.read(_PIECE):
                while data:
                    if d.eof:  # the next gzip member
                        d = isal_zlib.decompressobj(wbits=31)
                    if piece := d.decompress(data, _PIECE):
                        yield piece
                    data = d.unconsumed_tail or d.unused_data
        except isal_zlib.error as err:
            raise InputError(f"corrupt gzip data ({err}); download the file again", path) from None
        if not d.eof:
            raise InputError("truncated gzip file (no end-of-stream marker); download the file again", path)


_BINARY = "a FASTA file is text (is this file binary or corrupt?)"


def _describe(byte: int) -> str:
    """A byte as an error message names it."""
    if byte in b" \t":
        return "a space" if byte == 0x20 else "a tab"
    if byte < 0x20 or byte == 0x7F:
        return f"control byte 0x{byte:02x}"
    return f"non-ASCII byte 0x{byte:02x}" if byte >= 0x80 else repr(chr(byte))


def _in_sequence_line(byte: int) -> str:
    """The error for a byte no sequence line may hold, with what is allowed."""
    if byte in b" \t":
        why = "only a '>' header line may hold spaces or tabs"
    else:
        why = "bases are ASCII letters" if byte >= 0x80 else _BINARY
    return f"{_describe(byte)} inside a sequence line: {why}"


class _LineCheck:
    """The line-level checks of :func:`check_fasta` on a stream of pieces.

    Between pieces it keeps the line number reached, whether the next piece continues a sequence line, and an
    unfinished header line (carried whole, so a header cut between two pieces is checked as one line). Line numbers
    are counted only up to the positions that need one (headers, errors), once per byte.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.line = 1  # the line of the first byte not yet consumed
        self.in_sequence_line = False  # the next piece starts inside a sequence line
        self.header = b""  # an unfinished header line, completed by the next piece
        self.size = 0
        self.records = 0
        self.unfilled: tuple[int, bytes] | None = None  # (line, name) of the last header while no base followed it
        self._buf, self._at, self._at_line = b"", 0, 1

    def _line_of(self, pos: int) -> int:
        """The line of ``self._buf[pos]``; positions asked for only increase within one buffer."""
        self._at_line += self._buf.count(b"\n", self._at, pos)
        self._at = pos
        return self._at_line

    def _skip_lines(self, start: int, end: int, newlines: int) -> None:
        """Move the line counter past ``buf[start:end]``, whose ``newlines`` line ends the caller has counted."""
        self._line_of(start)
        self._at, self._at_line = end, self._at_line + newlines

    def _error(self, message: str, pos: int) -> InputError:
        return InputError(message, self.path, self._line_of(pos))

    def feed(self, piece: bytes) -> None:
        self.size += len(piece)
        buf = self._buf = self.header + piece
        self._at, self._at_line = 0, self.line
        pos, at_line_start = 0, not self.in_sequence_line
        self.header = b""
        while pos < len(buf):
            if at_line_start and buf[pos] == 0x3E:  # '>'
                end = buf.find(b"\n", pos)
                if end < 0:
                    if len(buf) - pos > _MAX_HEADER:
                        raise self._error(f"a '>' line longer than {_MAX_HEADER:,} bytes: is this a FASTA file?", pos)
                    self.header = buf[pos:]
                    break
                self._header(pos, end)
                pos = end + 1
                continue
            end = self._next_header(pos)
            self._sequence(pos, end)
            pos, at_line_start = end, True
        self.line = self._line_of(pos)
        if buf:
            self.in_sequence_line = not self.header and buf[-1] != 0x0A

    def _next_header(self, pos: int) -> int:
        """Where the first header line after ``pos`` starts (the buffer's end if none does).

        A '>' at a line start, found with a byte search: a 2-byte pattern search is 3x slower on sequence.
        """
        buf = self._buf
        i = buf.find(b">", pos + 1)
        while i > 0 and buf[i - 1] != 0x0A:  # a '>' inside a sequence line: the tokenizer will refuse it
            i = buf.find(b">", i + 1)
        return len(buf) if i < 0 else i

    def _header(self, start: int, end: int) -> None:
        line = self._buf[start:end].removesuffix(b"\r")
        if self.unfilled is not None:
            raise self._unfilled_error()
        if m := _CONTROL.search(line):
            raise self._error(f"{_describe(m[0][0])} in a header line: {_BINARY}", start)
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as err:
            raise self._error(
                f"the header line is not UTF-8 text (byte 0x{line[err.start]:02x} at column {err.start + 1})", start
            ) from None
        if line[1:2] in (b"", b" ", b"\t"):
            raise self._error("a '>' header line without a record name (the name follows '>' directly)", start)
        self.records += 1
        self.unfilled = (self._line_of(start), line[1:].split(maxsplit=1)[0])

    def _sequence(self, start: int, end: int) -> None:
        buf = self._buf
        if self.records == 0:  # before the first header: blank lines only
            if m := _NOT_BLANK.search(buf, start, end):
                raise self._error(
                    f"not a FASTA file: {_describe(m[0][0])} before the first '>' header line (FASTA is text that "
                    "starts with a '>name' line)",
                    m.start(),
                )
            return
        if buf[start:end].translate(None, _IN_SEQUENCE) and (m := _NOT_IN_SEQUENCE.search(buf, start, end)):
            raise self._error(_in_sequence_line(m[0][0]), m.start())
        if self.unfilled is not None and _NOT_BLANK.search(buf, start, end):
            self.unfilled = None

    def _unfilled_error(self) -> InputError:
        line, name = self.unfilled
        return InputError(
            f"record {name.decode()!r} (record {self.records}) is empty: its '>' header line has no sequence after it",
            self.path,
            line,
        )

    def finish(self) -> None:
        """The checks only the end of the file can settle: a last header, a record without sequence, no record."""
        if self.header:
            self.feed(b"\n")
        if self.unfilled is not None:
            raise self._unfilled_error()
        if self.records == 0:
            raise InputError(
                "empty file: no FASTA record" if self.size == 0 else "no FASTA record (blank lines only)", self.path
            )


def check_fasta(path: str | Path) -> None:
    """Raise an InputError naming the file and line of the first thing pyfastx would read wrong (module docstring).

    One streaming pass in 1 MiB pieces: memory stays bounded (a piece and one header line) whatever the genome size.
    """
    path = Path(path)
    lines = _LineCheck(path)
    for piece in _pieces(path):
        lines.feed(piece)
    lines.finish()


def _add_unique(names: set[str], name: str, record: int, path: Path, line: int | None = None) -> None:
    """Add a record name to those seen, refusing a repeat: windows and regions address records by name."""
    if name in names:
        raise InputError(f"duplicate record name {name!r} (record {record}); names must be unique", path, line)
    names.add(name)


def iter_records(path: str | Path) -> Iterator[tuple[str, str]]:
    """``(name, sequence)`` of each record in file order, once :func:`check_fasta` passed; names must be unique."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"FASTA file not found: {path}")
    check_fasta(path)
    try:
        reader = pyfastx.Fasta(str(path), build_index=False)
    except RuntimeError as err:
        raise InputError(f"not a FASTA file (plain or gzip): {err}", path) from None
    seen: set[str] = set()
    for n, (name, seq) in enumerate(reader, 1):
        _add_unique(seen, name, n, path)
        yield name, seq


# ----- encoded cache ----------------------------------------------------------------------------------------
SEQ_FILE, MANIFEST_FILE = "seq.u8", "manifest.json"
_ABANDONED_S = 600  # another host's half-written folder untouched this long is a dead writer's (a live one appends
# every few milliseconds)


def _base_table(cleaner: DnaCleaner) -> bytes:
    """``bytes.translate`` table of what ``cleaner.clean`` makes of each byte, 0 for a byte it refuses or that no
    sequence line may hold: one C-speed translation per piece then cleans by the tokenizer's rules."""
    table = bytearray(256)
    for byte in _IN_SEQUENCE:
        try:
            table[byte] = int(cleaner.clean(bytes([byte]))[0])
        except ValueError:
            pass  # stays 0; the tokenizer's own message is asked for when the byte occurs
    return bytes(table)


class _Encoder(_LineCheck):
    """:func:`check_fasta`'s checks and the encoding in one pass over the pieces, appending the bases to ``out``.

    A sequence span (the lines between two headers within a piece) is cleaned by one ``translate`` that also drops
    the line ends; a 0 byte in the result sends the span to the slow path that names the error. The line counter
    advances by the line ends the translation removed, so a base costs a few C loops (translate, a zero search, an
    N count) and no Python.
    """

    def __init__(self, path: Path, cleaner: DnaCleaner, out: BinaryIO) -> None:
        super().__init__(path)
        self.cleaner, self.out, self.table = cleaner, out, _base_table(cleaner)
        self.index: list[dict] = []  # the manifest's records
        self.names: set[str] = set()
        self.bases = 0

    def _header(self, start: int, end: int) -> None:
        super()._header(start, end)
        line, raw = self.unfilled
        name = raw.decode()
        _add_unique(self.names, name, self.records, self.path, line)
        self.index.append({"name": name, "offset": self.bases, "length": 0, "n_count": 0})

    def _sequence(self, start: int, end: int) -> None:
        if self.records == 0:  # before the first header: blank lines only
            super()._sequence(start, end)
            return
        raw = self._buf[start:end]
        clean = raw.translate(self.table, b"\r\n")
        if clean.find(0) >= 0:
            raise self._refused(start, end)
        self._skip_lines(start, end, len(raw) - len(clean) if b"\r" not in raw else raw.count(b"\n"))
        if clean:
            self.unfilled = None
            record = self.index[-1]
            record["length"] += len(clean)
            record["n_count"] += int(np.count_nonzero(np.frombuffer(clean, dtype=np.uint8) == N_BYTE))
            self.bases += len(clean)
            self.out.write(clean)

    def _refused(self, start: int, end: int) -> InputError:
        """The error for a span holding a refused byte: the line check's for a space, tab, control or non-ASCII byte,
        else the tokenizer's message with the record, where the span starts in it, and the line."""
        super()._sequence(start, end)  # raises for a byte no sequence line may hold
        raw, record = self._buf[start:end], self.index[-1]
        at = next(i for i, byte in enumerate(raw) if not self.table[byte] and byte not in b"\r\n")
        try:
            self.cleaner.clean(raw.translate(None, b"\r\n"))
        except ValueError as err:
            message = f"record {record['name']!r}, piece starting at base {record['length']}: {err}"
            return InputError(message, self.path, self._line_of(start + at))
        raise AssertionError(f"{type(self.cleaner).__name__}.clean accepts a span it refuses byte by byte")


def _cache_key(path: Path) -> str:
    st = path.stat()
    ident = f"{_CACHE_VERSION}|{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    return hashlib.sha256(ident.encode()).hexdigest()[:16]


def _fasta_stem(path: Path) -> str:
    name = path.name
    for suffix in (".gz", ".fa", ".fasta", ".fna", ".fas"):
        name = name.removesuffix(suffix)
    return name


def cache_path_for(fasta: str | Path, cache_root: str | Path) -> Path:
    """Where the encoded cache of ``fasta`` lives (it may not exist yet)."""
    fasta = Path(fasta)
    return Path(cache_root) / f"{_fasta_stem(fasta)}-{_cache_key(fasta)}"


def _cache_problem(cache_dir: Path, manifest: dict) -> str | None:
    """What makes a cache folder unusable, or None: another version, or records that do not tile ``seq.u8`` exactly."""
    if manifest.get("version") != _CACHE_VERSION:
        return f"cache version {manifest.get('version')!r}, this program reads {_CACHE_VERSION}"
    ends = np.cumsum(manifest["lengths"])
    if len(ends) and not np.array_equal(manifest["offsets"], ends - manifest["lengths"]):
        return "its record offsets do not follow each other"
    seq = cache_dir / SEQ_FILE
    if not seq.is_file():
        return f"no {SEQ_FILE}"
    size, expected = seq.stat().st_size, int(ends[-1]) if len(ends) else 0
    return None if size == expected else f"{SEQ_FILE} holds {size:,} bytes, its records {expected:,}"


def read_manifest(cache_dir: str | Path) -> dict:
    """Record names, offsets, lengths and N counts of a complete cache folder, checked against its sequence file.

    No folder is a MissingFileError (not built yet); a folder without a manifest, or with one that is unreadable, of
    another version, or whose records do not tile ``seq.u8`` exactly (a cut copy, a full disk) an InputError naming it.
    """
    cache_dir = Path(cache_dir)
    if not cache_dir.is_dir():
        raise MissingFileError(f"no encoded genome at {cache_dir} (prepare_data() builds it)")
    try:
        raw = json.loads((cache_dir / MANIFEST_FILE).read_text())
        records = raw["records"]
        manifest = {
            "version": raw["version"],
            "source": str(raw["source"]),
            "names": [str(r["name"]) for r in records],
            **{f"{key}s": np.array([r[key] for r in records], dtype=np.int64) for key in ("offset", "length", "n_count")},
        }
    except FileNotFoundError:
        problem: str | None = f"no {MANIFEST_FILE}"
    except (ValueError, KeyError, TypeError) as err:
        problem = f"{MANIFEST_FILE} is unreadable ({type(err).__name__}: {err})"
    else:
        problem = _cache_problem(cache_dir, manifest)
    if problem:
        raise InputError(f"incomplete or corrupt encoded genome: {problem}; delete the folder to encode it again",
                         cache_dir)  # fmt: skip
    return manifest


def _is_complete(cache_dir: Path) -> bool:
    try:
        read_manifest(cache_dir)
    except (MissingFileError, InputError):
        return False
    return True


def _tmp_dir(out: Path) -> Path:
    """This process's private folder next to ``out``: the cache is written there, then renamed to ``out``."""
    return out.parent / f".{out.name}.{os.getpid()}@{socket.gethostname()}.tmp"


def _remove_abandoned(out: Path) -> None:
    """Delete the half-written folders of writers that died: this host's whose pid is gone, any once left untouched.

    Run under the writer lock; a folder named with this very pid is a dead process's too (the pid was reused).
    """
    host = socket.gethostname()
    for tmp in out.parent.glob(f".{glob.escape(out.name)}.*.tmp"):
        pid, _, tmp_host = tmp.name[len(out.name) + 2 : -len(".tmp")].partition("@")
        try:
            idle = time.time() - max(p.stat().st_mtime for p in [tmp, *tmp.iterdir()])
        except FileNotFoundError:  # renamed into place meanwhile by a writer on another node
            continue
        dead = tmp_host == host and pid.isdigit() and (int(pid) == os.getpid() or not _alive(int(pid)))
        if dead or idle > _ABANDONED_S:
            log.warning("Removing %s, left by an interrupted encoding", tmp)
            shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's live process
    return True


def _fsync_write(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _encode(fasta: Path, out: Path, cleaner: DnaCleaner) -> tuple[int, int]:
    """Write the cache of ``fasta`` to a private folder, make it durable, rename it to ``out``: (records, bases).

    ``seq.u8`` is appended piece by piece (memory stays at a few pieces whatever the genome); the manifest is written
    last and everything is fsynced before the rename, so a visible folder is whole even after a crash of the node.
    """
    tmp = _tmp_dir(out)
    tmp.mkdir()
    try:
        with open(tmp / SEQ_FILE, "wb") as fh:
            encoder = _Encoder(fasta, cleaner, fh)
            for piece in _pieces(fasta):
                encoder.feed(piece)
            encoder.finish()
            fh.flush()
            os.fsync(fh.fileno())
        manifest = {"version": _CACHE_VERSION, "source": str(fasta.resolve()), "records": encoder.index}
        _fsync_write(tmp / MANIFEST_FILE, json.dumps(manifest, indent=1).encode())
        try:
            os.rename(tmp, out)
        except OSError:  # another node finished the same cache first (locks not shared between nodes)
            if not _is_complete(out):
                raise
        dir_fd = os.open(out.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return len(encoder.index), encoder.bases


def build_cache(fasta: str | Path, cache_root: str | Path, cleaner: DnaCleaner) -> Path:
    """Encode ``fasta`` once into ``cache_root`` (a no-op when a complete cache exists); return the cache folder.

    Safe for any number of processes and nodes at once: one encodes (the writer lock), the others wait and then use
    its cache; a folder is renamed into place only when whole, so a killed writer leaves none (its private folder is
    deleted by the next writer) and an incomplete or corrupt cache folder is replaced, with a warning naming it.
    """
    fasta = Path(fasta)
    if not fasta.is_file():
        raise MissingFileError(f"FASTA file not found: {fasta}")
    out = cache_path_for(fasta, cache_root)
    if _is_complete(out):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with writer_lock(out):
        _remove_abandoned(out)
        try:
            read_manifest(out)
            return out  # another process encoded it while this one waited
        except MissingFileError:
            pass
        except InputError as err:
            log.warning("%s; encoding it again", err)
            shutil.rmtree(out)
        start = time.perf_counter()
        n_records, n_bases = _encode(fasta, out, cleaner)
    log.info("Encoded %s (%d records, %d bp) into %s in %.1f s", fasta, n_records, n_bases, out,
             time.perf_counter() - start)  # fmt: skip
    return out


class EncodedGenome:
    """Read-only view of one encoded FASTA: record names and lengths now, the sequence bytes on first access.

    The file is opened lazily and dropped when pickled, so a spawned DataLoader worker opens its own (a forked
    one may share the parent's: positioned reads do not move a shared file offset).
    """

    def __init__(self, cache_dir: str | Path) -> None:
        self.cache_dir = Path(cache_dir)
        manifest = read_manifest(self.cache_dir)
        self.source: str = manifest["source"]
        self.names: list[str] = manifest["names"]
        self.offsets, self.lengths, self.n_counts = manifest["offsets"], manifest["lengths"], manifest["n_counts"]
        self._index = {name: i for i, name in enumerate(self.names)}
        self._fh: BinaryIO | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_fh": None}

    def record_index(self, name: str) -> int:
        """The index of record ``name``; an InputError listing the first records when there is none."""
        try:
            return self._index[name]
        except KeyError:
            shown = ", ".join(self.names[:10]) + (", ..." if len(self.names) > 10 else "")
            raise InputError(f"no record named {name!r} (records: {shown})", self.source) from None

    def window(self, record: int, start: int, end: int) -> np.ndarray:
        """Bytes ``[start, end)`` of a record (a read-only array)."""
        if self._fh is None:
            self._fh = open(self.cache_dir / SEQ_FILE, "rb", buffering=0)  # closed with the object
        if not 0 <= start <= end <= self.lengths[record]:
            raise ValueError(f"window {start}-{end} outside record {self.names[record]!r} ({self.lengths[record]} bp)")
        data = os.pread(self._fh.fileno(), end - start, int(self.offsets[record]) + start)
        return np.frombuffer(data, dtype=np.uint8)


# ----- regions ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Region:
    """A half-open, 0-based interval ``[start, end)`` of one record."""

    record: int
    start: int
    end: int

    def __len__(self) -> int:
        return self.end - self.start


_REGION_RE = re.compile(r"^(?P<name>.+):(?P<start>[\d,]+)-(?P<end>[\d,]+)$")


def parse_region(text: str, genome: EncodedGenome, where: str) -> Region:
    """A whole record name, or ``name:start-end`` (1-based, inclusive, as samtools writes regions).

    ``where`` names the config entry in the ConfigError a bad region raises.
    """
    if text in genome._index:
        i = genome._index[text]
        return Region(i, 0, int(genome.lengths[i]))
    m = _REGION_RE.match(text)
    if m is None:
        raise ConfigError(f"{where}: {text!r} is neither a record of {genome.source} nor a region name:start-end")
    name = m["name"]
    start, end = int(m["start"].replace(",", "")), int(m["end"].replace(",", ""))
    try:
        i = genome.record_index(name)
    except InputError as err:
        raise ConfigError(f"{where}: region {text!r}: {err}") from None
    length = int(genome.lengths[i])
    if not 1 <= start <= end <= length:
        raise ConfigError(f"{where}: region {text!r} is outside record {name!r} (1-{length}, 1-based inclusive)")
    return Region(i, start - 1, end)

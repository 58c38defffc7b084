"""FASTA access for the genome corpora: validated reading, an encoded cache, regions and the reverse
complement.

Why an encoded cache: on this kind of machine (ENV_NOTES "pyfastx and data") random 3 kb windows come at about
1,000/s from a ``.fa.gz`` through pyfastx, 130,000/s from plain FASTA and 1,000,000/s from a uint8 memmap. So
each FASTA is streamed once with pyfastx (in ``prepare_data``) into one flat file of upper-case ``ACGTN``
bytes, cleaned by the tokenizer (soft-masking removed, IUPAC codes -> ``N``, anything else a ``ValueError``),
plus a small JSON manifest of record names, offsets and lengths. Workers then read windows with ``os.pread``:
no parsing, no per-worker index. Positioned reads rather than a memmap, because a memmap's touched pages count
in each worker's resident memory and grow towards the genome size over a long run, while ``pread`` copies only
the window (the OS page cache still shares the file between processes); at about 10 windows per batch the few
microseconds per read are negligible.

Records are read in file order with ``build_index=False``, so pyfastx writes no ``.fxi`` next to the source
(which may be read-only). The cache is keyed by the file's resolved path, size and modification time: an
edited or re-downloaded genome is re-encoded. pyfastx accepts a truncated gzip without complaint, so gzip
files are checked for a complete end-of-stream first.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

import numpy as np
import pyfastx

__all__ = [
    "EncodedGenome",
    "Region",
    "build_cache",
    "check_gzip_complete",
    "iter_records",
    "parse_region",
    "reverse_complement",
]

log = logging.getLogger(__name__)

_CACHE_VERSION = 1
_CHUNK_BP = 1 << 24  # records are cleaned in 16 Mb pieces: bounded temporary memory for any chromosome
N_BYTE = ord("N")


class DnaCleaner(Protocol):
    """The one thing this module needs from the tokenizer."""

    def clean(self, seq: str | bytes | np.ndarray) -> np.ndarray: ...


# ----- reverse complement -----------------------------------------------------------------------------------
def _complement_table() -> np.ndarray:
    lut = np.arange(256, dtype=np.uint8)
    pairs = [
        "AT",
        "CG",
        "NN",
        "RY",
        "KM",
        "SS",
        "WW",
        "BV",
        "DH",
    ]  # IUPAC complements; S, W and N are their own
    for a, b in pairs:
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
def check_gzip_complete(path: str | Path) -> None:
    """Raise a ValueError if a gzip file is cut short or corrupt (every member must reach its end-of-stream).

    Streams the file once with bounded memory; multi-member files (bgzip) are accepted. Plain files pass
    untouched.
    """
    path = Path(path)
    with open(path, "rb") as fh:
        if fh.read(2) != b"\x1f\x8b":
            return
        fh.seek(0)
        d = zlib.decompressobj(wbits=31)
        try:
            while chunk := fh.read(1 << 20):
                while chunk:
                    d.decompress(chunk)
                    chunk = d.unused_data
                    if d.eof and chunk:  # next gzip member
                        d = zlib.decompressobj(wbits=31)
        except zlib.error as err:
            raise ValueError(f"{path}: corrupt gzip data ({err}); download the file again") from None
        if not d.eof:
            raise ValueError(f"{path}: truncated gzip file (no end-of-stream marker); download the file again")


def iter_records(path: str | Path) -> Iterator[tuple[str, str]]:
    """``(name, sequence)`` of each record in file order, rejecting what pyfastx would read silently wrong.

    Errors name the file and record: not FASTA, truncated gzip, empty record, duplicate record name.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"FASTA file not found: {path}")
    check_gzip_complete(path)
    try:
        reader = pyfastx.Fasta(str(path), build_index=False)
    except RuntimeError as err:
        raise ValueError(f"{path}: not a FASTA file (plain or gzip): {err}") from None
    seen: set[str] = set()
    n = 0
    for name, seq in reader:
        n += 1
        if name in seen:
            raise ValueError(f"{path}: duplicate record name {name!r} (record {n}); names must be unique")
        if not seq:
            raise ValueError(f"{path}: record {name!r} (record {n}) is empty")
        seen.add(name)
        yield name, seq
    if n == 0:
        raise ValueError(f"{path}: no FASTA record found")


# ----- encoded cache ----------------------------------------------------------------------------------------
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


def build_cache(fasta: str | Path, cache_root: str | Path, cleaner: DnaCleaner) -> Path:
    """Encode ``fasta`` once into ``cache_root`` (a no-op when a valid cache exists); return the cache folder.

    Written into a temporary folder and renamed at the end, so an interrupted build leaves no half cache and
    two processes building the same genome do not corrupt each other.
    """
    fasta = Path(fasta)
    out = cache_path_for(fasta, cache_root)
    if (out / "manifest.json").is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        records = []
        offset = 0
        with open(tmp / "seq.u8", "wb") as fh:
            for name, seq in iter_records(fasta):
                n_count = 0
                for start in range(0, len(seq), _CHUNK_BP):
                    try:
                        clean = cleaner.clean(seq[start : start + _CHUNK_BP])
                    except ValueError as err:
                        raise ValueError(f"{fasta}: record {name!r}, piece starting at base {start}: {err}") from None
                    n_count += int(np.count_nonzero(clean == N_BYTE))
                    fh.write(clean.tobytes())
                records.append({"name": name, "offset": offset, "length": len(seq), "n_count": n_count})
                offset += len(seq)
        manifest = {"version": _CACHE_VERSION, "source": str(fasta.resolve()), "records": records}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
        try:
            os.replace(tmp, out)
        except OSError:  # another process finished the same cache first
            if not (out / "manifest.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("Encoded %s (%d records, %d bp) into %s", fasta, len(records), offset, out)
    return out


class EncodedGenome:
    """Read-only view of one encoded FASTA: record names and lengths now, the sequence bytes on first access.

    The file is opened lazily and dropped when pickled, so a spawned DataLoader worker opens its own (a forked
    one may share the parent's: positioned reads do not move a shared file offset).
    """

    def __init__(self, cache_dir: str | Path) -> None:
        self.cache_dir = Path(cache_dir)
        manifest_path = self.cache_dir / "manifest.json"
        if not manifest_path.is_file():
            raise FileNotFoundError(f"no encoded genome at {self.cache_dir} (prepare_data() builds it)")
        manifest = json.loads(manifest_path.read_text())
        self.source: str = manifest["source"]
        recs = manifest["records"]
        self.names: list[str] = [r["name"] for r in recs]
        self.offsets = np.array([r["offset"] for r in recs], dtype=np.int64)
        self.lengths = np.array([r["length"] for r in recs], dtype=np.int64)
        self.n_counts = np.array([r["n_count"] for r in recs], dtype=np.int64)
        self._index = {name: i for i, name in enumerate(self.names)}
        self._fh: BinaryIO | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_fh": None}

    def record_index(self, name: str) -> int:
        try:
            return self._index[name]
        except KeyError:
            shown = ", ".join(self.names[:10]) + (", ..." if len(self.names) > 10 else "")
            raise ValueError(f"{self.source}: no record named {name!r} (records: {shown})") from None

    def window(self, record: int, start: int, end: int) -> np.ndarray:
        """Bytes ``[start, end)`` of a record (a read-only array)."""
        if self._fh is None:
            self._fh = open(self.cache_dir / "seq.u8", "rb", buffering=0)  # closed with the object
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

    ``where`` names the config entry in error messages.
    """
    if text in genome._index:
        i = genome._index[text]
        return Region(i, 0, int(genome.lengths[i]))
    m = _REGION_RE.match(text)
    if m is None:
        raise ValueError(f"{where}: {text!r} is neither a record of {genome.source} nor a region name:start-end")
    name = m["name"]
    start, end = int(m["start"].replace(",", "")), int(m["end"].replace(",", ""))
    try:
        i = genome.record_index(name)
    except ValueError as err:
        raise ValueError(f"{where}: region {text!r}: {err}") from None
    length = int(genome.lengths[i])
    if not 1 <= start <= end <= length:
        raise ValueError(f"{where}: region {text!r} is outside record {name!r} (1-{length}, 1-based inclusive)")
    return Region(i, start - 1, end)

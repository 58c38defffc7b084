"""The full GSR fine-tuning sets, placed where ``data=gsr_full`` reads them: ``python download.py dataset=<name>``.

Why a builder and not a file to fetch: the PAS set is published as FASTA files (the DeepGSR data release, Kalkatawi et
al. 2019, as redistributed by GitHub ``dvgodoy/DeepGSR``), one per species, motif and label; the project's table
``gsr_pas_deepgsr_4species.tsv.gz`` (what :func:`dnagpt.data.gsr_table.read_gsr_tsv` reads) was made from them. So
``dataset=deepgsr_pas`` fetches the FASTA files of one pinned commit with :func:`dnagpt.data.download.download_file`
(resumable, the same code as the genomes), checks each against the manifest ``resources/gsr/deepgsr_pas_files.tsv``
(its sha256; for a file never seen offline the git blob id that the pinned commit's tree lists), builds the table and
checks the sha256 of its uncompressed text against the config's ``sha256`` before it replaces anything. The text, not
the gzip bytes: those depend on the zlib build. The pinned digest is that of the shared table's text, which this builder
reproduces byte for byte from the 120 files (tests/test_gsr_download.py).

The AATAAA files (pos and neg, four species) were too large for the offline snapshot the shared table was built from,
so the pinned digest covers the other 15 motifs; ``include_aataaa`` (``dataset=deepgsr_pas_aataaa``) adds them, each
file checked against its git blob id and the table without a pinned digest.

TIS is not rebuilt: the project's TIS table was derived from genome annotations in three PyPI wheels with a seeded
negative sampler whose pool order, sampling calls and filter order its README does not state, so a re-implementation
would draw other negatives: another data set under the same name. ``dataset=gsr_tis`` installs a given copy
(``copy_from``) once the sha256 of its text matches.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from omegaconf import DictConfig, OmegaConf

from dnagpt.data.download import download_file
from dnagpt.data.gsr_table import SIGNALS
from dnagpt.data.tables import GZIP_ERRORS, check_gzip, require_file, text_lines, tsv_rows, unreadable
from dnagpt.utils.errors import ConfigError, InputError

__all__ = [
    "DatasetSpec", "RawFile", "download_dataset", "fetch_raw_files", "git_blob_id", "pas_table_text", "read_manifest",
    "table_sha256",
]  # fmt: skip

log = logging.getLogger(__name__)

COLUMNS = ("species", "signal", "motif", "label", "source_file", "id", "sequence")  # the shared table's, in order
SPECIES = {"hs": "human", "mm": "mouse", "bt": "bovine", "dm": "fruitfly"}
_FILE_NAME = re.compile(r"(?P<species>hs|mm|bt|dm)_(?P<neg>neg)?(?P<motif>[ACGT]{6})_polyA\.fa")
_AATAAA = "AATAAA"
_CHUNK = 1 << 20
_SOURCES = {"deepgsr": ("url", "manifest", "raw_dir", "include_aataaa"), "file": ("copy_from",)}
_COMMON = ("name", "source", "table", "sha256")


@dataclass(frozen=True)
class RawFile:
    """One FASTA file of the pinned tree: its path there and the digests it must have."""

    path: str  # e.g. data/Human/PAS/hs_negATTAAA_polyA.fa
    git_blob: str  # its blob id in the pinned commit's tree (``git ls-tree``)
    sha256: str | None  # None: not seen offline (the AATAAA files); the blob id checks it

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def motif(self) -> str:
        return _FILE_NAME.fullmatch(self.name)["motif"]


def read_manifest(path: str | Path) -> list[RawFile]:
    """The manifest's files (columns ``path git_blob sha256``, ``-`` for an unknown sha256), each name checked."""
    files = []
    for line, row in tsv_rows(path, ("path", "git_blob", "sha256")):
        if not _FILE_NAME.fullmatch(row["path"].rsplit("/", 1)[-1]):
            raise InputError("not a DeepGSR PAS file name ({hs,mm,bt,dm}_[neg]MOTIF_polyA.fa)", path, line, "path")
        if not re.fullmatch(r"[0-9a-f]{40}", row["git_blob"]):
            raise InputError("expected 40 hex digits", path, line, "git_blob")
        if row["sha256"] != "-" and not re.fullmatch(r"[0-9a-f]{64}", row["sha256"]):
            raise InputError("expected 64 hex digits or '-'", path, line, "sha256")
        files.append(RawFile(row["path"], row["git_blob"], None if row["sha256"] == "-" else row["sha256"]))
    return files


def git_blob_id(path: str | Path) -> str:
    """The id git gives the file's content (sha1 of ``blob <size>\\0`` + content): what a commit's tree lists."""
    path = Path(path)
    h = hashlib.sha1(f"blob {path.stat().st_size}\0".encode(), usedforsecurity=False)
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def fetch_raw_files(
    files: Sequence[RawFile], url: str, raw_dir: str | Path, *, session: requests.Session | None = None
) -> list[Path]:
    """Fetch ``url/<path>`` of each file to ``raw_dir/<path>`` (resumable; present files are verified, not fetched)."""
    session = session or requests.Session()
    paths = []
    for raw in files:
        dest = Path(raw_dir) / raw.path
        download_file(f"{url.rstrip('/')}/{raw.path}", dest, raw.sha256, session=session)
        if raw.sha256 is None and (blob := git_blob_id(dest)) != raw.git_blob:
            dest.unlink()
            raise InputError(f"git blob id {blob}, the pinned tree lists {raw.git_blob}; the file was removed", dest)
        paths.append(dest)
    return paths


def _records(path: Path) -> Iterator[tuple[int, str, str]]:
    """``(header line, id, sequence)`` of each FASTA record in file order (sequence lines joined)."""
    line, name, seq = 0, None, []
    for number, text in enumerate(text_lines(path), 1):
        text = text.strip()
        if text.startswith(">"):
            if name is not None:
                yield line, name, "".join(seq)
            line, name, seq = number, text[1:].strip(), []
        elif text and name is None:
            raise InputError("sequence before the first '>' header", path, number)
        elif text:
            seq.append(text)
    if name is None:
        raise InputError("no FASTA record", path)
    yield line, name, "".join(seq)


def _pas_rows(path: Path) -> Iterator[str]:
    """The table's lines for one DeepGSR FASTA file; a record that is not a PAS window of its motif is an InputError."""
    spec, parts = SIGNALS["pas"], _FILE_NAME.fullmatch(path.name)
    if parts is None:
        raise InputError("not a DeepGSR PAS file name ({hs,mm,bt,dm}_[neg]MOTIF_polyA.fa)", path)
    species, motif, label = SPECIES[parts["species"]], parts["motif"], "0" if parts["neg"] else "1"
    for line, name, seq in _records(path):
        seq = seq.upper()
        if not name or "\t" in name:
            raise InputError("a record name must be non-empty and hold no tab", path, line, "id")
        if len(seq) != spec.window:
            raise InputError(f"has {len(seq)} nt; a PAS window has {spec.window}", path, line, "sequence")
        if bad := re.search(r"[^ACGTN]", seq):
            raise InputError(f"has {bad.group()!r} at position {bad.start()} (ACGTN only)", path, line, "sequence")
        if (centre := seq[spec.start : spec.start + spec.length]) != motif:
            raise InputError(f"holds {centre!r} at 301-306, not the file's motif {motif}", path, line, "sequence")
        yield f"{species}\tPAS\t{motif}\t{label}\t{path.name}\t{name}\t{seq}\n"


def pas_table_text(fastas: Iterable[Path]) -> Iterator[bytes]:
    """The table's text of these DeepGSR FASTA files: files in name order, records in file order (the shared table's)."""
    yield ("\t".join(COLUMNS) + "\n").encode()
    for path in sorted(fastas, key=lambda p: p.name):
        yield "".join(_pas_rows(path)).encode()


def _text_chunks(path: Path) -> Iterator[bytes]:
    """The uncompressed bytes of a table (gunzipped when its name ends in .gz); a broken gzip is an InputError."""
    check_gzip(path)
    with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as fh:
        try:
            while chunk := fh.read(_CHUNK):
                yield chunk
        except GZIP_ERRORS as err:
            raise unreadable(err, path) from None


def table_sha256(path: str | Path) -> str:
    """sha256 of a table's uncompressed text: what a dataset pins (the gzip bytes vary with the zlib build)."""
    h = hashlib.sha256()
    for chunk in _text_chunks(Path(path)):
        h.update(chunk)
    return h.hexdigest()


def _write_table(chunks: Iterable[bytes], table: Path, sha256: str | None, source: str | Path) -> str:
    """Gzip ``chunks`` to ``table`` (reproducible: no name, no time); replaced only when the text's sha256 is ``sha256``."""
    table.parent.mkdir(parents=True, exist_ok=True)
    part, h = table.with_name(table.name + ".part"), hashlib.sha256()
    try:
        with open(part, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
            for chunk in chunks:
                h.update(chunk)
                gz.write(chunk)
        if sha256 and (got := h.hexdigest()) != sha256:
            raise InputError(f"the table made from it has sha256 {got}, not the pinned {sha256}; nothing replaced", source)
        os.replace(part, table)
    finally:
        part.unlink(missing_ok=True)
    return h.hexdigest()


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset config (``dnagpt/conf/dataset/*.yaml``), validated."""

    name: str
    source: str  # deepgsr: built from the DeepGSR FASTA files | file: a given copy of the table
    table: Path  # where the table goes (``data=gsr_full`` reads it there)
    sha256: str | None  # of the table's uncompressed text; None: not pinned
    url: str | None = None  # deepgsr: the root of the pinned tree
    manifest: Path | None = None  # deepgsr: its files and digests
    raw_dir: Path | None = None  # deepgsr: where the FASTA files are kept (resume, re-runs)
    include_aataaa: bool = False  # deepgsr: also the AATAAA files (no pinned table digest then)
    copy_from: Path | None = None  # file: the copy to install

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | DictConfig) -> DatasetSpec:
        """A ConfigError names the key: ``dataset.<key>``."""
        if isinstance(cfg, DictConfig):
            cfg = OmegaConf.to_container(cfg, resolve=True)
        name, source = cfg.get("name"), cfg.get("source")
        if source not in _SOURCES:
            raise ConfigError(f"dataset {name}: source must be one of {sorted(_SOURCES)}, got {source!r}")
        allowed = {*_COMMON, *_SOURCES[source]}
        if unknown := sorted(set(cfg) - allowed):
            raise ConfigError(f"dataset {name}: unknown key(s) {unknown} for source {source}; allowed: {sorted(allowed)}")
        if missing := [k for k in allowed - {"sha256", "include_aataaa"} if cfg.get(k) in (None, "")]:
            hint = " (the path of your copy of the table: docs/gsr_data.md)" if "copy_from" in missing else ""
            raise ConfigError(f"dataset {name}: dataset.{' and dataset.'.join(sorted(missing))} is required{hint}")
        sha256 = cfg.get("sha256")
        if sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", str(sha256)):
            raise ConfigError(f"dataset {name}: dataset.sha256 must be 64 hex digits or null, got {sha256!r}")
        if cfg.get("include_aataaa") and sha256:
            raise ConfigError(
                f"dataset {name}: dataset.sha256 pins the table without the AATAAA files; with include_aataaa=true "
                "it must be null (dataset=deepgsr_pas_aataaa)"
            )
        paths = {k: Path(cfg[k]) for k in ("table", "manifest", "raw_dir", "copy_from") if k in cfg}
        return cls(str(name), source, sha256=sha256, url=cfg.get("url"), include_aataaa=bool(cfg.get("include_aataaa")),
                   **paths)  # fmt: skip


def download_dataset(cfg: Mapping[str, Any] | DictConfig, *, session: requests.Session | None = None) -> str:
    """Make the dataset's table (skipped when it is there with the pinned digest); return the sha256 of its text."""
    ds = DatasetSpec.from_config(cfg)
    if ds.sha256 and ds.table.is_file():
        try:
            present = table_sha256(ds.table)
        except InputError:  # a broken table: made again below
            present = None
        if present == ds.sha256:
            log.info("%s already present (sha256 of its text %s)", ds.table, present)
            return present
    if ds.source == "file":
        chunks, source = _text_chunks(require_file("dataset.copy_from", ds.copy_from)), ds.copy_from
    else:
        files = [f for f in read_manifest(ds.manifest) if ds.include_aataaa or f.motif != _AATAAA]
        chunks, source = pas_table_text(fetch_raw_files(files, ds.url, ds.raw_dir, session=session)), ds.raw_dir
    digest = _write_table(chunks, ds.table, ds.sha256, source)
    log.info("%s: %s written (sha256 of its text %s)", ds.name, ds.table, digest)
    return digest

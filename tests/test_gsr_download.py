"""The full GSR sets by ``download.py dataset=...``: DeepGSR FASTA files fetched (resumable, each checked against the
manifest), the PAS table built and checked against its pinned digest, the TIS table installed from a copy, and
``data=gsr_full`` reading both.

The FASTA files are made from the shipped PAS subset (real rows, the shared table's format) and served on 127.0.0.1;
any other connection fails the test. The slow test turns the shared table (``../shared/data``, skipped without it) back
into the 120 files it came from and rebuilds it against the real manifest and pinned digest.
"""

from __future__ import annotations

import gzip
import hashlib
import re
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import hydra
import pytest
from conftest import ROOT

from dnagpt.commands import compose_config
from dnagpt.commands.download import main
from dnagpt.data.gsr_download import (
    COLUMNS,
    DatasetSpec,
    download_dataset,
    git_blob_id,
    read_manifest,
    table_sha256,
)
from dnagpt.data.gsr_table import deduplicate, read_gsr_tsv
from dnagpt.tokenizer import KmerTokenizer
from dnagpt.utils.errors import ConfigError, InputError
from dnagpt.utils.resolvers import resource_path

PAS_SUBSET = Path(resource_path("gsr/pas_subset.tsv.gz"))
TIS_SUBSET = Path(resource_path("gsr/tis_subset.tsv.gz"))
MANIFEST = Path(resource_path("gsr/deepgsr_pas_files.tsv"))
SHARED = ROOT.parent / "shared" / "data"
FOLDERS = {"human": "Human", "mouse": "Mouse", "bovine": "Bovine", "fruitfly": "FruitFly"}


# ---- the network's stand-in -------------------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any connection but to this machine fails the test: nothing here may need the network."""
    connect = socket.socket.connect

    def guarded(sock: socket.socket, address: object) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in ("127.0.0.1", "::1"):
            raise AssertionError(f"a test connected to {address}")
        connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)


class Files(BaseHTTPRequestHandler):
    """Serves ``server.files`` (path -> bytes) with ``Range: bytes=N-``; a path in ``server.cut`` has its first
    response closed after half of its bytes (a dropped connection)."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        srv, path = self.server, self.path.lstrip("/")
        srv.requests.append((path, self.headers.get("Range")))
        if path not in srv.files:
            self.send_error(404)
            return
        body, start = srv.files[path], 0
        if rng := self.headers.get("Range"):
            start = int(rng.removeprefix("bytes=").split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        if path in srv.cut:
            srv.cut.discard(path)
            self.wfile.write(body[start : start + (len(body) - start) // 2])
            self.close_connection = True
            return
        self.wfile.write(body[start:])

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Files)
    srv.files, srv.cut, srv.requests = {}, set(), []
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def base_url(srv: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}/pinned"


# ---- DeepGSR files made from real rows --------------------------------------------------------------------------------
def table_rows(path: Path) -> tuple[str, list[list[str]]]:
    header, *rows = gzip.decompress(path.read_bytes()).decode().splitlines()
    return header, [row.split("\t") for row in rows]


def fasta_files(rows: list[list[str]]) -> dict[str, bytes]:
    """``data/<Species>/PAS/<source_file>`` -> the DeepGSR FASTA text of those rows (``>id``, one sequence line)."""
    files: dict[str, list[str]] = {}
    for species, _, _, _, source, name, seq in rows:
        files.setdefault(f"data/{FOLDERS[species]}/PAS/{source}", []).append(f">{name}\n{seq}\n")
    return {path: "".join(records).encode() for path, records in files.items()}


def write_manifest(path: Path, files: dict[str, bytes], blob_only: tuple[str, ...] = ()) -> Path:
    """A manifest of ``files`` (sha256 and git blob id computed here), ``blob_only`` without a sha256."""
    lines = ["path\tgit_blob\tsha256"]
    for name, data in sorted(files.items()):
        blob = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        lines.append(f"{name}\t{blob}\t{'-' if name in blob_only else hashlib.sha256(data).hexdigest()}")
    path.write_text("\n".join(lines) + "\n")
    return path


def expected_text(rows: list[list[str]]) -> bytes:
    """The table the builder must write: the rows grouped by file in name order, each file in its own order."""
    ordered = sorted(rows, key=lambda row: row[4])  # stable
    return ("\t".join(COLUMNS) + "\n" + "".join("\t".join(row) + "\n" for row in ordered)).encode()


@pytest.fixture(scope="module")
def subset() -> tuple[dict[str, bytes], bytes]:
    """The shipped PAS subset as its DeepGSR files, and the table they must give."""
    header, rows = table_rows(PAS_SUBSET)
    assert header.split("\t") == list(COLUMNS)  # the shared table's columns, which the subset copies
    return fasta_files(rows), expected_text(rows)


def bovine(subset: tuple[dict[str, bytes], bytes]) -> tuple[dict[str, bytes], bytes]:
    """One species (30 files): enough for the transfer tests."""
    files = {k: v for k, v in subset[0].items() if "/Bovine/" in k}
    _, rows = table_rows(PAS_SUBSET)
    return files, expected_text([row for row in rows if row[0] == "bovine"])


def spec(srv: ThreadingHTTPServer, tmp_path: Path, manifest: Path, sha256: str | None) -> dict[str, object]:
    return {
        "name": "deepgsr_pas", "source": "deepgsr", "url": base_url(srv), "manifest": str(manifest),
        "raw_dir": str(tmp_path / "raw"), "include_aataaa": False, "table": str(tmp_path / "pas.tsv.gz"),
        "sha256": sha256,
    }  # fmt: skip


def serve(srv: ThreadingHTTPServer, files: dict[str, bytes]) -> None:
    srv.files.update({f"pinned/{path}": data for path, data in files.items()})


# ---- the tests ---------------------------------------------------------------------------------------------------------
def test_built_table_is_the_rows_of_the_fasta_files_and_its_digest_is_checked(server, subset, tmp_path) -> None:
    files, text = bovine(subset)
    serve(server, files)
    digest = hashlib.sha256(text).hexdigest()
    cfg = spec(server, tmp_path, write_manifest(tmp_path / "m.tsv", files), digest)
    assert download_dataset(cfg) == digest
    assert gzip.decompress((tmp_path / "pas.tsv.gz").read_bytes()) == text
    assert len(read_gsr_tsv(tmp_path / "pas.tsv.gz", "pas")) == text.count(b"\n") - 1  # what training reads
    fetched = len(server.requests)
    assert download_dataset(cfg) == digest and len(server.requests) == fetched  # present and pinned: no request

    (tmp_path / "pas.tsv.gz").unlink()
    shutil.rmtree(tmp_path / "raw", ignore_errors=True)
    with pytest.raises(
        InputError, match=rf"raw: the table made from it has sha256 {digest}, not the pinned 0{{64}}; nothing"
    ):
        download_dataset(cfg | {"sha256": "0" * 64})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.tsv", "raw"]  # no table, no .part


def test_interrupted_transfers_resume_with_a_range_request(server, subset, tmp_path) -> None:
    files, text = bovine(subset)
    serve(server, files)
    cut, left = sorted(files)[:2]
    server.cut.add(f"pinned/{cut}")  # dropped half-way in this run
    part = tmp_path / "raw" / f"{left}.part"  # and one left over from an earlier run
    part.parent.mkdir(parents=True)
    part.write_bytes(files[left][:1000])
    assert download_dataset(spec(server, tmp_path, write_manifest(tmp_path / "m.tsv", files), None)) == (
        hashlib.sha256(text).hexdigest()
    )
    # the dropped one is fetched again (its bytes came in one chunk that broke off, so none were kept); the one left
    # over asks only for the rest
    assert [r for r in server.requests if r[0] == f"pinned/{cut}"] == [(f"pinned/{cut}", None)] * 2
    assert [r for r in server.requests if r[0] == f"pinned/{left}"] == [(f"pinned/{left}", "bytes=1000-")]


@pytest.mark.parametrize("blob_only", [False, True], ids=["sha256", "git_blob"])
def test_a_corrupted_file_is_refused_naming_it(server, subset, tmp_path, blob_only: bool) -> None:
    files, _ = bovine(subset)
    victim = sorted(files)[3]
    manifest = write_manifest(tmp_path / "m.tsv", files, (victim,) if blob_only else ())
    serve(server, files | {victim: files[victim].replace(b"A", b"C", 1)})
    name = victim.rsplit("/", 1)[1]
    with pytest.raises(InputError, match=f"{name}.*(git blob id|has sha256).*the file was removed"):
        download_dataset(spec(server, tmp_path, manifest, None))
    assert not (tmp_path / "raw" / victim).exists() and not (tmp_path / "pas.tsv.gz").exists()

    serve(server, files)  # the server mended; a damaged copy on disk is refused too, naming its path
    download_dataset(spec(server, tmp_path, manifest, None))
    (tmp_path / "raw" / victim).write_bytes(files[victim][:-10])
    message = "git blob id" if blob_only else "does not match"
    with pytest.raises(InputError, match=rf"{re.escape(str(tmp_path / 'raw' / victim))}.*{message}"):
        download_dataset(spec(server, tmp_path, manifest, None))


def test_a_record_that_is_not_a_pas_window_names_file_line_and_field(server, subset, tmp_path) -> None:
    files, _ = bovine(subset)
    victim = sorted(files)[0]
    lines = files[victim].decode().splitlines(keepends=True)
    lines[3] = lines[3][:300] + "GGGGGG" + lines[3][306:]  # the second record's hexamer
    files = files | {victim: "".join(lines).encode()}
    serve(server, files)
    with pytest.raises(InputError, match=rf"{victim}, line 3, column 'sequence': holds 'GGGGGG' at 301-306, not the"):
        download_dataset(spec(server, tmp_path, write_manifest(tmp_path / "m.tsv", files), None))
    assert not (tmp_path / "pas.tsv.gz").exists()


def test_the_real_manifest_lists_every_pas_file_of_the_pinned_tree() -> None:
    files = read_manifest(MANIFEST)
    names = {f.name for f in files}
    assert len(files) == len(names) == 4 * 16 * 2  # species x motifs (15 + AATAAA) x labels
    assert {f.name for f in files if f.sha256 is None} == {
        f"{sp}_{neg}AATAAA_polyA.fa" for sp in ("hs", "mm", "bt", "dm") for neg in ("", "neg")
    }
    assert all(len(f.git_blob) == 40 for f in files)


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_git_blob_id_is_gits(tmp_path: Path) -> None:
    path = tmp_path / "x.fa"
    path.write_bytes(gzip.decompress(PAS_SUBSET.read_bytes())[:5000])
    out = subprocess.run(["git", "hash-object", str(path)], capture_output=True, text=True, check=True)
    assert git_blob_id(path) == out.stdout.strip()


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"include_aataaa": True}, "dataset.sha256 pins the table without the AATAAA files; with include_aataaa=true"),
        ({"source": "zenodo"}, r"source must be one of \['deepgsr', 'file'\], got 'zenodo'"),
        ({"copy_from": "x"}, r"unknown key\(s\) \['copy_from'\] for source deepgsr"),
        ({"url": None}, r"dataset.url is required"),
        ({"sha256": "abc"}, "dataset.sha256 must be 64 hex digits or null"),
    ],
)
def test_a_bad_dataset_config_names_the_key(tmp_path: Path, overrides: dict, match: str) -> None:
    cfg = compose_config(["dataset=deepgsr_pas", f"paths.data_dir={tmp_path}"]).dataset
    with pytest.raises(ConfigError, match=match):
        DatasetSpec.from_config({**cfg, **overrides})


@pytest.fixture
def as_download_py(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["download.py"])


def test_the_command_places_both_tables_where_data_gsr_full_reads_them(
    server, subset, tmp_path, make_cfg, as_download_py
) -> None:
    """``python download.py dataset=deepgsr_pas`` (its URL and manifest pointed here) and ``dataset=gsr_tis
    dataset.copy_from=...``, then ``task=gsr data=gsr_full`` trains on what they wrote."""
    files, text = bovine(subset)
    serve(server, files)
    data = tmp_path / "data"
    pas = [f"dataset.url={base_url(server)}", f"dataset.manifest={write_manifest(tmp_path / 'm.tsv', files)}",
           f"dataset.sha256={hashlib.sha256(text).hexdigest()}"]  # fmt: skip
    main(["dataset=deepgsr_pas", f"paths.data_dir={data}", *pas])
    tis_digest = hashlib.sha256(gzip.decompress(TIS_SUBSET.read_bytes())).hexdigest()
    main(["dataset=gsr_tis", f"paths.data_dir={data}", f"dataset.copy_from={TIS_SUBSET}", f"dataset.sha256={tis_digest}"])
    assert sorted(p.name for p in (data / "gsr").iterdir()) == [
        "deepgsr", "gsr_pas_deepgsr_4species.tsv.gz", "gsr_tis_3species.tsv.gz"
    ]  # fmt: skip
    assert table_sha256(data / "gsr" / "gsr_tis_3species.tsv.gz") == tis_digest

    with pytest.raises(SystemExit, match=r"^Configuration error: dataset gsr_tis: dataset.copy_from is required"):
        main(["dataset=gsr_tis", f"paths.data_dir={data}"])
    with pytest.raises(SystemExit, match=r"^Input error: dataset.copy_from=.*/nowhere.tsv.gz is not a file"):
        main(["dataset=gsr_tis", f"paths.data_dir={data}", f"dataset.copy_from={tmp_path / 'nowhere.tsv.gz'}"])
    with pytest.raises(SystemExit, match=r"^Input error: .*tis_subset.tsv.gz: the table made from it has sha256 "):
        main(["dataset=gsr_tis", f"paths.data_dir={tmp_path / 'other'}", f"dataset.copy_from={TIS_SUBSET}"])

    for signal, split in (("pas", "random"), ("tis", "block")):
        cfg = make_cfg("train", ["task=gsr", "data=gsr_full", f"paths.data_dir={data}", f"data.signals=[{signal}]",
                                 f"data.split={split}", "data.species.pas=[bovine]", "model.block_size=128"])  # fmt: skip
        dm = hydra.utils.instantiate(cfg.data, tokenizer=KmerTokenizer())
        dm.setup()
        assert all(len(t) and set(t.signal) == {signal} for t in dm.tables.values())


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED / "gsr_pas_deepgsr_4species.tsv.gz").is_file(), reason="needs the shared data folder")
def test_the_shared_tables_are_rebuilt_byte_for_byte(server, tmp_path) -> None:
    """The shared PAS table back into its 120 FASTA files: each has the real manifest's sha256, and the command's own
    config (only its URL here) builds exactly the shared text, the pinned digest; the shared TIS copy installs."""
    shared = SHARED / "gsr_pas_deepgsr_4species.tsv.gz"
    _, rows = table_rows(shared)
    files = fasta_files(rows)
    pinned = {f.path: f.sha256 for f in read_manifest(MANIFEST) if f.sha256}
    assert {path: hashlib.sha256(data).hexdigest() for path, data in files.items()} == pinned
    serve(server, files)
    cfg = compose_config(["dataset=deepgsr_pas", f"paths.data_dir={tmp_path}", f"dataset.url={base_url(server)}"])
    assert download_dataset(cfg.dataset) == cfg.dataset.sha256 == table_sha256(shared)
    table = read_gsr_tsv(cfg.dataset.table, "pas")
    _, dropped = deduplicate(table)
    assert (len(table), sum(dropped.values())) == (59_426, 8_469)  # the data README's counts

    tis = compose_config(["dataset=gsr_tis", f"paths.data_dir={tmp_path}",
                          f"dataset.copy_from={SHARED / 'gsr_tis_3species.tsv.gz'}"]).dataset  # fmt: skip
    assert download_dataset(tis) == tis.sha256

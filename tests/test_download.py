"""Corpus download: full fetch, resume with HTTP Range, checksum and server errors, the ``download`` command (``python
download.py`` in a clone, ``dnagpt download`` installed).

Against a local server on 127.0.0.1 only.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from dnagpt.commands import compose_config
from dnagpt.commands.download import main
from dnagpt.data.corpus import Corpus
from dnagpt.data.download import SUMS_FILE, DownloadError, download_corpus, download_file
from dnagpt.utils.errors import ConfigError, DnagptError, InputError

CONF = Path(__file__).resolve().parents[1] / "dnagpt" / "conf"
PAYLOAD = np.random.default_rng(0).integers(0, 256, size=300_000, dtype=np.uint8).tobytes()
SHA = hashlib.sha256(PAYLOAD).hexdigest()


class RangeHandler(BaseHTTPRequestHandler):
    """Serves PAYLOAD at any path but ``/missing`` (404), honouring ``Range: bytes=N-`` unless the server says otherwise."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        srv = self.server
        srv.requests.append(self.headers.get("Range"))
        if self.path == "/missing":
            self.send_error(404)
            return
        start = 0
        rng = self.headers.get("Range")
        if rng and srv.honour_range:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(PAYLOAD):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(PAYLOAD)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
        else:
            self.send_response(200)
        body = PAYLOAD[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        srv.bytes_sent += len(body)  # counted before sending: the client may return before this thread runs again
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    srv.requests, srv.bytes_sent, srv.honour_range = [], 0, True
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def url(srv: ThreadingHTTPServer, name: str = "g.fa.gz") -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}/{name}"


def test_full_download_and_skip_when_present(server, tmp_path):
    dest = tmp_path / "g.fa.gz"
    assert download_file(url(server), dest, SHA) == SHA
    assert dest.read_bytes() == PAYLOAD and not dest.with_name("g.fa.gz.part").exists()
    assert download_file(url(server), dest, SHA) == SHA
    assert len(server.requests) == 1  # the second call only verified the file


def test_resume_fetches_only_the_rest(server, tmp_path):
    dest = tmp_path / "g.fa.gz"
    dest.with_name("g.fa.gz.part").write_bytes(PAYLOAD[:123_456])
    assert download_file(url(server), dest, SHA) == SHA
    assert dest.read_bytes() == PAYLOAD
    assert server.requests == ["bytes=123456-"] and server.bytes_sent == len(PAYLOAD) - 123_456


def test_server_ignoring_range_restarts(server, tmp_path):
    server.honour_range = False
    dest = tmp_path / "g.fa.gz"
    dest.with_name("g.fa.gz.part").write_bytes(b"garbage" * 10)
    assert download_file(url(server), dest, SHA) == SHA and dest.read_bytes() == PAYLOAD


def test_complete_part_file_is_finished_without_refetching(server, tmp_path):
    dest = tmp_path / "g.fa.gz"
    dest.with_name("g.fa.gz.part").write_bytes(PAYLOAD)
    assert download_file(url(server), dest, SHA) == SHA
    assert server.bytes_sent == 0


def test_checksum_mismatch_is_an_error(server, tmp_path):
    dest = tmp_path / "g.fa.gz"
    with pytest.raises(ValueError, match=f"sha256 {SHA}, the corpus expects 0000"):
        download_file(url(server), dest, "0" * 64)
    assert not dest.exists() and not dest.with_name("g.fa.gz.part").exists()
    dest.write_bytes(PAYLOAD[:10])  # an existing file is verified too
    with pytest.raises(ValueError, match="does not match the corpus"):
        download_file(url(server), dest, SHA)


def test_unreachable_server_reports_the_url(tmp_path):
    srv = ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    port = srv.server_address[1]
    srv.server_close()  # nothing listens on this port now
    with pytest.raises(ConnectionError, match=f"127.0.0.1:{port}/x.*failed after 2 attempts"):
        download_file(f"http://127.0.0.1:{port}/x", tmp_path / "x", retries=2, timeout=5)


def test_download_corpus_records_unknown_checksums(server, tmp_path):
    corpus = Corpus.from_config(
        {
            "name": "t",
            "root": str(tmp_path / "genomes"),
            "species": {
                "human": {"fasta": "h.fa.gz", "url": url(server, "h.fa.gz"), "sha256": None},
                "yeast": {"fasta": "y.fa.gz", "url": url(server, "y.fa.gz"), "sha256": SHA},
            },
        }
    )
    assert download_corpus(corpus) == {"human": SHA, "yeast": SHA}
    sums = (tmp_path / "genomes" / SUMS_FILE).read_text().splitlines()
    assert sums == [f"{SHA}  h.fa.gz", f"{SHA}  y.fa.gz"]
    (tmp_path / "genomes" / "h.fa.gz").write_bytes(b"tampered")
    with pytest.raises(ValueError, match="does not match"):  # later runs verify against the recorded checksum
        download_corpus(corpus)


def test_http_error_names_the_url_and_status(server, tmp_path):
    with pytest.raises(DownloadError, match=r"/missing: the server answered HTTP 404 Not Found; check the url"):
        download_file(url(server, "missing"), tmp_path / "x")
    assert server.requests == [None]  # an HTTP error is not retried


def test_malformed_sums_file_names_file_and_line(server, tmp_path):
    root = tmp_path / "genomes"
    root.mkdir()
    (root / SUMS_FILE).write_text(f"{SHA}  h.fa.gz\n\nnot-a-checksum  y.fa.gz\n")
    corpus = Corpus.from_config(
        {"name": "t", "root": str(root), "species": {"human": {"fasta": "h.fa.gz", "url": url(server)}}}
    )
    with pytest.raises(InputError, match=rf"{SUMS_FILE}, line 3: expected '<64 hex digits>  <file name>', got 'not-a"):
        download_corpus(corpus)


@pytest.fixture(autouse=True)
def as_download_py(monkeypatch: pytest.MonkeyPatch) -> None:
    """The command's messages name the program it was started as: here the clone's script."""
    monkeypatch.setattr(sys, "argv", ["download.py"])


def _mini_conf(tmp_path: Path) -> Path:
    """The real corpus and paths groups under a train.yaml reduced to them."""
    conf = tmp_path / "conf"
    for group in ("corpus", "paths"):
        shutil.copytree(CONF / group, conf / group)
    (conf / "train.yaml").write_text("defaults:\n  - _self_\n  - corpus: bundled\n  - paths: default\n")
    return conf


def test_cli_composes_the_corpus_config(server, tmp_path, monkeypatch):
    """``python download.py corpus=human`` with the real corpus YAML, its URL pointed at the test server."""
    monkeypatch.chdir(tmp_path)
    main(
        [
            "corpus=human",
            f"paths.data_dir={tmp_path / 'data'}",
            f"corpus.species.human.url={url(server)}",
        ],
        config_dir=_mini_conf(tmp_path),
    )
    fasta = tmp_path / "data" / "genomes" / "Homo_sapiens.GRCh38.dna_sm.primary_assembly.fa.gz"
    assert fasta.read_bytes() == PAYLOAD
    assert sorted(p.name for p in tmp_path.iterdir()) == ["conf", "data"]  # no run directory left behind


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["corpus=nope"], "python download.py corpus=nope: In 'train': Could not find 'corpus/nope'; available: bundled, "),
        (
            ["corpus.bogus=1"],
            "python download.py corpus.bogus=1: Could not override 'corpus.bogus'. To append to your config use",
        ),
    ],
)
def test_cli_bad_override_is_one_paragraph(tmp_path, monkeypatch, overrides, message):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit) as exit_:
        main(overrides, config_dir=_mini_conf(tmp_path))
    assert str(exit_.value).startswith(f"Configuration error: {message}") and "\n" not in str(exit_.value)


def test_compose_config_raises_for_its_caller(tmp_path):
    with pytest.raises(ConfigError, match="Could not find 'corpus/nope'"):
        compose_config(["corpus=nope"], config_dir=_mini_conf(tmp_path))


def test_cli_download_error_is_one_paragraph(server, tmp_path, monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    overrides = ["corpus=human", f"paths.data_dir={tmp_path / 'data'}", f"corpus.species.human.url={url(server, 'missing')}"]
    with pytest.raises(SystemExit, match="^Download error: http://127.0.0.1:.*/missing: the server answered HTTP 404"):
        main(overrides, config_dir=_mini_conf(tmp_path))
    assert issubclass(DownloadError, DnagptError) and issubclass(DownloadError, ConnectionError)


def test_cli_bad_corpus_is_one_paragraph(tmp_path, monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit, match=r"^Configuration error: corpus human: species\.human\.weight must be > 0"):
        main(["corpus=human", "corpus.species.human.weight=0"], config_dir=_mini_conf(tmp_path))


MY_GENOME = f"""\
name: my_genome
root: ${{paths.data_dir}}/genomes
species:
  human: {{fasta: mine.fa.gz, url: null, sha256: {SHA}}}
"""


def test_cli_downloads_a_corpus_of_the_users_config_dir(server, tmp_path, monkeypatch):
    """``dnagpt download --config-dir myconf corpus=my_genome``: a corpus of the user's own, next to ours."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "myconf" / "corpus").mkdir(parents=True)
    (tmp_path / "myconf" / "corpus" / "my_genome.yaml").write_text(MY_GENOME)
    monkeypatch.setattr(sys, "argv", ["/venv/bin/dnagpt-download"])
    main(["--config-dir", "myconf", "corpus=my_genome", f"corpus.species.human.url={url(server)}"])
    assert (tmp_path / "data" / "genomes" / "mine.fa.gz").read_bytes() == PAYLOAD  # under the launch directory
    with pytest.raises(SystemExit, match=r"^Configuration error: dnagpt-download corpus=my_genome: In 'train': Could "
                       r"not find 'corpus/my_genome'; available: bundled, bundled_human,"):  # fmt: skip
        main(["corpus=my_genome"])  # without the folder

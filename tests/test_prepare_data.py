"""The encoded genome cache at scale: the streaming encoder against pyfastx, and several processes preparing at once.

Concurrency is tested with real processes on a few-MB FASTA of the bundled real genomes: the writer is slowed by a
small read piece (``fasta._PIECE``), never by a hook in the library.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyfastx
import pytest

from dnagpt.data import fasta
from dnagpt.data.fasta import MANIFEST_FILE, SEQ_FILE, EncodedGenome, build_cache, cache_path_for
from dnagpt.tokenizer import KmerTokenizer
from dnagpt.utils.errors import InputError, MissingFileError
from dnagpt.utils.locks import writer_lock
from dnagpt.utils.resolvers import resource_path

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = sorted(Path(resource_path("bundled")).glob("*.fa.gz"))
TOK = KmerTokenizer()

# a child process: build_cache with a given read piece (small = slow), logging to stderr, the folder on stdout
CHILD = """
import logging, sys
from dnagpt.data import fasta
from dnagpt.tokenizer import KmerTokenizer
logging.basicConfig(level=logging.INFO, format="%(message)s")
fasta._PIECE = int(sys.argv[3])
print(fasta.build_cache(sys.argv[1], sys.argv[2], KmerTokenizer()))
"""
SLOW_PIECE = 16  # bytes per step: the test genome then takes long enough to kill its writer half way


@pytest.fixture(scope="module")
def genome(tmp_path_factory) -> Path:
    """4.5 MB of real sequence in 8 records, soft-masking kept, in lines of 70."""
    path = tmp_path_factory.mktemp("genome") / "mix.fa"
    with open(path, "w") as fh:
        for src in (p for p in BUNDLED if p.name.split(".")[0] in ("human", "mouse", "worm", "yeast")):
            for name, seq in pyfastx.Fasta(str(src), build_index=False):
                fh.write(f">{src.name.split('.')[0]}_{name} from {src.name}\n")
                fh.writelines(seq[i : i + 70] + "\n" for i in range(0, len(seq), 70))
    return path


@pytest.fixture(scope="module")
def reference(genome, tmp_path_factory) -> tuple[bytes, dict]:
    """The cache of ``genome`` built by this process alone: (sequence bytes, manifest)."""
    out = build_cache(genome, tmp_path_factory.mktemp("ref"), TOK)
    return (out / SEQ_FILE).read_bytes(), json.loads((out / MANIFEST_FILE).read_text())


def _same_as_reference(out: Path, reference: tuple[bytes, dict]) -> bool:
    return (out / SEQ_FILE).read_bytes() == reference[0] and json.loads((out / MANIFEST_FILE).read_text()) == reference[1]


def _start(fasta_path: Path, root: Path, piece: int, log: Path) -> subprocess.Popen:
    with open(log, "w") as err:
        return subprocess.Popen([sys.executable, "-c", CHILD, str(fasta_path), str(root), str(piece)], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=err, text=True)  # fmt: skip


def _wait_for(condition, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


# ----- the encoder ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("src", BUNDLED, ids=[p.name for p in BUNDLED])
def test_cache_is_what_pyfastx_and_the_tokenizer_read(src, tmp_path):
    """The streaming encoder replaced pyfastx + ``clean`` per record: same names, bases and N counts, byte for byte."""
    genome = EncodedGenome(build_cache(src, tmp_path, TOK))
    records = list(pyfastx.Fasta(str(src), build_index=False))
    assert genome.names == [name for name, _ in records]
    for i, (_, seq) in enumerate(records):
        clean = TOK.clean(seq)
        assert np.array_equal(genome.window(i, 0, len(seq)), clean)
        assert genome.n_counts[i] == np.count_nonzero(clean == ord("N"))
    assert (genome.cache_dir / SEQ_FILE).stat().st_size == sum(len(s) for _, s in records)  # 1 byte per base


ODD = b"\n>r1 first\r\nACGTNacgtn\r\n\r\nRYKMswbdhv\r\n>r2\tsecond\nAC\n\n>r3\nA\nC\nG"  # CRLF, blank lines, no final \n


@pytest.mark.parametrize("piece", [1, 3, 7, 64, 1 << 20])
def test_encoding_does_not_depend_on_where_pieces_are_cut(tmp_path, monkeypatch, genome, reference, piece):
    odd = tmp_path / "odd.fa"
    odd.write_bytes(ODD)
    monkeypatch.setattr(fasta, "_PIECE", piece)
    g = EncodedGenome(build_cache(odd, tmp_path / "c", TOK))
    assert g.names == ["r1", "r2", "r3"] and g.lengths.tolist() == [20, 2, 3] and g.n_counts.tolist() == [12, 0, 0]
    assert g.window(0, 0, 20).tobytes() == b"ACGTNACGTNNNNNNNNNNN" and g.window(2, 0, 3).tobytes() == b"ACG"
    if piece >= 64:
        assert _same_as_reference(build_cache(genome, tmp_path / "big", TOK), reference)


@pytest.mark.parametrize("piece", [2, 5, 1 << 20])
def test_a_refused_letter_names_its_line_record_and_position(tmp_path, monkeypatch, piece):
    path = tmp_path / "x.fa"
    path.write_bytes(b">r1\nACGT\n>r2 y\nACGTACGTAC\nACGTUCGTAC\nACGT\n")
    monkeypatch.setattr(fasta, "_PIECE", piece)
    with pytest.raises(InputError, match=r"x\.fa, line 5: record 'r2', piece starting at base \d+: invalid DNA "
                       r"character 'U' at position \d+") as err:  # fmt: skip
        build_cache(path, tmp_path / "c", TOK)
    start, pos = map(int, (str(err.value).split("base ")[1].split(":")[0], str(err.value).rsplit(" ", 1)[1]))
    assert start + pos == 14  # the 15th base of r2, however the file was cut
    assert not list((tmp_path / "c").glob("x-*"))


def test_a_duplicate_name_names_its_line(tmp_path):
    path = tmp_path / "d.fa"
    path.write_bytes(b">a\nAC\n>b\nGT\n>a second\nAA\n")
    with pytest.raises(InputError, match=r"d\.fa, line 5: duplicate record name 'a' \(record 3\)"):
        build_cache(path, tmp_path / "c", TOK)


def test_a_missing_fasta_is_named(tmp_path):
    with pytest.raises(MissingFileError, match="FASTA file not found: .*nope.fa"):
        build_cache(tmp_path / "nope.fa", tmp_path / "c", TOK)


# ----- several processes ----------------------------------------------------------------------------------------------
def test_processes_started_together_encode_once(genome, reference, tmp_path):
    procs = [_start(genome, tmp_path / "c", 1 << 20, tmp_path / f"{i}.log") for i in range(4)]
    outs = [p.communicate()[0].strip() for p in procs]
    logs = [(tmp_path / f"{i}.log").read_text() for i in range(4)]
    assert all(p.returncode == 0 for p in procs), logs
    assert sum("Encoded " in log for log in logs) == 1, logs
    assert len(set(outs)) == 1 and _same_as_reference(Path(outs[0]), reference)


def test_a_waiting_process_names_the_writer_and_uses_its_cache(genome, reference, tmp_path):
    """While one process holds the writer lock, the others wait; then exactly one of them encodes."""
    out = cache_path_for(genome, tmp_path / "c")
    out.parent.mkdir()
    with writer_lock(out):
        procs = [_start(genome, tmp_path / "c", 1 << 20, tmp_path / f"{i}.log") for i in range(2)]
        logs = [tmp_path / f"{i}.log" for i in range(2)]
        _wait_for(lambda: all("Waiting for " in log.read_text() for log in logs), "both children to wait")
        assert not out.exists()
    outs = [p.communicate()[0].strip() for p in procs]
    texts = [log.read_text() for log in logs]
    assert all(f"Waiting for pid {os.getpid()} on {socket.gethostname()} to finish encoding" in t for t in texts)
    assert sum("Encoded " in t for t in texts) == 1, texts
    assert outs == [str(out)] * 2 and _same_as_reference(out, reference)


def test_a_killed_writer_leaves_no_cache_and_the_next_call_rebuilds(genome, reference, tmp_path, caplog):
    root = tmp_path / "c"
    writer = _start(genome, root, SLOW_PIECE, tmp_path / "w.log")
    _wait_for(lambda: any(f.stat().st_size > 100_000 for f in root.glob(f"*.tmp/{SEQ_FILE}")), "the writer to write")
    assert writer.poll() is None, "the writer finished before it was killed: make the test genome bigger"
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    out = cache_path_for(genome, root)
    assert not out.exists()  # no cache visible, whole or half
    (half,) = root.glob("*.tmp")
    assert half.name == f".{out.name}.{writer.pid}@{socket.gethostname()}.tmp"
    with open(root / f".{out.name}.lock") as lock:  # the kernel released the dead writer's lock: it is free at once
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    assert build_cache(genome, root, TOK) == out
    assert f"Removing {half}, left by an interrupted encoding" in caplog.text
    assert not list(root.glob("*.tmp")) and _same_as_reference(out, reference)


def test_another_hosts_half_written_folder_is_removed_only_once_abandoned(genome, tmp_path):
    """A live writer on another node may be using its folder: only one untouched for a while is removed."""
    out = cache_path_for(genome, tmp_path)
    fresh, stale = (tmp_path / f".{out.name}.{pid}@other-node.tmp" for pid in (11, 12))
    for folder in (fresh, stale):
        folder.mkdir()
        (folder / SEQ_FILE).write_bytes(b"ACGT")
    old = time.time() - fasta._ABANDONED_S - 60
    for p in (stale / SEQ_FILE, stale):
        os.utime(p, (old, old))
    build_cache(genome, tmp_path, TOK)
    assert fresh.exists() and not stale.exists()


# ----- a broken cache folder ------------------------------------------------------------------------------------------
BREAKAGES = {
    "truncated sequence": (lambda out: os.truncate(out / SEQ_FILE, 1000), r"seq\.u8 holds 1,000 bytes, its records "),
    "no sequence": (lambda out: (out / SEQ_FILE).unlink(), r"no seq\.u8"),
    "no manifest": (lambda out: (out / MANIFEST_FILE).unlink(), r"no manifest\.json"),
    "cut manifest": (lambda out: os.truncate(out / MANIFEST_FILE, 100), r"manifest\.json is unreadable"),
    "other version": (
        lambda out: (out / MANIFEST_FILE).write_text(
            json.dumps({**json.loads((out / MANIFEST_FILE).read_text()), "version": 1})
        ),
        r"cache version 1, this program reads 2",
    ),
}


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_a_broken_cache_folder_is_refused_by_name_and_rebuilt(genome, reference, tmp_path, caplog, breakage):
    out = build_cache(genome, tmp_path, TOK)
    damage, message = BREAKAGES[breakage]
    damage(out)
    with pytest.raises(
        InputError, match=rf"^{re.escape(str(out))}: incomplete or corrupt encoded genome: {message}.*delete the folder"
    ):
        EncodedGenome(out)
    assert build_cache(genome, tmp_path, TOK) == out
    assert f"{out}: incomplete or corrupt encoded genome" in caplog.text and "encoding it again" in caplog.text
    assert _same_as_reference(out, reference)
    assert EncodedGenome(out).lengths.sum() == len(reference[0])


def test_a_folder_that_does_not_exist_is_a_missing_file(tmp_path):
    with pytest.raises(MissingFileError, match="no encoded genome at .*prepare_data"):
        EncodedGenome(tmp_path / "nothing")


# ----- the benchmark's genome -----------------------------------------------------------------------------------------
def test_the_benchmark_genome_looks_real_and_encodes(tmp_path):
    from bench.prepare_data import write_fasta

    path = tmp_path / "g.fa"
    size = write_fasta(path, 3_000_000)
    text = path.read_bytes()
    widths = {len(line) for line in text.split(b"\n") if line and not line.startswith(b">")}
    assert max(widths) == 80 and {60, 70} <= widths
    assert 0.3 < sum(map(text.count, b"acgt")) / size < 0.5  # soft-masked
    g = EncodedGenome(build_cache(path, tmp_path / "c", TOK))
    assert len(g.names) == 11 and 3_000_000 - 8 <= g.lengths.sum() <= 3_000_000
    assert 0 < g.n_counts.sum() < 0.1 * g.lengths.sum()


def test_the_gzip_speed_rows_measure_both_inflaters(tmp_path):
    """One round of the bench's gzip section, through its real child processes: the encoder's rate against the
    read-through with ISA-L (the inflater build_cache uses) and against zlib's inflate alone."""
    from bench.prepare_data import _speed_rows, gzip_copy, write_fasta

    plain, gz = tmp_path / "g.fa", tmp_path / "g.fa.gz"
    size = write_fasta(plain, 1_000_000)
    gzip_copy(plain, gz)
    rows, built = _speed_rows(gz, tmp_path / "cache", "gzip", size, rounds=1)
    baselines = [row.baseline for row in rows]
    assert baselines.count("gzip read-through (ISA-L)") == 2 and "zlib's inflate alone (gzip module)" in baselines
    assert all(row.value > 0 and row.baseline_value > 0 for row in rows)
    lines = plain.read_bytes().split(b"\n")
    assert built["bases"] == sum(len(line) for line in lines if not line.startswith(b">"))  # every base, once

"""Genome-scale ``prepare_data``: encoding speed, cache size, memory, and several processes preparing at once.

    python -m bench.prepare_data [--quick] [--gb BILLION_BASES] [--rounds 2] [--json PATH]

Generates a FASTA of ``--gb`` billion bases (default 2^30: a 1.09 GB file) in a temporary folder, deleted afterwards:
several chromosome-like records and a few small scaffolds, lines of 60, 70 or 80 bases, soft-masked (lower-case) runs
over about 40 % of the bases, runs of N at the record ends and in gaps, a few IUPAC codes; plain and gzipped. Then,
each step in a child process (under ``nice -n 10``) so that the bench's own memory does not count; the child reports
its wall and CPU seconds around the call and its peak resident memory:

* ``build_cache`` MB/s of FASTA text, interleaved with the I/O ceiling of the same file, a plain ``read`` loop or a
  gzip read-through with the inflater ``build_cache`` uses (ISA-L) and with zlib's (median of ``--rounds``), and
  pyfastx's own index building as another reader's first cost;
* cache bytes per base; peak RSS at two genome sizes (1/8 and the full size: flat means it does not grow);
* 4 processes calling ``build_cache`` at once on one cache, against 4 on separate caches (each encodes, as every
  process did before the writer lock); how many encoded, from their logs;
* the writer killed (SIGKILL) half way: whether any cache became visible, and the next call against a build.

``--quick`` (what ``run(quick=True)`` does): 96 Mb and 2 rounds. On a shared host the wall figures follow the load;
the CPU ones say what one free core gives.
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from isal import igzip

from dnagpt.data.fasta import SEQ_FILE, build_cache, cache_path_for
from dnagpt.tokenizer import KmerTokenizer

if TYPE_CHECKING:  # bench.common imports torch, which the measured children (this module) must not load
    from bench.common import Row

ROOT = Path(__file__).resolve().parents[1]
QUICK_BASES, FULL_BASES = 96_000_000, 1 << 30  # the full file is over 1 GiB (line ends and headers added)
TARGET_MB_S = 200.0
_BLOCK = 1 << 22  # bases generated per step
_IUPAC = np.frombuffer(b"RYKMSW", dtype=np.uint8)
_GC41 = np.frombuffer(b"A" * 75 + b"C" * 53 + b"G" * 53 + b"T" * 75, dtype=np.uint8)  # a random byte -> a base


# ----- a real-looking FASTA -------------------------------------------------------------------------------------------
def _record_sizes(n_bases: int) -> list[int]:
    """Eight chromosome-like records of falling size and three small scaffolds (an organelle, unplaced contigs)."""
    small = [16_569, 41_000, 180_000]
    weights = np.array([25, 20, 15, 12, 10, 8, 6, 4], dtype=float)
    big = np.floor(weights / weights.sum() * (n_bases - sum(small))).astype(int).tolist()
    return big + small


def _bases(rng: np.random.Generator, n: int, gap_at: int | None) -> np.ndarray:
    """``n`` bases: GC 41 %, soft-masked runs (mean 300 bp lower, 450 bp upper), a 50 kb N gap at ``gap_at``."""
    seq = _GC41[rng.integers(0, 256, size=n, dtype=np.uint8)]
    runs = rng.geometric(np.tile([1 / 450, 1 / 300], n // 300 + 2))
    lower = np.repeat(np.arange(len(runs)) % 2 == 1, runs)[:n]
    seq[lower] += 32  # a-z
    seq[rng.integers(0, n, size=max(1, n // 1_000_000))] = rng.choice(_IUPAC)
    if gap_at is not None:
        seq[gap_at : gap_at + 50_000] = ord("N")
    return seq


def write_fasta(path: Path, n_bases: int, seed: int = 0) -> int:
    """Write the test genome (module docstring) of ``n_bases`` bases; return the file's size in bytes."""
    rng = np.random.default_rng(seed)
    with open(path, "wb") as fh:
        for i, size in enumerate(_record_sizes(n_bases)):
            width = (60, 70, 80)[i % 3]
            fh.write(f">chr{i + 1} generated test record {i + 1}, {size} bp\n".encode())
            telomere = min(10_000, size // 10)
            done, pending = 0, np.empty(0, dtype=np.uint8)
            while done < size:
                n = min(_BLOCK, size - done)
                gap = int(rng.integers(0, n - 50_000)) if n > 1_000_000 and rng.random() < 0.3 else None
                block = _bases(rng, n, gap)
                if done == 0:
                    block[:telomere] = ord("N")
                if done + n == size:
                    block[-telomere:] = ord("N")
                done += n
                pending = np.concatenate([pending, block])
                rows = len(pending) // width if done < size else -(-len(pending) // width)
                _write_lines(fh, pending[: rows * width], width)
                pending = pending[rows * width :]
    return path.stat().st_size


def _write_lines(fh, seq: np.ndarray, width: int) -> None:
    full = len(seq) // width * width
    if full:
        lines = np.concatenate([seq[:full].reshape(-1, width), np.full((full // width, 1), 10, np.uint8)], axis=1)
        fh.write(lines.tobytes())
    if full < len(seq):
        fh.write(seq[full:].tobytes() + b"\n")


def gzip_copy(src: Path, dst: Path) -> None:
    with open(src, "rb") as fin, gzip.GzipFile(dst, "wb", compresslevel=6, mtime=0) as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)


# ----- children: each measures itself ---------------------------------------------------------------------------------
def _child(argv: list[str]) -> dict:
    """One measured step in this (child) process: ``build FASTA ROOT``, ``read FASTA`` (through ISA-L when gzip),
    ``zlib FASTA`` (gzip through the standard library) or ``pyfastx FASTA``."""
    what, fasta = argv[0], Path(argv[1])
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    tokenizer = KmerTokenizer()
    before = _peak_rss_mb()
    start, cpu = time.perf_counter(), time.process_time()
    if what == "build":
        out = build_cache(fasta, argv[2], tokenizer)
        result = {"cache_bytes": sum(f.stat().st_size for f in out.iterdir()), "bases": (out / SEQ_FILE).stat().st_size}
    elif what in ("read", "zlib"):  # the inflater build_cache uses (ISA-L), or the standard library's zlib
        opener = open if fasta.suffix != ".gz" else igzip.open if what == "read" else gzip.open
        with opener(fasta, "rb") as fh:
            while fh.read(1 << 20):
                pass
        result = {}
    else:
        import pyfastx

        pyfastx.Fasta(str(fasta))  # builds the .fxi index next to the file
        result = {}
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {**result, "seconds": seconds, "cpu": cpu, "rss_before_mb": before, "peak_rss_mb": _peak_rss_mb()}


def _peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM), MB: unlike ``ru_maxrss`` it starts afresh at ``exec``, where
    ``ru_maxrss`` keeps the size of the parent that forked it. Not ``bench.common.status_mb``: the measured child must
    not import torch, which that module does."""
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) / 1024


def _command(*args: object) -> list[str]:
    return ["nice", "-n", "10", sys.executable, "-m", "bench.prepare_data", "--child", *map(str, args)]


def measure(*args: object) -> dict:
    """A child's own figures, and ``wall``: seconds from the parent's side, process start-up included."""
    start = time.perf_counter()
    done = subprocess.run(_command(*args), cwd=ROOT, capture_output=True, text=True, check=True)
    return {**json.loads(done.stdout.splitlines()[-1]), "wall": time.perf_counter() - start}


def build(fasta: Path, root: Path) -> dict:
    """One fresh ``build_cache`` (the cache folder is deleted afterwards)."""
    result = measure("build", fasta, root)
    shutil.rmtree(root)
    return result


def together(fasta: Path, roots: list[Path]) -> dict:
    """A process per root calls ``build_cache`` at once: wall seconds until all return, their CPU seconds in the call
    summed, and how many encoded. One root for all is ranks sharing a cache; a root each is what they cost without the
    lock (each encodes).
    """
    start = time.perf_counter()
    procs = [subprocess.Popen(_command("build", fasta, root), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for root in roots]  # fmt: skip
    outs = [p.communicate() for p in procs]
    seconds = time.perf_counter() - start
    if any(p.returncode for p in procs):
        raise SystemExit(f"a concurrent build failed:\n{outs}")
    for root in set(roots):
        shutil.rmtree(root)
    logs = [err for _, err in outs]
    return {
        "seconds": seconds,
        "cpu": sum(json.loads(out.splitlines()[-1])["cpu"] for out, _ in outs),
        "encoded": sum("Encoded " in log for log in logs),
        "waited": sum("Waiting for " in log for log in logs),
    }


def killed_then_rebuilt(fasta: Path, root: Path, bases: int) -> dict:
    """SIGKILL a writer once it has written half of ``bases``; whether a cache became visible; the next build."""
    proc = subprocess.Popen(_command("build", fasta, root), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    while sum(f.stat().st_size for f in root.glob(f"*.tmp/{SEQ_FILE}")) < bases // 2:
        if proc.poll() is not None:
            raise SystemExit("the writer finished before it could be killed")
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)  # ``nice`` executes python in its own process: this is the writer
    proc.wait()
    visible = cache_path_for(fasta, root).exists()
    half_written = len(list(root.glob("*.tmp")))
    rebuilt = measure("build", fasta, root)
    left = len(list(root.glob("*.tmp")))
    shutil.rmtree(root)
    return {**rebuilt, "visible_after_kill": visible, "half_written": half_written, "left_after_rebuild": left}


# ----- the bench ------------------------------------------------------------------------------------------------------
def run(quick: bool, n_bases: int | None = None, rounds: int | None = None) -> list[Row]:
    n_bases = n_bases or (QUICK_BASES if quick else FULL_BASES)
    rounds = rounds or 2
    with tempfile.TemporaryDirectory(prefix="dnagpt-prepare-") as tmp:
        return _measure_all(Path(tmp), n_bases, rounds)


def _measure_all(tmp: Path, n_bases: int, rounds: int) -> list[Row]:
    plain, gz, small = tmp / "genome.fa", tmp / "genome.fa.gz", tmp / "small.fa"
    start = time.perf_counter()
    size = write_fasta(plain, n_bases)
    gzip_copy(plain, gz)
    write_fasta(small, n_bases // 8, seed=1)
    made = time.perf_counter() - start
    label = f"{size / 1e9:.2f} GB" if size >= 1e9 else f"{size / 1e6:.0f} MB"
    rows, built = [], {}
    for kind, fasta in (("plain", plain), ("gzip", gz)):
        speed, built[kind] = _speed_rows(fasta, tmp / "cache", f"{kind} {label}", size, rounds)
        rows += speed
    rows[0].note += f"; the generated genome: plain and gzip ({gz.stat().st_size / size:.0%}) written in {made:.0f} s"
    rows += _size_and_memory_rows(built["plain"], build(small, tmp / "cache"), small, label)
    rows += _concurrency_rows(plain, tmp, size, built["plain"])
    return rows


def _speed_rows(fasta: Path, root: Path, label: str, size: int, rounds: int) -> tuple[list[Row], dict]:
    """MB of FASTA text per second, wall and CPU, against the read-through of the same file and pyfastx's index."""
    from bench.common import Row

    gzipped = fasta.suffix == ".gz"
    reads, zlib_reads, builds = [], [], []
    for _ in range(rounds):  # interleaved: the ceiling(s), then the build
        reads.append(measure("read", fasta))
        if gzipped:
            zlib_reads.append(measure("zlib", fasta))
        builds.append(build(fasta, root))
    indexed = measure("pyfastx", fasta)
    fasta.with_name(fasta.name + ".fxi").unlink(missing_ok=True)

    def rate(runs: list[dict], key: str) -> float:
        return size / 1e6 / statistics.median(r[key] for r in runs)

    ceiling = "gzip read-through (ISA-L)" if gzipped else "read-through"
    cpu = rate(builds, "cpu")
    verdict = "met" if cpu >= TARGET_MB_S else "missed"
    rows = [
        Row("prepare", f"encode {label}, wall", rate(builds, "seconds"), "MB/s", ceiling, rate(reads, "seconds"),
            note=f"median of {rounds}, interleaved; fsync of the cache included"),
        Row("prepare", f"encode {label}, CPU", cpu, "MB/cpu-s", ceiling, rate(reads, "cpu"),
            note=f"per second of the process's CPU time (what one free core gives); target >= {TARGET_MB_S:.0f} MB/s "
            f"{verdict}"),
        Row("prepare", f"encode {label} vs pyfastx", cpu, "MB/cpu-s", "pyfastx.Fasta builds its index",
            size / 1e6 / indexed["cpu"], note="what random access through pyfastx costs first; ours also cleans "
            "and checks every byte"),
    ]  # fmt: skip
    if gzipped:
        rows.append(Row("prepare", f"encode {label} vs zlib", cpu, "MB/cpu-s", "zlib's inflate alone (gzip module)",
                        rate(zlib_reads, "cpu"), note="the ceiling before ISA-L: inflating with zlib, nothing else"))
    return rows, builds[-1]


def _size_and_memory_rows(big: dict, small: dict, small_fasta: Path, label: str) -> list[Row]:
    from bench.common import Row

    per_base = big["cache_bytes"] / big["bases"]
    return [
        Row("prepare", "bases per cache byte", 1 / per_base, "bp/byte", "1 byte per base", 1.0, target=0.99,
            note=f"{per_base:.4f} bytes/base (seq.u8 + manifest)"),
        Row("prepare", f"peak RSS flat: {small_fasta.stat().st_size / 1e6:.0f} MB vs {label}", small["peak_rss_mb"],
            "MB", f"peak RSS at {label}", big["peak_rss_mb"], target=0.9,
            note=f"VmHWM of the child, its interpreter and imports ({big['rss_before_mb']:.0f} MB) included; 1.0x = "
            "no growth with the genome"),
    ]  # fmt: skip


def _concurrency_rows(plain: Path, tmp: Path, size: int, built: dict) -> list[Row]:
    from bench.common import Row

    alone = build(plain, tmp / "cache")["wall"]
    shared = together(plain, [tmp / "cache"] * 4)
    separate = together(plain, [tmp / f"cache{i}" for i in range(4)])
    killed = killed_then_rebuilt(plain, tmp / "cache", built["bases"])
    return [
        Row("prepare", "4 processes at once, one cache", size / 1e6 / shared["cpu"], "MB/cpu-s",
            "4 caches (each encodes)", size / 1e6 / separate["cpu"],
            note=f"MB of FASTA ready for all 4 per CPU-second the 4 spent; {shared['encoded']} encoded, "
            f"{shared['waited']} waited for it. Wall: {shared['seconds']:.1f} s, 4 caches {separate['seconds']:.1f} s, "
            f"one process alone {alone:.1f} s (with process start-up; a nice'd process's share of a loaded host grows "
            "with the number of processes, so the wall comparison flatters the 4 separate ones)"),
        Row("prepare", "writer SIGKILLed half way, rebuilt", size / 1e6 / killed["cpu"], "MB/cpu-s", "a build",
            size / 1e6 / built["cpu"],
            note=f"cache visible after the kill: {killed['visible_after_kill']}; half-written folders "
            f"{killed['half_written']} -> {killed['left_after_rebuild']} after the next call"),
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> list[Row]:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        print(json.dumps(_child(argv[1:])))
        return []
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_BASES / 1e6:.0f} Mb instead of 2^30 bases")
    parser.add_argument("--gb", type=float, default=None, help="bases of the generated FASTA, in 1e9")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of read-through and build")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    from bench.common import report

    rows = run(args.quick, int(args.gb * 1e9) if args.gb else None, args.rounds)
    return report(rows, args.json)


if __name__ == "__main__":
    main()

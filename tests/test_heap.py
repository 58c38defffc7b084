"""Freed memory kept for the next training step (dnagpt/utils/heap.py): page faults counted, never timed."""

from __future__ import annotations

import ctypes
import platform
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from dnagpt import pipeline
from dnagpt.utils import heap

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt thresholds are glibc's")

# A step's pattern at its largest: a 64 MB fp32 gradient-sized buffer allocated, written and freed over and over
FAULTS = """
import resource, sys, torch
from dnagpt.utils.heap import keep_freed_memory
kept = sys.argv[1] == "keep" and keep_freed_memory()
for _ in range(15):  # the first steps map their pages either way (the heap settles in about 7: alignment slack)
    torch.empty(2**24).fill_(1.0)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    torch.empty(2**24).fill_(1.0)
print(kept, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 5)
"""


def faults_per_step(arm: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", FAULTS, arm], capture_output=True, text=True, check=True).stdout.split()
    return out[0], int(out[1])


@glibc
def test_kept_memory_is_not_faulted_in_again_at_every_step() -> None:
    kept, with_kept = faults_per_step("keep")
    default, with_default = faults_per_step("default")
    assert (kept, default) == ("True", "False")
    assert with_default > 2**24 * 4 // 4096 // 2  # glibc's default maps a 64 MB block afresh each time: >= 8k pages
    assert with_kept < 100


def test_without_glibc_mallopt_nothing_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_libc(name: str | None) -> None:
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(ctypes, "CDLL", no_libc)
    assert heap.keep_freed_memory() is False


@pytest.mark.parametrize("setting", [True, False])
def test_extras_switch_keeps_freed_memory(monkeypatch: pytest.MonkeyPatch, setting: bool) -> None:
    calls = []
    monkeypatch.setattr(pipeline, "keep_freed_memory", lambda: calls.append(True))
    pipeline.apply_extras(OmegaConf.create({"extras": {"keep_freed_memory": setting, "print_config": False}}))
    assert calls == ([True] if setting else [])


# Three 768 MiB blocks from the heap (below the 1 GiB mmap threshold; pages never written), freed: 2.25 GiB at the top
TRIM = """
import ctypes
from dnagpt.utils.heap import keep_freed_memory
libc = ctypes.CDLL(None)
libc.sbrk.restype, libc.sbrk.argtypes = ctypes.c_void_p, (ctypes.c_long,)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
assert keep_freed_memory()
start = libc.sbrk(0)
blocks = [libc.malloc(768 << 20) for _ in range(3)]
peak = libc.sbrk(0)
for block in blocks:
    libc.free(block)
print((peak - start) >> 20, (peak - libc.sbrk(0)) >> 20)
"""


@glibc
def test_more_than_two_gib_freed_at_the_top_stays_in_the_heap() -> None:
    out = subprocess.run([sys.executable, "-c", TRIM], capture_output=True, text=True, check=True).stdout
    grown, given_back = map(int, out.split())  # MiB
    if grown < 3 * 768:
        pytest.skip(f"the heap grew by {grown} MiB, not 2,304: this system served the blocks otherwise (mmap, no memory)")
    assert given_back == 0  # with a 2 GiB - 1 trim threshold all 2,304 MiB went back to the system

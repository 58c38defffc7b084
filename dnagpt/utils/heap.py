"""Keep the memory a CPU training step frees, so the next step does not page-fault it back in (glibc only).

glibc serves allocations above its mmap threshold (128 KB, raised up to 32 MB as large blocks are freed) with fresh
``mmap`` pages and returns freed heap above its trim threshold to the kernel. A training step allocates and frees the
same large tensors every step (activations, their gradients, the head's logit blocks, the fp32 gradient of the 19,564 x
256 or 15,659 x 768 head weight: 20-48 MB), so each step touched 64-450 MB of fresh pages: 16-114 k minor page faults
per step on the project's 2-core VMs, a few microseconds each. They showed up as ops that first write a new output
(``fill_``, ``copy_``, softmax backward) running 2-60x slower inside the step than once the pages stay
(``bench/profile_step.py``).
:func:`keep_freed_memory` raises the mmap threshold and turns trimming off, once, so freed blocks stay in the heap
for the next step: no faults once the heap has settled (a few steps), the same peak RSS. ``bench.allocator`` times the
step with and without (the ``freed memory kept`` rows of ``python -m bench``). The memory is not given back to the
system until the process ends, which is what a training process wants.
"""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (glibc's malloc.h)
MMAP_THRESHOLD = 1 << 30  # blocks below 1 GiB come from the heap (the largest a step frees is a few hundred MB)
# mallopt(3)'s "never trim". The largest positive threshold (2 GiB - 1) was not enough: beside our tied-head arm in
# bench.time_to_quality, HF GPT-2's step freed more than that at the heap's top, 617 k faults per step
TRIM_THRESHOLD = -1


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds so freed blocks stay mapped; False where the C library is not glibc
    (musl, macOS, Windows: nothing changes there). Process-wide and for the process's lifetime; idempotent."""
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the symbols this process has loaded: glibc's where it runs on glibc
    except (OSError, TypeError, AttributeError):  # no such handle (Windows), or a C library without mallopt
        log.debug("No glibc mallopt: the allocator's thresholds stay as they are")
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    done = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    if not done:
        log.debug("mallopt refused the thresholds: the allocator's settings stay as they are")
    return done

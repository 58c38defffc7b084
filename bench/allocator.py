"""Our bf16 training step with freed memory kept (``dnagpt.utils.heap``, what training sets) against glibc's defaults.

The allocator's thresholds are process-wide, so each arm is its own spawned process with its own model; the parent
makes them take turns, one step call at a time (``rounds`` of them, median), so both see the same load. Each reports the
minor page faults of its timed calls: the cost this setting removes.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import resource
import statistics
from multiprocessing.connection import Connection

import torch

from bench.common import Row, device_seconds

ARMS = ("kept", "glibc default")
WARMUP = 5  # untimed step calls per arm: the kept heap settles in a few steps (training runs thousands)


def _arm(conn: Connection, shape: str, keep: bool, steps: int, threads: int) -> None:
    """Child: build the model, warm up, then time one call of ``steps`` steps per message until told to stop."""
    from bench.train_step import SHAPES, T, batch_size, build_model, make_step
    from dnagpt.utils.heap import keep_freed_memory

    torch.set_num_threads(threads)
    if keep and not keep_freed_memory():
        conn.send(None)
        return
    ids = torch.randint(34, SHAPES[shape][3], (batch_size(shape, "cpu"), T + 1))
    step = make_step("ours", build_model("ours", shape), ids, torch.bfloat16, steps)
    for _ in range(WARMUP):
        step()
    conn.send(ids[:, 1:].numel() * steps)
    while conn.recv():
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        seconds = device_seconds(step)
        conn.send((seconds, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults))


def compare(shape: str, rounds: int, steps: int = 1) -> dict[str, tuple[float, float]] | None:
    """Each arm's (tokens/s, minor page faults per step), medians over ``rounds`` turns; None without glibc."""
    ctx = multiprocessing.get_context("spawn")
    pipes, procs = {}, []
    for arm in ARMS:
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_arm, args=(child, shape, arm == "kept", steps, torch.get_num_threads()))
        proc.start()
        pipes[arm] = parent
        procs.append(proc)
    try:
        tokens = {arm: pipe.recv() for arm, pipe in pipes.items()}
        if tokens["kept"] is None:
            return None
        seconds: dict[str, list[float]] = {arm: [] for arm in ARMS}
        faults: dict[str, list[int]] = {arm: [] for arm in ARMS}
        for _ in range(rounds):
            for arm, pipe in pipes.items():
                pipe.send(True)
                secs, minflt = pipe.recv()
                seconds[arm].append(secs)
                faults[arm].append(minflt)
    finally:
        for pipe in pipes.values():
            with contextlib.suppress(OSError):  # an arm that died has closed its end
                pipe.send(False)
        for proc in procs:
            proc.join()
    return {arm: (tokens[arm] / statistics.median(seconds[arm]), statistics.median(faults[arm]) / steps)
            for arm in ARMS}  # fmt: skip


def rows(shape: str, rounds: int, steps: int = 1) -> list[Row]:
    """One row: tokens/s of the step with freed memory kept vs glibc's defaults; none where the libc is not glibc."""
    arms = compare(shape, rounds, steps)
    if arms is None:
        return []
    (kept, kept_faults), (default, default_faults) = arms["kept"], arms["glibc default"]
    return [Row("train step", f"{shape} bf16 ours, freed memory kept", kept, "tokens/s", "glibc default", default,
                note=f"minor page faults per step {kept_faults:,.0f} vs {default_faults:,.0f}; one process per arm, "
                "taking turns")]  # fmt: skip

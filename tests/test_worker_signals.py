"""DataLoader workers survive the SIGTERM a scheduler sends to every process of a job (the main process checkpoints)."""

import os
import signal
import time

from torch.utils.data import DataLoader, Dataset

from dnagpt.data.batching import ignore_preemption_signals


class Slow(Dataset):
    def __len__(self) -> int:
        return 1000

    def __getitem__(self, i: int) -> tuple[int, int]:
        time.sleep(0.005)
        return i, os.getpid()  # the worker that read the row


def first_batches_after_signalling_a_worker(worker_init_fn) -> list[int]:
    it = iter(DataLoader(Slow(), batch_size=2, num_workers=2, worker_init_fn=worker_init_fn))
    rows, pids = next(it)
    os.kill(int(pids[0]), signal.SIGTERM)
    time.sleep(0.3)
    got = rows.tolist()
    for _ in range(10):
        got += next(it)[0].tolist()
    return got


def test_workers_ignore_sigterm_and_keep_serving_in_order() -> None:
    assert first_batches_after_signalling_a_worker(ignore_preemption_signals) == list(range(22))


def test_without_it_a_signalled_worker_kills_the_loader() -> None:  # the failure the worker_init_fn exists for
    try:
        first_batches_after_signalling_a_worker(None)
    except RuntimeError as err:
        assert "exited unexpectedly" in str(err) or "killed by signal" in str(err)
    else:
        raise AssertionError("a worker killed by SIGTERM went unnoticed")

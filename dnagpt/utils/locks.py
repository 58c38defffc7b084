"""One writer per cache file or folder: the others wait for it, then read what it wrote (``writer_lock``)."""

import fcntl
import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)


@contextmanager
def writer_lock(out: Path, work: str = "encoding") -> Iterator[None]:
    """Hold ``.<name of out>.lock`` next to ``out`` exclusively while building it: one writer, the others wait here
    (the log says for whom: ``Waiting for pid N on host to finish <work> <name>``).

    ``flock``: the kernel releases the lock of a process that dies, however it dies, so a killed writer leaves no
    stale lock to break (the NFS client maps it onto a byte-range lock the server arbitrates between nodes; where a file
    system keeps it per node, such as Lustre mounted ``localflock``, it is one writer per node). The file, holding the
    writer's pid and host for the waiters' message, stays: deleting a lock file others hold open lets two writers in.
    On a file system without locks every process builds on its own, which is slower but as safe as the writer's own
    renaming of a finished result into place.
    """
    lock = out.parent / f".{out.name}.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 256, 0).decode(errors="replace") or "another process"
            log.info("Waiting for %s to finish %s %s", holder, work, out.name)
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as err:  # ENOLCK, ENOSYS, EOPNOTSUPP: no locks on this file system
            log.warning("Cannot lock %s (%s): other processes may be %s %s at the same time", lock, err, work, out.name)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock

"""Per-run exclusive locks, so that two processes (two sweeps of one file, a sweep and a
``train`` of the same run) never train the same run at once.

A lock is an advisory ``fcntl.flock`` on ``<runs_dir>/.locks/<run_id>.lock``: the kernel drops
it when its holder exits, however it exits, so a killed run never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_DIR = ".locks"


class RunLockTimeout(TimeoutError):
    """Another process held the run's lock for longer than the caller would wait."""


def lock_path(runs_dir: Path, run_id: str) -> Path:
    return Path(runs_dir) / LOCK_DIR / f"{run_id}.lock"


@contextmanager
def run_lock(runs_dir: Path, run_id: str, timeout_s: float | None = None,
             poll_s: float = 0.5, on_wait=None) -> Iterator[Path]:
    """Hold the exclusive lock of ``run_id`` for the ``with`` block.

    Blocks while another process holds it (``on_wait(path)`` is called once when that
    happens); raises :class:`RunLockTimeout` after ``timeout_s`` seconds (None: wait for ever).
    """
    path = lock_path(runs_dir, run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        waited = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not waited and on_wait is not None:
                    on_wait(path)
                waited = True
                if deadline is not None and time.monotonic() >= deadline:
                    raise RunLockTimeout(f"{path}: run {run_id} is being trained by another "
                                         f"process (waited {timeout_s:g} s)") from None
                time.sleep(poll_s)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield path
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def lock_held(runs_dir: Path, run_id: str) -> bool:
    """Whether another process holds the lock of ``run_id`` now (it is training the run). Asks
    for a shared lock without waiting and drops it at once; a missing lock file means no."""
    path = lock_path(runs_dir, run_id)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing the descriptor drops the shared lock, if taken
    return False

"""A campaign worker: a spawned process that trains the jobs its campaign sends it, one at a
time, until told to stop.

SIGTERM raises :class:`WorkerStop` (a ``BaseException``, so the run's own error handling does
not swallow it), after any checkpoint write in progress: the run's ``finally`` blocks remove
temporary files and release its lock, and its last checkpoint (written atomically after every
epoch) stays, so the run resumes from there.
SIGINT is ignored: a Ctrl-C reaches the whole process group, and the campaign decides.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import traceback
from multiprocessing.connection import Connection

READY, DONE = "ready", "done"


class WorkerStop(BaseException):
    """The campaign asked this worker to stop (SIGTERM)."""


# A stop that lands while a checkpoint is being written waits until the write is over (looked at
# again every STOP_RETRY_S by SIGALRM): the trainer writes best.pt then last.pt after an epoch,
# and stopping inside the second write would leave last.pt an epoch behind best.pt (resumable,
# but the epoch is repeated).
WRITERS = {"atomic_file", "atomic_write_bytes", "atomic_torch_save", "write_record"}
STOP_RETRY_S = 0.05


def _writing(frame) -> bool:
    while frame is not None:
        if frame.f_code.co_name in WRITERS:
            return True
        frame = frame.f_back
    return False


def _on_term(signum, frame) -> None:  # noqa: ARG001 - signal handler signature
    if _writing(frame):
        signal.setitimer(signal.ITIMER_REAL, STOP_RETRY_S)
        return
    raise WorkerStop()


def worker_main(conn: Connection, threads: int, tune: bool) -> None:
    """Receive ``(kind, key, payload)`` jobs on ``conn`` and answer ``(DONE, key, outcome,
    error)`` for each, where ``outcome`` is ``finished``, ``skipped`` or ``failed``; ``None``
    ends the worker."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _on_term)
    signal.signal(signal.SIGALRM, _on_term)  # a stop put off by a checkpoint write
    try:
        if tune:
            from ..allocator import tune_malloc

            tune_malloc()
        import torch
        import torch._dynamo  # noqa: F401 - the first optimizer imports it (seconds): now
        from tqdm.auto import tqdm

        # tqdm's default lock is a multiprocessing semaphore, which a stopped worker would
        # leave behind (the resource tracker warns); a thread lock does here
        tqdm.set_lock(threading.RLock())

        from ..models import registry

        torch.set_num_threads(max(1, threads))
        registry()  # import every model now, while the campaign builds its queue
        conn.send((READY, os.getpid()))
        while True:
            msg = conn.recv()
            if msg is None:
                break
            kind, key, payload = msg
            outcome, err = run_job(kind, payload)
            conn.send((DONE, key, outcome, err))
    except (WorkerStop, EOFError, BrokenPipeError):
        pass
    # every file the runs wrote is complete (atomic writes) and their locks go with the process:
    # skip the interpreter's and torch's teardown, which takes seconds (a CUDA context more)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGALRM, signal.SIG_IGN)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def run_job(kind: str, payload: dict) -> tuple[str, str | None]:
    """One job: ``run`` trains ``payload["spec"]`` (records and checkpoints in the given
    directories); ``teacher`` trains and labels the teacher of ``payload["sweep"]``."""
    from ..sweep import FAILED, FINISHED, _run_one, resolve_teachers

    if kind == "run":
        spec = payload["spec"]
        _, outcome, err = _run_one(spec, str(payload["records"]), str(payload["runs"]))
        return outcome, err
    if kind == "teacher":
        try:
            resolved = resolve_teachers(payload["sweep"], create=True)
        except Exception:  # noqa: BLE001 - reported to the campaign, which goes on
            return FAILED, traceback.format_exc()
        missing = [ds for ds in payload["sweep"].teachers if ds not in resolved.teachers]
        if missing:
            return FAILED, f"teacher labels for {missing} were not made"
        return FINISHED, None
    return FAILED, f"unknown job kind {kind!r}"

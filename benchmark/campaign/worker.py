"""A campaign worker: a spawned process that trains the jobs its campaign sends it, one at a
time, until told to stop.

**Epochs and parking.** A run job trains with an
:class:`~benchmark.campaign.park.EpochReporter` among its callbacks
(:func:`benchmark.experiment.run_experiment`). After each epoch's checkpoint it tells the
campaign the epoch and how long it took (``(EPOCH, key, info)`` on the job's pipe,
:mod:`.messages`), and when the trainer is about to start another epoch that would end after
the job's cut-off (sent with the job, in seconds from its receipt; the campaign sends an
earlier one when its stop time moves), it *parks* the run: it says so (``(PARKING, key,
info)``) and raises :class:`~benchmark.campaign.park.ParkRun` from ``on_epoch_start``. That is
after the checkpoint of the epoch before, so the run resumes from there in a later window; the
exception ends :func:`~benchmark.experiment.run_experiment` before its record (a parked run has
none: it is never mistaken for a finished one), the job answers ``parked``, and the worker
waits for its next job.

**Signals**, the hard stop (the campaign's deadline, or a signal to the campaign): SIGTERM
raises :class:`WorkerStop` (a ``BaseException``, so the run's own error handling does not
swallow it), after any checkpoint write or message to the campaign in progress: the run's
``finally`` blocks remove temporary files and release its lock, and its last checkpoint
(written atomically after every epoch) stays, so the run resumes from there.
SIGINT is ignored: a Ctrl-C reaches the whole process group, and the campaign decides.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import traceback
from collections import deque
from multiprocessing.connection import Connection

from .messages import CUTOFF, DONE, PARKED, READY

# messages the epoch reporter read while looking for a CUTOFF, for the worker's loop
INBOX: deque = deque()


class WorkerStop(BaseException):
    """The campaign asked this worker to stop (SIGTERM)."""


# A stop that lands while a checkpoint is being written waits until the write is over (looked at
# again every STOP_RETRY_S by SIGALRM): the trainer writes best.pt then last.pt after an epoch,
# and stopping inside the second write would leave last.pt an epoch behind best.pt (resumable,
# but the epoch is repeated). A checkpoint's whole ``save`` counts: an LLM teacher's writes
# resume/ weights, optimizer.pt and state.json, then weights.safetensors and teacher.json, and a
# stop between them would leave resume/ weights a save ahead of its state.json. A message to the
# campaign is not cut in half either.
WRITERS = {"atomic_file", "atomic_write_bytes", "atomic_torch_save", "write_record",
           "_tell_campaign", "save"}
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
    error)`` for each (:func:`run_job`), reporting a run's epochs meanwhile; ``None`` ends the
    worker."""
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
            msg = INBOX.popleft() if INBOX else conn.recv()
            if msg is None:
                break
            if msg[0] == CUTOFF:  # meant for a job that has ended since
                continue
            kind, key, payload = msg
            outcome, err = run_job(kind, payload, conn, key)
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


def run_job(kind: str, payload: dict, conn: Connection | None = None, key: str = "",
            ) -> tuple[str, str | None]:
    """One job: ``run`` trains ``payload["spec"]`` (records and checkpoints in the given
    directories; with ``conn``, reporting its epochs and parking it at ``payload["cutoff_s"]``,
    see :class:`EpochReporter`); ``teacher`` trains and labels the teacher of
    ``payload["sweep"]``. Returns ``(outcome, traceback or None)``, the outcome ``finished``,
    ``skipped`` (finished meanwhile by another process), ``parked`` or ``failed``."""
    from ..experiment import run_experiment
    from ..records import RecordExistsError
    from ..sweep import FAILED, FINISHED, SKIPPED, resolve_teachers
    from .park import EpochReporter, ParkRun

    if kind == "run":
        spec = payload["spec"]
        callbacks = []
        if conn is not None:
            callbacks.append(EpochReporter(conn, key, payload.get("cutoff_s"),
                                           payload.get("safety", 1.5), inbox=INBOX))
        try:  # as a sweep runs it (the same record), plus the reporter
            run_experiment(spec, payload["records"], payload["runs"],
                           command=f"sweep {spec.tag}", callbacks=callbacks)
            return FINISHED, None
        except ParkRun:
            return PARKED, None
        except RecordExistsError:
            return SKIPPED, None
        except Exception:  # noqa: BLE001 - reported to the campaign, which goes on
            return FAILED, traceback.format_exc()
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


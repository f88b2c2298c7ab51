"""Parking a run at an epoch boundary, from inside its worker (:mod:`.worker`): the callback
that reports each epoch to the campaign and stops the run when its next epoch would end after
the job's cut-off."""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from multiprocessing.connection import Connection

from ..loop import Callback, LoopState
from .messages import CUTOFF, EPOCH, PARKING


class ParkRun(BaseException):  # noqa: N818 - a request, not an error
    """The run's next epoch would end after its cut-off: stop at this epoch boundary. A
    ``BaseException`` like :class:`~.worker.WorkerStop`, so that no ``except Exception`` on
    the way (a sweep's per-run error handling) takes it for a failed run."""


def next_epoch_ends_late(now: float, cutoff: float | None, durations: list[float],
                         safety: float) -> tuple[bool, float | None]:
    """Whether an epoch started ``now`` would end after ``cutoff`` (same clock), and the epoch
    time assumed: the longest of the last three epochs timed in this process, times ``safety``.
    The first epoch timed here counts only while it is the only one (it carries the warm-up:
    first kernels, a compile, a cold cache). Nothing timed yet, or no cut-off: never late."""
    if cutoff is None or not durations:
        return False, None
    recent = durations[1:] or durations
    need = safety * max(recent[-3:])
    return now + need > cutoff, need


class EpochReporter(Callback):
    """A run's link to its campaign inside the worker (see :mod:`.worker`).

    An epoch *boundary* is the trainer's ``on_epoch_start`` of the next epoch or its
    ``on_fit_end``: both come after the checkpoint of the epoch just done, and the first only
    when the trainer goes on (no early stop, epoch limit or time budget ends the run there).
    At each boundary after an epoch of this process it sends ``(EPOCH, key, {"epochs_done",
    "seconds", "trainer_seconds"})``: the epoch's wall time since the boundary before (training,
    validation, checkpoint) and the trainer's own time for it. At an ``on_epoch_start`` where
    :func:`next_epoch_ends_late`, it sends ``(PARKING, key, {...})`` and raises
    :class:`ParkRun`.

    Args:
        conn: the worker's pipe to the campaign (None: decide, tell no one).
        key: the job's key.
        cutoff_s: seconds from now to the cut-off, by which the run's next epoch must end
            (None: no cut-off).
        safety: factor on the epoch time.
        clock: the clock (monotonic seconds).
        inbox: where other messages read from ``conn`` go (the worker's loop takes them from
            there); None: dropped.
    """

    def __init__(self, conn: Connection | None, key: str, cutoff_s: float | None,
                 safety: float = 1.5, clock: Callable[[], float] = time.monotonic,
                 inbox: deque | None = None) -> None:
        self.conn, self.key, self.safety, self.clock = conn, key, safety, clock
        self.inbox = inbox
        ok = cutoff_s is not None and math.isfinite(cutoff_s)
        self.cutoff = clock() + cutoff_s if ok else None
        self.durations: list[float] = []
        self.mark: tuple[int, float] | None = None  # (epochs done, time) at the last boundary

    def on_fit_start(self, trainer, state: LoopState) -> None:
        self.mark = (state.epoch, self.clock())

    def on_epoch_start(self, trainer, state: LoopState) -> None:
        self._boundary(state)
        now = self.clock()
        late, need = next_epoch_ends_late(now, self.cutoff, self.durations, self.safety)
        if late:
            info = {"epochs_done": state.epoch, "epoch_seconds": round(need / self.safety, 3),
                    "need_s": round(need, 3), "left_s": round(self.cutoff - now, 3)}
            self._tell_campaign((PARKING, self.key, info))
            raise ParkRun(f"{self.key}: parked after epoch {state.epoch}: the next would need "
                          f"{need:.1f} s, {self.cutoff - now:.1f} s are left")

    def on_fit_end(self, trainer, state: LoopState) -> None:
        self._boundary(state)

    def _boundary(self, state: LoopState) -> None:
        if self.mark is None or state.epoch <= self.mark[0]:
            return
        now = self.clock()
        seconds = now - self.mark[1]
        self.durations.append(seconds)
        self.mark = (state.epoch, now)
        own = state.history[-1].get("seconds") if state.history else None
        self._tell_campaign((EPOCH, self.key, {"epochs_done": state.epoch,
                                               "seconds": round(seconds, 4),
                                               "trainer_seconds": own}))
        self._read_cutoffs()

    def _tell_campaign(self, msg: tuple) -> None:
        """Send ``msg`` (a stop that lands meanwhile waits for it: :data:`.worker.WRITERS`)."""
        if self.conn is not None:
            self.conn.send(msg)

    def _read_cutoffs(self) -> None:
        """Take the campaign's CUTOFF messages for this job (seconds from their sending); keep
        anything else for the worker's loop."""
        while self.conn is not None and self.conn.poll():
            msg = self.conn.recv()
            if msg is not None and msg[0] == CUTOFF and msg[1] == self.key:
                cutoff = self.clock() + float(msg[2])
                self.cutoff = cutoff if self.cutoff is None else min(self.cutoff, cutoff)
            elif (msg is None or msg[0] != CUTOFF) and self.inbox is not None:
                self.inbox.append(msg)

"""What a campaign (:mod:`.runner`) and its workers (:mod:`.worker`, :mod:`.park`) say to
each other on a worker's pipe.

Worker to campaign: ``(READY, pid)`` once it has imported everything; during a run, after each
epoch's checkpoint, ``(EPOCH, key, {"epochs_done", "seconds", "trainer_seconds"})``, and
``(PARKING, key, {"epochs_done", "epoch_seconds", "need_s", "left_s"})`` before it parks the
run; ``(DONE, key, outcome, error)`` per job, the outcome ``finished``, ``skipped``,
:data:`PARKED` or ``failed``.

Campaign to worker: a job ``(kind, key, payload)``; ``(CUTOFF, key, seconds)``, an earlier
cut-off for the run now running (seconds from its sending); ``None``: exit.
"""

READY, DONE, EPOCH, PARKING, CUTOFF = "ready", "done", "epoch", "parking", "cutoff"
PARKED = "parked"

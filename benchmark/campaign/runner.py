"""The campaign runner: works a campaign's queue (:mod:`benchmark.campaign.plan`) on whatever
device it finds, with several worker processes at once, until the queue is done or a deadline
comes.

* **Device and workers.** CUDA when torch sees it, else the CPU. Workers: on a GPU, several runs
  share it (``min(8, CPUs // 2)``); on a CPU, one per 4 cores. Each worker gets ``CPUs //
  workers`` torch threads. The campaign log records, for every run, how many runs shared the
  machine while it ran (``mean_concurrent``).
* **Deadline.** Nothing starts after ``stop_at`` = the deadline less a reserve (``margin_s``,
  the SIGTERM grace and twice the longest snapshot so far), nor when the time left is less than
  the job's model needed to reach its first checkpoint earlier in this window (to finish, for
  jobs that report no epochs: closed-form fits, teachers; times ``safety``; ``min_start_s``
  when unknown). A run job carries its cut-off, ``stop_at`` (in
  seconds from its sending; an earlier one follows when ``stop_at`` moves), and ``safety``: its
  worker reports every epoch to the campaign and, right after a checkpoint, parks the run
  itself when its next epoch (the longest of its last three, times ``safety``) would end after
  the cut-off (:class:`~benchmark.campaign.park.EpochReporter`); the run resumes from that
  checkpoint in a later window and the worker takes the next job that fits. The hard stop:
  whatever still runs at ``stop_at`` (a teacher job, whose trainer the campaign cannot reach,
  or an epoch that took longer than it should) gets SIGTERM, losing at most the epoch in
  progress; the last snapshot is written and the campaign exits before the deadline.
* **Signals.** SIGTERM or SIGINT to the campaign does the same at once: every run is left
  resumable.
* **Snapshots.** :class:`~benchmark.campaign.snapshot.Snapshotter` every ``interval_s``.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from multiprocessing import get_context
from multiprocessing.connection import wait
from pathlib import Path

from ..atomic import atomic_write_text
from ..locks import LOCK_DIR, lock_held
from ..records import is_finished, now_iso
from ..sweep import worker_threads
from .messages import CUTOFF, DONE, EPOCH, PARKED, PARKING, READY
from .plan import RUN, TEACHER, CampaignSpec, Job, Queue, build_queue, campaign_dirs, step_counts
from .snapshot import (
    RESUME,
    TEACHER_WEIGHTS,
    SnapshotConfig,
    Snapshotter,
    local_epoch,
    seed_from_snapshot,
)
from .worker import worker_main

FINISHED, SKIPPED, FAILED, RUNNING = "finished", "skipped", "failed", "running"
BLOCKED, DEADLINE, INTERRUPTED = "blocked", "deadline", "interrupted"
LOG_DIR = ".campaign"
CUTOFF_SLACK_S = 0.5  # a running run is sent a new cut-off when stop_at moves earlier by more


@dataclass
class CampaignConfig:
    """Attributes:
        records_dir, runs_dir: where records and checkpoints go.
        deadline: the time (``time.time()``) by which the campaign has exited (None: no
            limit).
        margin_s: seconds kept free before the deadline (exit, last snapshot).
        workers, threads: worker processes and torch threads each (None: from the device).
        snapshot_dir: where snapshots go (None: none).
        snapshot: snapshot settings.
        resume_from: a snapshot folder to seed records and checkpoints from first.
        min_start_s: time a job needs left to start while its model has no timing yet.
        safety: factor on observed times (first checkpoint, epoch).
        grace_s: SIGTERM to SIGKILL, for a worker that does not stop.
        poll_s: the supervisor's loop period.
    """

    records_dir: Path
    runs_dir: Path
    deadline: float | None = None
    margin_s: float = 15.0
    workers: int | None = None
    threads: int | None = None
    snapshot_dir: Path | None = None
    snapshot: SnapshotConfig = field(default_factory=SnapshotConfig)
    resume_from: Path | None = None
    min_start_s: float = 30.0
    safety: float = 1.5
    grace_s: float = 10.0
    poll_s: float = 0.25


@dataclass
class CampaignResult:
    state: str  # "finished", "blocked" (what is left waits on failed jobs), "deadline" or
    #             "interrupted"
    finished: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    parked: list[str] = field(default_factory=list)
    left: int = 0

    def exit_code(self) -> int:
        """0: queue done; 1: some job failed and nothing else could run; 3: stopped by the
        deadline or a signal with work left (resumable)."""
        if self.state in (DEADLINE, INTERRUPTED):
            return 3
        return 1 if self.failed or self.state == BLOCKED else 0

    def summary(self) -> str:
        return (f"{self.state}: {len(self.finished)} finished, {len(self.skipped)} found "
                f"finished, {len(self.failed)} failed, {len(self.parked)} parked, "
                f"{self.left} left")


def detect_device() -> tuple[str, str]:
    """``("cuda", <GPU name>)`` when torch sees a GPU, else ``("cpu", "")``."""
    import torch

    if torch.cuda.is_available():
        return "cuda", torch.cuda.get_device_name(0)
    return "cpu", ""


def default_workers(device: str, cpus: int) -> int:
    """Runs at once: several per GPU (small models leave most of it idle), one per 4 cores on
    a CPU."""
    if device == "cuda":
        return max(1, min(8, cpus // 2))
    return max(1, cpus // 4)


@dataclass
class _Worker:
    proc: object
    conn: object
    spawned: float = 0.0
    ready: bool = False  # it has imported everything and waits for jobs
    job: Job | None = None
    started: float = 0.0
    term_sent: float | None = None
    reason: str | None = None  # why it was sent SIGTERM: "stop"


@dataclass
class _Watch:
    """What the supervisor knows of a running job: the epochs its worker reported."""

    job: Job
    started: float
    run_id: str | None
    cutoff: float | None = None  # the stop_at the worker was last sent (run jobs)
    boundaries: list[float] = field(default_factory=list)  # when each epoch report came
    epochs_done: int | None = None
    concurrency: float = 0.0  # integral of the number of running jobs over time


class CampaignRunner:
    def __init__(self, campaign: CampaignSpec, config: CampaignConfig) -> None:
        self.campaign = campaign
        self.cfg = config
        self.records_dir = Path(config.records_dir)
        self.runs_dir = Path(config.runs_dir)
        self.window = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"
        self.log_path = self.runs_dir / LOG_DIR / f"{campaign.name}.jsonl"
        self.log_lines: list[str] = []
        self.state: dict[str, str] = {}
        self.errors: dict[str, str] = {}
        self.workers: list[_Worker] = []
        self.watches: dict[str, _Watch] = {}
        self.first_checkpoint: dict[str, float] = {}  # model -> seconds to its first checkpoint
        self.worker_startup = 0.0  # the longest a worker took to start (imports) so far
        self.queue = Queue()
        self._lock = threading.RLock()
        self._interrupt: str | None = None
        self._teacher_runs: dict[str, str] = {}  # store path -> teacher run id
        self._teachers_seen: list[str] = []  # run ids teacher jobs trained in this window
        self._log_dirty = False
        self._log_written = 0.0
        self.t0 = time.monotonic()  # the window's start; log rows carry seconds since then

    # ---------------------------------------------------------------- set-up
    def _load_log(self, seeded: list[str]) -> None:
        lines = []
        if self.log_path.exists():
            lines = [ln for ln in self.log_path.read_text().splitlines() if ln.strip()]
        have = {_window_of(ln) for ln in lines}
        lines += [ln for ln in seeded if _window_of(ln) not in have]
        self.log_lines = lines

    def log(self, event: str, **fields) -> None:
        row = {"t": now_iso(), "s": round(time.monotonic() - self.t0, 3), "window": self.window,
               "event": event, **fields}
        self.log_lines.append(json.dumps(row, sort_keys=True, default=str))
        self._log_dirty = True

    def _write_log(self, force: bool = False) -> None:
        now = time.monotonic()
        if self._log_dirty and (force or now - self._log_written > 2.0):
            atomic_write_text(self.log_path, "".join(ln + "\n" for ln in self.log_lines))
            self._log_dirty, self._log_written = False, now

    # ------------------------------------------------------------------ run
    def run(self) -> CampaignResult:
        with campaign_dirs(self.records_dir, self.runs_dir):
            return self._run()

    def _run(self) -> CampaignResult:
        cfg = self.cfg
        t0 = self.t0 = time.monotonic()
        self.start_wall = time.time()
        self.deadline = None if cfg.deadline is None else t0 + (cfg.deadline - time.time())
        from ..paths import default_label_root

        label_root = default_label_root()  # where the teacher jobs' labels go
        seeded: dict = {"records": 0, "checkpoints": [], "llm": [], "log": [], "problems": []}
        if cfg.resume_from is not None:
            seeded = seed_from_snapshot(cfg.resume_from, self.records_dir, self.runs_dir,
                                        label_root)
        self._load_log(seeded["log"])
        self.device, self.gpu = detect_device()
        cpus = os.cpu_count() or 1
        self.n_workers = cfg.workers or default_workers(self.device, cpus)
        self.threads = cfg.threads or worker_threads(self.n_workers, cpus)
        self.snapshotter = None
        self.queue = build_queue(self.campaign, self.records_dir)  # bad input fails here
        old_handlers = self._install_signal_handlers()
        try:
            self.log("window_start", device=self.device, gpu=self.gpu, workers=self.n_workers,
                     threads=self.threads, cpus=cpus,
                     deadline_s=None if self.deadline is None else round(self.deadline - t0, 3),
                     seeded_records=seeded["records"],
                     seeded_checkpoints=len(seeded["checkpoints"]), seeded_llm=seeded["llm"],
                     seed_problems=seeded["problems"])
            for _ in range(min(self.n_workers, len(self._ready_jobs()))):
                self._spawn()  # all at once: their start-up (imports) overlaps
            if cfg.snapshot_dir is not None:
                self.snapshotter = Snapshotter(cfg.snapshot_dir, self.records_dir,
                                               self.runs_dir, self._snapshot_state, cfg.snapshot,
                                               label_root)
                self.snapshotter.write()
                self.snapshotter.start()
            final = self._loop()
        finally:  # whatever happened, every run is left resumable and no worker outlives us
            self._shutdown()
            self._restore_signal_handlers(old_handlers)
            if self.snapshotter is not None:
                self.snapshotter.stop()
        result = self._result(final)
        self.log("window_end", state=final, seconds=time.monotonic() - t0,
                 summary=result.summary())
        self._final_state = final
        if self.snapshotter is not None:
            self.snapshotter.write()
        self._write_log(force=True)
        return result

    def _install_signal_handlers(self) -> dict:
        if threading.current_thread() is not threading.main_thread():
            return {}
        old = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            old[sig] = signal.signal(sig, self._on_signal)
        return old

    def _restore_signal_handlers(self, old: dict) -> None:
        for sig, handler in old.items():
            signal.signal(sig, handler)

    def _on_signal(self, signum, frame) -> None:  # noqa: ARG002 - signal handler signature
        self._interrupt = signal.Signals(signum).name

    # ----------------------------------------------------------------- time
    def stop_at(self) -> float:
        """Monotonic time after which nothing starts and everything is stopped."""
        if self.deadline is None:
            return float("inf")
        snap = 2 * self.snapshotter.max_seconds if self.snapshotter is not None else 0.0
        return self.deadline - self.cfg.margin_s - self.cfg.grace_s - snap

    def _fits(self, job: Job, now: float, worker: _Worker | None = None) -> bool:
        """Whether ``job`` can reach its first checkpoint before ``stop_at`` on ``worker`` (None:
        a worker yet to be started)."""
        left = self.stop_at() - now
        need = self.cfg.min_start_s
        first = self.first_checkpoint.get(job.model)
        if first is not None:
            need = max(need, self.cfg.safety * first)
        if worker is None:
            need += self.cfg.safety * self.worker_startup
        elif not worker.ready:
            need += self.cfg.safety * max(0.0, self.worker_startup - (now - worker.spawned))
        return left >= need

    # ----------------------------------------------------------------- loop
    def _loop(self) -> str:
        last = time.monotonic()
        while True:
            now = time.monotonic()
            with self._lock:
                running = sum(w.job is not None for w in self.workers)
                for w in self.workers:
                    if w.job is not None and w.job.key in self.watches:
                        self.watches[w.job.key].concurrency += running * (now - last)
                last = now
                self._drain()
                self._reap()
                self._observe(now)
                self._escalate(now)
                if self._interrupt is not None:
                    self.log("interrupted", signal=self._interrupt)
                    return INTERRUPTED
                if now >= self.stop_at():
                    return DEADLINE
                self._dispatch(now)
                busy = [w for w in self.workers if w.job is not None]
                if not busy:
                    ready = self._ready_jobs()
                    if not ready:  # done, parked, or what is left waits on a failed job
                        if not self._left():
                            return FINISHED
                        parked = any(st == PARKED for st in self.state.values())
                        return DEADLINE if parked else BLOCKED
                    idle = next((w for w in self.workers if w.term_sent is None), None)
                    if not any(self._fits(j, now, idle) for j in ready):
                        return DEADLINE
                self._write_log()
            conns = [w.conn for w in self.workers]
            if conns:
                wait(conns, timeout=self.cfg.poll_s)
            else:
                time.sleep(self.cfg.poll_s)

    def _left(self) -> int:
        return sum(1 for j in self.queue.jobs if j.kind == RUN and not j.finished)

    def _ready_jobs(self) -> list[Job]:
        """Queued jobs whose teacher (if any) is done, in priority order."""
        out = []
        by_key = self.queue.by_key()
        for job in self.queue.jobs:
            if job.finished or job.key in self.state:
                continue
            if job.needs is not None:
                teacher = by_key.get(job.needs)
                if teacher is None or not teacher.finished:
                    continue
            if job.pending:
                continue
            out.append(job)
        return out

    def _dispatch(self, now: float) -> None:
        for job in self._ready_jobs():
            idle = [w for w in self.workers if w.job is None and w.term_sent is None]
            if not idle and len(self.workers) >= self.n_workers:
                return
            if job.kind == RUN and is_finished(self.records_dir, job.key):
                job.finished = True
                self.state[job.key] = SKIPPED
                self.log("skipped", key=job.key, step=job.step + 1, model=job.model)
                continue
            if job.kind == RUN and lock_held(self.runs_dir, job.key):
                continue  # another process trains it now; look again later
            worker = idle[0] if idle else None
            if not self._fits(job, now, worker):
                continue
            self._send(worker or self._spawn(), job, now)

    def _spawn(self) -> _Worker:
        from ..allocator import malloc_tuned

        ctx = get_context("spawn")
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=worker_main, args=(child, self.threads, malloc_tuned()),
                           name="campaign-worker", daemon=False)
        proc.start()
        child.close()
        w = _Worker(proc=proc, conn=parent, spawned=time.monotonic())
        self.workers.append(w)
        return w

    def _send(self, w: _Worker, job: Job, now: float) -> None:
        stop_at = self.stop_at()
        if job.kind == RUN:
            spec = replace(job.spec, train=replace(job.spec.train, progress=False))
            payload = {"spec": spec, "records": str(self.records_dir), "runs": str(self.runs_dir),
                       "cutoff_s": None if stop_at == float("inf") else stop_at - now,
                       "safety": self.cfg.safety}
        else:  # progress is no part of a run's identity: the teacher's run id stays
            payload = {"sweep": replace(job.sweep, train={**job.sweep.train, "progress": False})}
        w.conn.send((job.kind, job.key, payload))
        w.job, w.started = job, now
        self.state[job.key] = RUNNING
        run_id = job.key if job.kind == RUN else None
        watch = _Watch(job=job, started=now, run_id=run_id,
                       cutoff=stop_at if job.kind == RUN else None)
        self.watches[job.key] = watch
        running = sum(x.job is not None for x in self.workers)
        self.log("start", key=job.key, kind=job.kind, step=job.step + 1, model=job.model,
                 dataset=job.dataset, worker=w.proc.pid, concurrent=running,
                 workers=self.n_workers, device=self.device, gpu=self.gpu,
                 resumed_epoch=_epochs_in(self.runs_dir / run_id / "last.pt") if run_id else None)

    def _drain(self) -> None:
        for w in list(self.workers):
            try:
                while w.conn.poll():
                    self._receive(w, w.conn.recv())
            except (EOFError, OSError, ValueError):
                continue  # the worker died; _reap sees it

    def _receive(self, w: _Worker, msg: tuple) -> None:
        now = time.monotonic()
        if msg[0] == DONE:
            self._job_done(w, msg[1], msg[2], msg[3])
        elif msg[0] == READY:
            w.ready = True
            self.worker_startup = max(self.worker_startup, now - w.spawned)
        elif msg[0] in (EPOCH, PARKING):
            watch = self.watches.get(msg[1])
            if watch is None or w.job is None or w.job.key != msg[1]:
                return
            info = msg[2]
            watch.epochs_done = info.get("epochs_done", watch.epochs_done)
            if msg[0] == PARKING:
                self.log("park", key=msg[1], model=w.job.model, by="worker", **info)
                return
            watch.boundaries.append(now)
            if len(watch.boundaries) == 1:  # start-up, data, first epoch and checkpoint
                model = w.job.model
                took = now - watch.started
                self.first_checkpoint[model] = max(self.first_checkpoint.get(model, 0.0), took)

    def _job_done(self, w: _Worker, key: str, outcome: str, err: str | None) -> None:
        job = w.job
        w.job = None
        if job is None or job.key != key:
            return
        watch = self.watches.pop(key, None)
        current = self.queue.by_key().get(key)  # the queue may have been rebuilt meanwhile
        if current is not None and outcome in (FINISHED, SKIPPED):
            current.finished = True
        seconds = time.monotonic() - w.started
        conc = watch.concurrency / seconds if watch is not None and seconds > 0 else None
        if outcome == FINISHED and watch is not None and not watch.boundaries:
            # no epoch reported (a closed-form fit, a teacher job): nothing of it was
            # resumable before its end, so the whole job is what the next one needs left
            model = job.model
            self.first_checkpoint[model] = max(self.first_checkpoint.get(model, 0.0), seconds)
        if outcome in (FINISHED, SKIPPED):
            job.finished = True
            self.state[key] = outcome
        elif outcome == PARKED:  # by its worker, at a checkpoint: resumable, no record
            self.state[key] = PARKED
        else:
            outcome = FAILED
            self.state[key] = FAILED
            self.errors[key] = err or "failed"
        extra = ({"why": "cut-off", "epochs_done": watch.epochs_done if watch else None}
                 if outcome == PARKED else {})
        self.log(outcome, key=key, kind=job.kind, step=job.step + 1, model=job.model,
                 dataset=job.dataset, seconds=round(seconds, 3),
                 mean_concurrent=None if conc is None else round(conc, 3),
                 epochs_here=len(watch.boundaries) if watch else None,
                 run_id=watch.run_id if watch else None,
                 error=(err or "").strip().splitlines()[-1:] if outcome == FAILED else None,
                 **extra)
        if job.kind == TEACHER and outcome == FINISHED:
            self.queue = build_queue(self.campaign, self.records_dir)
            for j in self.queue.jobs:  # runs finished earlier in this window keep their state
                if self.state.get(j.key) in (FINISHED, SKIPPED):
                    j.finished = True

    def _reap(self) -> None:
        for w in list(self.workers):
            if w.proc.is_alive():
                continue
            try:
                while w.conn.poll():
                    self._receive(w, w.conn.recv())
            except (EOFError, OSError, ValueError):
                pass
            job = w.job
            if job is not None:
                watch = self.watches.pop(job.key, None)
                # exit code 0 without an answer: the worker caught a SIGTERM (ours, or one sent
                # to the whole process group) and stopped cleanly
                if w.reason == "stop" or w.proc.exitcode == 0:
                    self.state[job.key] = PARKED
                    self.log("parked", key=job.key, step=job.step + 1, model=job.model,
                             why=w.reason or "SIGTERM from outside",
                             run_id=watch.run_id if watch else None,
                             epochs_done=watch.epochs_done if watch else None,
                             seconds=round(time.monotonic() - w.started, 3))
                else:
                    code = w.proc.exitcode
                    self.state[job.key] = FAILED
                    self.errors[job.key] = f"worker exited with code {code} during the job"
                    self.log(FAILED, key=job.key, step=job.step + 1, model=job.model,
                             error=self.errors[job.key])
            w.proc.join(timeout=1)
            w.conn.close()
            self.workers.remove(w)

    def _escalate(self, now: float) -> None:
        for w in self.workers:
            if w.term_sent is not None and now - w.term_sent > self.cfg.grace_s and \
                    w.proc.is_alive():
                w.proc.kill()

    def _terminate(self, w: _Worker, reason: str, now: float) -> None:
        if w.term_sent is None and w.proc.is_alive():
            w.term_sent, w.reason = now, reason
            w.proc.terminate()

    # ------------------------------------------------------------ watching
    def _observe(self, now: float) -> None:
        """Find the run a teacher job trains (by its lock: snapshots carry its checkpoints), and
        send a running run an earlier cut-off when ``stop_at`` has moved (longer snapshots)."""
        stop_at = self.stop_at()
        for w in self.workers:
            if w.job is None or w.term_sent is not None:
                continue
            watch = self.watches.get(w.job.key)
            if watch is None:
                continue
            if watch.run_id is None:  # a teacher job
                watch.run_id = _locked_run_of(self.runs_dir, w.proc.pid, w.started)
                if watch.run_id is not None and watch.run_id not in self._teachers_seen:
                    self._teachers_seen.append(watch.run_id)
            if watch.cutoff is not None and stop_at < watch.cutoff - CUTOFF_SLACK_S:
                try:
                    w.conn.send((CUTOFF, w.job.key, stop_at - now))
                    watch.cutoff = stop_at
                except (OSError, ValueError):
                    continue  # the worker died; _reap sees it

    # ------------------------------------------------------------- shutdown
    def _shutdown(self) -> None:
        now = time.monotonic()
        for w in self.workers:
            if w.job is not None:
                self._terminate(w, "stop", now)
            else:
                try:
                    w.conn.send(None)
                except (OSError, ValueError):
                    pass
        end = now + self.cfg.grace_s
        while self.workers and time.monotonic() < end + 1:
            with self._lock:
                self._drain()
                self._reap()
                self._escalate(time.monotonic())
            if self.workers:
                wait([w.conn for w in self.workers], timeout=0.1)
        for w in list(self.workers):  # still alive after the grace: killed
            w.proc.kill()
            w.proc.join()
        with self._lock:
            self._reap()

    def _result(self, final: str) -> CampaignResult:
        res = CampaignResult(state=final)
        for key, st in self.state.items():
            if st == FINISHED:
                res.finished.append(key)
            elif st == SKIPPED:
                res.skipped.append(key)
            elif st == FAILED:
                res.failed[key] = self.errors.get(key, "")
            elif st == PARKED:
                res.parked.append(key)
        res.left = self._left()
        return res

    # -------------------------------------------------------------- status
    def _teacher_run_ids(self) -> list[str]:
        out = []
        for stores in self.queue.teachers.values():
            for store in stores.values():
                if store not in self._teacher_runs:
                    rid = ""
                    try:
                        meta = json.loads((Path(store) / "meta.json").read_text())
                        rid = (meta.get("metadata") or {}).get("teacher_run_id") or ""
                    except (OSError, json.JSONDecodeError):
                        pass
                    self._teacher_runs[store] = rid
                rid = self._teacher_runs[store]
                if rid and rid not in out:
                    out.append(rid)
        return out

    def status(self, state: str | None = None) -> dict:
        with self._lock:
            running = {k for k, s in self.state.items() if s == RUNNING}
            failed = {k for k, s in self.state.items() if s == FAILED}
            counts = step_counts(self.queue, self.campaign, running, failed)
            position = next((c["step"] for c in counts if c["left"] or c["running"]), None)
            now = time.monotonic()
            run_rows = []
            for w in self.workers:
                if w.job is None:
                    continue
                watch = self.watches.get(w.job.key)
                run_rows.append({"key": w.job.key, "run_id": watch.run_id if watch else None,
                                 "kind": w.job.kind, "step": w.job.step + 1,
                                 "model": w.job.model, "dataset": w.job.dataset,
                                 "epochs_done": watch.epochs_done if watch else None,
                                 "seconds": round(now - w.started, 1),
                                 "stopping": w.reason})
            nxt = [j.key for j in self._ready_jobs()[:5]]
            deadline = (None if self.deadline is None else
                        (datetime.now(UTC) + timedelta(seconds=self.deadline - now))
                        .isoformat(timespec="seconds"))
            return {"campaign": self.campaign.name,
                    "spec": str(self.campaign.path) if self.campaign.path else None,
                    "window": self.window, "state": state or getattr(self, "_final_state",
                                                                     RUNNING),
                    "updated": now_iso(),
                    "started": datetime.fromtimestamp(self.start_wall, UTC)
                    .isoformat(timespec="seconds"),
                    "deadline": deadline, "device": self.device, "gpu": self.gpu,
                    "workers": self.n_workers, "threads_per_worker": self.threads,
                    "position": position, "queue": counts, "running": run_rows, "next": nxt,
                    "finished_here": sorted(k for k, s in self.state.items() if s == FINISHED),
                    "parked": sorted(k for k, s in self.state.items() if s == PARKED),
                    "failed": {k: (self.errors.get(k, "").strip().splitlines() or [""])[-1]
                               for k in sorted(failed)}}

    def _snapshot_state(self) -> tuple[dict, list[tuple[str, str]], list[str]]:
        with self._lock:
            status = self.status()
            # teachers first: finished ones carry their weights (their labels are made again
            # from them), unfinished ones resume like any run
            carry = [(rid, TEACHER_WEIGHTS if is_finished(self.records_dir, rid) else RESUME)
                     for rid in dict.fromkeys(self._teacher_run_ids() + self._teachers_seen)]
            for job in self.queue.jobs:
                if job.kind == RUN and not job.finished and not job.pending and \
                        (self.runs_dir / job.key / "last.pt").exists():
                    carry.append((job.key, RESUME))
            return status, carry, list(self.log_lines)


def run_campaign(campaign: CampaignSpec, config: CampaignConfig) -> CampaignResult:
    """Work ``campaign``'s queue under ``config``; see the module docstring."""
    return CampaignRunner(campaign, config).run()


# ---------------------------------------------------------------- helpers
def _window_of(line: str) -> str | None:
    try:
        return json.loads(line).get("window")
    except json.JSONDecodeError:
        return None


def _epochs_in(path: Path) -> int | None:
    """Epochs done by the run whose ``last.pt`` is ``path``; None without one."""
    epoch = local_epoch(path) if path.exists() else None
    return None if epoch is None else epoch + 1


def _locked_run_of(runs_dir: Path, pid: int, since: float) -> str | None:
    """The run whose lock file ``pid`` wrote last (a worker writes its pid on taking a run's
    lock); None when it has taken none since ``since`` (monotonic)."""
    lock_dir = runs_dir / LOCK_DIR
    since_wall = time.time() - (time.monotonic() - since)
    best, best_m = None, -1.0
    for p in lock_dir.glob("*.lock") if lock_dir.is_dir() else []:
        try:
            st = p.stat()
            if st.st_mtime < since_wall - 1 or st.st_mtime <= best_m:
                continue
            if p.read_text().strip() == str(pid) and lock_held(runs_dir, p.stem):
                best, best_m = p.stem, st.st_mtime
        except OSError:
            continue
    return best

"""A campaign: sweeps in priority order, and the queue of jobs they make.

A campaign TOML names existing sweep TOMLs (never copies them), each optionally restricted to
some of its datasets, models, fractions or seeds; restricting a sweep keeps its run ids::

    name = "gpu"
    [[step]]
    sweep = "main.toml"                  # relative to this file
    datasets = ["nyc_taxi_manhattan"]    # optional: datasets, models, fractions, seeds
    note = "the main table on nyc_taxi_manhattan"

The queue lists, step by step, first the teacher jobs a step needs (train the teacher and write
its soft labels, once per dataset), then the step's runs seed by seed (every model's seed 0,
then every model's seed 1, ...), so that each table row gets its first seed early. A distilling
run's id depends on its teacher's labels, so until they exist the run is queued under a
placeholder key that waits for the teacher job.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ..experiment import RunSpec
from ..records import is_finished
from ..sweep import SweepSpec, load_sweeps, resolve_teachers, uses_teacher

STEP_KEYS = {"sweep", "note", "datasets", "models", "fractions", "seeds"}
RUN, TEACHER = "run", "teacher"


@dataclass
class Step:
    """One entry of the priority list: a sweep (maybe restricted) and what it is for."""

    file: Path
    sweep: SweepSpec
    note: str = ""

    def label(self) -> str:
        what = ", ".join(self.sweep.datasets)
        return f"{self.sweep.name} [{what}]" + (f": {self.note}" if self.note else "")


@dataclass
class CampaignSpec:
    """Sweeps in priority order (see the module docstring)."""

    name: str
    steps: list[Step]
    path: Path | None = None

    @classmethod
    def from_toml(cls, path: Path) -> CampaignSpec:
        path = Path(path)
        try:
            d = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise ValueError(f"{path}: cannot read campaign spec ({e})") from e
        unknown = set(d) - {"name", "step"}
        if unknown:
            raise ValueError(f"{path}: unknown campaign fields {sorted(unknown)}; "
                             "a campaign has 'name' and [[step]] tables")
        if not d.get("step"):
            raise ValueError(f"{path}: a campaign needs at least one [[step]] naming a sweep")
        steps, sweeps = [], {}
        for i, raw in enumerate(d["step"], 1):
            where = f"{path} [[step]] {i}"
            bad = set(raw) - STEP_KEYS
            if bad:
                raise ValueError(f"{where}: unknown keys {sorted(bad)}; accepted: "
                                 f"{sorted(STEP_KEYS)}")
            if "sweep" not in raw:
                raise ValueError(f"{where}: missing key 'sweep' (a sweep TOML, relative to "
                                 f"{path.parent})")
            file = (path.parent / raw["sweep"]).resolve()
            if file not in sweeps:
                if not file.is_file():
                    raise ValueError(f"{where}: sweep file {file} not found")
                sweeps[file] = load_sweeps(file)
            # a file of [[variant]] sweeps is one step per variant, in the file's order
            for sweep in sweeps[file]:
                sub = sweep.subset(source=where, **{k: raw.get(k) for k in
                                                    ("datasets", "models", "fractions",
                                                     "seeds")})
                steps.append(Step(file=file, sweep=sub, note=str(raw.get("note", ""))))
        return cls(name=str(d.get("name", path.stem)), steps=steps, path=path)


@dataclass
class Job:
    """One unit of work.

    Attributes:
        key: the run id; ``teacher:<step>:<dataset>`` for a teacher job; for a distilling run
            whose teacher labels do not exist yet, ``pending:<step>:<dataset>:<fraction>:
            <model>:<seed>``.
        kind: ``"run"`` or ``"teacher"``.
        step: index of its step in the campaign.
        model, dataset: what it trains.
        spec: the run (None for teacher jobs and pending runs).
        sweep: for a teacher job, the step's sweep restricted to the dataset.
        needs: key of the teacher job a pending run waits for.
    """

    key: str
    kind: str
    step: int
    model: str
    dataset: str
    spec: RunSpec | None = None
    sweep: SweepSpec | None = None
    needs: str | None = None
    finished: bool = False

    @property
    def run_id(self) -> str | None:
        return self.spec.run_id() if self.spec is not None else None

    @property
    def pending(self) -> bool:
        return self.kind == RUN and self.spec is None


@dataclass
class Queue:
    """The campaign's jobs in priority order, each knowing whether its record exists."""

    jobs: list[Job] = field(default_factory=list)
    teachers: dict[str, dict[str, str]] = field(default_factory=dict)  # step -> ds -> store

    def by_key(self) -> dict[str, Job]:
        return {j.key: j for j in self.jobs}


@contextmanager
def campaign_dirs(records_dir: Path, runs_dir: Path) -> Iterator[None]:
    """Point ``FLOWDISTILL_RECORDS`` and ``FLOWDISTILL_RUNS`` at the campaign's directories for
    the block (teacher resolvers and spawned workers read them), restoring them afterwards."""
    names = {"FLOWDISTILL_RECORDS": str(Path(records_dir).resolve()),
             "FLOWDISTILL_RUNS": str(Path(runs_dir).resolve())}
    old = {k: os.environ.get(k) for k in names}
    os.environ.update(names)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def teacher_key(step: int, dataset: str) -> str:
    return f"{TEACHER}:{step}:{dataset}"


def build_queue(campaign: CampaignSpec, records_dir: Path) -> Queue:
    """Every job of ``campaign`` in priority order (see the module docstring), from the records
    in ``records_dir`` and the teacher labels that exist now (nothing is trained here)."""
    queue = Queue()
    for i, step in enumerate(campaign.steps):
        sweep = step.sweep
        resolved = resolve_teachers(sweep, create=False)
        queue.teachers[str(i)] = dict(resolved.teachers)
        needs_teacher = sorted({ds for ds, _, m, _ in sweep.grid()
                                if uses_teacher(m) and ds in sweep.teachers},
                               key=sweep.datasets.index)
        for ds in needs_teacher:
            queue.jobs.append(Job(key=teacher_key(i, ds), kind=TEACHER, step=i, model="teacher",
                                  dataset=ds, sweep=sweep.subset(datasets=[ds]),
                                  finished=ds in resolved.teachers))
        cells = list(zip(resolved.grid(), resolved.expand(), strict=True))
        order = sorted(range(len(cells)), key=lambda k: (cells[k][0][3], k))  # seed-major
        for k in order:
            (ds, frac, model, seed), spec = cells[k]
            if uses_teacher(model) and ds not in resolved.teachers:
                key = f"pending:{i}:{ds}:{float(frac):g}:{model}:{seed}"
                needs = teacher_key(i, ds) if ds in sweep.teachers else None
                queue.jobs.append(Job(key=key, kind=RUN, step=i, model=model, dataset=ds,
                                      needs=needs))
                continue
            rid = spec.run_id()
            queue.jobs.append(Job(key=rid, kind=RUN, step=i, model=model, dataset=ds, spec=spec,
                                  finished=is_finished(records_dir, rid)))
    return queue


def step_counts(queue: Queue, campaign: CampaignSpec, running: set[str] | None = None,
                failed: set[str] | None = None) -> list[dict]:
    """Per step: runs, done, running, left (of which awaiting a teacher, failed here)."""
    running, failed = running or set(), failed or set()
    out = []
    for i, step in enumerate(campaign.steps):
        runs = [j for j in queue.jobs if j.step == i and j.kind == RUN]
        done = sum(j.finished for j in runs)
        run_now = sum(j.key in running for j in runs if not j.finished)
        out.append({"step": i + 1, "label": step.label(), "sweep": step.sweep.name,
                    "file": step.file.name, "runs": len(runs), "done": done,
                    "running": run_now, "left": len(runs) - done - run_now,
                    "awaiting_teacher": sum(j.pending for j in runs),
                    "failed": sum(j.key in failed for j in runs if not j.finished)})
    return out


def format_counts(rows: list[dict]) -> str:
    """One line per step: ``1. main [nyc_taxi_manhattan]: 51 runs, 10 done, 2 running, ...``."""
    lines = []
    for r in rows:
        extra = []
        if r["awaiting_teacher"]:
            extra.append(f"{r['awaiting_teacher']} await a teacher")
        if r.get("failed"):
            extra.append(f"{r['failed']} failed")
        tail = f" ({', '.join(extra)})" if extra else ""
        lines.append(f"{r['step']}. {r['label']}: {r['runs']} runs, {r['done']} done, "
                     f"{r['running']} running, {r['left']} left{tail}")
    total = {k: sum(r[k] for r in rows) for k in ("runs", "done", "running", "left")}
    lines.append(f"all: {total['runs']} runs, {total['done']} done, {total['running']} running, "
                 f"{total['left']} left")
    return "\n".join(lines)

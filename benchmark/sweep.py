"""Sweeps: models x datasets x training fractions x seeds x overrides, resumable.

Every run has a stable id (:meth:`RunSpec.run_id`), so re-running a killed sweep with the same
spec skips the finished runs (their records exist) and resumes an interrupted one from its last
checkpoint. Executors: ``local`` (sequential, or a process pool with ``workers > 1``) and
``ray`` (remote tasks with CPU/GPU resources, for clusters).

A sweep can be written in Python (:class:`SweepSpec`) or in TOML::

    name = "fraction"
    models = ["flowdistill", "stgcn"]
    datasets = ["nyc_taxi_manhattan"]
    fractions = [0.1, 1.0]
    seeds = [0, 1, 2]
    recipe = "common"  # or "paper" (default): each model's own recipe
    [train]            # TrainConfig fields, on top of the recipe
    epochs = 50
    [hparams.stgcn]    # per-model hyperparameters
    dropout = 0.3

A file may hold several sweeps that share most settings (a study's arms, e.g. one per teacher):
the top level is their common part, and each ``[[variant]]`` table names one sweep and replaces
the fields it sets (whole fields: a variant's ``train`` replaces the common ``train``). The
variant's sweep is named ``<name>-<variant name>``. :func:`load_sweeps` reads either kind of
file::

    name = "teacher-study"
    models = ["flowdistill", "flowdistill-kd"]
    fractions = [0.1]
    [[variant]]
    name = "A-stid"                                   # sweep teacher-study-A-stid
    teachers = { nyc_taxi_manhattan = "model:stid" }
"""

from __future__ import annotations

import itertools
import json
import os
import tomllib
import traceback
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, as_completed, wait
from dataclasses import dataclass, field, fields, replace
from multiprocessing import get_context
from pathlib import Path

from tqdm.auto import tqdm

from .allocator import malloc_tuned, tune_malloc
from .efficiency import EfficiencyConfig
from .experiment import RunSpec, default_records_dir, default_runs_dir, run_experiment
from .recipes import train_config_for
from .records import RecordExistsError, is_finished
from .trainer import TrainConfig


@dataclass
class SweepSpec:
    """A grid of runs.

    Attributes:
        name: becomes the run-id prefix (tag) of every run.
        models, datasets, fractions, seeds: the grid.
        recipe: "paper" (each model's own training recipe) or "common" (one shared recipe);
            see :mod:`benchmark.recipes`.
        train: :class:`TrainConfig` overrides for every run, on top of the recipe.
        train_per_model: further overrides per model (e.g. a smaller batch for a big model).
        hparams: per-model hyperparameter overrides.
        protocol: per-dataset protocol overrides.
        dataset_options: per-dataset loader options.
        teachers: per-dataset soft-label store path, for models that distil, or
            ``"<kind>:<name>"`` resolved by a registered teacher resolver (e.g.
            ``"model:gwnet"``: train a GWNet teacher on all training data and label with it).
        objective: per-model objective overrides.
        efficiency: measure latency/memory in every run.
    """

    name: str
    models: list[str]
    datasets: list[str] = field(default_factory=lambda: ["synthetic"])
    fractions: list[float] = field(default_factory=lambda: [1.0])
    seeds: list[int] = field(default_factory=lambda: [0])
    train: dict = field(default_factory=dict)
    train_per_model: dict[str, dict] = field(default_factory=dict)
    hparams: dict[str, dict] = field(default_factory=dict)
    protocol: dict[str, dict] = field(default_factory=dict)
    dataset_options: dict[str, dict] = field(default_factory=dict)
    teachers: dict[str, str] = field(default_factory=dict)
    objective: dict[str, dict] = field(default_factory=dict)
    efficiency: bool = True
    recipe: str = "paper"

    @classmethod
    def from_toml(cls, path: Path) -> SweepSpec:
        try:
            d = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise ValueError(f"{path}: cannot read sweep spec ({e})") from e
        return cls.from_dict(d, str(path))

    @classmethod
    def from_dict(cls, d: dict, source: str) -> SweepSpec:
        """The sweep of a TOML table ``d``; errors name ``source`` (the file, and the table
        when the sweep is part of a larger file)."""
        if "variant" in d:
            raise ValueError(f"{source}: its [[variant]] tables make it several sweeps; read it "
                             f"with benchmark.sweep.load_sweeps")
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"{source}: unknown sweep fields {sorted(unknown)}")
        if "name" not in d or "models" not in d:
            raise ValueError(f"{source}: a sweep needs 'name' and 'models'")
        spec = cls(**d)
        spec.check_settings(source)
        return spec

    def check_settings(self, source: str | None = None) -> None:
        """Refuse unknown keys and mistyped values in the grid's train, hparams, protocol,
        objective and dataset_options sections (:mod:`benchmark.settings`); the message names
        ``source`` (the TOML file) and the section."""
        from .settings import check_run_settings

        source = source or f"sweep {self.name}"
        for ds, model in itertools.product(self.datasets, self.models):
            check_run_settings(
                model, ds, {"train": f"{source} [train]",
                            "hparams": f"{source} [hparams.{model}]",
                            "protocol": f"{source} [protocol.{ds}]",
                            "objective": f"{source} [objective.{model}]",
                            "dataset_options": f"{source} [dataset_options.{ds}]"},
                train=self.train, hparams=self.hparams.get(model, {}),
                protocol=self.protocol.get(ds, {}), objective=self.objective.get(model, {}),
                dataset_options=self.dataset_options.get(ds, {}))
            check_run_settings(model, ds, {"train": f"{source} [train_per_model.{model}]"},
                               train=self.train_per_model.get(model, {}))

    def subset(self, source: str | None = None, **keep: list | None) -> SweepSpec:
        """The same sweep restricted to some of its ``datasets``, ``models``, ``fractions`` or
        ``seeds`` (None keeps all). Its runs keep their ids: a run id never depends on the rest
        of the grid. A value the sweep does not have raises ValueError naming ``source``."""
        changes = {}
        for axis, wanted in keep.items():
            if axis not in ("datasets", "models", "fractions", "seeds"):
                raise ValueError(f"{source or self.name}: cannot restrict sweep {self.name!r} by "
                                 f"{axis!r}; use datasets, models, fractions or seeds")
            if wanted is None:
                continue
            have = list(getattr(self, axis))
            if axis == "fractions":
                have, wanted = [float(f) for f in have], [float(f) for f in wanted]
            unknown = [w for w in wanted if w not in have]
            if unknown or not wanted:
                raise ValueError(f"{source or self.name}: {axis} {unknown or wanted} not in sweep "
                                 f"{self.name!r} (it has {have})")
            changes[axis] = [h for h in have if h in wanted]  # the sweep's own order
        return replace(self, **changes)

    def grid(self) -> list[tuple]:
        """The grid's (dataset, fraction, model, seed) tuples."""
        return list(itertools.product(self.datasets, self.fractions, self.models, self.seeds))

    def train_config(self, model: str, seed: int) -> TrainConfig:
        """``model``'s recipe with the sweep's ``train`` and ``train_per_model`` on top."""
        tkw = {**self.train, **self.train_per_model.get(model, {})}
        return train_config_for(model, self.recipe, {**tkw, "seed": seed})

    def expand(self) -> list[RunSpec]:
        """The runs of the grid, in a deterministic order (dataset, fraction, model, seed)."""
        runs = []
        self.check_settings()
        for ds, frac, model, seed in self.grid():
            runs.append(RunSpec(
                model=model, dataset=ds, dataset_options=self.dataset_options.get(ds, {}),
                protocol=self.protocol.get(ds, {}), train_fraction=float(frac),
                hparams=self.hparams.get(model, {}), train=self.train_config(model, seed),
                teacher=self.teachers.get(ds) if _uses_teacher(model) else None,
                objective=self.objective.get(model, {}),
                efficiency=EfficiencyConfig() if self.efficiency else None, tag=self.name,
                recipe=self.recipe))
        return runs


def sweeps_from_dict(d: dict, source: str) -> list[SweepSpec]:
    """The sweeps of a TOML table: one, or one per ``[[variant]]`` (module docstring)."""
    if "variant" not in d:
        return [SweepSpec.from_dict(d, source)]
    variants = d["variant"]
    common = {k: v for k, v in d.items() if k != "variant"}
    if not isinstance(variants, list) or not variants or \
            not all(isinstance(v, dict) for v in variants):
        raise ValueError(f"{source}: 'variant' must be an array of tables ([[variant]])")
    if "name" not in common:
        raise ValueError(f"{source}: a sweep needs 'name' (the prefix of its variants' names)")
    out, seen = [], set()
    for i, var in enumerate(variants, 1):
        vname = var.get("name")
        where = f"{source} [[variant]] {vname or i}"
        if not vname or not isinstance(vname, str):
            raise ValueError(f"{where}: a variant needs a 'name'")
        if vname in seen:
            raise ValueError(f"{where}: variant name given twice")
        if "variant" in var:
            raise ValueError(f"{where}: variants do not nest")
        seen.add(vname)
        merged = {**common, **{k: v for k, v in var.items() if k != "name"},
                  "name": f"{common['name']}-{vname}"}
        out.append(SweepSpec.from_dict(merged, where))
    return out


def load_sweeps(path: Path) -> list[SweepSpec]:
    """The sweeps of a sweep file: one, or one per ``[[variant]]`` (module docstring)."""
    try:
        d = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ValueError(f"{path}: cannot read sweep spec ({e})") from e
    return sweeps_from_dict(d, str(path))


# "<kind>:<arg>" teacher references -> store paths; methods register their kinds (flowdistill
# registers "model"). A resolver gets (arg, dataset, sweep, create) and the keywords
# records_dir, runs_dir, label_root (None: the defaults) and returns a path, or None when
# ``create`` is False and the labels do not exist yet.
TEACHER_RESOLVERS: dict[str, Callable[[str, str, SweepSpec, bool], str | None]] = {}


def register_teacher_resolver(kind: str, fn: Callable) -> None:
    TEACHER_RESOLVERS[kind] = fn


def resolve_teachers(sweep: SweepSpec, create: bool = True, *, records_dir: Path | None = None,
                     runs_dir: Path | None = None, label_root: Path | None = None) -> SweepSpec:
    """A copy of ``sweep`` whose teacher references are store paths (training teachers when
    ``create``, their records in ``records_dir``, checkpoints in ``runs_dir`` and labels in
    ``label_root``; None: the defaults); unresolvable references are dropped when not
    creating."""
    from .models import registry

    registry()  # importing the model packages registers their resolvers
    out = {}
    for ds, ref in sweep.teachers.items():
        if ds not in sweep.datasets:
            continue
        kind, sep, arg = ref.partition(":")
        if sep and kind in TEACHER_RESOLVERS:
            path = TEACHER_RESOLVERS[kind](arg, ds, sweep, create, records_dir=records_dir,
                                           runs_dir=runs_dir, label_root=label_root)
            if path is not None:
                out[ds] = path
        elif sep and not Path(ref).exists():
            raise ValueError(f"sweep {sweep.name}: unknown teacher kind {kind!r} in {ref!r}; "
                             f"known: {sorted(TEACHER_RESOLVERS)}")
        else:
            out[ds] = ref
    return replace(sweep, teachers=out)


def uses_teacher(model: str) -> bool:
    """Whether ``model`` learns from a teacher's soft labels (its runs need the sweep's
    teacher for their dataset)."""
    from .models import get_spec

    return "distill" in get_spec(model).tags


_uses_teacher = uses_teacher


@dataclass
class SweepResult:
    finished: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        return (f"{len(self.finished)} run, {len(self.skipped)} already finished, "
                f"{len(self.failed)} failed")


FINISHED, SKIPPED, FAILED = "finished", "skipped", "failed"


def _run_one(spec: RunSpec, records_dir: str, runs_dir: str) -> tuple[str, str, str | None]:
    """(run id, outcome, traceback or None). A run that another process finished meanwhile
    (it held the run's lock, see :func:`benchmark.experiment.execute`) is ``skipped``."""
    try:
        run_experiment(spec, Path(records_dir), Path(runs_dir),
                       command=f"sweep {spec.tag}")
        return spec.run_id(), FINISHED, None
    except RecordExistsError:
        return spec.run_id(), SKIPPED, None
    except Exception:  # noqa: BLE001 - reported per run, the sweep goes on
        return spec.run_id(), FAILED, traceback.format_exc()


def run_sweep(sweep: SweepSpec, executor: str = "local", workers: int = 1,
              records_dir: Path | None = None, runs_dir: Path | None = None,
              progress: bool = True, ray_resources: dict | None = None,
              on_done: Callable[[str, str | None], None] | None = None,
              label_root: Path | None = None) -> SweepResult:
    """Run every unfinished run of ``sweep``; failures are collected, not fatal. Safe to run
    twice at once (two shells, two machines on one file system): each run trains once, under
    its lock, and the other sweep counts it as skipped. Teachers the sweep trains (``model:``
    references) keep their records and checkpoints beside the sweep's and their labels in
    ``label_root`` (None: ``$FLOWDISTILL_LABELS``, else the workspace's ``cache/labels``).
    With one worker (or Ray) the teachers train first, in this process; with a local pool of
    ``workers > 1`` they train in one of its slots while the runs that need no teacher take the
    others (:func:`_pool_with_teachers`), which changes the order, never the runs."""
    records_dir = Path(records_dir or default_records_dir())
    runs_dir = Path(runs_dir or default_runs_dir())
    result = SweepResult()
    untrained: set[str] = set()
    if executor == "local" and workers > 1:
        # teachers still to train: their training takes a pool slot beside the runs that need
        # no teacher, instead of holding up the whole sweep (run ids are the same either way)
        ready = resolve_teachers(sweep, create=False, records_dir=records_dir,
                                 runs_dir=runs_dir, label_root=label_root)
        untrained = {ds for ds in sweep.teachers if ds in sweep.datasets} - set(ready.teachers)
        specs = [s for s in ready.expand() if not _waits_for(s, untrained)]
        # nothing left to train beside them: the teachers train first, here, with every core
        if untrained and all(is_finished(records_dir, s.run_id()) for s in specs):
            untrained = set()
    if untrained:
        n_waiting = len(sweep.grid()) - len(specs)
    else:
        sweep = resolve_teachers(sweep, records_dir=records_dir, runs_dir=runs_dir,
                                 label_root=label_root)
        specs, n_waiting = sweep.expand(), 0
    todo = _unfinished(specs, records_dir, result)
    for spec in todo:
        spec.train.progress = progress and workers == 1 and executor == "local"
    bar = tqdm(total=len(todo) + n_waiting, desc=f"sweep {sweep.name}", disable=not progress)

    def done(run_id: str, outcome: str, err: str | None) -> None:
        if outcome == FINISHED:
            result.finished.append(run_id)
        elif outcome == SKIPPED:
            result.skipped.append(run_id)
        else:
            result.failed[run_id] = err
            tqdm.write(f"FAILED {run_id}:\n{err}")
        if on_done:
            on_done(run_id, err)
        bar.update(1)

    if executor == "local" and workers <= 1:
        for spec in todo:
            done(*_run_one(spec, str(records_dir), str(runs_dir)))
    elif executor == "local":
        # spawned workers start a fresh interpreter: they get this process's malloc settings
        # (the CLI's, see benchmark.allocator) and their share of the cores here
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn"),
                                 initializer=_init_worker,
                                 initargs=(worker_threads(workers), malloc_tuned())) as pool:
            if untrained:
                _pool_with_teachers(pool, workers, sweep, untrained, todo, records_dir, runs_dir,
                                    label_root, result, bar, done)
            else:
                futs = {pool.submit(_run_one, s, str(records_dir), str(runs_dir)): s
                        for s in todo}
                for f in as_completed(futs):
                    try:
                        done(*f.result())
                    except Exception:  # noqa: BLE001 - a worker died (killed, out of memory)
                        done(futs[f].run_id(), FAILED, traceback.format_exc())
    elif executor == "ray":
        _run_ray(todo, records_dir, runs_dir, ray_resources or {}, done)
    else:
        raise ValueError(f"unknown executor {executor!r}; use 'local' or 'ray'")
    bar.close()
    return result


def worker_threads(workers: int, cpus: int | None = None) -> int:
    """Torch threads of each of ``workers`` pool processes on ``cpus`` cores (None: this
    machine's): an equal share, at least one. Without it every process would take torch's
    default, all the cores, and N workers would run N x cores threads: two workers on two cores
    made STID's and T-GCN's CPU epochs 4-5x slower (docs/reproduce.md). A run's own
    ``train.num_threads`` still wins (the trainer sets it)."""
    return max(1, (cpus or os.cpu_count() or 1) // max(1, workers))


def _init_worker(threads: int, tune: bool) -> None:
    """A pool process's start: its malloc settings and its share of the cores."""
    if tune:
        tune_malloc()
    import torch

    torch.set_num_threads(threads)


def _unfinished(specs: list[RunSpec], records_dir: Path, result: SweepResult) -> list[RunSpec]:
    """The runs of ``specs`` without a record in ``records_dir``; the others are listed as
    skipped in ``result``."""
    todo = []
    for spec in specs:
        if is_finished(records_dir, spec.run_id()):
            result.skipped.append(spec.run_id())
        else:
            todo.append(spec)
    return todo


def _waits_for(spec: RunSpec, untrained: set[str]) -> bool:
    """Whether ``spec`` needs a teacher that ``untrained`` says is still to be trained."""
    return spec.dataset in untrained and _uses_teacher(spec.model)


def _train_teachers(sweep: SweepSpec, records_dir: Path, runs_dir: Path,
                    label_root: Path | None) -> dict[str, str]:
    """A pool task: the sweep's teachers resolved (trained and labelling where needed)."""
    return resolve_teachers(sweep, records_dir=records_dir, runs_dir=runs_dir,
                            label_root=label_root).teachers


def _pool_with_teachers(pool: ProcessPoolExecutor, workers: int, sweep: SweepSpec,
                        untrained: set[str], todo: list[RunSpec], records_dir: Path,
                        runs_dir: Path, label_root: Path | None, result: SweepResult, bar,
                        done: Callable[[str, str, str | None], None]) -> None:
    """Train the sweep's missing teachers in one pool slot while the runs that need no teacher
    (``todo``) take the others; once the teachers are ready their students go first. Never
    more than ``workers`` tasks at once. A teacher that fails to train is raised after the
    other runs have finished (its students are not started)."""
    teacher = pool.submit(_train_teachers, sweep, records_dir, runs_dir, label_root)
    independent, students = deque(todo), deque()
    running: dict = {}
    teacher_error: BaseException | None = None

    def fill() -> None:
        while len(running) + (teacher is not None) < workers and (students or independent):
            spec = (students or independent).popleft()
            running[pool.submit(_run_one, spec, str(records_dir), str(runs_dir))] = spec

    fill()
    while running or teacher is not None:
        waiting = set(running) | ({teacher} if teacher is not None else set())
        for f in wait(waiting, return_when=FIRST_COMPLETED)[0]:
            if f is teacher:
                teacher = None
                try:
                    resolved = replace(sweep, teachers=f.result())
                except Exception as e:  # noqa: BLE001 - raised once the other runs are done
                    teacher_error = e
                    continue
                taught = [s for s in resolved.expand() if _waits_for(s, untrained)]
                to_run = _unfinished(taught, records_dir, result)
                bar.update(len(taught) - len(to_run))
                for spec in to_run:
                    spec.train.progress = False
                students.extend(to_run)
                continue
            spec = running.pop(f)
            try:
                done(*f.result())
            except Exception:  # noqa: BLE001 - a worker died (killed, out of memory)
                done(spec.run_id(), FAILED, traceback.format_exc())
        fill()
    if teacher_error is not None:
        raise teacher_error


def _run_ray(todo: list[RunSpec], records_dir: Path, runs_dir: Path, resources: dict,
             done: Callable[[str, str, str | None], None]) -> None:
    """Submit each run as a Ray task (``num_cpus``/``num_gpus`` from ``resources``).

    Connects to a running cluster when ``RAY_ADDRESS`` is set (``ray.init()`` default), else
    starts a local instance."""
    try:
        import ray
    except ImportError as e:
        raise RuntimeError("the ray executor needs `pip install flowdistill-bench[ray]`") from e
    if not ray.is_initialized():
        ray.init(num_cpus=resources.get("cluster_cpus"), include_dashboard=False,
                 log_to_driver=False)
    remote = ray.remote(num_cpus=resources.get("num_cpus", 1),
                        num_gpus=resources.get("num_gpus", 0))(_run_one)
    pending = {remote.remote(s, str(records_dir), str(runs_dir)): s for s in todo}
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            pending.pop(ref)
            done(*ray.get(ref))


def sweep_status(sweep: SweepSpec, records_dir: Path | None = None,
                 label_root: Path | None = None) -> dict:
    """How many runs of ``sweep`` are finished."""
    resolved = resolve_teachers(sweep, create=False, records_dir=records_dir,
                                label_root=label_root)
    records_dir = Path(records_dir or default_records_dir())
    runs = [r for r in resolved.expand()
            if r.teacher is not None or not _uses_teacher(r.model)]
    runs += [None] * (len(sweep.grid()) - len(runs))
    n_done = sum(r is not None and is_finished(records_dir, r.run_id()) for r in runs)
    return {"name": sweep.name, "runs": len(runs), "finished": n_done}


def dump_spec(sweep: SweepSpec) -> str:
    return json.dumps(sweep.__dict__, indent=1, sort_keys=True)

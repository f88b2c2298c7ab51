"""``flowdistill reproduce``: the whole pipeline as a list of resumable steps, per profile.

A profile is a TOML file beside the sweeps, ``paper/experiments/profiles/<name>.toml`` (package
data of ``paper``, so an installed wheel has them): ``smoke`` (CI-sized, minutes), ``cpu`` (the
default, a 2-core machine) and ``paper`` (one GPU). It names its default ``workers``, its output
directory ``out`` (relative to the workspace: the checkout, or the flowdistill home when
installed; see :mod:`benchmark.paths`), whether checkpoints and labels stay under it
(``self_contained``) or go to the workspace's shared ``runs/`` and ``cache/labels``, and its
``[[steps]]`` in order, each with a ``kind``:

* ``verify-data``: ``datasets`` whose checksums must match;
* ``sweep``: ``sweep = "<name>"`` (``paper/experiments/<name>.toml``; a file of
  ``[[variant]]`` sweeps is one step per variant) or an inline ``[steps.sweep]`` table
  (:class:`~benchmark.sweep.SweepSpec` fields);
* ``llm-teacher``: fine-tune the LLM teacher on ``dataset`` into ``checkpoint`` (under the runs
  directory) with ``[steps.finetune]`` (:class:`~flowdistill.teacher.finetune.
  TeacherFinetuneConfig` fields), label with ``[steps.label]`` (keywords of
  :func:`~flowdistill.teacher.llm_labels.label`), then run ``students`` (a sweep, by name or
  inline) with those labels as the teacher of ``dataset``;
* ``scaling``: ``python -m perf.scaling`` over ``models`` and ``nodes`` with ``settings``
  (its flags, as the :class:`~perf.scaling.ScalingConfig` field names they set);
* ``figures``: ``python -m paper.build`` over the profile's records, ``tags`` mapping its
  ``--<experiment>-tag`` flags to sweep names.

Unknown keys stop the load with one line naming the file and the key. Every step is resumable:
sweeps skip finished runs, an interrupted run resumes from its last checkpoint, the teacher
fine-tuning resumes, label stores are reused.
"""

from __future__ import annotations

import subprocess
import sys
import time
import tomllib
from dataclasses import MISSING, dataclass, field, fields, replace
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

from benchmark.paths import module_env, workspace_root
from benchmark.sweep import SweepSpec, run_sweep, sweeps_from_dict


def experiments_dir() -> Traversable:
    """``paper/experiments``: the sweep TOMLs, and the profiles under ``profiles/``."""
    return files("paper") / "experiments"


def profile_names() -> list[str]:
    return sorted(p.name.removesuffix(".toml") for p in (experiments_dir() / "profiles").iterdir()
                  if p.name.endswith(".toml"))


@dataclass
class PipelineContext:
    """Where a pipeline run writes: records, checkpoints, labels, tables and figures."""

    profile: str
    out: Path
    runs: Path
    labels: Path
    workers: int = 1
    log: list[str] = field(default_factory=list)

    @property
    def records(self) -> Path:
        return self.out / "records"

    def say(self, msg: str) -> None:
        print(f"[reproduce:{self.profile}] {msg}", flush=True)
        self.log.append(msg)

    def run_module(self, module: str, args: list[str]) -> None:
        """``python -m <module> <args>`` in a child process running this code (a checkout's,
        or the installed package's)."""
        subprocess.run([sys.executable, "-m", module, *args], env=module_env(), check=True)


# ------------------------------------------------------------------------------ steps
@dataclass
class VerifyData:
    """Stop unless every file of ``datasets`` matches its checksum."""

    datasets: list[str]

    @property
    def name(self) -> str:
        return "data"

    @property
    def description(self) -> str:
        return f"verify the checksums of {', '.join(self.datasets)}"

    def run(self, ctx: PipelineContext) -> None:
        from benchmark.data import registry

        for ds in self.datasets:
            bad = [c for c in registry.verify(ds) if not c[1]]
            if bad:
                raise RuntimeError(f"{ds}: checksum mismatch for {[c[0] for c in bad]}")
            ctx.say(f"{ds}: files verified ({registry.locate(ds)})")


def run_sweep_step(ctx: PipelineContext, sweep: SweepSpec) -> None:
    res = run_sweep(sweep, workers=ctx.workers, records_dir=ctx.records, runs_dir=ctx.runs,
                    label_root=ctx.labels)
    ctx.say(f"sweep {sweep.name}: {res.summary()}")
    if res.failed:
        raise RuntimeError(f"sweep {sweep.name}: {len(res.failed)} runs failed: "
                           f"{sorted(res.failed)}")


@dataclass
class Sweep:
    """One sweep; ``toml`` names its ``paper/experiments`` file (None: inline in the profile)."""

    sweep: SweepSpec
    toml: str | None = None
    variant: bool = False  # one of the file's [[variant]] sweeps

    @property
    def name(self) -> str:
        return f"sweep:{self.toml or self.sweep.name}"

    @property
    def description(self) -> str:
        if self.toml:
            return f"paper/experiments/{self.toml}.toml" + (f" ({self.sweep.name})"
                                                            if self.variant else "")
        return f"{len(self.sweep.grid())} runs of {', '.join(self.sweep.models)}"

    def run(self, ctx: PipelineContext) -> None:
        run_sweep_step(ctx, self.sweep)


@dataclass
class LLMTeacher:
    """Fine-tune the LLM teacher, label every window with it, then run ``students`` with those
    labels as the teacher of ``dataset``."""

    dataset: str
    checkpoint: str  # relative to the runs directory
    students: SweepSpec
    finetune: dict = field(default_factory=dict)  # TeacherFinetuneConfig fields
    label: dict = field(default_factory=dict)  # keywords of llm_labels.label

    @property
    def name(self) -> str:
        return f"llm-teacher:{self.dataset}"

    @property
    def description(self) -> str:
        return "fine-tune, label, distil"

    def run(self, ctx: PipelineContext) -> None:
        from .teacher.finetune import TeacherFinetuneConfig, finetune
        from .teacher.llm_labels import label

        cfg = TeacherFinetuneConfig(dataset=self.dataset,
                                    output_dir=str(ctx.runs / self.checkpoint), **self.finetune)
        t0 = time.perf_counter()
        ckpt = finetune(cfg)
        ctx.say(f"LLM teacher fine-tuned in {time.perf_counter() - t0:.0f}s: {ckpt}")
        # an earlier run's store of this checkpoint is reused when it holds every window
        store = label(ckpt, self.dataset, store_root=ctx.labels,
                      dataset_options=self.finetune.get("dataset_options"), **self.label)
        ctx.say(f"LLM soft labels: {store.path} (coverage {store.coverage:.3f})")
        run_sweep_step(ctx, replace(self.students, teachers={self.dataset: str(store.path)}))


# the flags of ``python -m perf.scaling`` besides --models, --nodes and --out, as the
# ScalingConfig field names they set (tests/test_pipeline.py checks them against its parser, so
# that the method never imports perf; the child checks the values)
SCALING_SETTINGS = ("batch_size", "warmup", "repeats", "max_latency_s", "memory_limit_gb",
                    "timeout_s", "threads", "device", "supports", "neighbours", "seed",
                    "keep_going", "redo_failed", "no_progress")


@dataclass
class Scaling:
    """``python -m perf.scaling`` into ``<out>/scaling/<profile>.json``."""

    models: list[str]
    nodes: list[int]
    settings: dict = field(default_factory=dict)  # SCALING_SETTINGS

    @property
    def name(self) -> str:
        return "scaling"

    @property
    def description(self) -> str:
        return (f"latency/memory vs N for {','.join(self.models)} at "
                f"N={','.join(map(str, self.nodes))}")

    def flags(self) -> list[str]:
        out = []
        for key, value in self.settings.items():
            flag = "--" + key.replace("_", "-")
            if value is True:
                out.append(flag)
            elif value is not False:
                out += [flag, str(value)]
        return out

    def run(self, ctx: PipelineContext) -> None:
        out = ctx.out / "scaling" / f"{ctx.profile}.json"
        ctx.run_module("perf.scaling", ["--models", ",".join(self.models),
                                        "--nodes", ",".join(map(str, self.nodes)),
                                        "--out", str(out), *self.flags()])
        ctx.say(f"scaling rows: {out}")


# paper.build's --<experiment>-tag flags (BuildConfig.<experiment>_tag; tests/test_pipeline.py
# checks that the two agree, so that the pipeline never imports paper in-process)
FIGURE_TAGS = ("main", "fraction", "ablation", "cpu-ablation")


@dataclass
class Figures:
    """``python -m paper.build`` over the profile's records; ``tags`` maps paper.build's
    ``--<experiment>-tag`` flags to the sweeps feeding each table (tables never borrow records
    of other sweeps, so a profile with its own sweep names says which feed what)."""

    tags: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return "figures"

    @property
    def description(self) -> str:
        return "tables and figures from the records"

    def run(self, ctx: PipelineContext) -> None:
        args = ["--records", str(ctx.records), "--out", str(ctx.out), "--runs", str(ctx.runs)]
        for flag, tag in self.tags.items():
            args += [f"--{flag}-tag", tag]
        ctx.run_module("paper.build", args)
        ctx.say(f"tables in {ctx.out / 'tables'}, figures in {ctx.out / 'figures'}")


Step = VerifyData | Sweep | LLMTeacher | Scaling | Figures
# a profile's ``kind`` -> its step class, whose fields are the keys of the step's table (but
# Sweep.toml, which the reader sets)
STEP_KINDS: dict[str, type] = {"verify-data": VerifyData, "sweep": Sweep,
                               "llm-teacher": LLMTeacher, "scaling": Scaling, "figures": Figures}


# --------------------------------------------------------------------------- profiles
@dataclass
class Profile:
    """A profile file read into its steps (see the module docstring for the keys)."""

    name: str
    steps: list[Step]
    description: str = ""
    workers: int = 1
    out: str = "results"
    self_contained: bool = False


class ProfileReader:
    """Reads one profile file; every error names the file and the key."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, where: str, msg: str) -> ValueError:
        return ValueError(f"{self.source} {where}: {msg}")

    def keys(self, table: dict, where: str, allowed: set[str], required: set[str] = frozenset(),
               what: str = "key") -> None:
        for key in table:
            if key not in allowed:
                raise self.fail(f"{where}.{key}" if where else key,
                                f"unknown {what}; accepted: {', '.join(sorted(allowed))}")
        for key in sorted(required - set(table)):
            raise self.fail(where or "(top level)", f"missing key {key!r}")

    def table(self, value, where: str) -> dict:
        if not isinstance(value, dict):
            raise self.fail(where, f"expected a table, got {type(value).__name__}")
        return value

    def sweep(self, value, where: str) -> tuple[SweepSpec, str | None]:
        """(spec, TOML name): ``"<name>"`` is ``paper/experiments/<name>.toml``; a table is the
        sweep itself."""
        specs, toml = self.sweeps(value, where)
        if len(specs) != 1:
            raise self.fail(where, f"paper/experiments/{toml}.toml holds {len(specs)} sweeps "
                            f"([[variant]]); name it in a step of kind 'sweep'")
        return specs[0], toml

    def sweeps(self, value, where: str) -> tuple[list[SweepSpec], str | None]:
        """Like :meth:`sweep`, for a file that may hold ``[[variant]]`` sweeps."""
        if isinstance(value, str):
            path = experiments_dir() / f"{value}.toml"
            if not path.is_file():
                names = sorted(p.name.removesuffix(".toml") for p in experiments_dir().iterdir()
                               if p.name.endswith(".toml"))
                raise self.fail(where, f"no sweep paper/experiments/{value}.toml; "
                                f"shipped: {', '.join(names)}")
            try:
                d = tomllib.loads(path.read_text())
            except tomllib.TOMLDecodeError as e:
                raise ValueError(f"paper/experiments/{value}.toml: cannot read sweep ({e})") \
                    from e
            return sweeps_from_dict(d, f"paper/experiments/{value}.toml"), value
        return [SweepSpec.from_dict(self.table(value, where), f"{self.source} [{where}]")], None

    def steps(self, d: dict, where: str) -> list[Step]:
        """The step of table ``d``; a sweep step of a ``[[variant]]`` file is one per variant."""
        if d.get("kind") == "sweep" and isinstance(d.get("sweep"), str):
            self.keys(d, where, {"kind", "sweep"}, {"sweep"})
            specs, toml = self.sweeps(d["sweep"], f"{where}.sweep")
            return [Sweep(spec, toml, variant=len(specs) > 1) for spec in specs]
        return [self.step(d, where)]

    def step(self, d: dict, where: str) -> Step:
        kind = d.get("kind")
        if kind not in STEP_KINDS:
            raise self.fail(f"{where}.kind",
                            f"expected one of {', '.join(STEP_KINDS)}, got {kind!r}")
        keys = [f for f in fields(STEP_KINDS[kind]) if f.name != "toml"]
        self.keys(d, where, {f.name for f in keys} | {"kind"},
                  {f.name for f in keys if f.default is MISSING and f.default_factory is MISSING})
        if kind == "verify-data":
            return VerifyData(list(d["datasets"]))
        if kind == "sweep":
            spec, toml = self.sweep(d["sweep"], f"{where}.sweep")
            return Sweep(spec, toml)
        if kind == "llm-teacher":
            return LLMTeacher(d["dataset"], d["checkpoint"],
                              self.sweep(d["students"], f"{where}.students")[0],
                              self.finetune(d.get("finetune", {}), f"{where}.finetune"),
                              self.label(d.get("label", {}), f"{where}.label"))
        if kind == "scaling":
            return Scaling(list(d["models"]), [int(n) for n in d["nodes"]],
                           self.scaling(d.get("settings", {}), f"{where}.settings"))
        tags = self.table(d.get("tags", {}), f"{where}.tags")
        self.keys(tags, f"{where}.tags", set(FIGURE_TAGS), what="table tag")
        return Figures(dict(tags))

    def finetune(self, value, where: str) -> dict:
        from .teacher.finetune import TeacherFinetuneConfig

        d = self.table(value, where)
        # the step sets these two: the teacher's dataset and its checkpoint directory
        self.keys(d, where, {f.name for f in fields(TeacherFinetuneConfig)}
                  - {"dataset", "output_dir"}, what="TeacherFinetuneConfig field")
        try:
            TeacherFinetuneConfig(**d)
        except (TypeError, ValueError) as e:
            raise self.fail(where, str(e)) from e
        return dict(d)

    def label(self, value, where: str) -> dict:
        import inspect

        from .teacher.llm_labels import label

        d = self.table(value, where)
        params = set(inspect.signature(label).parameters)
        # the step sets the checkpoint, dataset, store and loader options
        self.keys(d, where, params - {"checkpoint_dir", "dataset_id", "store_root",
                                      "dataset_options"}, what="label() argument")
        return {k: tuple(v) if k == "splits" else v for k, v in d.items()}

    def scaling(self, value, where: str) -> dict:
        d = self.table(value, where)
        self.keys(d, where, set(SCALING_SETTINGS), what="scaling setting")
        return dict(d)

    def profile(self, d: dict, name: str) -> Profile:
        top = {f.name for f in fields(Profile)} - {"name"}
        self.keys(d, "", top, {"steps"})
        steps = d["steps"]
        if not isinstance(steps, list) or not steps:
            raise self.fail("steps", "expected a non-empty [[steps]] array")
        return Profile(name=name, description=d.get("description", ""),
                       workers=int(d.get("workers", 1)), out=d.get("out", "results"),
                       self_contained=bool(d.get("self_contained", False)),
                       steps=[st for i, s in enumerate(steps)
                              for st in self.steps(self.table(s, f"steps[{i}]"),
                                                   f"steps[{i}]")])


def load_profile(profile: str | Path) -> Profile:
    """A shipped profile by name (``smoke``, ``cpu``, ``paper``), or a profile file's path."""
    if str(profile).endswith(".toml"):
        path, source, name = Path(profile), str(profile), Path(profile).stem
        if not path.is_file():
            raise FileNotFoundError(f"{profile}: no such profile file")
    else:
        name = str(profile)
        if name not in profile_names():
            raise ValueError(f"unknown profile {name!r}; choose from {profile_names()} or give "
                             "a profile file (PATH.toml)")
        path = experiments_dir() / "profiles" / f"{name}.toml"
        source = f"paper/experiments/profiles/{name}.toml"
    try:
        d = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{source}: cannot read profile ({e})") from e
    return ProfileReader(source).profile(d, name)


def context(profile: Profile, out: Path | None = None,
            workers: int | None = None) -> PipelineContext:
    """Where ``profile`` writes: ``out`` (default the profile's, under the workspace); its
    checkpoints and labels under ``out`` when self-contained, else the workspace's shared
    ``runs/`` and ``cache/labels``."""
    root = workspace_root()
    out = Path(out or root / profile.out).resolve()
    shared = root.resolve()
    runs = out / "runs" if profile.self_contained else shared / "runs"
    labels = out / "labels" if profile.self_contained else shared / "cache" / "labels"
    return PipelineContext(profile.name, out, runs, labels, workers or profile.workers)


def reproduce(profile: str | Path = "cpu", out: Path | None = None, workers: int | None = None,
              only: list[str] | None = None) -> PipelineContext:
    """Run the profile's steps in order (or only those named); stop at the first failure."""
    spec = load_profile(profile)
    ctx = context(spec, out, workers)
    t_all = time.perf_counter()
    for i, step in enumerate(spec.steps, 1):
        if only and step.name not in only and step.name.split(":")[0] not in only:
            continue
        ctx.say(f"step {i}/{len(spec.steps)} {step.name}: {step.description}")
        t0 = time.perf_counter()
        step.run(ctx)
        ctx.say(f"step {step.name} done in {time.perf_counter() - t0:.0f}s")
    ctx.say(f"finished in {time.perf_counter() - t_all:.0f}s; outputs under {ctx.out}")
    return ctx

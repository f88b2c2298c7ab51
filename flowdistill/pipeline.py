"""``flowdistill reproduce``: the whole pipeline as a list of resumable steps, per profile.

Profiles:
  smoke  CI-sized (minutes): checksums, closed-form baselines on nyc_taxi_manhattan, and every
         other step (forecaster teacher, tiny LLM teacher, students, graph baselines) for one
         short epoch on the in-process synthetic dataset; outputs in ``runs/reproduce-smoke``.
  cpu    the default, for a 2-core machine: the foundation and student sweeps on
         nyc_taxi_manhattan and pems07m, the tiny LLM teacher fine-tuned on nyc_taxi_manhattan
         driving the student, cheap graph baselines, the scaling run, tables and figures in
         ``results/``.
  paper  the GPU configuration (see docs/reproduce.md): every sweep under paper/experiments/.

Every step is resumable: sweeps skip finished runs, an interrupted run resumes from its last
checkpoint, the teacher fine-tuning resumes, label stores are reused.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from benchmark.experiment import REPO_ROOT
from benchmark.sweep import SweepSpec, run_sweep

EXPERIMENTS = REPO_ROOT / "paper" / "experiments"


@dataclass
class PipelineContext:
    """Where a pipeline run writes: records, checkpoints, labels, tables and figures."""

    profile: str
    out: Path
    workers: int = 1
    log: list[str] = field(default_factory=list)

    @property
    def records(self) -> Path:
        return self.out / "records"

    @property
    def runs(self) -> Path:
        return REPO_ROOT / "runs" if self.profile != "smoke" else self.out / "runs"

    @property
    def labels(self) -> Path:
        return REPO_ROOT / "cache" / "labels" if self.profile != "smoke" else self.out / "labels"

    def say(self, msg: str) -> None:
        print(f"[reproduce:{self.profile}] {msg}", flush=True)
        self.log.append(msg)


@dataclass
class Step:
    name: str
    run: Callable[[PipelineContext], None]
    description: str = ""


# ------------------------------------------------------------------------------ steps
def step_verify_data(datasets: tuple[str, ...]) -> Step:
    def run(ctx: PipelineContext) -> None:
        from benchmark.data import registry

        for ds in datasets:
            bad = [c for c in registry.verify(ds) if not c[1]]
            if bad:
                raise RuntimeError(f"{ds}: checksum mismatch for {[c[0] for c in bad]}")
            ctx.say(f"{ds}: files verified ({registry.locate(ds)})")

    return Step("data", run, f"verify the checksums of {', '.join(datasets)}")


def run_sweep_step(ctx: PipelineContext, sweep: SweepSpec) -> None:
    import os

    os.environ["FLOWDISTILL_LABELS"] = str(ctx.labels)
    os.environ["FLOWDISTILL_RECORDS"] = str(ctx.records)
    os.environ["FLOWDISTILL_RUNS"] = str(ctx.runs)
    res = run_sweep(sweep, workers=ctx.workers, records_dir=ctx.records, runs_dir=ctx.runs)
    ctx.say(f"sweep {sweep.name}: {res.summary()}")
    if res.failed:
        raise RuntimeError(f"sweep {sweep.name}: {len(res.failed)} runs failed: "
                           f"{sorted(res.failed)}")


def step_sweep(toml_name: str, edit: Callable[[SweepSpec], SweepSpec] | None = None) -> Step:
    def run(ctx: PipelineContext) -> None:
        sweep = SweepSpec.from_toml(EXPERIMENTS / f"{toml_name}.toml")
        run_sweep_step(ctx, edit(sweep) if edit else sweep)

    return Step(f"sweep:{toml_name}", run, f"paper/experiments/{toml_name}.toml")


def step_python_sweep(sweep: SweepSpec) -> Step:
    return Step(f"sweep:{sweep.name}", lambda ctx: run_sweep_step(ctx, sweep),
                f"{len(sweep.grid())} runs of {', '.join(sweep.models)}")


def step_llm_teacher(dataset: str, finetune_kw: dict, student_sweep: SweepSpec,
                     label_kw: dict | None = None) -> Step:
    """Fine-tune the LLM teacher, label every window with it, then run ``student_sweep`` with
    those labels as the teacher of ``dataset``."""

    def run(ctx: PipelineContext) -> None:
        from .teacher.finetune import TeacherFinetuneConfig, finetune
        from .teacher.llm_labels import label

        # profiles fine-tune with different settings: keep their checkpoints apart
        name = f"{dataset}-{finetune_kw.get('backbone', 'tiny')}"
        out_dir = ctx.runs / "llm-teacher" / (name if ctx.profile == "cpu" else
                                               f"{name}-{ctx.profile}")
        cfg = TeacherFinetuneConfig(dataset=dataset, output_dir=str(out_dir), **finetune_kw)
        t0 = time.perf_counter()
        ckpt = finetune(cfg)
        ctx.say(f"LLM teacher fine-tuned in {time.perf_counter() - t0:.0f}s: {ckpt}")
        # an earlier run's store of this checkpoint is reused when it holds every window
        store = label(ckpt, dataset, store_root=ctx.labels,
                      dataset_options=finetune_kw.get("dataset_options"), **(label_kw or {}))
        ctx.say(f"LLM soft labels: {store.path} (coverage {store.coverage:.3f})")
        run_sweep_step(ctx, replace(student_sweep, teachers={dataset: str(store.path)}))

    return Step(f"llm-teacher:{dataset}", run, "fine-tune, label, distil")


def step_figures(tags: dict[str, str] | None = None) -> Step:
    """``python -m paper.build`` over the profile's records; ``tags`` maps paper.build's
    ``--<experiment>-tag`` flags to the sweeps feeding each table (tables never borrow records
    of other sweeps, so a profile with its own sweep names says which feed what)."""

    def run(ctx: PipelineContext) -> None:
        cmd = [sys.executable, "-m", "paper.build", "--records", str(ctx.records),
               "--out", str(ctx.out), "--runs", str(ctx.runs)]
        for flag, tag in (tags or {}).items():
            cmd += [f"--{flag}-tag", tag]
        subprocess.run(cmd, cwd=REPO_ROOT, check=True)
        ctx.say(f"tables in {ctx.out / 'tables'}, figures in {ctx.out / 'figures'}")

    return Step("figures", run, "tables and figures from the records")


def step_scaling(models: str, nodes: str, extra: list[str] | None = None) -> Step:
    def run(ctx: PipelineContext) -> None:
        out = ctx.out / "scaling" / f"{ctx.profile}.json"
        cmd = [sys.executable, "-m", "perf.scaling", "--models", models, "--nodes", nodes,
               "--out", str(out), *(extra or [])]
        subprocess.run(cmd, cwd=REPO_ROOT, check=True)
        ctx.say(f"scaling rows: {out}")

    return Step("scaling", run, f"latency/memory vs N for {models} at N={nodes}")


# --------------------------------------------------------------------------- profiles
SYNTH = {"synthetic": {"num_nodes": 8, "num_days": 7, "steps_per_day": 24}}
SMOKE_TRAIN = {"epochs": 1, "max_train_batches": 2, "batch_size": 16, "device": "auto"}


def smoke_steps() -> list[Step]:
    # the real taxi data, cropped to its first eight weeks so that the step takes seconds
    foundation = SweepSpec(name="smoke-foundation", models=["last-value", "ha-slot", "ridge"],
                           datasets=["nyc_taxi_manhattan"], efficiency=False,
                           protocol={"nyc_taxi_manhattan": {"time_range": [0, 8 * 7 * 48]}})
    students = SweepSpec(name="smoke-students",
                         models=["flowdistill", "flowdistill-noteacher", "mlp", "stgcn", "gwnet"],
                         datasets=["synthetic"], fractions=[0.5, 1.0], dataset_options=SYNTH,
                         train=SMOKE_TRAIN, teachers={"synthetic": "model:ridge"})
    llm_students = SweepSpec(name="smoke-llm", models=["flowdistill"], datasets=["synthetic"],
                             dataset_options=SYNTH, train=SMOKE_TRAIN, efficiency=False)
    llm = {"backbone": "tiny", "steps": 4, "batch_size": 8, "eval_every": 4, "eval_pairs": 16,
           "tokenizer_windows": 8, "dataset_options": SYNTH["synthetic"], "progress": False}
    return [
        step_verify_data(("nyc_taxi_manhattan", "pems07m")),
        step_python_sweep(foundation),
        step_python_sweep(students),
        step_llm_teacher("synthetic", llm, llm_students),
        step_figures({"main": "smoke-foundation,smoke-students",
                      "fraction": "smoke-students", "ablation": "smoke-students",
                      "cpu-ablation": "smoke-llm"}),
    ]


def cpu_steps() -> list[Step]:
    # Issue 5's comparison at 10 % of the training data: the student distilled from the LLM's
    # labels, with the settings of the student-cpu sweep (8-minute cap, 1 thread, 2 at a time)
    # whose flowdistill-noteacher runs are its control. 100 % would need LLM labels for all
    # 8.7k training windows x 69 zones (600k prompts, about 3 hours at ~60 prompts/s here).
    llm_students = SweepSpec(
        name="student-llm", models=["flowdistill"], datasets=["nyc_taxi_manhattan"],
        fractions=[0.1], seeds=[0, 1, 2],
        train={"device": "auto", "epochs": 30, "patience": 5, "time_budget_s": 480,
               "num_threads": 1})
    # run A of results/teacher_nyc_taxi_manhattan.md: ST encoder pre-trained (UrbanGPT), then
    # 500 instruction-tuning steps of the tiny (not pretrained) Llama, on all training pairs
    llm = {"backbone": "tiny", "st_encoder": True, "encoder_node_embedding": True,
           "encoder_pretrain_epochs": 10, "steps": 500, "batch_size": 32, "lr": 1e-3,
           "num_threads": 2, "progress": True}
    # label exactly the windows the 10 % students train on (the most recent 10 % of the
    # training period)
    llm_labels = {"splits": ("train",), "protocol": {"train_fraction": 0.1}}
    return [
        step_verify_data(("nyc_taxi_manhattan", "nyc_bike_manhattan", "nyc_taxi_grid", "pems07m",
                          "metr_la_week")),
        step_sweep("foundation"),
        step_sweep("student_taxi_cpu"),
        step_llm_teacher("nyc_taxi_manhattan", llm, llm_students, llm_labels),
        step_sweep("baselines_cpu"),
        # the settings of results/efficiency_ratios.md: one thread, batch 8, bounded passes
        step_scaling("flowdistill,gwnet,stgcn", "69,1000,5000,10000",
                     ["--batch-size", "8", "--warmup", "1", "--repeats", "5",
                      "--max-latency-s", "20", "--threads", "1", "--timeout-s", "180"]),
        step_figures(),
    ]


def paper_steps() -> list[Step]:
    # the LLM-teacher arm on a GPU: the cpu profile's teacher, labels for every training window,
    # students at 100 % and 10 % (swap "backbone" for a local 7B directory to match the paper)
    llm_students = SweepSpec(
        name="student-llm-gpu", models=["flowdistill", "flowdistill-kd"],
        datasets=["nyc_taxi_manhattan"], fractions=[1.0, 0.1], seeds=[0, 1, 2],
        train={"device": "auto", "epochs": 100, "patience": 15})
    llm = {"backbone": "tiny", "st_encoder": True, "encoder_node_embedding": True,
           "encoder_pretrain_epochs": 10, "steps": 2000, "batch_size": 64, "lr": 1e-3,
           "device": "auto", "progress": True}
    return [
        step_verify_data(("nyc_taxi_manhattan", "nyc_taxi_grid", "pems07m")),
        step_sweep("foundation"),
        step_sweep("baselines_taxi"),
        step_sweep("stgcn_pems"),
        step_sweep("student_taxi"),
        step_sweep("main"),
        step_sweep("fraction"),
        step_sweep("ablation"),
        step_llm_teacher("nyc_taxi_manhattan", llm, llm_students,
                         {"splits": ("train_all",), "backend": "vllm"}),
        step_scaling("flowdistill,gwnet,stgcn", "69,500,1000,2000,5000,10000"),
        step_figures(),
    ]


PROFILES: dict[str, Callable[[], list[Step]]] = {
    "smoke": smoke_steps, "cpu": cpu_steps, "paper": paper_steps}


def reproduce(profile: str = "cpu", out: Path | None = None, workers: int | None = None,
              only: list[str] | None = None) -> PipelineContext:
    """Run the profile's steps in order (or only those named); stop at the first failure."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose from {sorted(PROFILES)}")
    default_out = REPO_ROOT / ("runs/reproduce-smoke" if profile == "smoke" else "results")
    ctx = PipelineContext(profile, Path(out or default_out),
                          workers or {"smoke": 1, "cpu": 2, "paper": 6}[profile])
    steps = PROFILES[profile]()
    t_all = time.perf_counter()
    for i, step in enumerate(steps, 1):
        if only and step.name not in only and step.name.split(":")[0] not in only:
            continue
        ctx.say(f"step {i}/{len(steps)} {step.name}: {step.description}")
        t0 = time.perf_counter()
        step.run(ctx)
        ctx.say(f"step {step.name} done in {time.perf_counter() - t0:.0f}s")
    ctx.say(f"finished in {time.perf_counter() - t_all:.0f}s; outputs under {ctx.out}")
    return ctx

"""``flowdistill reproduce``: profiles are TOML files read into dataclasses, bad keys stop the load
with one line naming the file and the key, and a run passes its directories explicitly (no
global environment)."""

from __future__ import annotations

import os
from dataclasses import fields
from pathlib import Path

import pytest

from benchmark import paths
from benchmark.cli import main
from benchmark.experiment import REPO_ROOT
from benchmark.sweep import SweepSpec, load_sweeps
from flowdistill import pipeline
from flowdistill.pipeline import (
    FIGURE_TAGS,
    Figures,
    LLMTeacher,
    Scaling,
    Sweep,
    VerifyData,
    load_profile,
)


def test_shipped_profiles_load_into_their_steps():
    assert pipeline.profile_names() == ["cpu", "cpu-llm", "paper", "smoke"]
    smoke = load_profile("smoke")
    assert (smoke.workers, smoke.out, smoke.self_contained) == (1, "runs/reproduce-smoke", True)
    assert [type(s) for s in smoke.steps] == [VerifyData, Sweep, Sweep, LLMTeacher, Figures]
    foundation = smoke.steps[1].sweep
    assert foundation.protocol == {"nyc_taxi_manhattan": {"time_range": [0, 8 * 7 * 48]}}
    assert smoke.steps[3].students.name == "smoke-llm"
    cpu = load_profile("cpu")
    assert (cpu.workers, cpu.out, cpu.self_contained) == (2, "results", False)
    scaling = next(s for s in cpu.steps if isinstance(s, Scaling))
    assert scaling.flags() == ["--batch-size", "8", "--warmup", "1", "--repeats", "5",
                               "--max-latency-s", "20", "--threads", "1", "--timeout-s", "180"]
    # the cpu profile fits an hour on 2 cores (issue 16): its LLM-teacher arm is cpu-llm, which
    # shares its workspace (so the student-cpu no-teacher runs are the student-llm control)
    assert not any(isinstance(s, LLMTeacher) for s in cpu.steps)
    cpu_llm = load_profile("cpu-llm")
    assert (cpu_llm.workers, cpu_llm.out, cpu_llm.self_contained) == (2, "results", False)
    assert [type(s) for s in cpu_llm.steps] == [VerifyData, LLMTeacher, Figures]
    llm = cpu_llm.steps[1]
    assert llm.label == {"splits": ("train",), "protocol": {"train_fraction": 0.1}}
    assert llm.students.name == "student-llm"
    student_cpu = SweepSpec.from_toml(REPO_ROOT / "paper" / "experiments"
                                      / "student_taxi_cpu.toml")
    assert (llm.students.fractions, llm.students.seeds) == (student_cpu.fractions,
                                                            student_cpu.seeds)
    paper = load_profile("paper")
    named = [s.name for s in paper.steps if isinstance(s, Sweep)]
    # every sweep TOML the paper profile names is the shipped file, read as such (a file of
    # [[variant]] sweeps, the teacher study, as one step per variant in the file's order)
    study = load_sweeps(REPO_ROOT / "paper" / "experiments" / "teacher_study.toml")
    for step in paper.steps:
        if isinstance(step, Sweep) and step.toml != "teacher_study":
            path = REPO_ROOT / "paper" / "experiments" / f"{step.toml}.toml"
            assert step.sweep == SweepSpec.from_toml(path)
    assert [s.sweep for s in paper.steps if isinstance(s, Sweep)
            and s.toml == "teacher_study"] == study
    assert named == ["sweep:foundation", "sweep:baselines_taxi", "sweep:stgcn_pems",
                     "sweep:student_taxi", "sweep:main", *["sweep:teacher_study"] * len(study),
                     "sweep:fraction", "sweep:ablation"]
    # the paper's LLM teacher: SmolLM2-135M pretrained + LoRA in bf16 on the GPU, labels for
    # every training window
    llm = next(s for s in paper.steps if isinstance(s, LLMTeacher))
    assert {k: llm.finetune[k] for k in ("backbone", "init", "tuning", "precision", "device")} \
        == {"backbone": "smollm2-135m", "init": "pretrained", "tuning": "lora",
            "precision": "bf16", "device": "auto"}
    assert llm.label["splits"] == ("train_all",) and llm.label["dtype"] == "bfloat16"


def test_figure_tags_are_paper_builds_tag_flags():
    from paper.build import BuildConfig

    tags = [f.name.removesuffix("_tag").replace("_", "-") for f in fields(BuildConfig)
            if f.name.endswith("_tag")]
    assert sorted(tags) == sorted(FIGURE_TAGS)


def test_scaling_settings_are_the_scaling_scripts_flags():
    from perf.scaling import ScalingConfig, build_parser

    dests = set(vars(build_parser().parse_args(["--out", "-"]))) - {"models", "nodes", "out"}
    assert set(pipeline.SCALING_SETTINGS) == dests
    # each flag sets the ScalingConfig field of its name, or is one of the run's own switches
    assert dests - {f.name for f in fields(ScalingConfig)} == {"redo_failed", "no_progress"}


def test_scaling_flags_only_for_set_booleans():
    step = Scaling(["mlp"], [8], {"keep_going": True, "redo_failed": False, "threads": 1})
    assert step.flags() == ["--keep-going", "--threads", "1"]


PROFILE = """
workers = 1
out = "x"
self_contained = true
[[steps]]
kind = "verify-data"
datasets = ["synthetic"]
"""


@pytest.mark.parametrize("extra, where", [
    ("colour = 1\n", "colour: unknown key"),
    ("[[steps]]\nkind = \"figures\"\ncolour = 1\n", "steps[1].colour: unknown key"),
    ("[[steps]]\nkind = \"figures\"\ntags = { mian = \"a\" }\n",
     "steps[1].tags.mian: unknown table tag"),
    ("[[steps]]\nkind = \"scaling\"\nmodels = [\"mlp\"]\nnodes = [8]\n"
     "settings = { batchsize = 8 }\n", "steps[1].settings.batchsize: unknown scaling setting"),
    ("[[steps]]\nkind = \"llm-teacher\"\ndataset = \"synthetic\"\ncheckpoint = \"t\"\n"
     "students = \"foundation\"\nfinetune = { stepz = 4 }\n",
     "steps[1].finetune.stepz: unknown TeacherFinetuneConfig field"),
    ("[[steps]]\nkind = \"llm-teacher\"\ndataset = \"synthetic\"\ncheckpoint = \"t\"\n"
     "students = \"foundation\"\nfinetune = { output_dir = \"elsewhere\" }\n",
     "steps[1].finetune.output_dir: unknown TeacherFinetuneConfig field"),
    ("[[steps]]\nkind = \"llm-teacher\"\ndataset = \"synthetic\"\ncheckpoint = \"t\"\n"
     "students = \"foundation\"\nlabel = { split = [\"train\"] }\n",
     "steps[1].label.split: unknown label() argument"),
    ("[[steps]]\nkind = \"llm-teacher\"\ndataset = \"synthetic\"\nstudents = \"foundation\"\n",
     "steps[1]: missing key 'checkpoint'"),
    ("[[steps]]\nkind = \"sweep\"\nsweep = \"no_such_sweep\"\n",
     "steps[1].sweep: no sweep paper/experiments/no_such_sweep.toml"),
    ("[[steps]]\nkind = \"sweep\"\n[steps.sweep]\nname = \"s\"\nmodels = [\"mlp\"]\nepochs = 1\n",
     "[steps[1].sweep]: unknown sweep fields ['epochs']"),
    ("[[steps]]\nkind = \"sweep\"\n[steps.sweep]\nname = \"s\"\nmodels = [\"mlp\"]\n"
     "train = { epochz = 1 }\n", "[steps[1].sweep] [train] epochz"),
    ("[[steps]]\nkind = \"train\"\n", "steps[1].kind: expected one of verify-data"),
])
def test_a_bad_profile_key_is_one_line_naming_file_and_key(tmp_path, capsys, extra, where):
    path = tmp_path / "mine.toml"
    # a top-level key must precede the [[steps]] tables
    text = extra + PROFILE if extra.startswith("colour") else PROFILE + extra
    path.write_text(text)
    with pytest.raises(ValueError, match=None) as e:
        load_profile(path)
    assert str(path) in str(e.value) and where in str(e.value), str(e.value)
    assert main(["reproduce", "--profile", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: ") and where in err


def test_unknown_profile_name_lists_the_shipped_ones(capsys):
    assert main(["reproduce", "--profile", "smok"]) == 2
    err = capsys.readouterr().err
    assert "unknown profile 'smok'" in err and "'smoke'" in err


def test_a_run_passes_its_directories_explicitly(tmp_path, monkeypatch):
    """A forecaster teacher trained by a profile's sweep keeps its record, checkpoints and
    labels under the profile's output, whatever $FLOWDISTILL_* say, and the process
    environment's FLOWDISTILL_* variables are left as they were."""
    elsewhere = tmp_path / "elsewhere"
    for var in ("LABELS", "RECORDS", "RUNS"):
        monkeypatch.setenv(f"FLOWDISTILL_{var}", str(elsewhere / var.lower()))
    before = {k: v for k, v in os.environ.items() if k.startswith("FLOWDISTILL_")}
    profile = tmp_path / "tiny.toml"
    profile.write_text("""
self_contained = true
[[steps]]
kind = "sweep"
[steps.sweep]
name = "tiny"
models = ["flowdistill"]
datasets = ["synthetic"]
efficiency = false
dataset_options.synthetic = { num_nodes = 4, num_days = 4, steps_per_day = 24 }
train = { epochs = 1, max_train_batches = 1, batch_size = 16, device = "cpu" }
teachers.synthetic = "model:ridge"
""")
    out = tmp_path / "out"
    ctx = pipeline.reproduce(profile, out=out)
    assert {k: v for k, v in os.environ.items() if k.startswith("FLOWDISTILL_")} == before
    assert (ctx.runs, ctx.labels, ctx.records) == (out / "runs", out / "labels", out / "records")
    records = sorted(p.name for p in (out / "records").glob("*.json"))
    assert len(records) == 2 and records[0].startswith("teacher-synthetic-ridge-")
    assert records[1].startswith("tiny-synthetic-flowdistill-")
    assert len(list((out / "labels").glob("*/meta.json"))) == 1
    assert not elsewhere.exists()


def test_workspace_is_the_checkout_or_the_flowdistill_home(tmp_path, monkeypatch):
    monkeypatch.setenv("FLOWDISTILL_HOME", str(tmp_path / "home"))
    assert paths.source_checkout() == REPO_ROOT
    assert paths.workspace_root() == REPO_ROOT
    smoke = load_profile("smoke")
    ctx = pipeline.context(smoke)
    assert ctx.out == REPO_ROOT.resolve() / "runs" / "reproduce-smoke"
    # installed from a wheel: site-packages holds no pyproject.toml
    monkeypatch.setattr(paths, "PACKAGE_PARENT", tmp_path / "site-packages")
    assert paths.source_checkout() is None
    assert paths.workspace_root() == tmp_path / "home"
    ctx = pipeline.context(smoke)
    assert ctx.out == (tmp_path / "home" / "runs" / "reproduce-smoke").resolve()
    assert ctx.runs == ctx.out / "runs" and ctx.labels == ctx.out / "labels"
    ctx = pipeline.context(load_profile("cpu"), out=Path("rel"), workers=3)
    home = (tmp_path / "home").resolve()
    assert (ctx.out, ctx.runs, ctx.labels, ctx.workers) == (
        Path("rel").resolve(), home / "runs", home / "cache" / "labels", 3)
    from benchmark.experiment import default_records_dir, default_runs_dir

    monkeypatch.delenv("FLOWDISTILL_RECORDS", raising=False)
    monkeypatch.delenv("FLOWDISTILL_RUNS", raising=False)
    assert default_records_dir() == tmp_path / "home" / "results" / "records"
    assert default_runs_dir() == tmp_path / "home" / "runs"
    assert paths.module_env({"PYTHONPATH": "x"}) == {"PYTHONPATH": "x"}


def test_child_modules_run_this_checkout(monkeypatch):
    env = paths.module_env({"PYTHONPATH": "/elsewhere"})
    assert env["PYTHONPATH"] == os.pathsep.join([str(REPO_ROOT), "/elsewhere"])
    assert paths.module_env({})["PYTHONPATH"] == str(REPO_ROOT)


def test_figures_command_installed_writes_into_the_flowdistill_home(tmp_path, monkeypatch):
    import subprocess
    import sys

    calls = []
    monkeypatch.setattr(subprocess, "run", lambda cmd, cwd, check: calls.append((cmd, cwd))
                        or type("Done", (), {"returncode": 0})())
    monkeypatch.setattr(paths, "PACKAGE_PARENT", tmp_path / "site-packages")
    monkeypatch.setenv("FLOWDISTILL_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FLOWDISTILL_RECORDS", raising=False)
    assert main(["figures"]) == 0
    (cmd, cwd), = calls
    home = tmp_path / "home"
    assert cmd == [sys.executable, "-m", "paper.build", "--records",
                   str((home / "results" / "records").resolve()),
                   "--out", str((home / "results").resolve())]
    assert Path(cwd) == home and home.is_dir()  # paper.build's default runs/ is the home's

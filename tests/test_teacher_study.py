"""Issue 14's study: the sweep file and teacher specs load and resolve without training; the
``llm:`` and ``model:`` teacher references (settings A, B, C) work end to end at toy size."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmark.sweep import SweepSpec, load_sweeps, resolve_teachers, sweeps_from_dict
from flowdistill.teacher import llm_teacher
from flowdistill.teacher.reference import TeacherReference, parse_reference

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "paper" / "experiments" / "teacher_study.toml"
TAXI, BIKE = "nyc_taxi_manhattan", "nyc_bike_manhattan"


@pytest.fixture
def dirs(tmp_path, monkeypatch):
    for name in ("RECORDS", "RUNS", "LABELS"):
        monkeypatch.setenv(f"FLOWDISTILL_{name}", str(tmp_path / name.lower()))
    return tmp_path


# ------------------------------------------------------------------ the shipped study
def test_study_sweeps_arms_and_teachers():
    sweeps = {s.name.removeprefix("teacher-study-"): s for s in load_sweeps(STUDY)}
    arms = [f"{s}-{t}" for s in "ABC" for t in ("smollm2-lora", "smollm2-scratch", "stid",
                                                "tiny")]
    assert list(sweeps) == ["noteacher", *arms]
    for name, s in sweeps.items():
        assert s.fractions == [0.1] and s.seeds == [0, 1, 2]
        s.expand()  # every run's settings check out
        if name == "noteacher":
            assert s.models == ["flowdistill-noteacher"] and s.datasets == [TAXI, BIKE]
            continue
        assert s.models == ["flowdistill", "flowdistill-kd"]
        setting, teacher = name.split("-", 1)
        ds = BIKE if setting == "C" else TAXI
        assert s.datasets == [ds] and list(s.teachers) == [ds]
        ref = parse_reference(s.teachers[ds].partition(":")[2], "x")
        assert ref.name == teacher
        assert ref == TeacherReference(teacher, 0.1 if setting == "B" else 1.0,
                                       TAXI if setting == "C" else None)


def test_study_resolves_without_training(dirs):
    """Every teacher reference of the study reads its spec (or forecaster) and finds nothing
    made yet; the LLM teachers' plans: A and C share one checkpoint, B has its own."""
    for s in load_sweeps(STUDY):
        assert resolve_teachers(s, create=False).teachers == {}
    plans = {}
    for s in load_sweeps(STUDY):
        for ds, ref in s.teachers.items():
            if ref.startswith("llm:"):
                plans[s.name.removeprefix("teacher-study-")] = llm_teacher.plan(
                    ref.partition(":")[2], ds, s)
    for t in ("smollm2-lora", "smollm2-scratch", "tiny"):
        a, b, c = (plans[f"{x}-{t}"] for x in "ABC")
        assert a.finetune.output_dir == c.finetune.output_dir != b.finetune.output_dir
        assert a.finetune.dataset == b.finetune.dataset == c.finetune.dataset == TAXI
        assert b.finetune.protocol == {"train_fraction": 0.1} and a.finetune.protocol == {}
        assert a.label["input_scaler"] == b.label["input_scaler"] == "teacher"
        assert c.label["input_scaler"] == "target" and c.label["dataset_id"] == BIKE
        for p in (a, b, c):
            assert p.label["splits"] == ("train",)
            assert p.label["protocol"] == {"train_fraction": 0.1}
            assert not p.finetune.encoder_node_embedding  # C reuses A's teacher
    lora, scratch = plans["A-smollm2-lora"].finetune, plans["A-smollm2-scratch"].finetune
    assert (lora.resolved_init, lora.resolved_tuning) == ("pretrained", "lora")
    assert (scratch.resolved_init, scratch.resolved_tuning) == ("scratch", "full")
    # the same steps, batch and learning rate: only the initialisation (and so the tuning) differ
    same = ("steps", "batch_size", "lr", "precision", "st_encoder", "encoder_pretrain_epochs",
            "backbone", "seed")
    assert {k: getattr(lora, k) for k in same} == {k: getattr(scratch, k) for k in same}


def test_study_stid_teacher_is_the_main_tables(dirs):
    """Setting A's STID teacher is the one main.toml trains (the same run), B's another."""
    from benchmark.experiment import RunSpec

    main = SweepSpec.from_toml(ROOT / "paper" / "experiments" / "main.toml")
    study = {s.name: s for s in load_sweeps(STUDY)}

    def spec(sweep, ref):
        r = parse_reference(ref, "model")
        return RunSpec(model=r.name, dataset=TAXI, train_fraction=r.train_fraction,
                       train=sweep.train_config(r.name, seed=0), tag="teacher",
                       recipe=sweep.recipe)

    assert spec(study["teacher-study-A-stid"], "stid").run_id() == spec(main, "stid").run_id()
    assert spec(study["teacher-study-B-stid"], "stid,train_fraction=0.1").run_id() != \
        spec(main, "stid").run_id()


def test_campaign_queues_the_study_after_the_taxi_main_table():
    from benchmark.campaign.plan import CampaignSpec

    c = CampaignSpec.from_toml(ROOT / "paper" / "experiments" / "campaigns" / "gpu.toml")
    names = [s.sweep.name for s in c.steps]
    assert names[0] == "main" and c.steps[0].sweep.datasets == [TAXI]
    study = [s.name for s in load_sweeps(STUDY)]
    assert names[1:1 + len(study)] == study


# ----------------------------------------------------------------- references and files
@pytest.mark.parametrize("arg, want", [
    ("stid", TeacherReference("stid")),
    ("stid,train_fraction=0.1", TeacherReference("stid", 0.1)),
    ("tiny, dataset=nyc_taxi_manhattan", TeacherReference("tiny", 1.0, TAXI)),
])
def test_parse_reference(arg, want):
    assert parse_reference(arg, "llm") == want


@pytest.mark.parametrize("arg, match", [
    ("stid,train_fraction=0", "in \\(0, 1\\]"), ("stid,fraction=0.1", "not train_fraction"),
    (",dataset=x", "no teacher name"), ("a,dataset=x,dataset=y", "given twice"),
])
def test_bad_references(arg, match):
    with pytest.raises(ValueError, match=match):
        parse_reference(arg, "model")


def test_teacher_spec_errors_name_the_file_and_key(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[finetune]\nbackbone = "tiny"\nstepz = 3\n')
    with pytest.raises(ValueError, match=r"bad.toml \[finetune\]\.stepz"):
        llm_teacher.TeacherSpec.load(str(bad))
    bad.write_text('[label]\nsplits = ["val"]\n')
    with pytest.raises(ValueError, match=r"\[label\]\.splits"):
        llm_teacher.TeacherSpec.load(str(bad))
    bad.write_text('[finetune]\ntuning = "half"\n')
    with pytest.raises(ValueError, match=r"\[finetune\]: tuning must be"):
        llm_teacher.TeacherSpec.load(str(bad))
    with pytest.raises(ValueError, match="no teacher spec .*shipped: smollm2-lora"):
        llm_teacher.TeacherSpec.load("gpt-9")


def test_variant_files(tmp_path):
    d = {"name": "s", "models": ["mlp"], "variant": [{"name": "a"},
                                                     {"name": "b", "seeds": [1, 2]}]}
    a, b = sweeps_from_dict(d, "x.toml")
    assert (a.name, a.seeds, b.name, b.seeds) == ("s-a", [0], "s-b", [1, 2])
    with pytest.raises(ValueError, match="given twice"):
        sweeps_from_dict({**d, "variant": [{"name": "a"}, {"name": "a"}]}, "x.toml")
    with pytest.raises(ValueError, match="load_sweeps"):
        SweepSpec.from_dict(d, "x.toml")
    with pytest.raises(ValueError, match=r"\[\[variant\]\] b: unknown sweep fields"):
        sweeps_from_dict({**d, "variant": [{"name": "b", "modelz": []}]}, "x.toml")


def test_transfer_needs_one_fraction():
    s = SweepSpec(name="t", models=["flowdistill"], datasets=[BIKE], fractions=[0.1, 0.5],
                  teachers={BIKE: "llm:tiny,dataset=nyc_taxi_manhattan"})
    with pytest.raises(ValueError, match="one fraction: split the sweep"):
        llm_teacher.plan("tiny,dataset=nyc_taxi_manhattan", BIKE, s)
    # not transfer: the largest fraction's windows
    assert llm_teacher.plan("tiny", BIKE, s).label["protocol"] == {"train_fraction": 0.5}


# ------------------------------------------------------------------ end to end, toy size
OPTS = {"num_nodes": 3, "num_days": 4, "steps_per_day": 24}
TOY_SPEC = """
description = "toy"
[finetune]
backbone = "tiny"
st_encoder = true
steps = 2
batch_size = 4
warmup_steps = 1
eval_pairs = 0
save_every = 2
tokenizer_windows = 10
progress = false
"""


def test_llm_reference_end_to_end(dirs):
    """``llm:<spec file>`` (A and B): fine-tune, label the students' windows, find the store
    again without training; a second resolve reuses checkpoint and store."""
    spec_file = dirs / "toy.toml"
    spec_file.write_text(TOY_SPEC)
    out = {}
    for setting, ref in (("A", f"llm:{spec_file}"), ("B", f"llm:{spec_file},train_fraction=0.5")):
        sweep = SweepSpec(name=f"s{setting}", models=["flowdistill"], datasets=["synthetic"],
                          fractions=[0.5], dataset_options={"synthetic": OPTS},
                          teachers={"synthetic": ref})
        assert resolve_teachers(sweep, create=False).teachers == {}
        path = resolve_teachers(sweep).teachers["synthetic"]
        assert resolve_teachers(sweep, create=False).teachers == {"synthetic": path}
        assert resolve_teachers(sweep).teachers == {"synthetic": path}  # reused
        out[setting] = path
        from flowdistill.teacher.finetune import load_prepared
        from flowdistill.teacher.label_store import SoftLabelStore

        store = SoftLabelStore.open(path)
        student = load_prepared("synthetic", {"train_fraction": 0.5}, OPTS)
        np.testing.assert_array_equal(store.starts, student.train_starts)
        md = store.metadata
        assert md["teacher_train_fraction"] == (1.0 if setting == "A" else 0.5)
        assert md["input_scaler"] == "teacher" and md["backend"] == "hf"
        assert md["labels_per_s"] > 0
    assert out["A"] != out["B"]
    ck = sorted((dirs / "runs" / "llm-teacher").iterdir())
    assert len(ck) == 2 and all((c / "teacher.json").is_file() for c in ck)
    fractions = sorted(json.loads((c / "teacher.json").read_text())["protocol"]["train_fraction"]
                       for c in ck)
    assert fractions == [0.5, 1.0]


def test_model_reference_fraction_and_transfer(dirs, needs_real_data):
    """``model:ridge,train_fraction=F`` trains on the most recent F; ``model:ridge,dataset=taxi``
    on the bike sweep trains on taxi and labels bike, scaled by the bike data's own scaler."""
    from flowdistill.teacher.label_store import SoftLabelStore
    from flowdistill.teacher.model_labels import resolve_model_teacher

    crop = {"time_range": [0, 1344]}
    sweep = SweepSpec(name="s", models=["flowdistill"], datasets=[TAXI, BIKE], fractions=[0.1],
                      protocol={TAXI: crop, BIKE: crop}, train={"progress": False})
    a = SoftLabelStore.open(resolve_model_teacher("ridge", TAXI, sweep))
    b = SoftLabelStore.open(resolve_model_teacher("ridge,train_fraction=0.1", TAXI, sweep))
    c = SoftLabelStore.open(resolve_model_teacher(f"ridge,dataset={TAXI}", BIKE, sweep))
    assert a.metadata["teacher_train_fraction"] == 1.0
    assert b.metadata["teacher_train_fraction"] == 0.1
    assert a.metadata["teacher_run_id"] != b.metadata["teacher_run_id"]
    assert c.metadata["teacher_run_id"] == a.metadata["teacher_run_id"]  # A's teacher
    assert c.metadata["dataset"] == BIKE and c.metadata["teacher_dataset_id"] == TAXI
    assert c.metadata["label_options"]["input_scaler"] == "target"
    assert len({a.version_key, b.version_key, c.version_key}) == 3
    assert not np.allclose(a.labels, b.labels)
    # bike flows are labelled in bike units (the bike scaler), not taxi units
    bike_mean = float(np.nanmean(c.labels))
    assert abs(bike_mean) < 0.5 * float(np.nanmean(a.labels))
    # found again without training, each by its own data setting
    for arg, ds, store in (("ridge", TAXI, a), ("ridge,train_fraction=0.1", TAXI, b),
                           (f"ridge,dataset={TAXI}", BIKE, c)):
        assert resolve_model_teacher(arg, ds, sweep, create=False) == str(store.path)

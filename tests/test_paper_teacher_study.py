"""Issue 14's study table (paper/teacher_study.py) from synthetic records: every expected number
follows from the records below; cells without records say what command makes them."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import SimpleNamespace

import pytest

from benchmark.records import RunRecord

REPO = Path(__file__).resolve().parent.parent
TAXI, BIKE = "nyc_taxi_manhattan", "nyc_bike_manhattan"


@pytest.fixture(scope="module")
def paper():
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(REPO))
        mods = {m: importlib.import_module(f"paper.{m}")
                for m in ("build", "frame", "teacher_study")}
    return SimpleNamespace(**mods)


def _summary(v: float) -> dict:
    per = {"mae": [v] * 12, "rmse": [2 * v] * 12, "mape": [10 * v] * 12}
    mean = {k: x[0] for k, x in per.items()}
    at = {f"@{h}": {k: per[k][h - 1] for k in per} for h in (3, 6, 12)}
    return {"overall": mean, "mean_of_horizons": mean, **at, "per_horizon": per}


def _record(variant: str, model: str, v: float, seed: int, dataset: str = TAXI,
            fraction: float = 0.1, created: str = "2026-01-01T00:00:00+00:00") -> RunRecord:
    sweep = f"teacher-study-{variant}"
    frac = f"{fraction:g}".replace(".", "p")
    return RunRecord(
        run_id=f"{sweep}-{dataset}-{model}-f{frac}-s{seed}-{int(v * 1000):06d}", model=model,
        dataset=dataset, protocol={"input_len": 12, "horizon": 12}, protocol_hash="0" * 16,
        seed=seed, train_fraction=fraction, hparams={}, train_config={},
        objective={"name": "x"}, metrics={"val": _summary(v), "test": _summary(v)}, params=10,
        fit={"epochs_run": 30, "stopped_by": "early_stopping", "train_seconds": 3.0},
        teacher=None if model.endswith("noteacher") else {"id": "llm_x-0011223344556677"},
        sweep=sweep, created=created)


RECORDS = [
    _record("noteacher", "flowdistill-noteacher", 10.0, 0),
    _record("noteacher", "flowdistill-noteacher", 10.0, 1),
    _record("A-smollm2-lora", "flowdistill", 8.0, 0),
    _record("A-smollm2-lora", "flowdistill", 9.0, 1),
    _record("A-smollm2-lora", "flowdistill-kd", 11.0, 0),
    _record("A-stid", "flowdistill", 9.5, 0),
    # an older duplicate of a seed (ignored), a 100 % run and another dataset (not the study's)
    _record("A-stid", "flowdistill", 99.0, 0, created="2025-01-01T00:00:00+00:00"),
    _record("A-stid", "flowdistill", 77.0, 1, fraction=1.0),
    _record("A-stid", "flowdistill", 66.0, 2, dataset=BIKE),
    _record("C-tiny", "flowdistill", 5.0, 0, dataset=BIKE),
    _record("noteacher", "flowdistill-noteacher", 4.0, 0, dataset=BIKE),
]


def _section(md: str, setting: str) -> str:
    return md.split(f"**({setting})")[1].split("**(")[0]


def test_study_table_cells(paper, tmp_path):
    frame = paper.frame.records_to_frame(RECORDS)
    paths = paper.teacher_study.teacher_study_table(frame, tmp_path)
    assert [p.name for p in paths] == ["teacher_study.md", "teacher_study.tex"]
    md = (tmp_path / "teacher_study.md").read_text()
    for bad in ("99.00", "77.00", "66.00"):
        assert bad not in md
    a = _section(md, "A")
    # flowdistill 8, 9 -> 8.50 ± 0.71, RMSE double; (8.5 - 10) / 10 = -15 %; kd 11 -> +10 %
    assert ("| SmolLM2-135M, pretrained + LoRA | **8.50 ± 0.71** | **17.00 ± 1.41** | 2 | "
            "-15.0 % | 11.00 | 22.00 | 1 | +10.0 % |") in a
    assert "| STID forecaster | 9.50 | 19.00 | 1 | -5.0 % | awaits: flowdistill sweep " \
           "teacher_study --variant A-stid | – | 0 | – |" in a
    assert "| none (flowdistill-noteacher) | 10.00 ± 0.00 | 20.00 ± 0.00 | 2 | – | " \
           "**10.00 ± 0.00** | **20.00 ± 0.00** | 2 | – |" in a
    assert "awaits: flowdistill sweep teacher_study --variant A-smollm2-scratch" in a
    b = _section(md, "B")
    assert b.count("awaits: flowdistill sweep teacher_study --variant B-") == 8
    assert "10.00 ± 0.00" in b  # the same no-teacher students
    c = _section(md, "C")
    assert "students on nyc_bike_manhattan" in c
    assert "| tiny Llama 0.9 M, scratch | 5.00 | 10.00 | 1 | +25.0 % |" in c
    assert "| none (flowdistill-noteacher) | **4.00** |" in c
    # every teacher row of every setting, plus no teacher
    assert md.count("| SmolLM2-135M arch., scratch, full tuning |") == 3
    assert md.count("| none (flowdistill-noteacher) |") == 3
    tex = (tmp_path / "teacher_study.tex").read_text()
    assert "\\label{tab:teacher_study}" in tex and "-15.0 \\%" in tex


def test_study_table_without_study_records_awaits_every_cell(paper, tmp_path):
    import pandas as pd

    other = [_record("x", "flowdistill", 1.0, 0)]  # a record of another sweep only
    paper.teacher_study.teacher_study_table(paper.frame.records_to_frame(other), tmp_path)
    md = (tmp_path / "teacher_study.md").read_text()
    assert md.count("awaits: flowdistill sweep teacher_study --variant") == 12 * 2 + 3 * 2
    assert "flowdistill (paper's bounded loss)" in md
    assert "flowdistill-kd (suite's soft-label extension)" in md
    # no records at all: nothing written, like every other table
    assert paper.teacher_study.teacher_study_table(pd.DataFrame(), tmp_path / "none") == []


def test_build_registers_the_study(paper, tmp_path):
    from benchmark.records import write_record

    for r in RECORDS:
        write_record(r, tmp_path / "records")
    out = paper.build.build(paper.build.BuildConfig(records=tmp_path / "records",
                                                    out=tmp_path / "out"))
    assert [p.name for p in out["teacher study table"]] == ["teacher_study.md",
                                                            "teacher_study.tex"]


def test_study_arms_are_the_sweep_files(paper):
    arms = paper.teacher_study.study_arms()
    assert [a.variant for a in arms][:2] == ["noteacher", "A-smollm2-lora"]
    assert {(a.setting, a.teacher) for a in arms if a.teacher} == {
        (s, t) for s in "ABC" for t in ("smollm2-lora", "smollm2-scratch", "tiny", "stid")}

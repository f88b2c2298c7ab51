"""The teacher report (``flowdistill teacher report``) and ``teacher evaluate``."""

from __future__ import annotations

import json

import pytest

from benchmark.cli import main
from flowdistill.teacher.finetune import TeacherFinetuneConfig, finetune, load_prepared
from flowdistill.teacher.report import TeacherReportError, report_row

pytestmark = pytest.mark.usefixtures("one_thread")

OPTS = {"num_nodes": 3, "num_days": 4, "steps_per_day": 24}


def _cfg(out, **kw) -> TeacherFinetuneConfig:
    base = dict(dataset="synthetic", dataset_options=OPTS, backbone="tiny", steps=2,
                batch_size=4, lr=5e-3, warmup_steps=1, eval_every=2, eval_pairs=6, save_every=2,
                tokenizer_windows=10, head_hidden=16, st_encoder=True, encoder_hidden=16,
                encoder_pretrain_epochs=1, output_dir=str(out), progress=False)
    base.update(kw)
    return TeacherFinetuneConfig(**base)


@pytest.fixture(scope="module")
def prepared():
    return load_prepared("synthetic", None, OPTS)


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory, prepared):
    return finetune(_cfg(tmp_path_factory.mktemp("rep") / "tiny"), prepared)


def test_report_row_from_teacher_json_and_label_stores(tmp_path, teacher_dir):
    from flowdistill.teacher.llm_labels import label

    store = label(teacher_dir, "synthetic", None, backend="hf", splits=("val",),
                  store_root=tmp_path / "labels", progress=False, dataset_options=OPTS)
    meta = json.loads((teacher_dir / "teacher.json").read_text())
    row = report_row(teacher_dir, [tmp_path / "labels", tmp_path / "nowhere"])
    assert row["teacher_id"] == "llm:tiny+stenc" == meta["teacher_id"]
    assert (row["backbone"], row["init"], row["tuning"], row["precision"]) == \
        ("tiny", "scratch", "full", "fp32")
    assert row["parameters"] == meta["parameters"]
    ev = meta["evaluation"]["splits"]
    for split in ("val", "test"):
        for k in ("mae", "rmse", "mape"):
            assert row[split][k] == ev[split]["metrics"]["overall"][k]
        assert row[split]["pairs"] == ev[split]["pairs"]
    tr = meta["training"]
    assert row["finetune"]["device_seconds"] == pytest.approx(
        tr["train_seconds"] + tr["encoder_pretrain"]["seconds"], abs=0.11)
    assert row["finetune"]["device_name"] == "cpu"
    assert row["selection"]["subset_val_mae"] == tr["best_val_mae"]
    assert row["labels"]["hf"]["prompts_per_second"] == store.metadata["prompts_per_second"]
    assert row["labels"]["hf"]["store"] == store.path.name
    # another teacher's stores do not count
    assert report_row(teacher_dir, [])["labels"] == {}


def test_report_cli_writes_markdown_and_json(tmp_path, teacher_dir):
    out = tmp_path / "teachers"
    assert main(["teacher", "report", str(teacher_dir), "--out", str(out), "--name", "t",
                 "--labels"]) == 0
    rows = json.loads((out / "t.json").read_text())["rows"]
    md = (out / "t.md").read_text()
    assert len(rows) == 1 and rows[0]["teacher_id"] == "llm:tiny+stenc"
    val = rows[0]["val"]
    assert f"{val['mae']:.3f} / {val['rmse']:.3f} / {val['mape']:.1f}" in md
    assert "`llm:tiny+stenc`" in md and "do not edit by hand" in md
    assert "| synthetic |" in md and "; 2 x 4 |" in md  # all of train; steps x batch


def test_report_refuses_an_unevaluated_checkpoint_and_evaluate_fixes_it(tmp_path, prepared,
                                                                        capsys):
    ck = finetune(_cfg(tmp_path / "u", st_encoder=False, encoder_pretrain_epochs=0,
                       final_eval_splits=(), protocol={"train_fraction": 0.5}))
    with pytest.raises(TeacherReportError, match="teacher evaluate"):
        report_row(ck)
    out = tmp_path / "r"
    assert main(["teacher", "report", str(ck), "--out", str(out), "--labels"]) == 2
    assert "flowdistill teacher evaluate" in capsys.readouterr().err
    assert main(["teacher", "evaluate", str(ck), "--splits", "val", "--quiet"]) == 0
    assert "val: MAE" in capsys.readouterr().out
    with pytest.raises(TeacherReportError, match="test"):
        report_row(ck)
    assert main(["teacher", "report", str(ck), "--out", str(out), "--labels", "--evaluate"]) == 0
    assert json.loads((out / "teachers.json").read_text())["rows"][0]["test"]["pairs"] > 0
    assert "| synthetic, 50 % of train |" in (out / "teachers.md").read_text()


def test_cli_finetune_settings(tmp_path, monkeypatch):
    from flowdistill.teacher import finetune as ft

    seen = {}
    monkeypatch.setattr(ft, "finetune", lambda cfg: seen.setdefault("cfg", cfg) and tmp_path)
    assert main(["teacher", "finetune", "--out", str(tmp_path / "x"), "--backbone", "tiny",
                 "--steps", "3", "--precision", "bf16", "--set", "st_encoder=true",
                 "lora_targets=[\"q_proj\"]", "protocol={\"train_fraction\": 0.1}"]) == 0
    cfg = seen["cfg"]
    assert (cfg.steps, cfg.precision, cfg.st_encoder, cfg.lora_targets) == \
        (3, "bf16", True, ("q_proj",))
    assert cfg.protocol == {"train_fraction": 0.1} and cfg.output_dir == str(tmp_path / "x")
    assert main(["teacher", "finetune", "--out", "x", "--steps", "3", "--set", "steps=4"]) == 2
    assert main(["teacher", "finetune", "--out", "x", "--backbone", "tiny", "--init",
                 "pretrained"]) == 2

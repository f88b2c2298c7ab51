"""Forecaster teacher -> soft-label store -> distilled student, through the CLI."""

from benchmark.cli import main
from flowdistill.teacher.label_store import SoftLabelStore


def test_teacher_label_from_model_then_distil(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FLOWDISTILL_RECORDS", str(tmp_path / "rec"))
    monkeypatch.setenv("FLOWDISTILL_RUNS", str(tmp_path / "runs"))
    data = ["--dataset", "synthetic", "--data-option", "num_nodes=4", "--data-option",
            "num_days=7", "--data-option", "steps_per_day=24", "--train", "epochs=1",
            "--train", "progress=false"]
    assert main(["teacher", "label", "--from-model", "ridge", "--out", str(tmp_path / "lab"),
                 *data]) == 0
    out = capsys.readouterr().out
    path = out.split("soft labels: ")[1].split()[0]
    store = SoftLabelStore.open(path)
    assert store.coverage == 1.0 and store.metadata["teacher_id"] == "forecaster:ridge"
    # reusing the finished teacher run gives the same store
    assert main(["teacher", "label", "--from-model", "ridge", "--out", str(tmp_path / "lab"),
                 *data]) == 0
    assert path in capsys.readouterr().out
    assert main(["train", "flowdistill", "--teacher", path, "--no-efficiency", *data]) == 0
    # a teacher for another protocol is refused
    assert main(["train", "flowdistill", "--teacher", path, "--no-efficiency",
                 "--protocol", "horizon=6", *data]) == 2
    assert "protocol" in capsys.readouterr().err

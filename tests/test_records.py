"""Run records: atomic writes, no silent overwrite, aggregation; the runner end to end."""

import json

import pytest

from benchmark.cli import main
from benchmark.efficiency import EfficiencyConfig
from benchmark.experiment import RunSpec, run_experiment
from benchmark.records import (
    RecordExistsError,
    aggregate,
    load_records,
    records_frame,
    run_tag,
    write_record,
)
from benchmark.trainer import TrainConfig


def small_spec(model="ridge", seed=0, **kw):
    return RunSpec(model=model, dataset="synthetic",
                   dataset_options={"num_nodes": 5, "num_days": 7, "steps_per_day": 24},
                   train=TrainConfig(epochs=1, max_train_batches=2, progress=False, seed=seed),
                   efficiency=EfficiencyConfig(repeats=3, warmup=1, batch_size=4), **kw)


def test_run_writes_a_complete_record(tmp_path):
    rec = run_experiment(small_spec(), tmp_path / "rec", tmp_path / "runs")
    d = json.loads((tmp_path / "rec" / f"{rec.run_id}.json").read_text())
    for key in ("model", "hparams", "protocol", "protocol_hash", "seed", "metrics", "params",
                "efficiency", "git_sha", "packages", "hardware", "train_fraction"):
        assert key in d
    assert d["metrics"]["test"]["overall"]["mae"] > 0
    assert d["efficiency"]["latency_ms_median"] > 0
    assert "@3" in d["metrics"]["test"]


def test_finished_run_is_not_overwritten(tmp_path):
    spec = small_spec()
    rec = run_experiment(spec, tmp_path / "rec", tmp_path / "runs")
    path = tmp_path / "rec" / f"{rec.run_id}.json"
    before = path.read_bytes()
    with pytest.raises(RecordExistsError, match="--force"):
        run_experiment(spec, tmp_path / "rec", tmp_path / "runs")
    with pytest.raises(RecordExistsError):
        write_record(rec, tmp_path / "rec")
    assert path.read_bytes() == before
    run_experiment(spec, tmp_path / "rec", tmp_path / "runs", force=True)


def test_run_id_is_stable_and_sensitive():
    a, b = small_spec(), small_spec()
    assert a.run_id() == b.run_id()
    assert small_spec(seed=1).run_id() != a.run_id()
    assert small_spec(hparams={"alpha": 3.0}).run_id() != a.run_id()
    assert small_spec(train_fraction=0.5).run_id() != a.run_id()


def test_aggregate_over_seeds(tmp_path):
    for s in (0, 1):
        run_experiment(small_spec("last-value", seed=s), tmp_path, tmp_path / "r")
    frame = records_frame(load_records(tmp_path))
    agg = aggregate(frame)
    assert len(agg) == 1 and agg["seeds"].iloc[0] == 2


def test_cli_train_and_results(tmp_path, capsys):
    args = ["train", "last-value", "--dataset", "synthetic", "--data-option", "num_nodes=4",
            "--data-option", "num_days=7", "--records", str(tmp_path), "--no-efficiency"]
    assert main(args) == 0
    assert "test MAE" in capsys.readouterr().out
    assert main(args) == 2  # finished: refused without --force
    assert "--force" in capsys.readouterr().err
    assert main(["results", "--records", str(tmp_path), "--markdown", str(tmp_path / "t.md")]) == 0
    assert "last-value" in (tmp_path / "t.md").read_text()
    capsys.readouterr()
    assert main(["results", "--records", str(tmp_path), "--tag", "other"]) == 0
    assert capsys.readouterr().out.strip() == "no records"
    assert main(args + ["--tag", "mine"]) == 0  # run id "mine-synthetic-last-value-..."
    capsys.readouterr()
    assert main(["results", "--records", str(tmp_path), "--tag", "mine",
                 "--markdown", str(tmp_path / "t2.md")]) == 0
    assert "last-value" in (tmp_path / "t2.md").read_text()


def test_run_tag():
    assert run_tag("main-pems07m-stgcn-f1-s0-abc", "pems07m", "stgcn") == "main"
    assert run_tag("pems07m-stgcn-f1-s0-abc", "pems07m", "stgcn") == ""
    assert run_tag("student-cpu-nyc-mlp-f1-s0-h", "nyc", "mlp") == "student-cpu"

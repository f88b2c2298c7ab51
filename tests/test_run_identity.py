"""Run identity follows the inputs: custom data content and soft-label content."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmark.data.custom import write_custom
from benchmark.data.files import clear_sha_cache
from benchmark.data.synthetic import make_synthetic
from benchmark.experiment import RunSpec, run_experiment
from benchmark.records import RecordExistsError
from benchmark.trainer import TrainConfig


def _custom_spec(root, **kw) -> RunSpec:
    return RunSpec(model="ridge", dataset="custom", dataset_options={"path": str(root)},
                   train=TrainConfig(epochs=1, max_train_batches=2, progress=False),
                   efficiency=None, **kw)


@pytest.fixture
def custom_root(tmp_path):
    data = make_synthetic(num_nodes=3, num_days=4, steps_per_day=24, channels=1, seed=0)
    return write_custom(data, tmp_path / "ds")


def test_editing_custom_values_changes_run_id_and_record(custom_root, tmp_path):
    spec = _custom_spec(custom_root)
    rec = run_experiment(spec, tmp_path / "rec", tmp_path / "runs")
    content = spec.identity()["dataset_content"]
    assert len(content) == 64 and rec.protocol["dataset_content"] == content
    with pytest.raises(RecordExistsError):
        run_experiment(spec, tmp_path / "rec", tmp_path / "runs")
    v = np.load(custom_root / "values.npy")
    v[5] += 1.0
    np.save(custom_root / "values.npy", v)
    clear_sha_cache()  # same size; the mtime may not have ticked
    rec2 = run_experiment(spec, tmp_path / "rec", tmp_path / "runs")  # not "already finished"
    assert rec2.run_id != rec.run_id
    assert rec2.protocol["dataset_content"] != rec.protocol["dataset_content"]
    assert (tmp_path / "rec" / f"{rec.run_id}.json").exists()  # the earlier result is kept


def test_pinned_and_generated_datasets_keep_their_ids():
    spec = RunSpec(model="ridge", dataset="synthetic")
    assert "dataset_content" not in spec.identity()


def _store(tmp_path):
    from flowdistill.teacher.label_store import SoftLabelStore

    rng = np.random.default_rng(0)
    labels = rng.random((4, 2, 3, 1)).astype(np.float32)
    meta = {"teacher_id": "forecaster:x", "protocol_hash": "p1", "backend": "torch"}
    return SoftLabelStore.create(tmp_path / "store", labels, np.arange(4), metadata=meta)


def test_teacher_id_carries_label_content_hash(tmp_path):
    store = _store(tmp_path)
    spec = RunSpec(model="ridge", teacher=str(store.path))
    tid = spec.teacher_id()
    key, digest = tid.rsplit("-", 1)
    assert key == store.version_key and len(digest) == 12
    assert spec.teacher_id() == tid
    labels = np.load(store.path / "labels.npy")
    labels[0, 0, 0, 0] += 1
    np.save(store.path / "labels.npy", labels)
    clear_sha_cache()
    assert spec.teacher_id() != tid  # edited labels: another run id


def test_edited_labels_refused_on_open(tmp_path):
    from flowdistill.teacher.label_store import SoftLabelError, SoftLabelStore

    store = _store(tmp_path)
    labels = np.load(store.path / "labels.npy")
    np.save(store.path / "labels.npy", labels * 2)
    with pytest.raises(SoftLabelError, match="sha256 mismatch.*modified"):
        SoftLabelStore.open(store.path)
    meta = json.loads((store.path / "meta.json").read_text())
    assert meta["version_key"] == store.version_key


def test_cli_rerun_after_edit_and_escaping_path(custom_root, tmp_path, capsys, monkeypatch):
    from benchmark.cli import main

    monkeypatch.setenv("FLOWDISTILL_RUNS", str(tmp_path / "runs"))
    args = ["train", "last-value", "--dataset", "custom", "--data-option",
            f"path={custom_root}", "--records", str(tmp_path / "rec"), "--no-efficiency"]
    assert main(args) == 0
    assert main(args) == 2 and "already finished" in capsys.readouterr().err
    v = np.load(custom_root / "values.npy")
    np.save(custom_root / "values.npy", v * 2)
    clear_sha_cache()
    assert main(args) == 0  # new content: a new run, not "already finished"
    assert len(list((tmp_path / "rec").glob("*.json"))) == 2
    m = json.loads((custom_root / "manifest.json").read_text())
    (custom_root / "manifest.json").write_text(json.dumps({**m, "values_file": "../x.npy"}))
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "'values_file'" in err and "inside" in err and "\n" not in err

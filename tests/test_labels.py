"""SoftLabelStore: round trip, gather semantics, versioning, tamper detection, model labels."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from benchmark.data.protocol import protocol_hash
from benchmark.models import ModelContext, build_model
from flowdistill.teacher.label_store import (
    SoftLabelError,
    SoftLabelStore,
    version_key,
)
from flowdistill.teacher.model_labels import labels_from_model, model_label_metadata

META = {"teacher_id": "llm:tiny", "adapter_hash": "a1", "template_hash": "t1",
        "protocol_hash": "p1", "backend": "hf", "backend_version": "4.50",
        "dataset": "synthetic", "parse_failures": 3, "nan_failures": 1}


def _arrays(w: int = 5):
    rng = np.random.default_rng(0)
    labels = rng.random((w, 2, 3, 2)).astype(np.float32)
    starts = np.array([40, 10, 30, 20, 0][:w], dtype=np.int64)
    mask = np.array([True, True, False, True, True][:w])
    return labels, starts, mask


def test_round_trip(tmp_path):
    labels, starts, mask = _arrays()
    made = SoftLabelStore.create(tmp_path, labels, starts, mask, META)
    assert made.path == tmp_path / version_key(META)
    assert sorted(p.name for p in made.path.iterdir()) == [
        "labels.npy", "mask.npy", "meta.json", "starts.npy"]
    assert [p.name for p in tmp_path.iterdir()] == [made.path.name]  # no temp dirs left
    store = SoftLabelStore.open(made.path)
    np.testing.assert_array_equal(store.labels, labels)
    np.testing.assert_array_equal(store.starts, starts)
    np.testing.assert_array_equal(store.mask, mask)
    assert store.metadata["teacher_id"] == "llm:tiny"
    assert store.coverage == pytest.approx(0.8)
    meta = json.loads((made.path / "meta.json").read_text())
    assert meta["failures"]["parse"] == 3 and meta["failures"]["nan"] == 1
    assert meta["files"]["labels.npy"]["shape"] == [5, 2, 3, 2]
    assert len(meta["files"]["labels.npy"]["sha256"]) == 64
    assert {"created", "producer", "package_versions", "version_key"} <= set(meta)
    assert meta["package_versions"]["numpy"] == np.__version__


def test_gather_by_start_in_any_order(tmp_path):
    labels, starts, mask = _arrays()
    store = SoftLabelStore.create(tmp_path, labels, starts, mask, META)
    got, ok = store.gather(np.array([20, 0, 99, 30, 40]))
    # 20 -> row 3, 0 -> row 4, 99 absent, 30 -> row 2 but unlabelled, 40 -> row 0
    np.testing.assert_array_equal(ok, [True, True, False, False, True])
    np.testing.assert_array_equal(got[0], labels[3])
    np.testing.assert_array_equal(got[1], labels[4])
    np.testing.assert_array_equal(got[4], labels[0])
    assert not got[2].any() and not got[3].any()
    assert got.dtype == np.float32 and got.shape == (5, 2, 3, 2)
    assert store.coverage_of([0, 10, 30, 99]) == pytest.approx(0.5)


def test_default_mask_marks_windows_with_finite_values(tmp_path):
    labels, starts, _ = _arrays()
    labels[1] = np.nan
    labels[2, 0] = np.nan  # partly missing: still labelled
    store = SoftLabelStore.create(tmp_path, labels, starts, None, META)
    np.testing.assert_array_equal(store.mask, [True, False, True, True, True])
    assert store.meta["failures"]["labelled_windows_with_nonfinite_values"] == 1


def test_version_key_and_overwrite(tmp_path):
    labels, starts, mask = _arrays()
    assert version_key(META) == version_key(dict(META, dataset="other"))  # not a key field
    assert version_key(META) != version_key(dict(META, template_hash="t2"))
    assert version_key(META).startswith("llm_tiny-")
    SoftLabelStore.create(tmp_path, labels, starts, mask, META)
    with pytest.raises(FileExistsError, match="already exists"):
        SoftLabelStore.create(tmp_path, labels, starts, mask, META)
    new = SoftLabelStore.create(tmp_path, labels * 2, starts, mask, META, overwrite=True)
    np.testing.assert_allclose(SoftLabelStore.open(new.path).labels, labels * 2)
    assert len(list(tmp_path.iterdir())) == 1
    with pytest.raises(SoftLabelError, match="protocol_hash"):
        version_key({"teacher_id": "x"})


def test_tamper_detection_names_the_file(tmp_path):
    labels, starts, mask = _arrays()
    path = SoftLabelStore.create(tmp_path, labels, starts, mask, META).path
    tampered = labels.copy()
    tampered[0, 0, 0, 0] += 1.0
    np.save(path / "labels.npy", tampered)
    with pytest.raises(SoftLabelError, match=r"labels\.npy: sha256 mismatch"):
        SoftLabelStore.open(path)


def test_open_rejects_missing_and_pickled_files(tmp_path):
    labels, starts, mask = _arrays()
    path = SoftLabelStore.create(tmp_path, labels, starts, mask, META).path
    with pytest.raises(SoftLabelError, match="meta.json: missing"):
        SoftLabelStore.open(tmp_path)
    # an object array (needs pickle) with a matching hash in meta.json is still refused
    np.save(path / "mask.npy", np.array([{"a": 1}] * 5, dtype=object), allow_pickle=True)
    meta = json.loads((path / "meta.json").read_text())
    meta["files"]["mask.npy"]["sha256"] = hashlib.sha256(
        (path / "mask.npy").read_bytes()).hexdigest()
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(SoftLabelError, match=r"mask\.npy: cannot load without pickle"):
        SoftLabelStore.open(path)
    (path / "starts.npy").unlink()
    with pytest.raises(SoftLabelError, match=r"starts\.npy: missing"):
        SoftLabelStore.open(path)


def test_create_validates_arrays(tmp_path):
    labels, starts, mask = _arrays()
    with pytest.raises(SoftLabelError, match="not unique"):
        SoftLabelStore.create(tmp_path, labels, np.array([1, 1, 2, 3, 4]), mask, META)
    with pytest.raises(SoftLabelError, match=r"\[W, T_out, N, C\]"):
        SoftLabelStore.create(tmp_path, labels[..., 0], starts, mask, META)
    with pytest.raises(SoftLabelError, match="mask"):
        SoftLabelStore.create(tmp_path, labels, starts, mask[:3], META)
    assert list(tmp_path.iterdir()) == []


def test_labels_from_model(tmp_path, synthetic_prepared):
    prep = synthetic_prepared
    model = build_model("last-value", ModelContext.from_prepared(prep))
    labels, starts = labels_from_model(model, prep, splits=("train", "val"), batch_size=7)
    want = np.concatenate([prep.starts("train"), prep.starts("val")])
    np.testing.assert_array_equal(starts, want)
    assert labels.shape == (len(want), prep.protocol.horizon, prep.num_nodes,
                            prep.out_channels)
    # last-value forecast: every horizon equals the last input value, in original units
    last = prep.data.values[want + prep.protocol.input_len - 1][:, :, prep.target_channel_idx]
    np.testing.assert_allclose(labels[:, 0], last, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(labels[:, -1], last, rtol=1e-5, atol=1e-4)
    meta = model_label_metadata("last-value", model, prep)
    assert meta["protocol_hash"] == protocol_hash(prep.dataset_id, prep.protocol)
    store = SoftLabelStore.create(tmp_path, labels, starts, None, meta)
    got, ok = store.gather(prep.starts("val")[::-1])
    assert ok.all()
    np.testing.assert_array_equal(got, labels[len(prep.starts("train")):][::-1])
    assert torch.is_grad_enabled()  # the no_grad decorator did not leak

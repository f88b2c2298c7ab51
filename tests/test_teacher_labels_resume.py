"""Labelling at scale: chunked, resumable after a kill, published atomically, byte-identical to an
uninterrupted run; bf16 and batch-size options; the transfer settings (target scaler, no node
embedding)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from flowdistill.teacher import llm_labels as labeling
from flowdistill.teacher.finetune import TeacherFinetuneConfig, finetune
from flowdistill.teacher.label_store import ARRAY_FILES, SoftLabelStore, version_key

OPTS = {"num_nodes": 3, "num_days": 4, "steps_per_day": 24}
# 3 nodes, chunk_pairs 6: a backend call is 2 windows; chunk_windows 3 rounds up to 4
CHUNKING = dict(chunk_pairs=6, chunk_windows=3)
SPLITS = ("val", "test")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    cfg = TeacherFinetuneConfig(dataset="synthetic", dataset_options=OPTS, backbone="tiny",
                                tuning="lora", lora_r=4, lora_alpha=8, steps=3, batch_size=4,
                                lr=1e-2, warmup_steps=1, eval_pairs=0, save_every=3,
                                tokenizer_windows=10, st_encoder=True, progress=False,
                                output_dir=str(tmp_path_factory.mktemp("resume") / "ck"))
    return finetune(cfg)


def _label(checkpoint, root, **kw):
    args = dict(splits=SPLITS, store_root=root, progress=False, dataset_options=OPTS,
                **CHUNKING)
    args.update(kw)
    return labeling.label(checkpoint, "synthetic", **args)


@pytest.fixture(scope="module")
def uninterrupted(checkpoint, tmp_path_factory):
    return _label(checkpoint, tmp_path_factory.mktemp("whole"))


class Killed(Exception):
    """Stands in for the end of a GPU window."""


def _kill_after(monkeypatch, k: int) -> list[int]:
    """Make the labelling run die right after its ``k``-th chunk is written; returns the list
    of chunk indices written."""
    written: list[int] = []
    real_add = labeling.PartialLabels.add

    def add(self, index, labels, seconds):
        real_add(self, index, labels, seconds)
        written.append(index)
        if len(written) == k:
            raise Killed(f"after chunk {index}")

    monkeypatch.setattr(labeling.PartialLabels, "add", add)
    return written


def _bytes(store) -> dict[str, bytes]:
    return {name: (store.path / name).read_bytes() for name in ARRAY_FILES}


def test_chunks_align_with_backend_calls(uninterrupted):
    md = uninterrupted.metadata
    w = len(uninterrupted.starts)
    assert md["chunk_windows"] == 4 and md["chunks"] == -(-w // 4) and w > 8
    assert md["backend"] == "hf" and md["labels_per_s"] > 0
    assert md["labels_per_s"] == md["prompts_per_second"]
    assert md["prompts"] == w * 3 and md["labelling_runs"] == 1
    assert md["dtype"] == "float32" and md["backend_options"]["dtype"] == "float32"
    assert "label_options" not in md  # default settings: the key of earlier stores
    assert not list(uninterrupted.path.parent.glob("*.partial"))


def test_killed_run_resumes_and_matches_uninterrupted(checkpoint, uninterrupted, tmp_path,
                                                      monkeypatch):
    root = tmp_path / "labels"
    written = _kill_after(monkeypatch, 2)
    with pytest.raises(Killed):
        _label(checkpoint, root)
    key = uninterrupted.version_key
    partial = root / f"{key}.partial"
    manifest = json.loads((partial / "manifest.json").read_text())
    assert written == [0, 1] and sorted(manifest["chunks"]) == ["0", "1"]
    assert manifest["identity"]["version_key"] == key
    assert manifest["identity"]["teacher_id"] == uninterrupted.metadata["teacher_id"]
    assert not (root / key).exists()  # nothing published yet
    # the resumed run labels only the chunks after the last complete one
    monkeypatch.undo()
    calls = []
    real = labeling.predict_windows
    monkeypatch.setattr(labeling, "predict_windows",
                        lambda be, src, ws, *a, **k: calls.append(ws[0]) or real(be, src, ws,
                                                                                 *a, **k))
    resumed = _label(checkpoint, root)
    assert calls[0] == uninterrupted.starts[8]
    assert len(calls) == uninterrupted.metadata["chunks"] - 2
    assert resumed.version_key == key and resumed.metadata["labelling_runs"] == 2
    assert _bytes(resumed) == _bytes(uninterrupted)
    assert not partial.exists()
    SoftLabelStore.open(resumed.path)  # hashes check out


def test_a_corrupt_chunk_is_labelled_again(checkpoint, uninterrupted, tmp_path, monkeypatch,
                                           capsys):
    root = tmp_path / "labels"
    _kill_after(monkeypatch, 3)
    with pytest.raises(Killed):
        _label(checkpoint, root)
    monkeypatch.undo()
    chunk = root / f"{uninterrupted.version_key}.partial" / "chunk-00001.npy"
    chunk.write_bytes(chunk.read_bytes()[:-8] + b"\0" * 8)
    resumed = _label(checkpoint, root)
    assert "missing or corrupt" in capsys.readouterr().out
    assert _bytes(resumed) == _bytes(uninterrupted)


def test_other_settings_start_over(checkpoint, uninterrupted, tmp_path, monkeypatch, capsys):
    root = tmp_path / "labels"
    _kill_after(monkeypatch, 1)
    with pytest.raises(Killed):
        _label(checkpoint, root)
    monkeypatch.undo()
    other = _label(checkpoint, root, chunk_windows=6)  # 3 calls a chunk: another chunking
    assert "started with other settings" in capsys.readouterr().out
    assert other.metadata["chunk_windows"] == 6 and other.metadata["labelling_runs"] == 1
    # the same backend calls (2 windows each) whatever the chunking: the same labels
    np.testing.assert_array_equal(other.labels, uninterrupted.labels)


def test_finished_chunks_but_no_store_publishes_without_the_teacher(checkpoint, uninterrupted,
                                                                     tmp_path, monkeypatch):
    root = tmp_path / "labels"
    real_create = SoftLabelStore.create.__func__

    def die(*a, **k):
        raise Killed("before publishing")

    monkeypatch.setattr(SoftLabelStore, "create", classmethod(die))
    with pytest.raises(Killed):
        _label(checkpoint, root)
    monkeypatch.setattr(SoftLabelStore, "create", classmethod(real_create))
    monkeypatch.setattr(labeling, "load_teacher",
                        lambda *a, **k: pytest.fail("every chunk was done: no teacher needed"))
    assert _bytes(_label(checkpoint, root)) == _bytes(uninterrupted)


def test_bf16_and_batch_size_are_recorded_and_keyed(checkpoint, uninterrupted, tmp_path):
    bf = _label(checkpoint, tmp_path, dtype="bfloat16", batch_size=5)
    md = bf.metadata
    assert md["dtype"] == "bfloat16" and md["batch_size"] == 5
    assert md["backend_options"] == {"dtype": "bfloat16", "batch_size": 5}
    assert md["label_options"] == {"dtype": "bfloat16"}
    assert bf.version_key != uninterrupted.version_key
    # bf16 products: close to the float32 labels, not equal (original units)
    scale = float(np.abs(uninterrupted.labels).mean())
    diff = np.abs(bf.labels - uninterrupted.labels)
    assert 0 < diff.max() < 0.1 * scale
    # the batch size alone is not part of the key (the same numbers in float32)
    again = _label(checkpoint, tmp_path / "b", batch_size=5)
    assert again.version_key == uninterrupted.version_key
    with pytest.raises(ValueError, match="dtype must be"):
        _label(checkpoint, tmp_path, dtype="float16")
    with pytest.raises(ValueError, match="label\\(\\)'s own argument"):
        _label(checkpoint, tmp_path / "c", backend_options={"batch_size": 3})


def test_version_key_optional_field_keeps_old_keys():
    base = {"teacher_id": "llm:tiny", "protocol_hash": "abc", "backend": "hf"}
    assert version_key(base) == version_key({**base, "label_options": None})
    assert version_key(base) != version_key({**base, "label_options": {"dtype": "bfloat16"}})
    # pinned: a store key from before the optional field existed
    assert version_key(base) == "llm_tiny-" + __import__("hashlib").sha256(json.dumps(
        {k: base.get(k) for k in ("teacher_id", "adapter_hash", "template_hash",
                                  "protocol_hash", "backend", "backend_version")},
        sort_keys=True).encode()).hexdigest()[:16]


def test_target_scaler_for_transfer(checkpoint, uninterrupted, tmp_path):
    """``input_scaler="target"``: the labelled data's own scaler (fitted on the windows its
    protocol makes visible) scales the inputs and inverts the forecasts."""
    from benchmark.data.registry import load_dataset
    from benchmark.data.windows import prepare
    from flowdistill.teacher.finetune import load_prepared

    tgt = _label(checkpoint, tmp_path, input_scaler="target",
                 protocol={"train_fraction": 0.5})
    md = tgt.metadata
    assert md["label_options"] == {"input_scaler": "target", "scaler_train_fraction": 0.5,
                                   "scaler_fraction_mode": "recent"}
    assert tgt.version_key != uninterrupted.version_key
    np.testing.assert_array_equal(tgt.starts, uninterrupted.starts)
    prep = load_prepared("synthetic", {"train_fraction": 0.5}, OPTS)
    full = prepare(load_dataset("synthetic", **OPTS), prep.protocol.with_(train_fraction=1.0),
                   "synthetic")
    assert not np.allclose(prep.scaler.shift, full.scaler.shift)  # the two scalers differ
    assert not np.allclose(tgt.labels, uninterrupted.labels)
    with pytest.raises(ValueError, match="input_scaler"):
        _label(checkpoint, tmp_path, input_scaler="source")


def test_node_embedding_teacher_refuses_another_dataset():
    from benchmark.data.stdata import DataError
    from flowdistill.teacher.finetune import load_prepared

    prepared = load_prepared("synthetic", None, OPTS)
    meta = {"teacher_id": "llm:tiny", "protocol": prepared.protocol.to_dict(),
            "channels": list(prepared.data.channels), "num_nodes": 3,
            "target_channel_idx": list(prepared.target_channel_idx),
            "config": {"encoder_node_embedding": True}, "dataset_id": "nyc_taxi_manhattan"}
    with pytest.raises(DataError, match="node embedding learned on nyc_taxi_manhattan"):
        labeling.check_compatible(meta, prepared)
    labeling.check_compatible({**meta, "dataset_id": "synthetic"}, prepared)
    labeling.check_compatible({**meta, "config": {"encoder_node_embedding": False}}, prepared)


@pytest.mark.slow
def test_smollm2_labels_resume_byte_identical(tmp_path, monkeypatch):
    """The same kill-and-resume check with SmolLM2-135M (pretrained, two LoRA steps, ST encoder)
    on a handful of windows, in bf16 autocast as on a GPU (slow: ``pytest -m slow``)."""
    from flowdistill.teacher.model import smollm2_gguf_path

    try:
        smollm2_gguf_path()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    ck = finetune(TeacherFinetuneConfig(
        dataset="synthetic", dataset_options=OPTS, backbone="smollm2-135m", st_encoder=True,
        steps=2, batch_size=2, warmup_steps=1, eval_pairs=0, save_every=2, progress=False,
        output_dir=str(tmp_path / "ck")))
    kw = dict(max_windows=4, chunk_pairs=3, chunk_windows=1, dtype="bfloat16", batch_size=4,
              splits=("val",))
    whole = _label(ck, tmp_path / "whole", **kw)
    assert whole.metadata["chunks"] == 4 and whole.metadata["label_options"] == {
        "dtype": "bfloat16"}
    assert whole.metadata["teacher_id"].startswith("llm:smollm2-135m")
    _kill_after(monkeypatch, 2)
    with pytest.raises(Killed):
        _label(ck, tmp_path / "resumed", **kw)
    monkeypatch.undo()
    resumed = _label(ck, tmp_path / "resumed", **kw)
    assert resumed.metadata["labelling_runs"] == 2
    assert _bytes(resumed) == _bytes(whole)
    assert np.isfinite(whole.labels).all()

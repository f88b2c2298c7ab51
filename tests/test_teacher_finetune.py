"""Teacher fine-tuning (LoRA), checkpoints, resume, and HF soft labels on tiny synthetic data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from flowdistill.teacher import finetune as ft
from flowdistill.teacher.backends import PromptSource, get_backend
from flowdistill.teacher.finetune import (
    TeacherCheckpointError,
    TeacherFinetuneConfig,
    evaluate_mae,
    finetune,
    info,
    load_prepared,
    load_teacher,
    regression_loss,
    sample_pairs,
    targets_for,
)
from flowdistill.teacher.prompts import PromptBuilder

OPTS = {"num_nodes": 3, "num_days": 4, "steps_per_day": 24}


def _cfg(out, **kw) -> TeacherFinetuneConfig:
    base = dict(dataset="synthetic", dataset_options=OPTS, backbone="tiny", tuning="lora",
                lora_r=4, lora_alpha=8, steps=4, batch_size=4, lr=5e-3, warmup_steps=1,
                eval_every=2, eval_pairs=8, save_every=2, tokenizer_windows=10,
                output_dir=str(out), progress=False, seed=0)
    base.update(kw)
    return TeacherFinetuneConfig(**base)


@pytest.fixture(scope="module")
def prepared():
    return load_prepared("synthetic", None, OPTS)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, prepared):
    out = tmp_path_factory.mktemp("teacher") / "ck"
    return finetune(_cfg(out), prepared)


FIXED = (np.array([0, 5, 10, 15, 20, 25, 30, 3]), np.array([0, 1, 2, 0, 1, 2, 0, 1]))


def _fixed_loss(teacher, prepared) -> float:
    src = PromptSource(PromptBuilder.from_prepared(prepared), teacher.tokenizer, prepared.scaled,
                       prepared.tod, prepared.dow, with_series=teacher.st_encoder is not None)
    s, n = FIXED
    y = targets_for(prepared.scaled, s, n, 12, 12, prepared.target_channel_idx)
    y_hat = torch.from_numpy(get_backend("hf", teacher).predict(src.batch(s, n)))
    return float(regression_loss(y_hat, y, "huber", 1.0))


def test_lora_steps_reduce_the_loss(tmp_path, prepared, monkeypatch):
    # every step sees the same 8 training pairs: the loss on them must fall
    monkeypatch.setattr(ft, "sample_pairs", lambda *a, **k: FIXED)
    before = finetune(_cfg(tmp_path / "a", steps=0), prepared)
    after = finetune(_cfg(tmp_path / "b", steps=8, batch_size=8), prepared)
    t0, _ = load_teacher(before, "latest")
    t1, meta = load_teacher(after, "latest")
    assert meta["tuning"] == "lora"
    assert _fixed_loss(t1, prepared) < 0.8 * _fixed_loss(t0, prepared)


def test_checkpoint_round_trip(trained, prepared):
    teacher, meta = load_teacher(trained)
    assert meta["template_hash"] and meta["protocol_hash"] and meta["adapter_hash"]
    cfg = TeacherFinetuneConfig.from_dict(meta["config"])
    # the reloaded best weights reproduce the validation MAE measured during training
    src = PromptSource(PromptBuilder.from_prepared(prepared), teacher.tokenizer, prepared.scaled,
                       prepared.tod, prepared.dow, with_series=False)
    s, n = sample_pairs(prepared.starts("val"), prepared.num_nodes, cfg.eval_pairs,
                        np.random.default_rng([cfg.seed, 10**6]))
    mae = evaluate_mae(teacher, src, s, n, prepared)
    assert mae == pytest.approx(meta["training"]["best_val_mae"], abs=1e-5)
    d = info(trained)
    assert d["teacher_id"] == "llm:tiny" and "weights.safetensors" in d["files"]
    assert d["parameters"]["trainable"] < d["parameters"]["total"]


def test_resume_continues_where_it_stopped(tmp_path, trained, prepared, monkeypatch):
    calls = {"n": 0}
    real = ft.regression_loss

    def crash_on_third(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(ft, "regression_loss", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        finetune(_cfg(tmp_path / "r"), prepared)
    assert json.loads((tmp_path / "r" / "resume" / "state.json").read_text())["step"] == 2
    monkeypatch.setattr(ft, "regression_loss", real)
    finetune(_cfg(tmp_path / "r"), prepared)
    a = ft._load_tensors(trained / "resume" / "weights.safetensors")
    b = ft._load_tensors(tmp_path / "r" / "resume" / "weights.safetensors")
    assert set(a) == set(b)
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-4, rtol=0)
    with pytest.raises(TeacherCheckpointError, match="changed settings"):
        finetune(_cfg(tmp_path / "r", lr=0.5), prepared)


def test_hf_labels_shape_and_original_units(tmp_path, trained, prepared):
    from flowdistill.teacher.labeling import label
    from flowdistill.teacher.labels import SoftLabelStore

    store = label(trained, "synthetic", None, backend="hf", splits=("val",),
                  store_root=tmp_path / "labels", progress=False, dataset_options=OPTS)
    starts = prepared.starts("val")
    assert store.labels.shape == (len(starts), 12, prepared.num_nodes, 2)
    assert store.mask.all() and np.array_equal(store.starts, starts)
    md = SoftLabelStore.open(store.path).metadata
    for key in ("teacher_id", "adapter_hash", "template_hash", "protocol_hash", "dataset",
                "backend", "backend_version", "parse_failures", "nan_failures"):
        assert key in md
    assert md["backend"] == "hf" and md["nan_failures"] == 0
    # window 0, node 2 equals the teacher's scaled forecast mapped back with its scaler
    teacher, meta = load_teacher(trained)
    src = PromptSource(PromptBuilder.from_prepared(prepared), teacher.tokenizer, prepared.scaled,
                       prepared.tod, prepared.dow, with_series=False)
    y = get_backend("hf", teacher).predict(src.batch(starts[:1], np.array([2])))[0]
    shift, scale = np.asarray(meta["scaler"]["shift"]), np.asarray(meta["scaler"]["scale"])
    np.testing.assert_allclose(store.labels[0, :, 2, :], y * scale + shift, atol=1e-4)
    # original units: same scale as the data, not z-scores
    assert abs(store.labels.mean() - prepared.data.values.mean()) < prepared.data.values.std()


def test_label_rejects_a_mismatched_protocol(trained):
    from benchmark.data.stdata import DataError
    from flowdistill.teacher.labeling import label

    with pytest.raises(DataError, match="horizon"):
        label(trained, "synthetic", {"horizon": 6}, dataset_options=OPTS, progress=False,
              store_root="/nonexistent")

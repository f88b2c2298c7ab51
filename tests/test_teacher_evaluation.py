"""The teacher's full-split evaluation (masked metrics as the students get them), its storage in
teacher.json, and bf16 precision."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from benchmark.data.protocol import Protocol
from benchmark.data.stdata import STData
from benchmark.data.windows import prepare
from flowdistill.teacher.backends import PromptSource, get_backend
from flowdistill.teacher.evaluation import evaluate_checkpoint, evaluate_splits, score_split
from flowdistill.teacher.finetune import (
    TeacherFinetuneConfig,
    finetune,
    load_prepared,
    load_teacher,
)
from flowdistill.teacher.prompts import PromptBuilder
from tests.tiny_teacher import OPTS, tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(out, **kw) -> TeacherFinetuneConfig:
    return tiny_config(out, **{"head_hidden": 16, **kw})


@pytest.fixture(scope="module")
def prepared():
    return load_prepared("synthetic", None, OPTS)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, prepared):
    return finetune(_cfg(tmp_path_factory.mktemp("ev") / "ck"), prepared)


def _hand_prepared():
    """2 nodes, 1 channel, 8 hourly steps; input 1, horizon 2, split steps 4/2/2: the one
    validation window starts at step 3 (targets at steps 4 and 5), the one test window at 5."""
    values = np.array([1, 1, 1, 1, 2, 4, 5, 6], np.float32)[:, None, None].repeat(2, 1)
    values[4, 1] = 0.0  # node 1, step 4: a zero flow, masked by mask_threshold = 0
    values[5, 1] = 3.0
    data = STData(name="hand", values=values,
                  timestamps=np.datetime64("2024-01-01T00:00") + np.arange(8)
                  * np.timedelta64(1, "h"), adjacency=None,
                  nodes=pd.DataFrame({"name": ["a", "b"]}), channels=["flow"], steps_per_day=24)
    p = Protocol(input_len=1, horizon=2, split_steps=(4, 2, 2), null_value=None,
                 mask_threshold=0.0, scaler="none", report_horizons=(1, 2))
    return prepare(data, p, "hand")


def test_score_split_equals_hand_worked_masked_metrics():
    prep = _hand_prepared()
    assert prep.starts("val").tolist() == [3]
    # forecast of node v: v + 1 at every horizon (scaled = original: scaler "none")
    acc, windows = score_split(lambda s, v: np.repeat((v + 1.0)[:, None, None], 2, 1), prep,
                               "val", prep.scaler)
    out = acc.summary((1, 2))
    assert windows == 1
    # targets [[2, 0], [4, 3]] (horizon x node), forecasts [1, 2] per node; the 0 is masked:
    # errors |1-2| = 1, |1-4| = 3, |2-3| = 1
    assert out["overall"]["mae"] == pytest.approx(5 / 3)
    assert out["overall"]["rmse"] == pytest.approx(math.sqrt(11 / 3))
    assert out["overall"]["mape"] == pytest.approx(100 * (1 / 2 + 3 / 4 + 1 / 3) / 3)
    assert out["@1"]["mae"] == pytest.approx(1.0) and out["@2"]["mae"] == pytest.approx(2.0)
    assert out["mean_of_horizons"]["mae"] == pytest.approx(1.5)
    # every target (the zero too: |2 - 0| = 2)
    assert out["all_targets"]["overall"]["mae"] == pytest.approx(7 / 4)


def test_full_split_evaluation_matches_an_independent_masked_mae(trained):
    """Every (window, node) pair of val, predicted pair by pair, masked by hand."""
    teacher, meta = load_teacher(trained)
    prep = load_prepared("synthetic", {"mask_threshold": 20.0}, OPTS)  # masks some targets
    res = evaluate_splits(teacher, prep, ("val",), batch_size=5)
    starts = prep.starts("val")
    src = PromptSource(PromptBuilder.from_prepared(prep), teacher.tokenizer, prep.scaled,
                       prep.tod, prep.dow, with_series=False)
    backend = get_backend("hf", teacher)
    t_in, t_out = prep.protocol.input_len, prep.protocol.horizon
    shift, scale = prep.scaler.shift, prep.scaler.scale
    err, n = 0.0, 0
    for s in starts:
        for v in range(prep.num_nodes):
            y_hat = backend.predict(src.batch(np.array([s]), np.array([v])))[0] * scale + shift
            y = prep.data.values[s + t_in:s + t_in + t_out, v, :]
            keep = y > 20.0
            err += float(np.abs(y_hat - y)[keep].sum())
            n += int(keep.sum())
    assert 0 < n < len(starts) * prep.num_nodes * t_out * 2  # the mask bites
    split = res["splits"]["val"]
    assert split["pairs"] == len(starts) * prep.num_nodes
    assert split["metrics"]["overall"]["mae"] == pytest.approx(err / n, rel=1e-5)


def test_finetune_stores_the_full_split_evaluation_of_the_kept_weights(trained, prepared):
    meta = json.loads((trained / "teacher.json").read_text())
    ev = meta["evaluation"]
    assert ev["adapter_hash"] == meta["adapter_hash"] and ev["weights"] == "weights.safetensors"
    assert set(ev["splits"]) == {"val", "test"}
    for split in ("val", "test"):
        assert ev["splits"][split]["pairs"] == len(prepared.starts(split)) * prepared.num_nodes
    # the same numbers from the reloaded checkpoint (what labels are made from)
    again = evaluate_checkpoint(trained, ("val", "test"), progress=False, force=True)
    for split in ("val", "test"):
        for k in ("mae", "rmse", "mape"):
            assert again["splits"][split]["metrics"]["overall"][k] == pytest.approx(
                ev["splits"][split]["metrics"]["overall"][k], rel=1e-5)
    # the subset MAE that selected the weights is kept as it was (every target, 8 pairs)
    assert meta["training"]["best_val_mae"] is not None


def test_evaluation_is_skipped_when_stored_and_dropped_when_weights_change(tmp_path, prepared,
                                                                            monkeypatch):
    from flowdistill.teacher import evaluation
    from flowdistill.teacher import finetune as ft

    out = tmp_path / "r"
    # no validation subset: the latest weights are the kept ones, so more steps change them
    finetune(_cfg(out, steps=2, final_eval_splits=(), eval_pairs=0), prepared)
    assert "evaluation" not in json.loads((out / "teacher.json").read_text())
    first = evaluate_checkpoint(out, ("val",), progress=False)
    assert set(first["splits"]) == {"val"}
    calls = []
    real = evaluation.evaluate_splits
    monkeypatch.setattr(evaluation, "evaluate_splits",
                        lambda *a, **k: calls.append(a[2]) or real(*a, **k))
    evaluate_checkpoint(out, ("val",), progress=False)  # stored: nothing scored
    both = evaluate_checkpoint(out, ("val", "test"), progress=False)  # only test scored
    assert calls == [("test",)] and set(both["splits"]) == {"val", "test"}
    # more steps: new kept weights, so the old evaluation is dropped and redone at the end
    monkeypatch.setattr(ft, "evaluate_splits", lambda *a, **k: calls.append(a[2]) or real(*a, **k))
    before = json.loads((out / "teacher.json").read_text())["adapter_hash"]
    finetune(_cfg(out, steps=4, eval_pairs=0), prepared)
    meta = json.loads((out / "teacher.json").read_text())
    assert meta["adapter_hash"] != before
    assert calls[-1] == ("val", "test") and meta["evaluation"]["adapter_hash"] == \
        meta["adapter_hash"]
    # run again, finished: the stored evaluation is about these weights and is kept
    finetune(_cfg(out, steps=4, eval_pairs=0), prepared)
    assert len(calls) == 2
    assert json.loads((out / "teacher.json").read_text())["evaluation"] == meta["evaluation"]


def test_time_budget_stop_skips_the_final_evaluation(tmp_path, prepared):
    out = tmp_path / "b"
    finetune(_cfg(out, time_budget_s=0.0), prepared)
    assert "evaluation" not in json.loads((out / "teacher.json").read_text())


# ---------------------------------------------------------------- bf16
def test_bf16_autocast_trains_and_keeps_trainables_in_fp32(tmp_path, prepared):
    ck = finetune(_cfg(tmp_path / "bf", steps=2, precision="bf16", eval_pairs=4,
                       final_eval_splits=()), prepared)
    meta = json.loads((ck / "teacher.json").read_text())
    assert meta["precision"] == "bf16" and meta["config"]["precision"] == "bf16"
    assert math.isfinite(meta["training"]["history"][-1]["train_loss"])
    teacher, _ = load_teacher(ck)
    frozen = {p.dtype for p in teacher.parameters() if not p.requires_grad}
    trainable = {p.dtype for p in teacher.parameters() if p.requires_grad}
    assert frozen == {torch.bfloat16} and trainable == {torch.float32}
    assert all(p.dtype == torch.float32 for p in teacher.head.parameters())
    # the reloaded bf16 teacher reproduces the subset MAE that selected its weights
    from flowdistill.teacher.finetune import evaluate_mae, sample_pairs

    src = PromptSource(PromptBuilder.from_prepared(prepared), teacher.tokenizer,
                       prepared.scaled, prepared.tod, prepared.dow, with_series=False)
    s, n = sample_pairs(prepared.starts("val"), prepared.num_nodes, 4,
                        np.random.default_rng([0, 10**6]))
    assert evaluate_mae(teacher, src, s, n, prepared) == pytest.approx(
        meta["training"]["best_val_mae"], rel=1e-5)


def test_bf16_runs_the_lm_under_autocast_and_the_head_in_fp32(trained, prepared):
    teacher, _ = load_teacher(trained)
    src = PromptSource(PromptBuilder.from_prepared(prepared), teacher.tokenizer,
                       prepared.scaled, prepared.tod, prepared.dow, with_series=False)
    pb = src.batch(prepared.starts("val")[:4], np.array([0, 1, 2, 0]))
    prefix = torch.as_tensor(pb.prefix_ids)
    with torch.no_grad():
        y32 = teacher(prefix, pb.padded(0))
        teacher.set_precision("bf16")  # LoRA teacher: the frozen LM goes to bf16
        y16, h = teacher(prefix, pb.padded(0), return_hidden=True)
    assert y16.dtype == torch.float32  # the head ran in float32
    assert not torch.equal(y16, y32)
    torch.testing.assert_close(y16, y32, atol=0.1, rtol=0.05)


def test_full_tuning_bf16_keeps_every_weight_fp32(tmp_path, prepared):
    ck = finetune(_cfg(tmp_path / "fb", tuning="full", steps=1, precision="bf16",
                       final_eval_splits=()), prepared)
    teacher, meta = load_teacher(ck)
    assert meta["tuning"] == "full" and teacher.precision == "bf16"
    assert {p.dtype for p in teacher.parameters()} == {torch.float32}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bf16_finetune_and_full_split_evaluation(tmp_path, prepared):
    """The GPU path of the paper profile: bf16 LoRA steps on cuda, then the full-split
    evaluation on cuda agrees with the same checkpoint evaluated on the CPU."""
    ck = finetune(_cfg(tmp_path / "g", device="cuda", precision="bf16", st_encoder=True,
                       encoder_hidden=16), prepared)
    meta = json.loads((ck / "teacher.json").read_text())
    assert meta["evaluation"]["device"].startswith("cuda") and meta["precision"] == "bf16"
    cpu = evaluate_checkpoint(ck, ("val", "test"), device="cpu", progress=False, force=True)
    for split in ("val", "test"):
        assert cpu["splits"][split]["metrics"]["overall"]["mae"] == pytest.approx(
            meta["evaluation"]["splits"][split]["metrics"]["overall"]["mae"], rel=2e-2)


def test_a_stored_evaluation_counts_only_for_its_weights_and_data(trained):
    from flowdistill.teacher.checkpoint import read_config, stored_evaluation

    meta = read_config(trained)
    assert stored_evaluation(trained, meta) is not None
    for key in ("adapter_hash", "protocol_hash_full", "dataset_id"):
        assert stored_evaluation(trained, {**meta, key: "other"}) is None

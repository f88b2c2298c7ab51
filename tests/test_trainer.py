"""Trainer: learning, early stopping, best restore, resume, corrupt checkpoints, full test set."""

import json

import numpy as np
import pytest
import torch

from benchmark.batch import Batch
from benchmark.checkpoints import CheckpointError
from benchmark.models import Forecaster, ModelContext, build_model
from benchmark.trainer import TrainConfig, Trainer


class Linear(Forecaster):
    def __init__(self, input_len, horizon, in_channels, out_channels):
        super().__init__()
        self.h, self.c = horizon, out_channels
        self.lin = torch.nn.Linear(input_len * in_channels, horizon * out_channels)

    def forward(self, batch: Batch):
        b, t, n, c = batch.x.shape
        out = self.lin(batch.x.permute(0, 2, 1, 3).reshape(b, n, t * c))
        return out.reshape(b, n, self.h, self.c).permute(0, 2, 1, 3)


def make(prep):
    ctx = ModelContext.from_prepared(prep)
    return Linear(ctx.input_len, ctx.horizon, ctx.in_channels, ctx.out_channels)


CFG = dict(epochs=3, batch_size=16, lr=1e-2, progress=False, seed=1)


def test_training_reduces_val_error_and_is_deterministic(synthetic_prepared):
    torch.manual_seed(1)
    r1 = Trainer(make(synthetic_prepared), synthetic_prepared, TrainConfig(**CFG)).fit()
    torch.manual_seed(1)
    r2 = Trainer(make(synthetic_prepared), synthetic_prepared, TrainConfig(**CFG)).fit()
    assert r1.history[-1]["val_mae"] < r1.history[0]["val_mae"] * 1.05
    assert [h["val_mae"] for h in r1.history] == pytest.approx([h["val_mae"] for h in r2.history])


def test_best_checkpoint_is_restored(synthetic_prepared):
    torch.manual_seed(0)
    t = Trainer(make(synthetic_prepared), synthetic_prepared, TrainConfig(**{**CFG, "epochs": 4}))
    res = t.fit()
    assert t.evaluate("val")["overall"]["mae"] == pytest.approx(res.best_val_mae, rel=1e-5)


def test_early_stopping(synthetic_prepared):
    torch.manual_seed(0)
    t = Trainer(make(synthetic_prepared), synthetic_prepared,
                TrainConfig(**{**CFG, "epochs": 50, "lr": 0.0, "patience": 2}))
    res = t.fit()
    assert res.epochs_run == 3  # first epoch sets the best, two more without improvement


def test_resume_continues_where_it_stopped(synthetic_prepared, tmp_path):
    torch.manual_seed(0)
    full = Trainer(make(synthetic_prepared), synthetic_prepared,
                   TrainConfig(**{**CFG, "epochs": 4}), checkpoint_dir=tmp_path / "a").fit()
    torch.manual_seed(0)
    Trainer(make(synthetic_prepared), synthetic_prepared, TrainConfig(**{**CFG, "epochs": 2}),
            checkpoint_dir=tmp_path / "b").fit()
    resumed = Trainer(make(synthetic_prepared), synthetic_prepared,
                      TrainConfig(**{**CFG, "epochs": 4}), checkpoint_dir=tmp_path / "b").fit()
    assert resumed.resumed_from_epoch == 2
    assert [h["val_mae"] for h in resumed.history] == pytest.approx(
        [h["val_mae"] for h in full.history], rel=1e-5)


def test_corrupt_checkpoint_names_the_file(synthetic_prepared, tmp_path):
    (tmp_path / "last.pt").write_bytes(b"not a checkpoint")
    t = Trainer(make(synthetic_prepared), synthetic_prepared, TrainConfig(**CFG),
                checkpoint_dir=tmp_path)
    with pytest.raises(CheckpointError, match="last.pt"):
        t.fit()


def test_predict_covers_whole_test_set(synthetic_prepared):
    t = Trainer(make(synthetic_prepared), synthetic_prepared,
                TrainConfig(**{**CFG, "eval_batch_size": 7}))
    pred, true = t.predict("test")
    n = len(synthetic_prepared.splits.test)
    assert pred.shape[0] == true.shape[0] == n
    m1 = t.evaluate("test")["overall"]["mae"]
    t.config.eval_batch_size = 1000
    assert t.evaluate("test")["overall"]["mae"] == pytest.approx(m1, rel=1e-6)
    assert np.abs(pred - true).mean() == pytest.approx(m1, rel=1e-5)


def test_closed_form_models(synthetic_prepared):
    ctx = ModelContext.from_prepared(synthetic_prepared)
    maes = {}
    for name in ("last-value", "ha-week", "ha-slot", "ridge"):
        m = build_model(name, ctx)
        t = Trainer(m, synthetic_prepared, TrainConfig(progress=False))
        t.fit()
        maes[name] = t.evaluate("test")["overall"]["mae"]
    assert all(np.isfinite(v) for v in maes.values())
    # the synthetic series has strong daily cycles: ridge must beat the persistence forecast
    assert maes["ridge"] < maes["last-value"]


def test_ha_week_reads_only_the_past(synthetic_prepared):
    ctx = ModelContext.from_prepared(synthetic_prepared)
    m = build_model("ha-week", ctx)
    starts = synthetic_prepared.splits.test[:3]
    b = synthetic_prepared.make_batch(starts)
    out = m(b)
    week = 7 * synthetic_prepared.data.steps_per_day
    s = int(starts[0]) + 12
    if s - week >= 0:
        np.testing.assert_allclose(out[0, 0].numpy(), synthetic_prepared.scaled[s - week].numpy())


def test_ha_slot_matches_a_hand_mean(synthetic_prepared):
    ctx = ModelContext.from_prepared(synthetic_prepared)
    m = build_model("ha-slot", ctx)
    m.fit_closed_form(synthetic_prepared)
    pr = synthetic_prepared
    tod, dow = pr.tod.numpy(), pr.dow.numpy()
    from benchmark.data.splits import covered_steps

    vis = covered_steps(pr.train_starts, 24, len(tod))
    sel = vis & (tod == 5) & (dow == int(dow[5]))
    expected = pr.scaled.numpy()[sel].mean(0)
    np.testing.assert_allclose(m.table[int(dow[5]) * 24 + 5].numpy(), expected, rtol=1e-5)
    assert json.dumps(m.extra_loss()) == "null"


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}/"))
        elif isinstance(v, list):
            out.update({f"{prefix}{k}/{i}": x for i, x in enumerate(v)})
        else:
            out[f"{prefix}{k}"] = v
    return out


def test_eval_batch_size_changes_no_metric(synthetic_prepared):
    """Every metric of both views (pooled, mean of horizons, per horizon, all targets) is the
    same at any evaluation batch size. The sums themselves are batch-independent to float64
    accumulation noise (test_metrics); the model's float32 GEMMs may round differently at another
    batch size (about 1e-8 relative here), hence 1e-6."""
    torch.manual_seed(3)
    t = Trainer(make(synthetic_prepared), synthetic_prepared, TrainConfig(**CFG))
    results = {}
    for bs in (1, 7, 64, 100000):
        t.config.eval_batch_size = bs
        results[bs] = _flat(t.evaluate("test"))
    base = results[1]
    assert any(k.startswith("all_targets/") for k in base)
    for bs, res in results.items():
        assert res.keys() == base.keys()
        for k, v in res.items():
            assert v == pytest.approx(base[k], rel=1e-6, abs=1e-9), (bs, k)

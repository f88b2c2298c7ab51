"""Splits, training fraction, scaler, time features and window gathering."""

import numpy as np
import pandas as pd
import pytest
import torch

from benchmark.data.protocol import Protocol, protocol_hash
from benchmark.data.scaler import Scaler
from benchmark.data.splits import covered_steps, split_window_starts, training_subset
from benchmark.data.stdata import DataError, STData
from benchmark.data.timefeatures import day_of_week_index, time_of_day_index
from benchmark.data.windows import prepare


def make_data(t=200, n=3, c=2, steps_per_day=48):
    step = np.timedelta64(86400 // steps_per_day, "s")
    ts = np.datetime64("2019-01-01T00:00") + np.arange(t) * step
    vals = np.arange(t * n * c, dtype=np.float32).reshape(t, n, c)
    return STData("toy", vals, ts, None, pd.DataFrame({"name": [f"r{i}" for i in range(n)]}),
                  ["inflow", "outflow"][:c], steps_per_day)


def test_split_targets_never_cross_boundaries():
    p = Protocol(input_len=4, horizon=3, split_ratios=(0.5, 0.3, 0.2))
    s = split_window_starts(100, p)
    assert s.boundaries == (50, 80, 100)
    assert s.train[0] == 0 and s.train[-1] + 4 + 3 - 1 == 49
    assert s.val[0] + 4 == 50 and s.val[-1] + 6 == 79
    assert s.test[0] + 4 == 80 and s.test[-1] + 6 == 99
    assert len(np.intersect1d(s.train, s.val)) == 0


def test_split_steps():
    p = Protocol(input_len=2, horizon=2, split_steps=(10, 5, 5))
    s = split_window_starts(30, p)
    assert s.boundaries == (10, 15, 20)


def test_training_fraction_recent_and_random():
    starts = np.arange(100)
    recent = training_subset(starts, Protocol(train_fraction=0.1))
    np.testing.assert_array_equal(recent, np.arange(90, 100))
    rnd = training_subset(starts, Protocol(train_fraction=0.1, fraction_mode="random"))
    assert len(rnd) == 10 and np.all(np.diff(rnd) > 0)
    rnd2 = training_subset(starts, Protocol(train_fraction=0.1, fraction_mode="random"))
    np.testing.assert_array_equal(rnd, rnd2)


def test_covered_steps():
    m = covered_steps(np.array([2, 3]), 3, 8)
    np.testing.assert_array_equal(m, [0, 0, 1, 1, 1, 1, 0, 0])


def test_scaler_excludes_nulls_and_unseen_steps():
    v = np.array([[[0.0]], [[2.0]], [[4.0]], [[100.0]]], dtype=np.float32)
    s = Scaler.fit(v, "standard", null_value=0.0, step_mask=np.array([1, 1, 1, 0], bool))
    assert s.shift[0] == pytest.approx(3.0) and s.scale[0] == pytest.approx(1.0)
    x = torch.tensor([[5.0]])
    assert float(s.inverse(s.forward(x))) == pytest.approx(5.0)
    mm = Scaler.fit(v, "minmax")
    assert mm.shift[0] == 0.0 and mm.scale[0] == 100.0


def test_time_features():
    ts = np.array(["2019-01-01T00:00", "2019-01-01T23:30", "2019-01-06T12:00"],
                  dtype="datetime64[ns]")
    np.testing.assert_array_equal(time_of_day_index(ts, 48), [0, 47, 24])
    # 2019-01-01 was a Tuesday (Mon=0), 2019-01-06 a Sunday
    np.testing.assert_array_equal(day_of_week_index(ts), [1, 1, 6])


def test_prepare_and_batches_are_views_of_the_series():
    data = make_data()
    p = Protocol(input_len=4, horizon=2, split_ratios=(0.6, 0.2, 0.2), null_value=None)
    pr = prepare(data, p)
    b = pr.make_batch(np.array([5, 0]))
    assert b.x.shape == (2, 4, 3, 2) and b.y.shape == (2, 2, 3, 2)
    np.testing.assert_allclose(pr.scaler.inverse(b.x[0]).numpy(), data.values[5:9], rtol=1e-5)
    np.testing.assert_array_equal(b.y[1].numpy(), data.values[4:6])
    assert b.start.tolist() == [5, 0]
    # iteration covers every window exactly once, no drop_last
    n = sum(bb.size for bb in pr.batches("test", 7))
    assert n == len(pr.splits.test)


def test_fraction_changes_scaler_not_eval_windows():
    data = make_data()
    full = prepare(data, Protocol(input_len=4, horizon=2, null_value=None))
    part = prepare(data, Protocol(input_len=4, horizon=2, null_value=None, train_fraction=0.2))
    np.testing.assert_array_equal(full.splits.test, part.splits.test)
    assert len(part.train_starts) < len(full.train_starts)
    assert part.train_starts[-1] == full.train_starts[-1]
    assert not np.allclose(part.scaler.shift, full.scaler.shift)
    assert protocol_hash("toy", full.protocol) == protocol_hash("toy", part.protocol)


def test_target_channels_subset():
    data = make_data()
    p = Protocol(input_len=4, horizon=2, null_value=None, target_channels=("outflow",))
    pr = prepare(data, p)
    b = pr.make_batch(np.array([0]))
    assert b.y.shape[-1] == 1
    np.testing.assert_array_equal(b.y[0, :, :, 0].numpy(), data.values[4:6, :, 1])


@pytest.mark.parametrize("bad,msg", [
    ("rank", "shape"), ("nan", "NaN"), ("order", "increasing"), ("irregular", "irregular"),
    ("adj", "square"),
])
def test_stdata_rejects_bad_input(bad, msg):
    d = make_data(t=10)
    kw = dict(name="toy", values=d.values, timestamps=d.timestamps, adjacency=None, nodes=d.nodes,
              channels=d.channels, steps_per_day=48, source="toy.npz")
    if bad == "rank":
        kw["values"] = d.values[:, :, 0]
    elif bad == "nan":
        v = d.values.copy()
        v[3, 1, 0] = np.nan
        kw["values"] = v
    elif bad == "order":
        kw["timestamps"] = d.timestamps[::-1].copy()
    elif bad == "irregular":
        ts = d.timestamps.copy()
        ts[5:] += np.timedelta64(60, "s")
        kw["timestamps"] = ts
    elif bad == "adj":
        kw["adjacency"] = np.zeros((3, 2), np.float32)
    with pytest.raises(DataError, match=msg) as e:
        STData(**kw)
    assert "toy.npz" in str(e.value)

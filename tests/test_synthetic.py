"""The synthetic dataset: shapes, determinism, cycles, graph-correlated noise."""

from __future__ import annotations

import numpy as np
import pytest

from benchmark.data.registry import load_dataset
from benchmark.data.stdata import DataError
from benchmark.data.synthetic import make_synthetic, random_geometric_graph
from benchmark.data.timefeatures import day_of_week_index


def test_default_is_small_and_valid():
    d = make_synthetic()
    assert d.values.shape == (14 * 48, 12, 2) and d.values.dtype == np.float32
    assert d.channels == ["inflow", "outflow"] and d.steps_per_day == 48
    assert (d.values >= 0).all() and np.isfinite(d.values).all()
    a = d.adjacency
    assert a.shape == (12, 12) and np.array_equal(a, a.T) and np.all(np.diag(a) == 0)
    assert (a.sum(1) > 0).all()  # nobody isolated
    assert d.timestamps[0] == np.datetime64("2024-01-01T00:00")
    assert day_of_week_index(d.timestamps[:1])[0] == 0  # a Monday


def test_deterministic_by_seed():
    a, b, c = make_synthetic(seed=1), make_synthetic(seed=1), make_synthetic(seed=2)
    assert np.array_equal(a.values, b.values) and np.array_equal(a.adjacency, b.adjacency)
    assert not np.array_equal(a.values, c.values)


def test_options_through_registry():
    d = load_dataset("synthetic", num_nodes=5, num_days=3, steps_per_day=24, channels=3, seed=7)
    assert d.values.shape == (72, 5, 3) and d.channels == ["ch0", "ch1", "ch2"]
    assert np.array_equal(d.values, make_synthetic(5, 3, 24, 3, seed=7).values)
    assert make_synthetic(num_steps=50).num_steps == 50


def test_daily_and_weekly_cycles():
    d = make_synthetic(num_nodes=8, num_days=28, seed=0)
    v = d.values.astype(np.float64)
    spd = d.steps_per_day
    # the daily profile explains most of the variance of each node's weekday series
    daily = v.reshape(28, spd, 8, 2)
    profile = daily.mean(axis=0)
    resid = daily - profile
    assert resid.var() < 0.5 * daily.var()
    # weekends are lower than weekdays at every node
    dow = day_of_week_index(d.timestamps)
    weekend = np.isin(dow, (5, 6))
    assert (v[weekend].mean(axis=(0, 2)) < v[~weekend].mean(axis=(0, 2))).all()


def test_noise_is_correlated_along_edges():
    d = make_synthetic(num_nodes=12, num_days=56, seed=0, noise=0.3)
    v = d.values.astype(np.float64)
    spd, n = d.steps_per_day, d.num_nodes
    dow = day_of_week_index(d.timestamps)
    key = (np.arange(d.num_steps) % spd) + spd * np.isin(dow, (5, 6))
    resid = v.copy()
    for k in np.unique(key):
        resid[key == k] -= v[key == k].mean(axis=0)
    r = np.corrcoef(resid[..., 0].T)
    a = d.adjacency > 0
    off = ~np.eye(n, dtype=bool)
    assert r[a].mean() > r[off & ~a].mean() + 0.1


def test_random_geometric_graph_by_hand():
    pos = np.array([[0.0, 0.0], [0.1, 0.0], [1.0, 1.0], [0.9, 1.0]])
    a = random_geometric_graph(pos, radius=0.2)
    expected = np.zeros((4, 4), dtype=np.float32)
    expected[0, 1] = expected[1, 0] = expected[2, 3] = expected[3, 2] = 1
    assert np.array_equal(a, expected)
    far = random_geometric_graph(pos, radius=0.01)  # nearest neighbours still linked
    assert np.array_equal(far, expected)


@pytest.mark.parametrize("kw", [{"steps_per_day": 7}, {"num_nodes": 0}, {"num_days": 0}])
def test_bad_arguments_rejected(kw):
    with pytest.raises(DataError, match="synthetic"):
        make_synthetic(**kw)

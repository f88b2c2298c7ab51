"""perf/scaling.py: kNN graph, the in-process measurement, and the child-process logic
that records out-of-memory and out-of-time configurations as rows (tiny N, real subprocesses)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from paper.scaling import load_scaling
from perf.scaling import (
    ScalingConfig,
    knn_graph,
    load_rows,
    measure,
    run_scaling,
    synthetic_batch,
)

TINY = dict(batch_size=2, warmup=1, repeats=2, threads=1, timeout_s=60.0)


def test_knn_graph_matches_brute_force():
    n, k = 40, 3
    adj = knn_graph(n, k, seed=1, chunk=7)  # several chunks
    pos = np.random.default_rng(1).uniform(0.0, 1.0, size=(n, 2))
    d = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    expect = np.zeros((n, n), dtype=np.float32)
    for i in range(n):
        for j in np.argsort(d[i])[:k]:
            expect[i, j] = expect[j, i] = 1.0
    np.testing.assert_array_equal(adj, expect)
    assert adj.dtype == np.float32 and (adj == adj.T).all() and not adj.diagonal().any()
    assert (adj.sum(1) >= k).all()
    assert knn_graph(1, 8).shape == (1, 1)


def test_synthetic_batch_shapes_and_calendar():
    cfg = ScalingConfig(**TINY)
    b = synthetic_batch(3, 5, cfg, seed=0)
    assert b.x.shape == (3, 12, 5, 2) and b.y.shape == (3, 12, 5, 2)
    assert int(b.x_tod.max()) < cfg.steps_per_day and int(b.x_dow.max()) < 7
    # consecutive slots: the forecast starts one step after the history ends
    step = lambda tod, dow: dow * cfg.steps_per_day + tod  # noqa: E731
    assert ((step(b.y_tod[:, 0], b.y_dow[:, 0]) - step(b.x_tod[:, -1], b.x_dow[:, -1]))
            % (7 * cfg.steps_per_day) == 1).all()


def test_measure_in_process_reports_both_batch_sizes():
    cfg = ScalingConfig(**TINY)
    stages = []
    row = measure("flowdistill", 6, cfg, report=lambda d: stages.append(d.get("stage")))
    for key in ("latency_ms_median", "latency_ms_p95", "latency_ms_b1_median",
                "peak_memory_mb_inference", "peak_memory_mb_inference_b1", "params"):
        assert np.isfinite(row[key]), key
    assert row["latency_batch"] == 2 and row["latency_repeats"] == 2
    assert "memory_b1" in stages and "latency" in stages


def test_max_latency_cuts_repeats_to_at_least_one():
    cfg = ScalingConfig(**{**TINY, "repeats": 50, "max_latency_s": 1e-9})
    row = measure("flowdistill", 4, cfg)
    assert row["latency_repeats"] == row["latency_repeats_b1"] == 1


def test_oom_and_timeout_become_rows(tmp_path):
    out = tmp_path / "scaling" / "t.json"
    # 1 MiB of address space: the 256-node graph cannot be allocated -> "oom"; N=512 of the
    # same model is then recorded without running
    oom_cfg = ScalingConfig(**{**TINY, "memory_limit_gb": 2.0 ** -10})
    rows = run_scaling(["flowdistill"], [512, 256], oom_cfg, out, progress=False,
                       command="test oom")
    by_n = {r["num_nodes"]: r for r in rows}
    assert by_n[256]["status"] == "oom" and "MemoryError" in by_n[256]["error"]
    assert by_n[512]["status"] == "oom" and by_n[512]["error"].startswith("not run")
    # the child is killed before it can even import torch -> "error", reason "timeout"
    slow_cfg = ScalingConfig(**{**TINY, "timeout_s": 0.3})
    rows = run_scaling(["gwnet"], [8], slow_cfg, out, progress=False, command="test timeout")
    row = [r for r in rows if r["model"] == "gwnet"][0]
    assert row["status"] == "error" and row["error"].startswith("timeout after 0.3 s")
    data = json.loads(out.read_text())
    assert data["commands"] == ["test oom", "test timeout"] and len(data["rows"]) == 3
    # the paper build reads these rows (statuses ok / oom / error only)
    table = load_scaling(out.parent)
    assert sorted(table["status"]) == ["error", "oom", "oom"]


def test_resume_skips_rows_already_there(tmp_path):
    out = tmp_path / "s.json"
    calls = []

    def fake(model, n, cfg, device):
        calls.append((model, n))
        status = "error" if (model, n) == ("b", 2) else "ok"
        return {"model": model, "num_nodes": n, "status": status, "device": device,
                "error": "boom", "latency_ms_b1_median": 1.0, "latency_ms_median": 1.0,
                "latency_batch": 2, "peak_memory_mb_inference": 1.0}

    cfg = ScalingConfig(**TINY)
    run_scaling(["a", "b"], [1, 2], cfg, out, progress=False, runner=fake)
    assert calls == [("a", 1), ("b", 1), ("a", 2), ("b", 2)]
    calls.clear()
    run_scaling(["a", "b"], [1, 2, 3], cfg, out, progress=False, runner=fake)
    assert calls == [("a", 3), ("b", 3)]  # an "error" that is not a timeout does not stop b
    calls.clear()
    rows = run_scaling(["a", "b"], [1, 2, 3], cfg, out, progress=False, runner=fake,
                       redo_failed=True)
    assert calls == [("b", 2)] and len(rows) == 6 and len(load_rows(out)) == 6


def test_load_rows_rejects_malformed_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"rows": [{"model": "x"}]}')
    with pytest.raises(ValueError, match="bad.json"):
        load_rows(bad)
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        load_rows(bad)

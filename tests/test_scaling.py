"""perf/scaling.py: kNN graph, the in-process measurement, and the child-process logic
that records out-of-memory and out-of-time configurations as rows (tiny N, real subprocesses)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from paper.scaling import load_scaling
from perf.scaling import (
    DenseByDesign,
    ScalingConfig,
    graph_plan,
    knn_edges,
    knn_graph,
    knn_sparse,
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


def test_every_row_names_its_session(tmp_path):
    """Each invocation tags the rows it measured with its own session id and lists the id,
    its command, host and start in the file; rows of an earlier invocation keep theirs."""
    out = tmp_path / "s.json"

    def fake(model, n, cfg, device):
        return {"model": model, "num_nodes": n, "status": "ok", "device": device,
                "latency_ms_b1_median": 1.0, "latency_ms_median": 1.0, "latency_batch": 2,
                "peak_memory_mb_inference": 1.0}

    cfg = ScalingConfig(**TINY)
    run_scaling(["a"], [1], cfg, out, progress=False, runner=fake, command="first")
    run_scaling(["a"], [1, 2], cfg, out, progress=False, runner=fake, command="second")
    run_scaling(["a"], [1, 2], cfg, out, progress=False, runner=fake, command="third")
    data = json.loads(out.read_text())
    first, second = data["sessions"]  # the third measured nothing: no session listed
    assert [first["command"], second["command"]] == ["first", "second"]
    assert first["id"] != second["id"] and first["host"] and first["started"]
    assert [r["session"] for r in data["rows"]] == [first["id"], second["id"]]
    assert data["commands"] == ["first", "second", "third"]


def test_load_rows_rejects_malformed_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"rows": [{"model": "x"}]}')
    with pytest.raises(ValueError, match="bad.json"):
        load_rows(bad)
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        load_rows(bad)


@pytest.mark.parametrize("n, k", [(1, 8), (2, 8), (3, 1), (9, 8), (40, 3), (333, 8), (2000, 5)])
def test_knn_edges_are_the_brute_force_graph(n, k):
    # the grid search picks exactly what knn_graph's comparison of every pair picks
    dense = knn_graph(n, k, seed=4)
    sparse = knn_sparse(n, k, seed=4)
    assert sparse.is_coalesced() and sparse.dtype == torch.float32
    np.testing.assert_array_equal(sparse.to_dense().numpy(), dense)
    rows, cols = knn_edges(n, k, seed=4)
    assert len(rows) == n * min(k, n - 1) and not (rows == cols).any()


def test_graph_plan_per_model():
    assert graph_plan("stgcn", "sparse") == ("sparse", {"sparse_supports": True})
    assert graph_plan("dcrnn", "dense") == ("dense", {"sparse_supports": False})
    assert graph_plan("flowdistill", "sparse") == ("none", {})
    assert graph_plan("stid", "dense") == ("none", {})
    assert graph_plan("gwnet", "dense") == ("dense", {"sparse_supports": False})
    assert graph_plan("astgcn", "dense") == ("dense", {})
    assert graph_plan("mtgnn", "dense") == ("dense", {})
    for name in ("gwnet", "astgcn", "stsgcn", "mtgnn", "agcrn"):
        with pytest.raises(DenseByDesign, match="dense"):
            graph_plan(name, "sparse")
    with pytest.raises(ValueError, match="supports must be one of"):
        ScalingConfig(supports="csr")


def test_measure_with_sparse_supports_never_builds_a_dense_graph(monkeypatch):
    import perf.scaling as scaling

    def no_dense(*args, **kwargs):
        raise AssertionError("dense [N, N] graph built under supports='sparse'")

    monkeypatch.setattr(scaling, "knn_graph", no_dense)
    cfg = ScalingConfig(**{**TINY, "supports": "sparse"})
    for name in ("stgcn", "dcrnn", "flowdistill"):
        row = measure(name, 12, cfg)
        assert row["supports"] == ("none" if name == "flowdistill" else "sparse")
        assert row["num_edges"] > 0 and np.isfinite(row["latency_ms_median"])


def test_dense_by_design_child_writes_a_skipped_row(tmp_path):
    from perf.scaling import child_main

    cfg = ScalingConfig(**{**TINY, "supports": "sparse", "memory_limit_gb": None})
    child_main("gwnet", 50, cfg, tmp_path / "row.json")
    row = json.loads((tmp_path / "row.json").read_text())
    assert row["status"] == "skipped" and row["supports"] == "dense"
    assert row["error"].startswith("not attempted: dense by design: its self-adaptive")


def test_dense_and_sparse_rows_share_a_file_without_clashing(tmp_path):
    out = tmp_path / "s.json"
    calls = []

    def fake(model, n, cfg, device):
        calls.append((model, n, cfg.supports))
        status = "error" if (n, cfg.supports) == (2, "sparse") else "ok"
        return {"model": model, "num_nodes": n, "status": status, "device": device,
                "supports": cfg.supports, "error": "timeout after 1 s", "settings":
                {"supports": cfg.supports}, "latency_ms_b1_median": 1.0,
                "latency_ms_median": 1.0, "latency_batch": 2, "peak_memory_mb_inference": 1.0}

    run_scaling(["a"], [1, 2, 3], ScalingConfig(**TINY), out, progress=False, runner=fake)
    sparse_cfg = ScalingConfig(**{**TINY, "supports": "sparse"})
    rows = run_scaling(["a"], [1, 2, 3], sparse_cfg, out, progress=False, runner=fake)
    # the sparse timeout at N=2 stops N=3 of the sparse series only
    assert calls == [("a", 1, "dense"), ("a", 2, "dense"), ("a", 3, "dense"),
                     ("a", 1, "sparse"), ("a", 2, "sparse")]
    assert len(rows) == 6
    last = [r for r in rows if r["num_nodes"] == 3 and r["supports"] == "sparse"][0]
    assert last["error"] == "not run: out of time at N=2 already"
    table = load_scaling(tmp_path)
    assert sorted(table["series"].unique()) == ["a", "a (sparse)"]


def test_paper_series_stops_and_their_reasons(tmp_path):
    from paper.figures import _stop_sentence, _stops, scaling_figure
    from paper.scaling import scaling_table, stop_reason

    dev, limits = "cpu", {"timeout_s": 180.0, "memory_limit_gb": 8.0}

    def row(model, n, status="ok", supports="dense", error=None):
        r = {"model": model, "num_nodes": n, "status": status, "device": dev,
             "supports": supports, "settings": limits}
        if status == "ok":
            r.update(latency_ms_median=n / 10, latency_ms_p95=n / 9,
                     peak_memory_mb_inference=n / 100)
        if error:
            r["error"] = error
        return r

    (tmp_path / "a_dense.json").write_text(json.dumps({"rows": [
        row("stgcn", 100), row("stgcn", 1000, "error", error="timeout after 180 s (during x)"),
        row("stgcn", 5000, "error", error="not run: out of time at N=1000 already"),
        row("gwnet", 100), row("gwnet", 1000, "oom", error="during build: MemoryError: x")]}))
    why = "not attempted: dense by design: its adaptive adjacency is N x N"
    (tmp_path / "b_sparse.json").write_text(json.dumps({"rows": [
        row("stgcn", 100, supports="sparse"), row("stgcn", 1000, supports="sparse"),
        row("stgcn", 5000, supports="sparse"), row("flowdistill", 5000, supports="none"),
        row("gwnet", 100, "skipped", error=why), row("gwnet", 5000, "skipped", error=why)]}))
    rows = load_scaling(tmp_path)
    at = {(r.series, r.num_nodes): r for r in rows.itertuples()}
    assert at[("gwnet", 100)].status == "ok"  # a skipped row never hides a measurement
    assert at[("gwnet", 5000)].status == "skipped"
    assert at[("stgcn (sparse)", 5000)].status == "ok" and at[("stgcn", 5000)].status == "error"
    reasons = {(r["series"], r["num_nodes"]): stop_reason(r) for _, r in rows.iterrows()}
    assert reasons[("stgcn", 1000)] == reasons[("stgcn", 5000)] == "timeout"
    assert reasons[("gwnet", 1000)] == "out of memory"
    assert reasons[("gwnet", 5000)] == "dense by design" and reasons[("stgcn (sparse)", 100)] == ""

    stgcn = rows[rows.series == "stgcn"]
    assert list(_stops(stgcn)["num_nodes"]) == [1000]  # the derived "not run" row is no stop
    assert _stop_sentence("stgcn", stgcn, _stops(stgcn)) == \
        "stgcn: ran to N = 100; timeout (180 s) at N = 1,000"
    gwnet = rows[rows.series == "gwnet"]
    assert _stop_sentence("gwnet", gwnet, _stops(gwnet)) == (
        "gwnet: ran to N = 100; out of memory (8 GB limit) at N = 1,000; not attempted with "
        "sparse supports, dense by design (its adaptive adjacency is N x N) at N = 5,000")

    md = scaling_table(rows, tmp_path / "out")[0].read_text()
    assert "| 1,000 | timeout | timeout | 100.00 | 10.0 | OOM | OOM | – | – |" in md
    assert "| 5,000 | timeout | timeout | 500.00 | 50.0 | dense | dense | 500.00 | 50.0 |" in md
    paths = scaling_figure(rows, tmp_path / "out")
    assert sorted(p.suffix for p in paths) == [".pdf", ".png"]

"""paper/: tables and figures rebuilt from synthetic run records written into a temporary
directory (nothing is hard-coded: every expected number follows from the records below)."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from benchmark.records import RunRecord, run_tag, write_record

REPO = Path(__file__).resolve().parent.parent
PHASH = "0123456789abcdef"


@pytest.fixture(scope="module")
def paper():
    """The paper/ scripts live beside the packages, not in them (nothing imports paper/)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(REPO))
        mods = {m: importlib.import_module(f"paper.{m}")
                for m in ("build", "frame", "tables", "figures", "scaling", "predictions")}
    return SimpleNamespace(**mods)


def _block(v: float, horizon: int = 12) -> dict:
    """A metrics summary whose per-step MAE is v + 0.1 (h - 6.5): mean over steps exactly v."""
    mae = [v + 0.1 * (h - 6.5) for h in range(1, horizon + 1)]
    per = {"mae": mae, "rmse": [1.5 * m for m in mae], "mape": [10 * m for m in mae]}
    at = {f"@{h}": {k: per[k][h - 1] for k in per} for h in (3, 6, 12)}
    mean = {k: float(np.mean(per[k])) for k in per}
    return {"overall": mean, "mean_of_horizons": mean, **at, "per_horizon": per}


def _summary(v: float) -> dict:
    return {**_block(v), "per_channel": {"inflow": _block(v - 0.5), "outflow": _block(v + 0.5)}}


def _record(model: str, v: float, seed: int = 0, fraction: float = 1.0, tag: str = "main",
            dataset: str = "toy_city", teacher: str | None = None, params: int = 1234,
            created: str = "2026-01-01T00:00:00+00:00") -> RunRecord:
    frac = f"{fraction:g}".replace(".", "p")
    tid = "" if teacher is None else teacher.split("-")[0][:4]
    run_id = f"{tag}-{dataset}-{model}-f{frac}-s{seed}-{tid}abc{int(v * 100):04d}"
    return RunRecord(
        run_id=run_id, model=model, dataset=dataset,
        protocol={"input_len": 12, "horizon": 12, "train_fraction": fraction},
        protocol_hash=PHASH, seed=seed, train_fraction=fraction, hparams={}, train_config={},
        objective={"name": "supervised"}, metrics={"val": _summary(v), "test": _summary(v)},
        params=params,
        efficiency={"device": "cpu", "latency_batch": 64, "latency_ms_b1_median": 0.5 + seed,
                    "latency_ms_b1_p95": 0.9, "latency_ms_median": 3.0, "latency_ms_p95": 4.0,
                    "peak_memory_mb_inference": 12.0, "peak_memory_mb_train": 30.0},
        fit={"seconds_per_epoch": 1.5, "epochs_run": 3, "train_seconds": 4.5},
        teacher=None if teacher is None else {"id": teacher, "path": f"/labels/{teacher}"},
        created=created)


STID_T = "forecaster_stid-00112233445566aa"
LLM_T = "llm_tiny-8899aabbccddeeff"


def _write_all(records_dir: Path, scaling_dir: Path, runs_dir: Path) -> None:
    recs = [
        _record("flowdistill", 2.0, 0, teacher=STID_T), _record("flowdistill", 2.2, 1,
                                                                teacher=STID_T),
        _record("stgcn", 3.0, 0, params=98765), _record("stgcn", 4.0, 1, params=98765),
        # an older duplicate of stgcn seed 0 from another sweep: the newer main record counts
        _record("stgcn", 9.0, 0, tag="main", created="2025-01-01T00:00:00+00:00"),
        _record("flowdistill", 3.1, 0, fraction=0.1, tag="fraction", teacher=STID_T),
        _record("flowdistill", 2.1, 0, fraction=1.0, tag="fraction", teacher=STID_T),
        _record("stgcn", 5.0, 0, fraction=0.1, tag="fraction"),
        _record("stgcn", 3.0, 0, fraction=1.0, tag="fraction"),
        _record("flowdistill", 2.4, 0, tag="ablation", teacher=STID_T),
        _record("flowdistill", 2.3, 0, tag="ablation", teacher=LLM_T),
        _record("flowdistill-noteacher", 2.8, 0, tag="ablation"),
    ]
    recs[4].run_id += "old"
    for r in recs:
        write_record(r, records_dir)
    (scaling_dir / "scale.json").parent.mkdir(parents=True, exist_ok=True)
    rows = [{"model": "flowdistill", "num_nodes": 69, "status": "ok", "device": "cpu",
             "latency_ms_median": 1.0, "latency_ms_p95": 1.2, "peak_memory_mb_inference": 10.0},
            {"model": "gwnet", "num_nodes": 69, "status": "ok", "device": "cpu",
             "latency_ms_median": 4.0, "latency_ms_p95": 5.0, "peak_memory_mb_inference": 50.0},
            {"model": "flowdistill", "num_nodes": 5000, "status": "ok", "device": "cpu",
             "latency_ms_median": 2.0, "latency_ms_p95": 2.5, "peak_memory_mb_inference": 100.0},
            {"model": "gwnet", "num_nodes": 5000, "status": "oom", "device": "cpu"}]
    (scaling_dir / "scale.json").write_text(json.dumps(rows))
    rng = np.random.default_rng(0)
    true = rng.uniform(0, 10, (20, 12, 4, 2)).astype(np.float32)
    run = runs_dir / recs[0].run_id
    run.mkdir(parents=True)
    np.savez(run / "test_predictions.npz", pred=true + 1, true=true, starts=np.arange(20))


@pytest.fixture(scope="module")
def built(tmp_path_factory, paper):
    root = tmp_path_factory.mktemp("paper")
    _write_all(root / "records", root / "scaling", root / "runs")
    cfg = paper.build.BuildConfig(records=root / "records", out=root / "out", runs=root / "runs",
                                  scaling=root / "scaling")
    outputs = paper.build.build(cfg)
    return SimpleNamespace(root=root, cfg=cfg, outputs=outputs, tables=root / "out" / "tables",
                           figures=root / "out" / "figures")


def test_run_tag_and_teacher_kind(paper):
    assert run_tag("main-pems07m-stgcn-f1-s0-abc", "pems07m", "stgcn") == "main"
    assert run_tag("pems07m-stgcn-f1-s0-abc", "pems07m", "stgcn") == ""
    assert run_tag("a-b-nyc_x-flowdistill-kd-f0p1-s2-h", "nyc_x",
                               "flowdistill-kd") == "a-b"
    assert paper.frame.teacher_kind(STID_T) == "forecaster_stid"
    assert paper.frame.teacher_kind(STID_T + "-0123456789ab") == "forecaster_stid"  # + content
    assert paper.frame.teacher_kind(None) == ""


def test_select_tag_takes_several_sweeps_and_never_borrows(paper, built):
    frame = paper.frame.load_frame(built.cfg.records)
    both = paper.frame.select_tag(frame, "fraction, ablation", "test")
    assert set(both["tag"]) == {"fraction", "ablation"}
    assert paper.frame.select_tag(frame, "nope", "test").empty


def test_accuracy_table_means_stds_and_bold_best(built):
    md = (built.tables / "accuracy.md").read_text()
    tex = (built.tables / "accuracy.tex").read_text()
    # avg MAE: flowdistill seeds 2.0, 2.2 -> 2.10 ± 0.14 (best, bold); stgcn 3.0, 4.0 -> 3.50 ± 0.71
    # (the older duplicate stgcn seed-0 record at 9.0 is ignored)
    assert "**2.10 ± 0.14**" in md and "3.50 ± 0.71" in md and "**3.50" not in md
    # @3 MAE = v - 0.35 -> 1.75 ± 0.14; RMSE = 1.5 x MAE; MAPE = 10 x MAE
    assert "**1.75 ± 0.14**" in md and "**2.62 ± 0.21**" in md and "**17.50 ± 1.41**" in md
    # per channel: inflow = v - 0.5 -> 1.60 ± 0.14, outflow = v + 0.5 -> 2.60 ± 0.14
    assert "**inflow**" in md and "**1.60 ± 0.14**" in md and "**2.60 ± 0.14**" in md
    assert "| Model | @3 MAE | @3 RMSE | @3 MAPE (%) |" in md
    lines = [ln for ln in md.splitlines() if ln.startswith("| flowdistill |")]
    # seeds, converged (the fits record no stop: none counts), how they stopped
    assert len(lines) == 3 and lines[0].endswith("| 2 | 0 | unrecorded 2 |")
    assert "\\toprule" in tex and "\\bottomrule" in tex and "\\cmidrule(lr){2-4}" in tex
    assert "\\textbf{2.10 $\\pm$ 0.14}" in tex and "3.50 $\\pm$ 0.71" in tex
    assert "toy\\_city" in tex and "MAPE (\\%)" in tex
    assert "\\textit{outflow}" in tex


def test_efficiency_table(built):
    md = (built.tables / "efficiency.md").read_text()
    assert "Latency b=64 (ms) median" in md
    row = next(ln for ln in md.splitlines() if ln.startswith("| stgcn |"))
    # params, s/epoch, train MB, infer MB, b1 median (seeds 0.5 and 1.5 -> 1.00), b1 p95, ...
    assert row == "| stgcn | 98,765 | 1.50 | 30.0 | 12.0 | 1.00 | 0.90 | 3.00 | 4.00 | cpu |"
    assert "98{,}765" in (built.tables / "efficiency.tex").read_text()


def test_fraction_table_and_figure(built):
    md = (built.tables / "fraction.md").read_text()
    assert "| Model | Training data 10% | Training data 100% |" in md
    assert "| flowdistill | **3.10** | **2.10** |" in md and "| stgcn | 5.00 | 3.00 |" in md
    for ext in ("png", "pdf"):
        assert (built.figures / f"fraction_vs_error.{ext}").stat().st_size > 1000


def test_ablation_table_teacher_kinds(built):
    md = (built.tables / "ablation.md").read_text()
    assert "| Variant | Teacher |" in md
    assert "| flowdistill | forecaster_stid | 2.05 |" in md  # @3 MAE = 2.4 - 0.35
    assert "| flowdistill | llm_tiny | **1.95** |" in md
    assert "| flowdistill-noteacher | – | 2.45 |" in md
    assert "forecaster\\_stid" in (built.tables / "ablation.tex").read_text()


def test_scaling_table_and_figure_keep_oom(built):
    md = (built.tables / "scaling.md").read_text()
    assert "| N | gwnet ms | gwnet MB | flowdistill ms | flowdistill MB | gwnet / flowdistill " \
           "latency | gwnet / flowdistill memory |" in md
    assert "| 69 | 4.00 | 50.0 | 1.00 | 10.0 | 4.0 | 5.0 |" in md
    assert "| 5,000 | OOM | OOM | 2.00 | 100.0 | – | – |" in md
    for ext in ("png", "pdf"):
        assert (built.figures / f"scaling.{ext}").is_file()


def test_scaling_ratios_only_within_one_session(paper, tmp_path):
    """The gwnet / flowdistill ratio pairs rows of one file (session) only: at N = 69 the shown
    flowdistill row is the later file's (b.json) and gwnet's the earlier one's (a.json), so the
    ratio says the sessions differ; at N = 1,000 both come from b.json: 12 / 3 = 4.0 and
    60 / 20 = 3.0. Each row names its sources."""
    def row(model, n, ms, mb):
        return {"model": model, "num_nodes": n, "status": "ok", "device": "cpu",
                "latency_ms_median": ms, "peak_memory_mb_inference": mb}

    (tmp_path / "rows").mkdir()
    (tmp_path / "rows" / "a.json").write_text(json.dumps(
        [row("flowdistill", 69, 1.0, 10.0), row("gwnet", 69, 4.0, 50.0)]))
    (tmp_path / "rows" / "b.json").write_text(json.dumps(
        {"rows": [row("flowdistill", 69, 2.0, 11.0), row("flowdistill", 1000, 3.0, 20.0),
                  row("gwnet", 1000, 12.0, 60.0)]}))
    rows = paper.scaling.load_scaling(tmp_path / "rows")
    paper.scaling.scaling_table(rows, tmp_path / "out")
    md = (tmp_path / "out" / "scaling.md").read_text()
    assert "| N | gwnet ms | gwnet MB | flowdistill ms | flowdistill MB | gwnet / flowdistill " \
           "latency | gwnet / flowdistill memory | Source |" in md
    assert "| 69 | 4.00 | 50.0 | 2.00 | 11.0 | sessions differ | sessions differ | " \
           "a.json (gwnet); b.json (the rest) |" in md
    assert "| 1,000 | 12.00 | 60.0 | 3.00 | 20.0 | 4.0 | 3.0 | b.json |" in md
    assert "sessions differ\" where the two come from different sessions" in md


def test_scaling_sessions_within_one_file(paper, tmp_path):
    """Rows of one file measured by two invocations (their ``session`` ids differ) are two
    sessions: no ratio between them; rows of one invocation pair as before."""
    def row(model, n, ms, session):
        return {"model": model, "num_nodes": n, "status": "ok", "device": "cpu",
                "latency_ms_median": ms, "peak_memory_mb_inference": 10.0, "session": session}

    (tmp_path / "rows").mkdir()
    (tmp_path / "rows" / "s.json").write_text(json.dumps({"rows": [
        row("flowdistill", 69, 1.0, "x"), row("gwnet", 69, 4.0, "y"),
        row("flowdistill", 1000, 2.0, "y"), row("gwnet", 1000, 10.0, "y")]}))
    rows = paper.scaling.load_scaling(tmp_path / "rows")
    assert sorted(set(rows["source"].map(paper.scaling.source_name))) == [
        "s.json#session 1", "s.json#session 2"]
    paper.scaling.scaling_table(rows, tmp_path / "out")
    md = (tmp_path / "out" / "scaling.md").read_text()
    assert "| 69 | 4.00 | 10.0 | 1.00 | 10.0 | sessions differ | sessions differ | " in md
    assert "| 1,000 | 10.00 | 10.0 | 2.00 | 10.0 | 5.0 | 1.0 | s.json#session 2 |" in md


def test_horizon_and_series_figures(built):
    paths = built.outputs["error per horizon"] + built.outputs["predicted vs true series"]
    names = sorted(p.name for p in paths)
    assert names == ["error_per_horizon.pdf", "error_per_horizon.png", "series_toy_city.pdf",
                     "series_toy_city.png"]
    assert all(p.read_bytes()[:4] in (b"\x89PNG", b"%PDF") for p in paths)


def test_rebuild_is_byte_identical(built, paper, tmp_path):
    frame = paper.frame.load_frame(built.cfg.records)
    main = paper.build.experiment_frame(frame, "main", "accuracy", full_data=True)
    again = paper.tables.accuracy_table(main, tmp_path) + paper.figures.horizon_figure(main,
                                                                                       tmp_path)
    first = {p.name: p for p in built.outputs["accuracy table"]
             + built.outputs["error per horizon"]}
    assert sorted(first) == sorted(p.name for p in again)
    for p in again:
        assert p.read_bytes() == first[p.name].read_bytes(), p.name
    assert b"CreationDate" not in (tmp_path / "error_per_horizon.pdf").read_bytes()


def test_missing_inputs_are_skipped_not_fatal(paper, tmp_path, capsys):
    assert paper.build.main(["--records", str(tmp_path / "none"), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "skip accuracy: no records" in out and "skip series: no records" in out
    assert "accuracy table               (skipped)" in out
    assert not (tmp_path / "tables").exists() and not (tmp_path / "figures").exists()


def test_load_predictions_checks_the_file(paper, tmp_path):
    run = tmp_path / "r1"
    run.mkdir()
    np.savez(run / "test_predictions.npz", pred=np.zeros((3, 2, 4)), true=np.zeros((3, 2, 4)),
             starts=np.arange(3))
    p = paper.predictions.load_predictions("r1", tmp_path)
    assert p.pred.shape == (3, 2, 4, 1) and p.num_nodes == 4
    np.savez(run / "test_predictions.npz", pred=np.zeros((3, 2, 4)), starts=np.arange(3))
    with pytest.raises(ValueError, match=r"test_predictions.npz: missing arrays \['true'\]"):
        paper.predictions.load_predictions("r1", tmp_path)
    with pytest.raises(FileNotFoundError, match="r2"):
        paper.predictions.load_predictions("r2", tmp_path)


def test_bad_scaling_row_names_the_file(paper, tmp_path):
    (tmp_path / "bad.json").write_text(json.dumps([{"model": "gwnet", "num_nodes": 9,
                                                    "status": "melted"}]))
    with pytest.raises(ValueError, match=r"bad.json: row 0 has status 'melted'"):
        paper.scaling.load_scaling(tmp_path)


def test_flowdistill_figures_command(tmp_path, monkeypatch):
    """The CLI runs ``python -m paper.build`` from the checkout with absolute paths."""
    from benchmark import cli

    calls = []
    monkeypatch.setattr(subprocess, "run", lambda cmd, cwd, check: calls.append((cmd, cwd))
                        or SimpleNamespace(returncode=0))
    recs = tmp_path / "records"
    monkeypatch.chdir(tmp_path)
    assert cli.main(["figures", "--records", "records", "--out", "out"]) == 0
    (cmd, cwd), = calls
    assert cmd[:3] == [sys.executable, "-m", "paper.build"] and Path(cwd) == REPO
    assert cmd[3:] == ["--records", str(recs), "--out", str(tmp_path / "out")]


def test_published_table_puts_ours_beside_the_paper(tmp_path):
    from paper.published import PublishedResult, published_table

    entry = PublishedResult(
        paper="Some et al. 2020", table="Table 9", dataset="ds", model="m", label="M",
        tag="paper-protocol", spec="paper/experiments/x.toml", horizons=(3, 6),
        values={"mae": (2.0, 3.0), "rmse": (4.0, 5.0), "mape": (10.0, 20.0)})
    rows = []
    for seed, (a3, a6) in enumerate([(1.9, 3.2), (2.1, 3.4)]):
        rows.append({"tag": "paper-protocol", "dataset": "ds", "model": "m",
                     "train_fraction": 1.0, "seed": seed, "mae@3": a3, "mae@6": a6,
                     "rmse@3": 4.0, "rmse@6": 5.5, "mape@3": 9.0, "mape@6": 21.0})
    # another sweep's run of the same model must not be counted
    rows.append({**rows[0], "tag": "other", "mae@3": 100.0})
    paths = published_table(pd.DataFrame(rows), tmp_path, entries=(entry,))
    md = paths[0].read_text()
    assert "| M | Some et al. 2020, Table 9 | 2.00 | 3.00 | 4.00 | 5.00 | 10.00 | 20.00 |" in md
    # mean 2.0 / 3.3, sample std 0.14 / 0.14; differences 0.00 / +0.30
    assert "| M | ours (2 seeds) | 2.00 ± 0.14 | 3.30 ± 0.14 |" in md
    assert "| M | ours - paper | +0.00 | +0.30 | +0.00 | +0.50 | -1.00 | +1.00 |" in md
    assert "paper/experiments/x.toml" in md


def test_published_table_skips_without_records(tmp_path):
    from paper.published import published_table

    assert published_table(pd.DataFrame(), tmp_path) == []


def test_tables_never_pool_sweeps_or_machines_and_name_missing_cells(paper, tmp_path):
    """One model from two sweeps on two machine kinds gives two labelled rows, not one mean; a
    row says how its runs stopped; a model the sweep expects but has no record says it awaits,
    with the command."""
    cpu = _record("stgcn", 3.0, 0, tag="baselines-cpu")
    cpu.fit["stopped_by"] = "time_budget"
    gpu = _record("stgcn", 5.0, 0, tag="main")
    gpu.fit["stopped_by"] = "early_stopping"
    gpu.hardware = {"device": "cuda", "gpu": "NVIDIA H200"}
    frame = paper.frame.records_to_frame([cpu, gpu])
    cmd = "flowdistill sweep paper/experiments/main.toml"
    paper.tables.accuracy_table(frame, tmp_path, awaiting={"toy_city": {"gwnet": cmd}})
    md = (tmp_path / "accuracy.md").read_text()
    assert "| stgcn [baselines-cpu @ cpu] |" in md and "| stgcn [main @ NVIDIA H200] |" in md
    assert "4.00" not in md  # the two rows were not averaged
    assert "time cap 1" in md and "early stop 1" in md
    assert "| gwnet |" in md and f"awaits: {cmd}" in md


def _stopped(r: RunRecord, stop: str, epochs: int = 3) -> RunRecord:
    r.fit = {**r.fit, "stopped_by": stop, "epochs_run": epochs}
    return r


def test_converged_is_its_own_column_in_every_accuracy_table(paper, tmp_path):
    """Per row, Seeds, Converged (early stopping or a closed-form fit) and Stopped (each
    reason), in the main, ablation, training-fraction and headline tables alike."""
    recs = [_stopped(_record("stgcn", 3.0, 0), "early_stopping"),
            _stopped(_record("stgcn", 3.2, 1), "time_budget"),
            _stopped(_record("stgcn", 3.4, 2), "max_epochs"),
            _stopped(_record("ha-slot", 5.0, 0), "max_epochs", epochs=0),  # closed form
            _stopped(_record("flowdistill", 2.0, 0, tag="ablation"), "early_stopping"),
            _stopped(_record("flowdistill", 2.2, 1, tag="ablation"), "early_stopping"),
            _stopped(_record("flowdistill-noib", 2.5, 0, tag="ablation"), "max_steps"),
            _stopped(_record("stid", 4.0, 0, 0.1, tag="fraction"), "early_stopping"),
            _stopped(_record("stid", 3.5, 0, 1.0, tag="fraction"), "time_budget"),
            _stopped(_record("stid", 3.6, 1, 1.0, tag="fraction"), "early_stopping")]
    frame = paper.frame.records_to_frame(recs)
    main = frame[frame["tag"] == "main"]
    paper.tables.accuracy_table(main, tmp_path)
    md = (tmp_path / "accuracy.md").read_text()
    assert "| Seeds | Converged | Stopped |" in md
    row = next(ln for ln in md.splitlines() if ln.startswith("| stgcn |"))
    seeds, conv, stopped = row.rstrip(" |").split(" | ")[-3:]
    assert (seeds, conv) == ("3", "1")
    assert sorted(stopped.split(", ")) == ["early stop 1", "epoch limit 1", "time cap 1"]
    assert next(ln for ln in md.splitlines() if ln.startswith("| ha-slot |")).endswith(
        "| 1 | 1 | closed form 1 |")
    assert "Converged: runs whose training the trainer ended by early stopping" in md
    assert "Failed runs leave no record" in md

    paper.tables.ablation_table(frame[frame["tag"] == "ablation"], tmp_path)
    md = (tmp_path / "ablation.md").read_text()
    rows = [ln for ln in md.splitlines() if ln.startswith("| flowdistill")]
    assert rows[0].endswith("| 2 | 2 | early stop 2 |")
    assert rows[1].startswith("| flowdistill-noib |") and rows[1].endswith(
        "| 1 | 0 | step limit 1 |")

    paper.tables.fraction_table(frame[frame["tag"] == "fraction"], tmp_path)
    md = (tmp_path / "fraction.md").read_text()
    assert "| Model | Training data 10% | Training data 100% | Runs | Converged | Stopped |" in md
    assert "| stid | 4.00 | 3.55 ± 0.07 | 3 | 2 | early stop 2, time cap 1 |" in md
    assert "Runs: the row's runs over all shares" in md

    heads = [_stopped(_record("flowdistill", 2.0, s, 0.1, tag="headline"), stop)
             for s, stop in enumerate(("early_stopping", "time_budget"))]
    paper.tables.headline_table(paper.frame.records_to_frame(heads), tmp_path)
    md = (tmp_path / "headline.md").read_text()
    assert "| FlowDistill, 10 % | 2.00 ± 0.00 | 3.00 ± 0.00 | 20.00 ± 0.00 | 2 | 1 | " \
           "early stop 1, time cap 1 | – |" in md
    assert "Converged: runs whose training" in md


def test_awaiting_models_come_from_the_shipped_sweeps(paper):
    awaiting = paper.build.awaiting_models("main", full_data=True)
    assert "gwnet" in awaiting["nyc_taxi_manhattan"]
    assert awaiting["nyc_taxi_manhattan"]["gwnet"].endswith("paper/experiments/main.toml")


# ------------------------------------------------------------------ figures read at a glance
def test_model_styles_are_distinct_and_stable(paper):
    fig = paper.figures
    looks = [(s["color"], str(s["ls"]), s["marker"])
             for s in (fig.model_style(m) for m in paper.frame.MODEL_ORDER)]
    assert len(set(looks)) == len(looks)  # no two models look alike
    colours = [fig.model_style(m)["color"] for m in paper.frame.MODEL_ORDER]
    assert len(set(colours)) == len(colours)  # not even by colour alone
    # a second series of one model (another teacher) keeps the colour, changes the line
    a, b = fig.model_style("flowdistill"), fig.model_style("flowdistill", 1)
    assert a["color"] == b["color"] and (a["ls"], a["marker"]) != (b["ls"], b["marker"])
    assert fig.model_style("flowdistill-kd") == fig.model_style("flowdistill-kd")


def _capture(paper, monkeypatch) -> list:
    figs = []
    monkeypatch.setattr(paper.figures, "save_figure", lambda f, out, stem: figs.append(f) or [])
    return figs


def test_legends_outside_the_data_and_captions_say_protocol_and_band(paper, built,
                                                                     monkeypatch):
    frame = paper.frame.load_frame(built.cfg.records)
    figs = _capture(paper, monkeypatch)
    paper.figures.fraction_figure(frame, built.root)
    paper.figures.horizon_figure(frame[frame.tag == "ablation"], built.root)
    paper.figures.headline_figure(frame, built.root)
    assert len(figs) == 3
    for f in figs:
        assert all(ax.get_legend() is None for ax in f.axes)  # no legend over the data
        assert len(f.legends) == 1
        caption = " ".join(t.get_text() for t in f.texts)
        assert "Protocol: 12 steps in, 12 out" in caption
        assert "Shaded band: mean ± 1 standard deviation over seeds" in caption
    # the two flowdistill teachers of the horizon figure are two distinct lines
    labels = [t.get_text() for t in figs[1].legends[0].get_texts()]
    assert "flowdistill [forecaster_stid]" in labels and "flowdistill [llm_tiny]" in labels
    lines = {ln.get_label(): ln for ln in figs[1].axes[0].get_lines()}
    a, b = lines["flowdistill [forecaster_stid]"], lines["flowdistill [llm_tiny]"]
    assert (a.get_linestyle(), a.get_marker()) != (b.get_linestyle(), b.get_marker())


def test_headline_figure_students_against_graph_baselines(paper, built, capsys):
    names = sorted(p.name for p in built.outputs["students vs graph baselines"])
    assert names == ["headline_student_vs_graph.pdf", "headline_student_vs_graph.png"]
    frame = paper.frame.load_frame(built.cfg.records)
    students = frame[frame.model.str.startswith("flowdistill")]
    assert paper.figures.headline_figure(students, built.root / "none") == []
    assert "skip headline_student_vs_graph: no dataset has a student" in capsys.readouterr().out

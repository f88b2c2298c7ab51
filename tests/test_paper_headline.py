"""The headline claim's table and figure (issue 13): FlowDistill on 10 % of the training data
against STGCN and GWNet on all of it, from synthetic records (every expected number follows from
the records below)."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import SimpleNamespace

import pytest

from benchmark.records import RunRecord

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def paper():
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(REPO))
        mods = {m: importlib.import_module(f"paper.{m}")
                for m in ("build", "frame", "tables", "figures")}
    return SimpleNamespace(**mods)


def _summary(v: float) -> dict:
    """Per-step MAE v + 0.1 (h - 6.5): its mean over the 12 steps is exactly v."""
    mae = [v + 0.1 * (h - 6.5) for h in range(1, 13)]
    per = {"mae": mae, "rmse": [1.5 * m for m in mae], "mape": [10 * m for m in mae]}
    mean = {k: sum(x) / len(x) for k, x in per.items()}
    at = {f"@{h}": {k: per[k][h - 1] for k in per} for h in (3, 6, 12)}
    return {"overall": mean, "mean_of_horizons": mean, **at, "per_horizon": per}


def _record(model: str, v: float, seed: int, fraction: float, sweep: str,
            dataset: str = "toy_city", stopped: str = "early_stopping") -> RunRecord:
    frac = f"{fraction:g}".replace(".", "p")
    return RunRecord(
        run_id=f"{sweep}-{dataset}-{model}-f{frac}-s{seed}-{int(v * 1000):06d}", model=model,
        dataset=dataset, protocol={"input_len": 12, "horizon": 12, "mask_threshold": 0.0},
        protocol_hash="0123456789abcdef", seed=seed, train_fraction=fraction, hparams={},
        train_config={}, objective={"name": "x"}, metrics={"val": _summary(v),
                                                          "test": _summary(v)},
        params=10, fit={"epochs_run": 30, "stopped_by": stopped, "train_seconds": 3.0},
        teacher=({"id": "forecaster_stid-00112233445566aa", "path": "/labels"}
                 if model == "flowdistill" else None),
        sweep=sweep, created="2026-01-01T00:00:00+00:00")


RECORDS = [
    _record("flowdistill", 2.0, 0, 0.1, "headline"),
    _record("flowdistill", 2.2, 1, 0.1, "headline"),
    _record("flowdistill", 2.1, 2, 0.1, "headline", stopped="max_epochs"),
    _record("stgcn", 3.0, 0, 1.0, "main"),
    _record("stgcn", 3.2, 1, 1.0, "main"),
    # not the claim's: the student from another sweep, STGCN at 10 % or from a capped sweep
    _record("flowdistill", 9.0, 0, 0.1, "fraction"),
    _record("stgcn", 9.0, 0, 0.1, "main"),
    _record("stgcn", 9.0, 2, 1.0, "baselines", stopped="time_budget"),
]
AWAITING = {"toy_city": {"gwnet": "flowdistill sweep paper/experiments/main.toml"},
            "other_city": {"flowdistill": "flowdistill sweep paper/experiments/headline.toml"}}


def test_headline_table(paper, tmp_path):
    frame = paper.frame.records_to_frame(RECORDS)
    paths = paper.tables.headline_table(frame, tmp_path, awaiting=AWAITING)
    assert [p.name for p in paths] == ["headline.md", "headline.tex"]
    md = (tmp_path / "headline.md").read_text()
    toy = md.split("### toy_city")[1].split("###")[0]
    assert "9.00" not in md  # only the claim's records
    # student: 3 seeds, mean 2.10 ± 0.10, two ended by early stopping
    assert "| FlowDistill, 10 % | **2.10 ± 0.10** | **3.15 ± 0.15** | **21.00 ± 1.00** | 3 | 2 " \
           "| early stop 2, epoch limit 1 | – |" in toy
    # STGCN: 2 seeds, 3.10 ± 0.14; the student's MAE is (2.1 - 3.1) / 3.1 = -32.3 % of it
    assert "| STGCN, 100 % | 3.10 ± 0.14 | 4.65 ± 0.21 | 31.00 ± 1.41 | 2 | 2 | early stop 2 " \
           "| -32.3 % (lower) |" in toy
    assert "| GWNet, 100 % | – | – | – | 0 | 0 | awaits: flowdistill sweep " \
           "paper/experiments/main.toml | – |" in toy
    other = md.split("### other_city")[1].split("###")[0]
    assert "awaits: flowdistill sweep paper/experiments/headline.toml" in other
    assert other.count("no records") == 2
    tex = (tmp_path / "headline.tex").read_text()
    assert "\\label{tab:headline-toy-city}" in tex and "-32.3 \\% (lower)" in tex


def test_headline_table_says_when_the_student_loses(paper, tmp_path):
    recs = [_record("flowdistill", 4.0, s, 0.1, "headline") for s in (0, 1)] + \
           [_record("gwnet", 3.2, s, 1.0, "main") for s in (0, 1)]
    paper.tables.headline_table(paper.frame.records_to_frame(recs), tmp_path)
    assert "| +25.0 % (higher) |" in (tmp_path / "headline.md").read_text()


def test_headline_figure(paper, tmp_path, capsys, monkeypatch):
    frame = paper.frame.records_to_frame(RECORDS)
    paths = paper.figures.headline_claim_figure(frame, tmp_path)
    assert sorted(p.name for p in paths) == ["headline_claim.pdf", "headline_claim.png"]
    figs = []
    monkeypatch.setattr(paper.figures, "save_figure", lambda f, out, stem: figs.append(f) or [])
    paper.figures.headline_claim_figure(frame, tmp_path)
    (ax,) = [a for a in figs[0].axes if a.get_visible()]
    texts = [t.get_text() for t in ax.texts]
    assert texts.count("n=3") == 1 and texts.count("n=2") == 1 and "awaits" in texts
    bars = sorted(round(p.get_height(), 6) for p in ax.patches)
    assert bars == [2.1, 3.1]
    assert len(figs[0].legends) == 1 and all(a.get_legend() is None for a in figs[0].axes)
    student_only = frame[frame["model"] == "flowdistill"]
    assert paper.figures.headline_claim_figure(student_only, tmp_path / "none") == []
    assert "skip headline_claim" in capsys.readouterr().out


def test_build_has_the_headline_and_the_shipped_sweeps_name_its_commands(paper, tmp_path):
    awaiting = paper.build.awaiting_models(",".join(paper.tables.HEADLINE_TAGS), False)
    for ds in ("nyc_taxi_manhattan", "nyc_bike_manhattan", "nyc_taxi_grid", "pems07m"):
        assert awaiting[ds]["flowdistill"].endswith("paper/experiments/headline.toml")
        assert awaiting[ds]["stgcn"].endswith("paper/experiments/main.toml")
        assert awaiting[ds]["gwnet"].endswith("paper/experiments/main.toml")
    from benchmark.records import write_record

    for r in RECORDS:
        write_record(r, tmp_path / "records")
    out = paper.build.build(paper.build.BuildConfig(records=tmp_path / "records",
                                                    out=tmp_path / "out"))
    assert [p.name for p in out["headline table"]] == ["headline.md", "headline.tex"]
    assert [p.name for p in out["headline figure"]] == ["headline_claim.png",
                                                        "headline_claim.pdf"]
    md = (tmp_path / "out" / "tables" / "headline.md").read_text()
    assert "### nyc_taxi_manhattan" in md and "### toy_city" in md

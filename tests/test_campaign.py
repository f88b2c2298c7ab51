"""Issue 13, the campaign: a priority list of sweeps worked on CPU at smoke size, end to end:
priority order, periodic atomic snapshots, a kill mid-run then a resume (on this machine, then
on a "new machine" from the snapshot alone) that redoes no finished run and gives the metrics of
an uninterrupted campaign, a deadline that nothing starts after and that the campaign exits
before, and the status output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest

from benchmark.campaign.cli import parse_deadline
from benchmark.campaign.plan import (
    CampaignSpec,
    build_queue,
    campaign_dirs,
    format_counts,
    step_counts,
)
from benchmark.campaign.runner import CampaignConfig, run_campaign
from benchmark.campaign.snapshot import SnapshotConfig
from benchmark.cli import main
from benchmark.sweep import SweepSpec

REPO = Path(__file__).resolve().parents[1]

SWEEP = """
name = "{name}"
models = {models}
datasets = ["synthetic"]
seeds = {seeds}
efficiency = false
{teacher}
[dataset_options.synthetic]
num_nodes = 4
num_days = 7
steps_per_day = 24
[train]
epochs = {epochs}
patience = 1000
max_train_batches = 2
batch_size = 16
num_threads = 1
[hparams.stid]
embed_dim = 8
node_dim = 8
tod_dim = 8
dow_dim = 8
num_layers = 1
"""
TEACHER = '[teachers]\nsynthetic = "model:stid"'

CAMPAIGN = """
name = "smoke"
[[step]]
sweep = "students.toml"
note = "first: the teacher, then its students"
[[step]]
sweep = "others.toml"
models = ["last-value"]
[[step]]
sweep = "others.toml"
models = ["ha-slot"]
"""


def write_campaign(root: Path, epochs: int = 8) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "students.toml").write_text(SWEEP.format(
        name="stu", models='["stid", "flowdistill"]', seeds="[0]", teacher=TEACHER,
        epochs=epochs))
    (root / "others.toml").write_text(SWEEP.format(
        name="oth", models='["ha-slot", "last-value"]', seeds="[0, 1]", teacher="",
        epochs=epochs))
    (root / "campaign.toml").write_text(CAMPAIGN)
    return root / "campaign.toml"


def log_rows(runs: Path, name: str = "smoke") -> list[dict]:
    path = runs / ".campaign" / f"{name}.jsonl"
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def metrics_of(records: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text())["metrics"] for p in sorted(records.glob("*.json"))}



# ------------------------------------------------------------------ the spec and its queue
def test_campaign_spec_restricts_sweeps_without_changing_run_ids(tmp_path):
    spec = CampaignSpec.from_toml(write_campaign(tmp_path))
    assert [s.sweep.name for s in spec.steps] == ["stu", "oth", "oth"]
    assert spec.steps[1].sweep.models == ["last-value"]
    full = {r.run_id() for r in SweepSpec.from_toml(tmp_path / "others.toml").expand()}
    part = {r.run_id() for s in spec.steps[1:] for r in s.sweep.expand()}
    assert part == full  # restricting a sweep keeps its run ids

    bad = [("bogus = 1\n", "unknown campaign fields"),
           ('[[step]]\nsweep = "others.toml"\nmodel = ["x"]\n', "unknown keys ['model']"),
           ('[[step]]\nnote = "x"\n', "missing key 'sweep'"),
           ('[[step]]\nsweep = "nope.toml"\n', "nope.toml not found"),
           ('[[step]]\nsweep = "others.toml"\nmodels = ["gwnet"]\n', "models ['gwnet'] not in"),
           ('name = "x"\n', "at least one [[step]]")]
    for text, message in bad:
        (tmp_path / "bad.toml").write_text(text)
        with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
            CampaignSpec.from_toml(tmp_path / "bad.toml")


def test_shipped_campaign_is_the_issues_priority_list():
    """campaigns/gpu.toml: the issue's priority list in order, each step under issue 11's
    defaults (own recipes, no time caps), the headline arm on every dataset."""
    from benchmark.models import registry

    spec = CampaignSpec.from_toml(REPO / "paper" / "experiments" / "campaigns" / "gpu.toml")
    # issue 14's teacher study comes right after the taxi main table (one step per arm)
    study = [s.sweep.name for s in spec.steps if s.sweep.name.startswith("teacher-study-")]
    assert study and [s.sweep.name for s in spec.steps[1:1 + len(study)]] == study
    for s in spec.steps[1:1 + len(study)]:
        assert s.sweep.recipe == "paper" and "time_budget_s" not in s.sweep.train
        assert s.sweep.fractions == [0.1] and len(s.sweep.seeds) == 3, s.label()
    spec.steps = [s for s in spec.steps if not s.sweep.name.startswith("teacher-study-")]
    steps = [(s.sweep.name, tuple(s.sweep.datasets)) for s in spec.steps]
    assert steps[:4] == [("main", ("nyc_taxi_manhattan",)), ("headline", ("nyc_taxi_manhattan",)),
                         ("fraction", ("nyc_taxi_manhattan",)),
                         ("ablation", ("nyc_taxi_manhattan",))]
    main = spec.steps[0].sweep  # every model but the ablations and ha-week
    assert set(registry()) - {"ha-week", "flowdistill-noib", "flowdistill-notb"} == \
        set(main.models)
    assert main.fractions == [1.0] and main.seeds == [0, 1, 2]
    frac = spec.steps[2].sweep
    assert set(frac.models) == {"flowdistill", "flowdistill-kd", "flowdistill-noteacher", "stid",
                                "stgcn", "gwnet"}
    assert sorted(frac.fractions) == [0.1, 0.2, 0.4, 0.6, 0.8, 1.0]
    abl = spec.steps[3].sweep
    assert {"flowdistill-noib", "flowdistill-notb"} <= set(abl.models)
    assert sorted(abl.fractions) == [0.1, 1.0]
    order = [ds for name, dss in steps if name == "main" for ds in dss]
    assert order == ["nyc_taxi_manhattan", "nyc_bike_manhattan", "nyc_taxi_grid", "pems07m"]
    assert {ds for name, dss in steps if name == "headline" for ds in dss} == set(order)
    assert ("stgcn-paper", ("pems07m",)) in steps
    assert {"stgcn", "stgcn-gcn"} <= set(next(s.sweep for s in spec.steps
                                              if s.sweep.name == "stgcn-paper").models)
    for s in spec.steps:  # every run with its own recipe and no time cap, 3 seeds
        assert s.sweep.recipe == "paper" and "time_budget_s" not in s.sweep.train, s.label()
        assert not any("time_budget_s" in t for t in s.sweep.train_per_model.values())
        assert len(s.sweep.seeds) == 3, s.label()


def test_queue_teacher_first_then_seed_major(tmp_path, monkeypatch):
    monkeypatch.setenv("FLOWDISTILL_LABELS", str(tmp_path / "labels"))
    spec = CampaignSpec.from_toml(write_campaign(tmp_path))
    with campaign_dirs(tmp_path / "rec", tmp_path / "runs"):
        queue = build_queue(spec, tmp_path / "rec")
    keys = [j.key for j in queue.jobs]
    assert keys[0] == "teacher:0:synthetic"
    assert keys[1].startswith("stu-synthetic-stid-f1-s0")  # stid needs no teacher: known id
    assert keys[2] == "pending:0:synthetic:1:flowdistill:0" and queue.jobs[2].needs == keys[0]
    assert [(j.model, j.spec.train.seed) for j in queue.jobs[3:]] == [
        ("last-value", 0), ("last-value", 1), ("ha-slot", 0), ("ha-slot", 1)]
    text = format_counts(step_counts(queue, spec))
    assert "1. stu [synthetic]: first: the teacher, then its students: 2 runs, 0 done, " \
           "0 running, 2 left (1 await a teacher)" in text
    assert text.splitlines()[-1] == "all: 6 runs, 0 done, 0 running, 6 left"


def test_parse_deadline():
    assert parse_deadline("540") == 540 and parse_deadline("9m") == 540
    assert parse_deadline("2h") == 7200 and parse_deadline("30s") == 30
    assert parse_deadline("2030-01-01T00:00:10+00:00", now=1893456000.0) == 10
    for bad in ("soon", "nan", "5x"):
        with pytest.raises(ValueError, match="--deadline"):
            parse_deadline(bad)


# ------------------------------------------------------------------ an uninterrupted campaign
@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The smoke campaign run once without interruption (in this process, one worker), with
    snapshots every 0.3 s read all the while by another thread."""
    root = tmp_path_factory.mktemp("uninterrupted")
    spec_path = write_campaign(root)
    snap = root / "snap"
    reads, torn = [], []
    stop = threading.Event()

    def reader():  # every read of a snapshot file sees a whole file
        while not stop.is_set():
            for name in ("status.json", "records.tar.gz"):
                path = snap / name
                if not path.exists():
                    continue
                try:
                    if name.endswith(".json"):
                        json.loads(path.read_bytes())
                    else:
                        with tarfile.open(path, "r:gz") as tar:
                            tar.getmembers()
                    reads.append(name)
                except (json.JSONDecodeError, tarfile.TarError, EOFError, OSError) as e:
                    torn.append(f"{name}: {e}")
            time.sleep(0.005)

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLOWDISTILL_LABELS", str(root / "labels"))
        thread = threading.Thread(target=reader, daemon=True)
        thread.start()
        cfg = CampaignConfig(records_dir=root / "rec", runs_dir=root / "runs", workers=1,
                             snapshot_dir=snap, snapshot=SnapshotConfig(interval_s=0.3),
                             min_start_s=0.0)
        result = run_campaign(CampaignSpec.from_toml(spec_path), cfg)
        stop.set()
        thread.join()
    return {"root": root, "spec": spec_path, "result": result, "reads": reads, "torn": torn}


def test_priority_order_and_snapshots(uninterrupted):
    root, result = uninterrupted["root"], uninterrupted["result"]
    assert result.state == "finished" and result.exit_code() == 0, result.failed
    starts = [r for r in log_rows(root / "runs") if r["event"] == "start"]
    order = [(r["step"], r["model"]) for r in starts]
    assert order == [(1, "teacher"), (1, "stid"), (1, "flowdistill"), (2, "last-value"),
                     (2, "last-value"), (3, "ha-slot"), (3, "ha-slot")]
    assert all(r["workers"] == 1 and r["concurrent"] == 1 and r["device"] == "cpu"
               for r in starts)
    records = sorted(p.stem for p in (root / "rec").glob("*.json"))
    assert len(records) == 7 and any(r.startswith("teacher-") for r in records)
    # snapshots: periodic, never torn, the last one complete
    assert not uninterrupted["torn"] and len(uninterrupted["reads"]) > 10
    status = json.loads((root / "snap" / "status.json").read_text())
    assert status["snapshot"]["count"] >= 3 and status["state"] == "finished"
    assert [(q["runs"], q["done"], q["left"]) for q in status["queue"]] == [(2, 2, 0), (2, 2, 0),
                                                                          (2, 2, 0)]
    with tarfile.open(root / "snap" / "records.tar.gz", "r:gz") as tar:
        assert sorted(m.name[:-5] for m in tar.getmembers()) == records
    assert not [p for p in (root / "snap").iterdir() if p.name.startswith(".")]
    assert (root / "snap" / "log.jsonl").read_text() == \
        (root / "runs" / ".campaign" / "smoke.jsonl").read_text()


def test_status_and_collect_commands(uninterrupted, tmp_path, capsys, monkeypatch):
    root = uninterrupted["root"]
    monkeypatch.setenv("FLOWDISTILL_LABELS", str(root / "labels"))
    common = ["--records", str(root / "rec"), "--runs", str(root / "runs")]
    assert main(["campaign", "status", str(uninterrupted["spec"]), *common, "--models"]) == 0
    out = capsys.readouterr().out
    assert "1. stu [synthetic]: first: the teacher, then its students: 2 runs, 2 done, " \
           "0 running, 0 left" in out
    assert "all: 6 runs, 6 done, 0 running, 0 left" in out
    assert "| 1 | stu | synthetic | flowdistill | 1 / 1 | 0 | max_epochs 1 |" in out
    assert "| 2 | oth | synthetic | last-value | 2 / 2 | 2 | closed_form 2 |" in out
    assert main(["campaign", "status", "--snapshot", str(root / "snap")]) == 0
    assert "all: 6 runs, 6 done, 0 running, 0 left" in capsys.readouterr().out
    home = tmp_path / "home"
    assert main(["campaign", "collect", str(root / "snap"), "--records", str(home / "rec"),
                 "--runs", str(home / "runs")]) == 0
    assert "7 new finished record(s)" in capsys.readouterr().out
    assert metrics_of(home / "rec") == metrics_of(root / "rec")
    assert main(["campaign", "collect", str(root / "snap"), "--records", str(home / "rec"),
                 "--runs", str(home / "runs")]) == 0
    assert "0 new finished record(s)" in capsys.readouterr().out  # nothing replaced


# ------------------------------------------------------------ kill, resume, another machine
def _start(spec: Path, rec: Path, runs: Path, labels: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "benchmark.cli", "campaign", "run", str(spec), "--records",
           str(rec), "--runs", str(runs), "--workers", "1", "--min-start", "0", *extra]
    env = {**os.environ, "FLOWDISTILL_LABELS": str(labels), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _mid_run(rec: Path, runs: Path, done: int, proc: subprocess.Popen) -> str:
    """Wait until ``done`` records exist and another run has a checkpoint but no record."""
    end = time.time() + 240
    while time.time() < end and proc.poll() is None:
        finished = {p.stem for p in rec.glob("*.json")}
        if len(finished) >= done:
            for last in runs.glob("*/last.pt"):
                run_id = last.parent.name
                if run_id not in finished and not run_id.startswith("teacher-"):
                    return run_id
        time.sleep(0.02)
    out = proc.stdout.read() if proc.poll() is not None else ""
    raise AssertionError(f"no run caught mid-way (campaign exit {proc.poll()}): {out[-2000:]}")


def test_sigterm_then_resume_on_another_machine_matches_uninterrupted(uninterrupted, tmp_path):
    """A SIGTERM mid-run stops the campaign cleanly (the running run parked at its checkpoint,
    the last snapshot written); a fresh machine with nothing but that snapshot finishes the
    queue without training a finished run again, resumes the parked run from its checkpoint
    (the teacher's labels remade from its carried weights), and every record's metrics equal
    the uninterrupted campaign's."""
    spec = uninterrupted["spec"]
    rec, runs, labels, snap = (tmp_path / n for n in ("rec", "runs", "labels", "snap"))
    proc = _start(spec, rec, runs, labels, "--snapshot", str(snap), "--interval", "0.3")
    caught = _mid_run(rec, runs, 2, proc)  # the teacher and stid are done, flowdistill trains
    os.kill(proc.pid, signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 3, out
    assert "interrupted" in out and "1 parked" in out
    assert (runs / caught / "last.pt").exists() and not (rec / f"{caught}.json").exists()
    assert not list(runs.rglob("*.tmp")) and not list(rec.glob(".*"))
    status = json.loads((snap / "status.json").read_text())
    assert status["state"] == "interrupted" and status["parked"] == [caught]
    carried = {r: i for p in status["snapshot"]["checkpoints"]["parts"]
               for r, i in p["runs"].items()}
    assert carried[caught]["kind"] == "resume" and carried[caught]["epoch"] >= 0
    teacher_run = next(p.stem for p in rec.glob("teacher-*.json"))
    assert carried[teacher_run] == {"kind": "teacher", "epoch": None, "files": ["best.pt"]}
    before = {p.name: p.read_bytes() for p in rec.glob("*.json")}

    # a new machine: empty records, runs and labels; only the snapshot comes along
    rec2, runs2, labels2 = (tmp_path / "new" / n for n in ("rec", "runs", "labels"))
    proc = _start(spec, rec2, runs2, labels2, "--resume-from", str(snap))
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert metrics_of(rec2) == metrics_of(uninterrupted["root"] / "rec")
    for name, data in before.items():
        assert (rec2 / name).read_bytes() == data
    rows = log_rows(runs2)
    windows = list(dict.fromkeys(r["window"] for r in rows))
    assert len(windows) == 2  # the first window's log came along with the snapshot
    started = [r for r in rows if r["window"] == windows[-1] and r["event"] == "start"]
    assert not {r["key"] for r in started} & {n[:-5] for n in before}  # none trained twice
    resumed = next(r for r in started if r["key"] == caught)
    assert resumed["resumed_epoch"] >= 1  # from the snapshot's checkpoint, not from scratch
    record = json.loads((rec2 / f"{caught}.json").read_text())
    assert record["fit"]["resumed_from_epoch"] == resumed["resumed_epoch"]


# --------------------------------------------------------------------------- the deadline
def test_deadline_nothing_starts_after_it_and_the_campaign_exits_before(tmp_path, monkeypatch):
    monkeypatch.setenv("FLOWDISTILL_LABELS", str(tmp_path / "labels"))
    (tmp_path / "long.toml").write_text(SWEEP.format(
        name="long", models='["last-value", "stid"]', seeds="[0, 1]", teacher="",
        epochs=100000))
    (tmp_path / "c.toml").write_text('name = "smoke"\n[[step]]\nsweep = "long.toml"\n')
    deadline = time.time() + 25
    cfg = CampaignConfig(records_dir=tmp_path / "rec", runs_dir=tmp_path / "runs", workers=1,
                         deadline=deadline, margin_s=2.0, grace_s=2.0, min_start_s=0.0,
                         snapshot_dir=tmp_path / "snap", snapshot=SnapshotConfig(interval_s=1))
    result = run_campaign(CampaignSpec.from_toml(tmp_path / "c.toml"), cfg)
    assert time.time() < deadline
    assert result.state == "deadline" and result.exit_code() == 3
    rows = log_rows(tmp_path / "runs")
    start = next(r for r in rows if r["event"] == "window_start")
    stop_at = start["deadline_s"] - 2.0 - 2.0  # margin and grace (snapshots take ms here)
    starts = [r for r in rows if r["event"] == "start"]
    assert [r["model"] for r in starts] == ["last-value", "stid"]  # seed 0; nothing after
    assert all(r["s"] <= stop_at for r in starts)
    assert len(result.finished) == 1 and result.left == 3
    (parked,) = result.parked
    assert parked.startswith("long-synthetic-stid-f1-s0")
    stop = next(r for r in rows if r["event"] in ("park", "parked"))
    assert stop["s"] <= stop_at + 0.5  # stopped at stop_at at the latest
    # stopped at a checkpoint: resumable, no record, nothing half-written
    assert (tmp_path / "runs" / parked / "last.pt").exists()
    assert not (tmp_path / "rec" / f"{parked}.json").exists()
    assert not list((tmp_path / "runs").rglob("*.tmp"))
    status = json.loads((tmp_path / "snap" / "status.json").read_text())
    assert status["state"] == "deadline" and status["running"] == []
    assert status["queue"][0] | {"label": ""} == {
        "step": 1, "label": "", "sweep": "long", "file": "long.toml", "runs": 4, "done": 1,
        "running": 0, "left": 3, "awaiting_teacher": 0, "failed": 0}


def test_bad_input_fails_in_one_line_before_anything_starts(tmp_path, capsys):
    spec = write_campaign(tmp_path)
    (tmp_path / "students.toml").write_text((tmp_path / "students.toml").read_text()
                                            .replace('"model:stid"', '"bogus:stid"'))
    common = ["--records", str(tmp_path / "rec"), "--runs", str(tmp_path / "runs")]
    assert main(["campaign", "run", str(spec), *common, "--workers", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown teacher kind 'bogus'" in err[0]
    assert not (tmp_path / "runs").exists()  # no worker, no log, nothing written
    assert main(["campaign", "run", str(spec), *common, "--deadline", "soon"]) == 2
    assert "--deadline 'soon': expected seconds" in capsys.readouterr().err
    assert main(["campaign", "status", "--snapshot", str(tmp_path)]) == 2
    assert "no campaign snapshot here" in capsys.readouterr().err

"""Sweeps: expansion, skipping finished runs, and a killed sweep resumed by the same command."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmark.sweep import SweepSpec, load_sweeps, run_sweep, sweep_status

TOML = """
name = "t"
models = ["last-value", "ridge", "ha-slot"]
datasets = ["synthetic"]
seeds = [0, 1]
efficiency = false
[dataset_options.synthetic]
num_nodes = 4
num_days = 7
steps_per_day = 24
[train]
epochs = 1
"""


def write_spec(tmp_path: Path, text: str = TOML) -> Path:
    p = tmp_path / "s.toml"
    p.write_text(text)
    return p


def test_expand_and_unknown_fields(tmp_path):
    spec = SweepSpec.from_toml(write_spec(tmp_path))
    runs = spec.expand()
    assert len(runs) == 6 and len({r.run_id() for r in runs}) == 6
    with pytest.raises(ValueError, match="unknown sweep fields"):
        SweepSpec.from_toml(write_spec(tmp_path, "bogus = 1\n" + TOML))


EXPERIMENTS = sorted((Path(__file__).parents[1] / "paper" / "experiments").glob("*.toml"))


@pytest.mark.parametrize("path", EXPERIMENTS, ids=[p.stem for p in EXPERIMENTS])
def test_paper_experiments_are_valid_sweeps(path):
    """Every shipped sweep parses, names registered models and datasets, and has unique runs."""
    from benchmark.data.registry import dataset_ids
    from benchmark.models import registry
    from benchmark.sweep import _uses_teacher

    for spec in load_sweeps(path):  # one, or one per [[variant]]
        runs = spec.expand()
        assert runs and len({r.run_id() for r in runs}) == len(runs)
        assert set(spec.models) <= set(registry()), path.name
        assert set(spec.datasets) <= set(dataset_ids()), path.name
        for r in runs:  # distilling models always have a teacher reference
            assert r.teacher or not _uses_teacher(r.model), (path.name, r.model)
            assert r.teacher is None or r.teacher.startswith(("model:", "llm:")), \
                (path.name, r.teacher)


def test_finished_runs_are_skipped(tmp_path):
    spec = SweepSpec.from_toml(write_spec(tmp_path))
    rec = tmp_path / "rec"
    first = run_sweep(spec, records_dir=rec, runs_dir=tmp_path / "runs", progress=False)
    assert len(first.finished) == 6 and not first.failed
    stamps = {p.name: p.stat().st_mtime_ns for p in rec.glob("*.json")}
    again = run_sweep(spec, records_dir=rec, runs_dir=tmp_path / "runs", progress=False)
    assert len(again.skipped) == 6 and not again.finished
    assert stamps == {p.name: p.stat().st_mtime_ns for p in rec.glob("*.json")}


def test_killed_sweep_resumes_without_redoing(tmp_path):
    spec_path = write_spec(tmp_path, TOML.replace('"ha-slot"]', '"ha-slot", "stid"]')
                           .replace("epochs = 1", "epochs = 3"))
    rec = tmp_path / "rec"
    cmd = [sys.executable, "-m", "benchmark.cli", "sweep", str(spec_path), "--records", str(rec),
           "--runs", str(tmp_path / "runs")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(rec.glob("*.json"))) < 2:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = {p.name: p.read_bytes() for p in rec.glob("*.json")}
    assert 2 <= len(done_before) < 8
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"{len(done_before)} already finished" in out.stdout
    for name, data in done_before.items():
        assert (rec / name).read_bytes() == data
    spec = SweepSpec.from_toml(spec_path)
    assert sweep_status(spec, rec) == {"name": "t", "runs": 8, "finished": 8}


@pytest.mark.slow
def test_ray_executor_runs_a_tiny_sweep(tmp_path):
    pytest.importorskip("ray")
    import ray

    spec = SweepSpec.from_toml(write_spec(tmp_path))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        res = run_sweep(spec, executor="ray", records_dir=tmp_path / "rec",
                        runs_dir=tmp_path / "runs", progress=False)
    finally:
        ray.shutdown()
    assert len(res.finished) == 6 and not res.failed


def test_sweep_with_model_teacher(tmp_path, monkeypatch):
    monkeypatch.setenv("FLOWDISTILL_RECORDS", str(tmp_path / "rec"))
    monkeypatch.setenv("FLOWDISTILL_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("FLOWDISTILL_LABELS", str(tmp_path / "labels"))
    text = TOML.replace('models = ["last-value", "ridge", "ha-slot"]',
                        'models = ["flowdistill", "mlp"]').replace("seeds = [0, 1]", "seeds = [0]")
    text = text.replace("[dataset_options.synthetic]",
                        '[teachers]\nsynthetic = "model:ridge"\n[dataset_options.synthetic]')
    spec = SweepSpec.from_toml(write_spec(tmp_path, text))
    assert sweep_status(spec)["finished"] == 0
    res = run_sweep(spec, progress=False)
    assert len(res.finished) == 2 and not res.failed, res.failed
    assert sweep_status(spec) == {"name": "t", "runs": 2, "finished": 2}
    assert len(list((tmp_path / "labels").iterdir())) == 1

"""Sweeps: expansion, skipping finished runs, and a killed sweep resumed by the same command."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
import types
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from benchmark.sweep import SweepSpec, load_sweeps, run_sweep, sweep_status, worker_threads

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


TEACHER_TOML = (TOML.replace('models = ["last-value", "ridge", "ha-slot"]',
                             'models = ["flowdistill", "mlp"]')
                .replace("seeds = [0, 1]", "seeds = [0]")
                .replace("[dataset_options.synthetic]",
                         '[teachers]\nsynthetic = "model:ridge"\n[dataset_options.synthetic]'))


def _metrics(rec: Path) -> dict:
    return {p.name: json.loads(p.read_text())["metrics"] for p in sorted(rec.glob("*.json"))}


@pytest.fixture(scope="module")
def sequential_teacher_sweep(tmp_path_factory):
    """The teacher sweep run with one worker (the teacher first, in this process)."""
    root = tmp_path_factory.mktemp("seq")
    spec = SweepSpec.from_toml(write_spec(root, TEACHER_TOML))
    res = run_sweep(spec, records_dir=root / "rec", runs_dir=root / "runs",
                    label_root=root / "labels", progress=False)
    return root, res


def test_sweep_with_model_teacher(sequential_teacher_sweep):
    root, res = sequential_teacher_sweep
    spec = SweepSpec.from_toml(root / "s.toml")
    assert len(res.finished) == 2 and not res.failed, res.failed
    assert sweep_status(spec, root / "rec", label_root=root / "labels") \
        == {"name": "t", "runs": 2, "finished": 2}
    assert len(list((root / "labels").iterdir())) == 1


def test_teacher_trained_in_the_pool_gives_the_same_runs(tmp_path, sequential_teacher_sweep):
    """With two workers the teacher trains in a pool slot beside the run that needs none; the
    runs, their ids and their metrics are those of the sequential sweep, bitwise."""
    seq_root, seq = sequential_teacher_sweep
    spec = SweepSpec.from_toml(write_spec(tmp_path, TEACHER_TOML))
    res = run_sweep(spec, workers=2, records_dir=tmp_path / "rec", runs_dir=tmp_path / "runs",
                    label_root=tmp_path / "labels", progress=False)
    assert sorted(res.finished) == sorted(seq.finished) and not res.failed, res.failed
    # the teacher's record too (tag teacher), in the sweep's records directory
    assert _metrics(tmp_path / "rec") == _metrics(seq_root / "rec")
    assert len(_metrics(tmp_path / "rec")) == 3
    # each pool process took its share of the cores, not all of them (the sequential sweep ran
    # with this process's threads)
    threads = {json.loads(p.read_text())["hardware"]["torch_threads"]
               for p in (tmp_path / "rec").glob("t-*.json")}
    assert threads == {worker_threads(2)}
    again = run_sweep(spec, workers=2, records_dir=tmp_path / "rec", runs_dir=tmp_path / "runs",
                      label_root=tmp_path / "labels", progress=False)
    assert sorted(again.skipped) == sorted(seq.finished) and not again.finished


def _schedule_in_threads(spec, specs, tmp_path, result, done):
    """``_pool_with_teachers`` for the synthetic dataset's teacher, two threads for processes."""
    import benchmark.sweep as sweep_mod

    with ThreadPoolExecutor(2) as pool:
        sweep_mod._pool_with_teachers(pool, 2, spec, {"synthetic"}, specs, tmp_path / "rec",
                                      tmp_path / "runs", None, result,
                                      types.SimpleNamespace(update=lambda n: None), done)


def test_pool_trains_the_teacher_beside_independent_runs(tmp_path, monkeypatch):
    """The scheduling alone (threads and stand-ins for training): the teacher takes one slot
    while runs that need no teacher take the others, never more than ``workers`` at once, the
    students start only with the teacher's labels and before the independent runs still
    queued."""
    import benchmark.sweep as sweep_mod

    spec = SweepSpec.from_toml(write_spec(tmp_path, TEACHER_TOML.replace(
        '"mlp"]', '"mlp", "ridge", "last-value"]').replace("seeds = [0]", "seeds = [0, 1]")))
    lock, events = threading.Lock(), []
    active = [0, 0]  # now, most
    independent_started, teacher_returned = threading.Event(), threading.Event()

    def enter(what):
        with lock:
            active[0] += 1
            active[1] = max(active)
            events.append(what)

    def leave():
        with lock:
            active[0] -= 1

    def fake_teachers(sweep, records_dir, runs_dir, label_root):
        enter("teacher")
        # returns only once a run that needs no teacher has started beside it
        assert independent_started.wait(30), "no run started while the teacher trained"
        teacher_returned.set()
        leave()
        return {"synthetic": "/store/ridge"}

    def fake_run(spec, records_dir, runs_dir):
        enter((spec.model, spec.train.seed, spec.teacher))
        if spec.teacher is None:
            independent_started.set()
            assert teacher_returned.wait(30)
        leave()
        return spec.run_id(), sweep_mod.FINISHED, None

    monkeypatch.setattr(sweep_mod, "_train_teachers", fake_teachers)
    monkeypatch.setattr(sweep_mod, "_run_one", fake_run)
    specs = [s for s in spec.expand() if s.model != "flowdistill"]
    result = sweep_mod.SweepResult()
    _schedule_in_threads(spec, specs, tmp_path, result,
                         lambda run_id, outcome, err: result.finished.append(run_id))
    assert active[1] == 2
    assert events[:2] == ["teacher", ("mlp", 0, None)]
    students = [e for e in events if e != "teacher" and e[0] == "flowdistill"]
    assert students == [("flowdistill", 0, "/store/ridge"), ("flowdistill", 1, "/store/ridge")]
    # with one slot left beside the teacher, at most one more independent run starts before
    # the teacher's result is seen; the last two starts are independent runs
    assert all(e[0] != "flowdistill" for e in events[-2:])
    # every run once: the students with the teacher's labels (their ids name the store)
    resolved = dataclasses.replace(spec, teachers={"synthetic": "/store/ridge"})
    assert sorted(result.finished) == sorted(s.run_id() for s in resolved.expand())


def test_pool_raises_a_failed_teacher_after_the_other_runs(tmp_path, monkeypatch):
    import benchmark.sweep as sweep_mod

    spec = SweepSpec.from_toml(write_spec(tmp_path, TEACHER_TOML))
    ran = []

    def failing_teachers(*args):
        raise ValueError("teacher diverged")

    def fake_run(spec, records_dir, runs_dir):
        ran.append(spec.model)
        return spec.run_id(), sweep_mod.FINISHED, None

    monkeypatch.setattr(sweep_mod, "_train_teachers", failing_teachers)
    monkeypatch.setattr(sweep_mod, "_run_one", fake_run)
    specs = [s for s in spec.expand() if s.model == "mlp"]
    with pytest.raises(ValueError, match="teacher diverged"):
        _schedule_in_threads(spec, specs, tmp_path, sweep_mod.SweepResult(), lambda *a: None)
    assert ran == ["mlp"]  # the run that needs no teacher ran; no student started


def test_worker_threads_share_the_cores():
    assert [worker_threads(w, cpus=16) for w in (1, 2, 3, 4, 32)] == [16, 8, 5, 4, 1]
    assert worker_threads(2, cpus=2) == 1 and worker_threads(1, cpus=1) == 1

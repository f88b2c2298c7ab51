"""Issue 11 §5: two sweeps of one file at once train every run exactly once, fail none and
replace no record; record creation is exclusive; a run's lock serialises two processes."""

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from benchmark.locks import RunLockTimeout, run_lock
from benchmark.records import RecordExistsError, RunRecord, write_record

REPO = Path(__file__).resolve().parents[1]

SWEEP = """
name = "conc"
models = ["flowdistill-noteacher", "stgcn", "last-value"]
datasets = ["synthetic"]
seeds = [0, 1]
efficiency = false
[dataset_options.synthetic]
num_nodes = 4
num_days = 7
steps_per_day = 24
[train]
epochs = 2
max_train_batches = 2
num_threads = 1
"""

RUN_SWEEP = """
import json, sys
sys.path.insert(0, {repo!r})
from benchmark.sweep import SweepSpec, run_sweep
res = run_sweep(SweepSpec.from_toml({spec!r}), records_dir={rec!r}, runs_dir={runs!r},
                progress=False)
print(json.dumps({{"finished": res.finished, "skipped": res.skipped, "failed": res.failed}}))
"""


def test_two_sweeps_of_one_file_at_once_train_each_run_once(tmp_path):
    spec = tmp_path / "s.toml"
    spec.write_text(SWEEP)
    code = RUN_SWEEP.format(repo=str(REPO), spec=str(spec), rec=str(tmp_path / "rec"),
                            runs=str(tmp_path / "runs"))
    env = {"PATH": "/usr/bin:/bin", "PYTHONHASHSEED": "0"}
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=REPO, env=env)
             for _ in range(2)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
        outs.append(json.loads(out.strip().splitlines()[-1]))
    assert outs[0]["failed"] == {} and outs[1]["failed"] == {}
    finished = outs[0]["finished"] + outs[1]["finished"]
    assert len(finished) == len(set(finished)) == 6  # each run trained by exactly one sweep
    assert sorted(finished) == sorted(outs[0]["finished"] + outs[0]["skipped"])
    records = sorted((tmp_path / "rec").glob("*.json"))
    assert len(records) == 6
    assert not list((tmp_path / "rec").glob(".*.tmp"))
    assert not list((tmp_path / "runs").rglob("*.tmp"))


def _record(run_id: str, mae: float) -> RunRecord:
    return RunRecord(run_id=run_id, model="m", dataset="d", protocol={}, protocol_hash="h",
                     seed=0, train_fraction=1.0, hparams={}, train_config={}, objective={},
                     metrics={"test": {"overall": {"mae": mae}}}, params=0)


def test_record_creation_is_exclusive(tmp_path):
    """Of many threads writing one finished run, exactly one succeeds and its record stays."""
    errors, wins = [], []

    def write(i):
        try:
            write_record(_record("r", float(i)), tmp_path)
            wins.append(i)
        except RecordExistsError as e:
            errors.append(e)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1 and len(errors) == 7
    d = json.loads((tmp_path / "r.json").read_text())
    assert d["metrics"]["test"]["overall"]["mae"] == float(wins[0])
    write_record(_record("r", 99.0), tmp_path, force=True)  # --force replaces it
    assert json.loads((tmp_path / "r.json").read_text())["metrics"]["test"]["overall"]["mae"] == 99


HOLD = """
import sys, time
sys.path.insert(0, {repo!r})
from benchmark.locks import run_lock
with run_lock({runs!r}, "x"):
    print("held", flush=True)
    time.sleep(30)
"""


def test_run_lock_excludes_another_process_and_dies_with_it(tmp_path):
    code = HOLD.format(repo=str(REPO), runs=str(tmp_path))
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                         env={"PATH": "/usr/bin:/bin"})
    try:
        assert p.stdout.readline().strip() == "held"
        with pytest.raises(RunLockTimeout, match="another process"):
            with run_lock(tmp_path, "x", timeout_s=0.3, poll_s=0.05):
                pass
    finally:
        p.kill()
        p.wait()
    with run_lock(tmp_path, "x", timeout_s=5):  # the killed holder left no stale lock
        pass

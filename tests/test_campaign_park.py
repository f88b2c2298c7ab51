"""Issue 13, the campaign's park: a run's worker stops the run itself at an epoch boundary when
its next epoch would end after the job's cut-off (a trainer callback, no signal), writes no
record, and a later campaign resumes it to the metrics of an uninterrupted run."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from benchmark.campaign.messages import EPOCH, PARKING
from benchmark.campaign.park import EpochReporter, ParkRun, next_epoch_ends_late
from benchmark.campaign.plan import CampaignSpec
from benchmark.campaign.runner import CampaignConfig, run_campaign
from benchmark.campaign.snapshot import local_epoch
from benchmark.experiment import RunSpec, run_experiment
from benchmark.locks import lock_held
from benchmark.loop import Callback
from benchmark.records import is_finished
from benchmark.sweep import SweepSpec
from benchmark.trainer import TrainConfig
from tests.test_campaign import SWEEP as SWEEP_TEMPLATE

pytestmark = pytest.mark.usefixtures("one_thread")

# test_campaign's smoke sweep: STID for 6 epochs of 2 batches, and a closed-form fit
SWEEP = SWEEP_TEMPLATE.format(name="park", models='["stid", "last-value"]', seeds="[0]",
                              teacher="", epochs=6)


def test_next_epoch_ends_late_hand_worked():
    # the first epoch timed (10 s, warm-up) is left out once others exist; the longest of the
    # last three of the rest (3, 2.5, 4) is 4 s, times 1.5: 6 s
    durations = [10.0, 2.0, 3.0, 2.5, 4.0]
    assert next_epoch_ends_late(100.0, 105.0, durations, 1.5) == (True, 6.0)
    assert next_epoch_ends_late(100.0, 106.5, durations, 1.5) == (False, 6.0)
    assert next_epoch_ends_late(100.0, 114.0, [10.0], 1.5) == (True, 15.0)  # only the first
    assert next_epoch_ends_late(100.0, None, durations, 1.5) == (False, None)  # no cut-off
    assert next_epoch_ends_late(100.0, 100.5, [], 1.5) == (False, None)  # nothing timed yet


class _Pipe:
    """What the reporter sends, and nothing to read."""

    def __init__(self) -> None:
        self.sent: list[tuple] = []

    def send(self, msg) -> None:
        self.sent.append(msg)

    def poll(self) -> bool:
        return False


class _TenSecondEpochs(Callback):
    """A fake clock that every epoch advances by 10 s (at its validation, before the
    checkpoint)."""

    def __init__(self) -> None:
        self.now = 0.0

    def on_validation_end(self, trainer, state, row) -> None:
        self.now += 10.0


def _spec(epochs: int = 5) -> RunSpec:
    train = TrainConfig(epochs=epochs, patience=1000, batch_size=16, max_train_batches=2,
                        num_threads=1, progress=False)
    return RunSpec(model="stid", dataset="synthetic",
                   dataset_options={"num_nodes": 4, "num_days": 7, "steps_per_day": 24},
                   hparams={"embed_dim": 8, "node_dim": 8, "tod_dim": 8, "dow_dim": 8,
                            "num_layers": 1}, train=train, efficiency=None)


def test_reporter_parks_at_an_epoch_boundary_without_a_record_and_resumes_bitwise(tmp_path):
    """Epochs of 10 s (fake clock) against a cut-off 35 s away: after epoch 1 the next would
    end at 20 s, after epoch 2 at 30 s, after epoch 3 at 40 s, past the cut-off: the run parks
    there, its checkpoint at epoch 3, no record, its lock released; resumed, it gives the
    uninterrupted run's metrics and history, bit for bit."""
    spec = _spec()
    whole = run_experiment(spec, tmp_path / "a" / "rec", tmp_path / "a" / "runs")

    rec, runs = tmp_path / "b" / "rec", tmp_path / "b" / "runs"
    tick, pipe = _TenSecondEpochs(), _Pipe()
    reporter = EpochReporter(pipe, "job", cutoff_s=35.0, safety=1.0, clock=lambda: tick.now)
    with pytest.raises(ParkRun, match="parked after epoch 3"):
        run_experiment(spec, rec, runs, callbacks=[tick, reporter])
    run_id = spec.run_id()
    assert not is_finished(rec, run_id) and not list(rec.glob("*.json"))  # no record
    assert local_epoch(runs / run_id / "last.pt") == 2  # 0-based: three epochs done
    assert not lock_held(runs, run_id) and not list(runs.rglob("*.tmp"))
    epochs = [m for m in pipe.sent if m[0] == EPOCH]
    assert [m[2]["epochs_done"] for m in epochs] == [1, 2, 3]
    assert [m[2]["seconds"] for m in epochs] == [10.0, 10.0, 10.0]
    assert pipe.sent[-1] == (PARKING, "job", {"epochs_done": 3, "epoch_seconds": 10.0,
                                              "need_s": 10.0, "left_s": 5.0})

    resumed = run_experiment(spec, rec, runs)  # no cut-off now
    assert resumed.fit["resumed_from_epoch"] == 3
    assert resumed.fit["stopped_by"] == whole.fit["stopped_by"] == "max_epochs"
    assert resumed.metrics == whole.metrics
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in whole.fit["history"]]
    assert [{k: v for k, v in r.items() if k != "seconds"}
            for r in resumed.fit["history"]] == strip


def test_reporter_without_cut_off_reports_every_epoch_and_never_parks(tmp_path):
    tick, pipe = _TenSecondEpochs(), _Pipe()
    reporter = EpochReporter(pipe, "job", cutoff_s=None, clock=lambda: tick.now)
    rec = run_experiment(_spec(epochs=3), tmp_path / "rec", tmp_path / "runs",
                         callbacks=[tick, reporter])
    assert rec.fit["epochs_run"] == 3
    assert [(m[0], m[2]["epochs_done"]) for m in pipe.sent] == [(EPOCH, 1), (EPOCH, 2),
                                                              (EPOCH, 3)]  # the last: fit end


def _rows(runs: Path) -> list[dict]:
    path = runs / ".campaign" / "park.jsonl"
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def test_campaign_worker_parks_by_itself_and_a_later_campaign_resumes(tmp_path):
    """With a cut-off no epoch can meet (safety 1e6), the worker parks stid after its first
    epoch without any signal (the same worker then runs the next job), leaves its checkpoint
    and no record; the campaign ends in "deadline" (resumable). A later campaign without a
    deadline resumes stid from epoch 1 to the metrics of a run never interrupted."""
    (tmp_path / "park.toml").write_text(SWEEP)
    (tmp_path / "c.toml").write_text('name = "park"\n[[step]]\nsweep = "park.toml"\n')
    spec = CampaignSpec.from_toml(tmp_path / "c.toml")
    stid, last = (s for s in SweepSpec.from_toml(tmp_path / "park.toml").expand())
    assert stid.model == "stid" and last.model == "last-value"
    rec, runs = tmp_path / "rec", tmp_path / "runs"
    cfg = CampaignConfig(records_dir=rec, runs_dir=runs, workers=1, min_start_s=0.0,
                         deadline=time.time() + 600, safety=1e6)
    result = run_campaign(spec, cfg)
    assert result.state == "deadline" and result.exit_code() == 3, result.summary()
    assert result.parked == [stid.run_id()] and result.finished == [last.run_id()]
    rows = _rows(runs)
    park = next(r for r in rows if r["event"] == "park")
    assert park["by"] == "worker" and park["epochs_done"] == 1 and park["key"] == stid.run_id()
    parked = next(r for r in rows if r["event"] == "parked")
    assert parked["why"] == "cut-off" and parked["epochs_done"] == 1
    starts = [r for r in rows if r["event"] == "start"]
    assert [r["model"] for r in starts] == ["stid", "last-value"]
    assert starts[0]["worker"] == starts[1]["worker"]  # no SIGTERM: the worker went on
    assert local_epoch(runs / stid.run_id() / "last.pt") == 0  # one epoch done
    assert not is_finished(rec, stid.run_id()) and not list(runs.rglob("*.tmp"))

    again = run_campaign(spec, CampaignConfig(records_dir=rec, runs_dir=runs, workers=1,
                                              min_start_s=0.0))
    assert again.state == "finished" and again.finished == [stid.run_id()], again.summary()
    resumed = next(r for r in _rows(runs) if r["event"] == "start"
                   and r["window"] != starts[0]["window"])
    assert resumed["key"] == stid.run_id() and resumed["resumed_epoch"] == 1
    record = json.loads((rec / f"{stid.run_id()}.json").read_text())
    assert record["fit"]["resumed_from_epoch"] == 1 and record["fit"]["epochs_run"] == 6

    run_experiment(stid, tmp_path / "whole" / "rec", tmp_path / "whole" / "runs")
    whole = json.loads((tmp_path / "whole" / "rec" / f"{stid.run_id()}.json").read_text())
    assert record["metrics"] == whole["metrics"]

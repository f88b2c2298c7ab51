"""Campaign snapshots without training: which checkpoint pairs are carried, how parts are split
and capped, and what seeding from a snapshot may and may not replace."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import torch

from benchmark.campaign.snapshot import (
    RESUME,
    TEACHER_WEIGHTS,
    SnapshotConfig,
    Snapshotter,
    pair_belongs_together,
    read_checkpoints,
    seed_from_snapshot,
)
from benchmark.locks import run_lock


def save(path: Path, **fields) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(fields, path)


def checkpoint(runs: Path, run_id: str, epoch: int, best_epoch: int, size: int = 10) -> None:
    """A trainer-like pair: last.pt at ``epoch`` naming ``best_epoch``, best.pt of that epoch."""
    w = torch.zeros(size)
    save(runs / run_id / "best.pt", model={"w": w}, epoch=best_epoch, val_mae=1.0)
    save(runs / run_id / "last.pt", model={"w": w}, epoch=epoch, best_epoch=best_epoch,
         bad_epochs=epoch - best_epoch, history=[], train_seconds=1.0)


def record(records: Path, run_id: str, status: str = "finished", mae: float = 1.0) -> bytes:
    data = json.dumps({"run_id": run_id, "status": status, "metrics": {"test": {"mae": mae}}})
    records.mkdir(parents=True, exist_ok=True)
    (records / f"{run_id}.json").write_text(data)
    return data.encode()


def test_pairs_that_belong_together():
    assert pair_belongs_together({"epoch": 5, "best_epoch": 3}, {"epoch": 3})
    # between the trainer's two writes: best.pt of the next epoch, last.pt not yet
    assert pair_belongs_together({"epoch": 5, "best_epoch": 3}, {"epoch": 6})
    # best.pt older than the one last.pt names: read across an update of both
    assert not pair_belongs_together({"epoch": 5, "best_epoch": 5}, {"epoch": 3})
    assert not pair_belongs_together({"epoch": 5, "best_epoch": 3}, {"epoch": 8})


def test_read_checkpoints(tmp_path):
    checkpoint(tmp_path, "a", epoch=4, best_epoch=2)
    assert sorted(read_checkpoints(tmp_path / "a", RESUME)) == ["best.pt", "last.pt"]
    assert sorted(read_checkpoints(tmp_path / "a", TEACHER_WEIGHTS)) == ["best.pt"]
    save(tmp_path / "a" / "best.pt", model={}, epoch=1)  # behind what last.pt names
    assert read_checkpoints(tmp_path / "a", RESUME, tries=2) is None
    assert read_checkpoints(tmp_path / "missing", RESUME) is None


def test_parts_are_split_capped_and_replaced(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "snap"
    for name in ("r1", "r2", "r3"):
        checkpoint(runs, name, epoch=1, best_epoch=1, size=100_000)  # ~0.4 MB per file
    checkpoint(runs, "big", epoch=1, best_epoch=1, size=200_000)  # larger than a part
    carry = [("big", RESUME), ("r1", RESUME), ("r2", RESUME), ("r3", RESUME)]
    snap = Snapshotter(out, tmp_path / "rec", runs, lambda: ({"x": 1}, carry, ["{}"]),
                       SnapshotConfig(part_mb=1.0, max_mb=1.7))
    status = snap.write()
    manifest = status["snapshot"]["checkpoints"]
    assert [sorted(p["runs"]) for p in manifest["parts"]] == [["r1"], ["r2"]]
    assert manifest["left_out"] == ["big", "r3"]
    assert status["x"] == 1 and json.loads((out / "status.json").read_text()) == status
    first = {p["file"] for p in manifest["parts"]}
    assert {p.name for p in out.iterdir()} == first | {"status.json", "records.tar.gz",
                                                        "log.jsonl"}
    assert snap.write()["snapshot"]["checkpoints"] == manifest  # unchanged: not rewritten
    checkpoint(runs, "r1", epoch=2, best_epoch=2, size=100_000)
    again = snap.write()["snapshot"]["checkpoints"]
    assert not first & {p["file"] for p in again["parts"]}  # a new generation
    assert {p.name for p in out.glob("checkpoints-*")} == {p["file"] for p in again["parts"]}
    assert again["parts"][0]["runs"]["r1"]["epoch"] == 2


def _snapshot(tmp_path: Path) -> tuple[Path, dict]:
    runs, rec, out = tmp_path / "a" / "runs", tmp_path / "a" / "rec", tmp_path / "snap"
    checkpoint(runs, "run-x", epoch=3, best_epoch=3)
    checkpoint(runs, "run-y", epoch=3, best_epoch=2)
    save(runs / "teacher-t" / "best.pt", model={}, epoch=7)
    data = {"done": record(rec, "done", mae=1.0), "open": record(rec, "open", status="running")}
    carry = [("teacher-t", TEACHER_WEIGHTS), ("run-x", RESUME), ("run-y", RESUME)]
    Snapshotter(out, rec, runs, lambda: ({}, carry, ['{"window": "w1"}'])).write()
    return out, data


def test_seeding_adds_what_is_missing_and_replaces_nothing_newer(tmp_path):
    snap, data = _snapshot(tmp_path)
    rec, runs = tmp_path / "b" / "rec", tmp_path / "b" / "runs"
    mine = record(rec, "done", mae=2.0)  # a finished record here wins
    checkpoint(runs, "run-y", epoch=5, best_epoch=5)  # further on here: kept
    got = seed_from_snapshot(snap, rec, runs)
    assert got["records"] == 0 and (rec / "done.json").read_bytes() == mine
    assert not (rec / "open.json").exists()  # unfinished records never travel
    assert sorted(got["checkpoints"]) == ["run-x", "teacher-t"]
    assert torch.load(runs / "run-y" / "last.pt", weights_only=True)["epoch"] == 5
    assert torch.load(runs / "run-x" / "last.pt", weights_only=True)["epoch"] == 3
    assert torch.load(runs / "teacher-t" / "best.pt", weights_only=True)["epoch"] == 7
    assert got["log"] == ['{"window": "w1"}'] and got["problems"] == []

    fresh = tmp_path / "c"
    with run_lock(fresh / "runs", "run-x"):  # being trained here: left alone
        got = seed_from_snapshot(snap, fresh / "rec", fresh / "runs")
    assert "run-x" not in got["checkpoints"] and not (fresh / "runs" / "run-x").exists()
    assert got["records"] == 1 and (fresh / "rec" / "done.json").read_bytes() == data["done"]
    assert any("being trained here" in p for p in got["problems"])


def test_seeding_refuses_damaged_parts_and_odd_members(tmp_path):
    snap, _ = _snapshot(tmp_path)
    part = next(snap.glob("checkpoints-*.tar"))
    data = bytearray(part.read_bytes())
    data[len(data) // 3] ^= 0xFF  # damaged after status.json was written
    part.write_bytes(bytes(data))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in ("../evil.json", "sub/x.json", "ok.json"):
            body = json.dumps({"run_id": name[:-5], "status": "finished"}).encode()
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    (snap / "records.tar.gz").write_bytes(buf.getvalue())
    rec, runs = tmp_path / "d" / "rec", tmp_path / "d" / "runs"
    got = seed_from_snapshot(snap, rec, runs)
    assert got["checkpoints"] == [] and not runs.exists()
    assert any("sha256 differs" in p for p in got["problems"])
    assert got["records"] == 1 and sorted(p.name for p in rec.iterdir()) == ["ok.json"]
    assert not (tmp_path / "d" / "evil.json").exists()
    assert sum("ignored" in p for p in got["problems"]) == 2


def test_split_into_parts_hand_worked():
    """Limit 10: a (4) b (5) fit one part; c (3) would make 12, so it starts the next; d (11),
    larger than the limit, gets a part of its own; e (1) follows it there only if it fits
    (11 + 1 > 10: a new part)."""
    from benchmark.campaign.archive import split_into_parts

    sized = [("a", 4), ("b", 5), ("c", 3), ("d", 11), ("e", 1)]
    assert split_into_parts(sized, 10) == [["a", "b"], ["c"], ["d"], ["e"]]
    assert split_into_parts([], 10) == []

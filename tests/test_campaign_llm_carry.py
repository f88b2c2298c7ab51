"""Campaign snapshots carry LLM teachers: an unfinished tiny teacher's checkpoint directory and an
unfinished labelling run go into ``llm-*`` parts, are seeded into another runs and label
directory, and resume there to what uninterrupted runs give; newer local copies stay, oversized
directories are named as left out, and unsafe member names are refused."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import sys
import tarfile
from pathlib import Path

import pytest
import torch

from benchmark.campaign import llm_carry
from benchmark.campaign.snapshot import SnapshotConfig, Snapshotter, seed_from_snapshot
from flowdistill.teacher import finetune as ft
from flowdistill.teacher import llm_labels as labeling
from flowdistill.teacher.finetune import finetune
from flowdistill.teacher.label_store import ARRAY_FILES
from flowdistill.teacher.llm_teacher import CHECKPOINT_ROOT
from tests.tiny_teacher import OPTS, tiny_config

NAME = "tiny-synthetic-f1-0123456789"
# 3 nodes, chunk_pairs 6: a backend call is 2 windows; chunk_windows 3 rounds up to 4
LABELLING = dict(splits=("val", "test"), progress=False, dataset_options=OPTS, chunk_pairs=6,
                 chunk_windows=3)


_cfg = tiny_config


class Killed(Exception):
    """Stands in for the SIGTERM at the end of a GPU window."""


def _killed_finetune(out: Path, prepared) -> None:
    """Fine-tune into ``out`` and die in the third step (the checkpoint of step 2 is on disk)."""
    calls = {"n": 0}
    real = ft.regression_loss

    def crash_on_third(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise Killed
        return real(*a, **k)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ft, "regression_loss", crash_on_third)
        with pytest.raises(Killed):
            finetune(_cfg(out), prepared)


def _killed_labelling(checkpoint: Path, root: Path, chunks: int) -> None:
    """Label into ``root`` and die right after the ``chunks``-th chunk is written."""
    written = []
    real_add = labeling.PartialLabels.add

    def add(self, index, labels, seconds):
        real_add(self, index, labels, seconds)
        written.append(index)
        if len(written) == chunks:
            raise Killed

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(labeling.PartialLabels, "add", add)
        with pytest.raises(Killed):
            labeling.label(checkpoint, "synthetic", store_root=root, **LABELLING)


def _snapshot(out: Path, runs: Path, labels: Path | None, **cfg) -> dict:
    snap = Snapshotter(out, runs.parent / "records", runs, lambda: ({}, [], []),
                       SnapshotConfig(**cfg), label_root=labels)
    return snap.write()


def _store_bytes(store) -> dict[str, bytes]:
    return {name: (store.path / name).read_bytes() for name in ARRAY_FILES}


@pytest.fixture(scope="module")
def prepared():
    return ft.load_prepared("synthetic", None, OPTS)


@pytest.fixture(scope="module")
def whole(tmp_path_factory, prepared):
    """An uninterrupted 4-step teacher and its uninterrupted labels."""
    base = tmp_path_factory.mktemp("whole")
    ck = finetune(_cfg(base / "ck"), prepared)
    store = labeling.label(ck, "synthetic", store_root=base / "labels", **LABELLING)
    return ck, store


@pytest.fixture(scope="module")
def window(tmp_path_factory, prepared, whole):
    """A window that ended inside a teacher job: the teacher killed after step 2, the labelling
    killed after 2 chunks; and its snapshot."""
    base = tmp_path_factory.mktemp("window")
    runs, labels = base / "runs", base / "labels"
    _killed_finetune(runs / CHECKPOINT_ROOT / NAME, prepared)
    _killed_labelling(whole[0], labels, 2)
    status = _snapshot(base / "snap", runs, labels)
    return base, status


def _dirs(status: dict) -> dict:
    return {k: v for p in status["snapshot"]["llm"]["parts"] for k, v in p["dirs"].items()}


def test_snapshot_carries_teacher_and_label_chunks(window, whole):
    base, status = window
    key = whole[1].version_key
    dirs = _dirs(status)
    teacher = dirs[f"teacher/{NAME}"]
    assert teacher["kind"] == "teacher" and teacher["steps"] == 2 and not teacher["finished"]
    assert {"teacher.json", "weights.safetensors", "resume/optimizer.pt", "resume/state.json",
            "resume/weights.safetensors"} <= set(teacher["files"])
    assert any(f.startswith("base/") for f in teacher["files"])
    assert any(f.startswith("tokenizer/") for f in teacher["files"])
    assert dirs[f"labels/{key}.partial"] == {
        "kind": "labels", "chunks": 2, "bytes": dirs[f"labels/{key}.partial"]["bytes"],
        "files": ["chunk-00000.npy", "chunk-00001.npy", "manifest.json"]}
    assert status["snapshot"]["llm"]["left_out"] == []
    # the existing keys stay; every part is on disk with the sha256 status.json names
    assert set(status["snapshot"]) >= {"written", "count", "records", "checkpoints", "log"}
    for part in status["snapshot"]["llm"]["parts"]:
        data = (base / "snap" / part["file"]).read_bytes()
        assert llm_carry.LLM_PART_PATTERN.match(part["file"])
        assert hashlib.sha256(data).hexdigest() == part["sha256"]


def test_seeded_teacher_and_labels_resume_to_uninterrupted(window, whole, tmp_path, prepared,
                                                          monkeypatch):
    base, _ = window
    runs, labels = tmp_path / "runs", tmp_path / "labels"
    seeded = seed_from_snapshot(base / "snap", tmp_path / "records", runs, labels)
    key = whole[1].version_key
    assert seeded["problems"] == []
    assert sorted(seeded["llm"]) == [f"labels/{key}.partial", f"teacher/{NAME}"]
    ck = runs / CHECKPOINT_ROOT / NAME
    assert json.loads((ck / "resume" / "state.json").read_text())["step"] == 2
    # fine-tuning resumes at step 2 and ends bitwise where the uninterrupted run did (same
    # process, same threads, CPU)
    steps_run = []
    real = ft.regression_loss
    monkeypatch.setattr(ft, "regression_loss",
                        lambda *a, **k: steps_run.append(1) or real(*a, **k))
    finetune(_cfg(ck), prepared)
    monkeypatch.undo()
    assert len(steps_run) == 2
    meta = json.loads((ck / "teacher.json").read_text())
    assert meta["training"]["steps"] == 4
    assert meta["adapter_hash"] == json.loads((whole[0] / "teacher.json").read_text())[
        "adapter_hash"]
    for which in ("resume/weights.safetensors", "weights.safetensors"):
        a, b = ft._load_tensors(whole[0] / which), ft._load_tensors(ck / which)
        assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    # labelling resumes after the 2 carried chunks and gives the uninterrupted labels' bytes
    calls = []
    real_predict = labeling.predict_windows
    monkeypatch.setattr(labeling, "predict_windows",
                        lambda be, src, ws, *a, **k: calls.append(ws[0]) or
                        real_predict(be, src, ws, *a, **k))
    resumed = labeling.label(whole[0], "synthetic", store_root=labels, **LABELLING)
    assert len(calls) == whole[1].metadata["chunks"] - 2
    assert resumed.version_key == key and resumed.metadata["labelling_runs"] == 2
    assert _store_bytes(resumed) == _store_bytes(whole[1])
    assert not (labels / f"{key}.partial").exists()


def test_newer_local_copies_are_kept_and_older_ones_replaced(window, whole, tmp_path, prepared):
    base, _ = window
    key = whole[1].version_key
    runs, labels = tmp_path / "runs", tmp_path / "labels"
    # local teacher further on (4 steps, finished), local labels as far on (2 chunks)
    shutil.copytree(whole[0], runs / CHECKPOINT_ROOT / NAME)
    shutil.copytree(base / "labels" / f"{key}.partial", labels / f"{key}.partial")
    before = {p: p.read_bytes() for p in (runs / CHECKPOINT_ROOT / NAME).rglob("*")
              if p.is_file()}
    seeded = seed_from_snapshot(base / "snap", tmp_path / "records", runs, labels)
    assert seeded["llm"] == [] and seeded["problems"] == []
    assert {p: p.read_bytes() for p in before} == before
    # a finished teacher is carried without resume/ (its labels are made from its weights)
    finished = _dirs(_snapshot(tmp_path / "finished", runs, None))[f"teacher/{NAME}"]
    assert finished["finished"] and finished["steps"] == 4
    assert "weights.safetensors" in finished["files"]
    assert not any(f.startswith("resume/") for f in finished["files"])
    # a local teacher behind the snapshot's (0 steps: its time budget was spent) is replaced
    other = tmp_path / "other"
    finetune(_cfg(other / CHECKPOINT_ROOT / NAME, time_budget_s=0.0), prepared)
    assert llm_carry.local_teacher_steps(other / CHECKPOINT_ROOT / NAME) == 0
    seeded = seed_from_snapshot(base / "snap", tmp_path / "records", other, None)
    assert seeded["llm"] == [f"teacher/{NAME}"]
    assert llm_carry.local_teacher_steps(other / CHECKPOINT_ROOT / NAME) == 2
    # and the seeded directory is carried again by the next window's snapshot
    status = _snapshot(tmp_path / "again", other, None)
    assert _dirs(status)[f"teacher/{NAME}"]["steps"] == 2
    # no label root to put the chunks into: one line says so
    assert seeded["problems"] == [f"labels/{key}.partial: no label root to restore it into; "
                                  f"not restored"]


def test_oversized_and_inconsistent_directories_are_left_out(window, whole, tmp_path):
    base, _ = window
    runs, labels = base / "runs", base / "labels"
    key = whole[1].version_key
    ck = runs / CHECKPOINT_ROOT / NAME
    teacher_bytes = sum(p.stat().st_size for p in ck.rglob("*") if p.is_file())
    # parts of 64 KiB: the teacher (tiny base weights included) does not fit, the labels do
    status = _snapshot(tmp_path / "small", runs, labels, part_mb=1 / 16)
    llm = status["snapshot"]["llm"]
    assert llm["left_out"] == [{"dir": f"teacher/{NAME}", "bytes": teacher_bytes,
                                "reason": "larger than part_mb"}]
    assert set(_dirs(status)) == {f"labels/{key}.partial"}
    assert teacher_bytes > 64 * 1024
    # a budget the labels alone exceed: both are named, nothing is written
    status = _snapshot(tmp_path / "none", runs, labels, max_mb=1 / 1024 / 1024)
    assert [d["reason"] for d in status["snapshot"]["llm"]["left_out"]] == \
        ["beyond max_mb", "beyond max_mb"]
    assert not list((tmp_path / "none").glob("llm-*.tar"))
    # a save in progress (resume/ ahead of teacher.json) is not taken
    copy = tmp_path / "runs" / CHECKPOINT_ROOT / NAME
    shutil.copytree(ck, copy)
    state = json.loads((copy / "resume" / "state.json").read_text())
    (copy / "resume" / "state.json").write_text(json.dumps({**state, "step": 3}))
    assert llm_carry.read_dir(f"teacher/{NAME}", "teacher", copy, tries=1) is None
    status = _snapshot(tmp_path / "busy", tmp_path / "runs", None)
    assert status["snapshot"]["llm"]["left_out"][0]["reason"] == "changing while read"


def test_a_stop_waits_out_the_whole_teacher_save(tmp_path, prepared, monkeypatch):
    """The campaign worker's SIGTERM handler defers a stop that lands anywhere in the teacher
    checkpoint's save, between its writes too (not only inside one atomic write)."""
    from benchmark.campaign.worker import _writing

    between = []
    real = ft.write_json

    def write_json(obj, path):
        between.append(_writing(sys._getframe(1)))  # the save's frame, between two writes
        real(obj, path)

    monkeypatch.setattr(ft, "write_json", write_json)
    finetune(_cfg(tmp_path / "ck", steps=0), prepared)
    assert between and all(between)


def _malicious_snapshot(snap: Path, dirs: dict, members: dict[str, bytes]) -> None:
    snap.mkdir(parents=True)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    data = buf.getvalue()
    (snap / "llm-1-0.tar").write_bytes(data)
    part = {"file": "llm-1-0.tar", "sha256": hashlib.sha256(data).hexdigest(),
            "bytes": len(data), "dirs": dirs}
    (snap / "status.json").write_text(json.dumps({"snapshot": {"llm": {"parts": [part],
                                                                        "left_out": []}}}))


def test_unsafe_member_names_are_refused(tmp_path):
    meta = json.dumps({"training": {"steps": 9}, "config": {"steps": 9}}).encode()
    snap = tmp_path / "snap"
    _malicious_snapshot(snap, {
        "teacher/a": {"kind": "teacher", "files": ["teacher.json", "../../escaped"]},
        "../b": {"kind": "teacher", "files": ["teacher.json"]},
        "labels/c": {"kind": "labels", "files": ["manifest.json"]},
        "teacher/d": {"kind": "teacher", "files": ["teacher.json", "/etc/evil"]},
    }, {"teacher/a/teacher.json": meta, "teacher/a/../../escaped": b"x",
        "../b/teacher.json": meta, "teacher/d/teacher.json": meta, "teacher/d//etc/evil": b"x",
        "stray/file": b"x"})
    runs = tmp_path / "runs"
    seeded = seed_from_snapshot(snap, tmp_path / "records", runs, tmp_path / "labels")
    assert seeded["llm"] == []
    assert seeded["problems"] == [
        "llm-1-0.tar: teacher/a: file name '../../escaped' refused; directory skipped",
        "llm-1-0.tar: directory '../b' ignored (expected teacher/<name> or labels/<version "
        "key>.partial)",
        "llm-1-0.tar: directory 'labels/c' ignored (expected teacher/<name> or labels/<version "
        "key>.partial)",
        "llm-1-0.tar: teacher/d: file name '/etc/evil' refused; directory skipped",
        "llm-1-0.tar: member 'stray/file' ignored (not under a directory status.json lists)"]
    assert not (tmp_path / "escaped").exists() and not runs.exists()
    # a tampered part is skipped as a whole
    (snap / "llm-1-0.tar").write_bytes(b"tampered")
    seeded = seed_from_snapshot(snap, tmp_path / "records", runs, tmp_path / "labels")
    assert seeded["problems"] == [f"{snap / 'llm-1-0.tar'}: sha256 differs from status.json; "
                                  f"part skipped"]

"""benchmark.atomic: the one atomic writer (files and artifact directories)."""

import os
import stat

import pytest

from benchmark.atomic import (
    atomic_dir,
    atomic_file,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
)


def _leftovers(d):
    return sorted(p.name for p in d.iterdir() if p.name.startswith("."))


def test_write_replaces_and_leaves_no_temporary(tmp_path):
    p = tmp_path / "sub" / "a.txt"
    atomic_write_text(p, "one")
    atomic_write_text(p, "two")
    assert p.read_text() == "two"
    assert _leftovers(p.parent) == []


def test_failed_write_keeps_the_old_file(tmp_path):
    p = tmp_path / "a.bin"
    atomic_write_bytes(p, b"old")
    with pytest.raises(RuntimeError), atomic_file(p) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("writer crashed")
    assert p.read_bytes() == b"old"
    assert _leftovers(tmp_path) == []


def test_exclusive_refuses_an_existing_file(tmp_path):
    p = tmp_path / "r.json"
    atomic_write_json(p, {"a": 1}, exclusive=True)
    with pytest.raises(FileExistsError):
        atomic_write_json(p, {"a": 2}, exclusive=True)
    assert p.read_text() == '{\n  "a": 1\n}\n'
    assert _leftovers(tmp_path) == []


def test_mode_follows_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "f", "x")
        with atomic_dir(tmp_path / "d") as d:
            (d / "x").write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f").stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o750


def test_atomic_dir_creates_refuses_and_overwrites(tmp_path):
    target = tmp_path / "store"
    with atomic_dir(target) as d:
        (d / "a.npy").write_bytes(b"1")
    assert (target / "a.npy").read_bytes() == b"1"
    with pytest.raises(FileExistsError):
        with atomic_dir(target) as d:
            pass
    with atomic_dir(target, overwrite=True) as d:
        (d / "b.npy").write_bytes(b"2")
    assert sorted(p.name for p in target.iterdir()) == ["b.npy"]
    assert _leftovers(tmp_path) == []


def test_atomic_dir_failure_leaves_nothing(tmp_path):
    target = tmp_path / "store"
    with pytest.raises(ValueError), atomic_dir(target) as d:
        (d / "a.npy").write_bytes(b"1")
        raise ValueError("bad labels")
    assert not target.exists()
    assert _leftovers(tmp_path) == []


def test_atomic_dir_loses_a_race_cleanly(tmp_path):
    target = tmp_path / "store"
    with pytest.raises(FileExistsError), atomic_dir(target) as d:
        (d / "mine").write_text("x")
        target.mkdir()
        (target / "theirs").write_text("y")  # another writer finished first
    assert sorted(p.name for p in target.iterdir()) == ["theirs"]
    assert _leftovers(tmp_path) == []

"""Custom (bring-your-own) datasets: round trip and every bad-input case."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmark.data.custom import load_custom, write_custom
from benchmark.data.registry import default_protocol, load_dataset
from benchmark.data.stdata import DataError
from benchmark.data.synthetic import make_synthetic

T, N, C = 20, 3, 2


def _write(root: Path, manifest: dict | None = None, values: np.ndarray | None = None,
           **extra_manifest) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    if values is None:
        values = np.arange(T * N * C, dtype=np.float32).reshape(T, N, C)
    np.save(root / "values.npy", values)
    m = manifest if manifest is not None else {
        "name": "toy", "channels": ["a", "b"], "start": "2023-01-02T00:00", "freq_minutes": 60}
    m = {**m, **extra_manifest}
    (root / "manifest.json").write_text(json.dumps(m))
    return root


def test_minimal_dataset_loads(tmp_path):
    d = load_custom(_write(tmp_path / "ds"))
    assert d.values.shape == (T, N, C) and d.values.dtype == np.float32
    assert d.steps_per_day == 24 and d.adjacency is None
    assert d.timestamps[0] == np.datetime64("2023-01-02T00:00")
    assert d.nodes["name"].tolist() == ["node 0", "node 1", "node 2"]
    assert load_dataset("custom", path=str(tmp_path / "ds")).values.shape == (T, N, C)


def test_round_trip_write_then_load(tmp_path):
    src = make_synthetic(num_nodes=4, num_days=2, steps_per_day=48, seed=3)
    out = write_custom(src, tmp_path / "exp", null_value=0.0)
    back = load_custom(out)
    assert np.array_equal(back.values, src.values)
    assert np.array_equal(back.timestamps, src.timestamps)
    assert np.array_equal(back.adjacency, src.adjacency)
    assert back.channels == src.channels and back.steps_per_day == 48
    assert back.nodes["name"].tolist() == src.nodes["name"].tolist()
    assert default_protocol("custom", back).null_value == 0.0
    with pytest.raises(DataError, match="exists"):
        write_custom(src, out)
    write_custom(src, out, overwrite=True)


def test_round_trip_with_timestamps_file(tmp_path):
    # 450 steps per day = 192 s steps: not whole minutes, so a timestamps file is written
    src = make_synthetic(num_nodes=2, num_days=1, steps_per_day=450)
    out = write_custom(src, tmp_path / "exp")
    assert json.loads((out / "manifest.json").read_text())["timestamps_file"] == "timestamps.npy"
    assert np.array_equal(load_custom(out).timestamps, src.timestamps)


def test_timestamps_text_file_and_adjacency_csv_and_nodes(tmp_path):
    root = _write(tmp_path / "ds", {"name": "toy", "channels": ["a", "b"],
                                    "timestamps_file": "times.txt", "adjacency_file": "adj.csv",
                                    "nodes_file": "nodes.csv"})
    times = pd.date_range("2023-01-01", periods=T, freq="30min")
    (root / "times.txt").write_text("\n".join(t.isoformat() for t in times) + "\n")
    np.savetxt(root / "adj.csv", np.eye(N), delimiter=",")
    pd.DataFrame({"name": ["x", "y", "z"], "lat": [1, 2, 3]}).to_csv(root / "nodes.csv",
                                                                      index=False)
    d = load_custom(root)
    assert d.steps_per_day == 48 and d.nodes["name"].tolist() == ["x", "y", "z"]
    assert np.array_equal(d.adjacency, np.eye(N, dtype=np.float32))


def test_nan_without_null_value_rejected(tmp_path):
    v = np.ones((T, N, C), dtype=np.float32)
    v[3, 1, 0] = np.nan
    with pytest.raises(DataError, match=r"values\.npy.*1 NaN.*null_value"):
        load_custom(_write(tmp_path / "ds", values=v))


def test_nan_with_null_value_replaced(tmp_path):
    v = np.ones((T, N, C), dtype=np.float32)
    v[3, 1, 0] = np.nan
    d = load_custom(_write(tmp_path / "ds", values=v, null_value=-1))
    assert d.values[3, 1, 0] == -1 and np.isfinite(d.values).all()
    assert default_protocol("custom", d).null_value == -1.0


def test_inf_rejected(tmp_path):
    v = np.ones((T, N, C), dtype=np.float32)
    v[0, 0, 0] = np.inf
    with pytest.raises(DataError, match=r"values\.npy.*inf"):
        load_custom(_write(tmp_path / "ds", values=v, null_value=0))


@pytest.mark.parametrize("shape", [(T, N), (T, N, C, 1)])
def test_wrong_rank_rejected(tmp_path, shape):
    with pytest.raises(DataError, match=r"values\.npy.*rank 3"):
        load_custom(_write(tmp_path / "ds", values=np.zeros(shape, dtype=np.float32)))


def test_channel_count_mismatch_rejected(tmp_path):
    with pytest.raises(DataError, match=r"values\.npy.*2 channels.*3"):
        load_custom(_write(tmp_path / "ds", channels=["a", "b", "c"]))


def test_pickled_values_rejected(tmp_path):
    root = _write(tmp_path / "ds")
    np.save(root / "values.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match=r"values\.npy.*pickles"):
        load_custom(root)


def _ts_dataset(tmp_path: Path, times: np.ndarray) -> Path:
    root = _write(tmp_path / "ds", {"name": "toy", "channels": ["a", "b"],
                                    "timestamps_file": "timestamps.npy"})
    np.save(root / "timestamps.npy", times)
    return root


def test_non_monotonic_timestamps_rejected(tmp_path):
    t = np.datetime64("2023-01-01T00:00") + np.arange(T) * np.timedelta64(30, "m")
    t[5], t[6] = t[6], t[5]
    with pytest.raises(DataError, match=r"timestamps\.npy.*not strictly increasing at row 6"):
        load_custom(_ts_dataset(tmp_path, t))


def test_duplicate_timestamps_in_text_file_rejected(tmp_path):
    root = _write(tmp_path / "ds", {"name": "toy", "channels": ["a", "b"],
                                    "timestamps_file": "t.txt"})
    times = list(pd.date_range("2023-01-01", periods=T, freq="30min"))
    times[4] = times[3]
    (root / "t.txt").write_text("\n".join(t.isoformat() for t in times))
    with pytest.raises(DataError, match=r"t\.txt.*not strictly increasing"):
        load_custom(root)


def test_irregular_timestamps_rejected(tmp_path):
    t = np.datetime64("2023-01-01T00:00") + np.arange(T) * np.timedelta64(30, "m")
    t[10:] += np.timedelta64(30, "m")  # a gap: one missing step
    with pytest.raises(DataError, match=r"timestamps\.npy.*irregular at row 10.*3600 s.*1800 s"):
        load_custom(_ts_dataset(tmp_path, t))


def test_timestamp_count_mismatch_rejected(tmp_path):
    t = np.datetime64("2023-01-01T00:00") + np.arange(T - 1) * np.timedelta64(30, "m")
    with pytest.raises(DataError, match=r"timestamps\.npy.*for 20 steps"):
        load_custom(_ts_dataset(tmp_path, t))


def test_step_not_dividing_a_day_rejected(tmp_path):
    with pytest.raises(DataError, match="does not divide a day"):
        load_custom(_write(tmp_path / "ds", freq_minutes=7))


def test_steps_per_day_disagreeing_rejected(tmp_path):
    with pytest.raises(DataError, match=r"manifest\.json.*steps_per_day.*48"):
        load_custom(_write(tmp_path / "ds", freq_minutes=30, steps_per_day=24))


@pytest.mark.parametrize("adj,match", [
    (np.zeros((N, N + 1)), "square"),
    (np.zeros((N + 1, N + 1)), "values have 3 nodes"),
    (np.zeros(N), "square"),
])
def test_bad_adjacency_rejected(tmp_path, adj, match):
    root = _write(tmp_path / "ds", adjacency_file="adj.npy")
    np.save(root / "adj.npy", adj)
    with pytest.raises(DataError, match=rf"adj\.npy.*{match}"):
        load_custom(root)


def test_adjacency_with_nan_rejected(tmp_path):
    root = _write(tmp_path / "ds", adjacency_file="adj.npy")
    a = np.eye(N)
    a[0, 1] = np.nan
    np.save(root / "adj.npy", a)
    with pytest.raises(DataError, match=r"adj\.npy.*NaN"):
        load_custom(root)


def test_node_table_row_count_rejected(tmp_path):
    root = _write(tmp_path / "ds", nodes_file="nodes.csv")
    pd.DataFrame({"name": ["a", "b"]}).to_csv(root / "nodes.csv", index=False)
    with pytest.raises(DataError, match=r"nodes\.csv.*2 rows.*3 nodes"):
        load_custom(root)


@pytest.mark.parametrize("key", ["values_file", "adjacency_file", "nodes_file",
                                 "timestamps_file"])
def test_missing_named_file_rejected(tmp_path, key):
    m = {"name": "toy", "channels": ["a", "b"], "start": "2023-01-01", "freq_minutes": 60}
    if key == "timestamps_file":
        m = {"name": "toy", "channels": ["a", "b"]}
    root = _write(tmp_path / "ds", m, **{key: "absent.npy"})
    with pytest.raises(DataError, match=rf"absent\.npy: file not found.*{key}"):
        load_custom(root)


def test_missing_manifest_and_directory(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"manifest\.json: file not found"):
        load_custom(tmp_path / "empty")
    with pytest.raises(DataError, match="directory not found"):
        load_custom(tmp_path / "nope")


def test_bad_json_rejected(tmp_path):
    root = _write(tmp_path / "ds")
    (root / "manifest.json").write_text('{"name": "toy", "channels": ["a", "b"],')
    with pytest.raises(DataError, match=r"manifest\.json: invalid JSON"):
        load_custom(root)


@pytest.mark.parametrize("manifest,match", [
    ([1, 2], "JSON object"),
    ({"channels": ["a", "b"], "start": "2023-01-01", "freq_minutes": 60}, "missing required"),
    ({"name": "t", "channels": ["a", "b"], "start": "2023-01-01", "freq_minute": 60},
     "unknown keys"),
    ({"name": "t", "channels": ["a", "b"]}, "exactly one of"),
    ({"name": "t", "channels": ["a", "b"], "freq_minutes": 60,
      "timestamps_file": "t.npy", "start": "2023-01-01"}, "exactly one of"),
    ({"name": "t", "channels": ["a", "b"], "freq_minutes": 60}, "needs a 'start'"),
    ({"name": "t", "channels": ["a", "b"], "freq_minutes": -5, "start": "2023-01-01"},
     "positive"),
    ({"name": "t", "channels": "ab", "freq_minutes": 60, "start": "2023-01-01"}, "list"),
    ({"name": "t", "channels": ["a", "b"], "freq_minutes": 60, "start": "yesterday-ish"},
     "ISO 8601"),
    ({"name": "t", "channels": ["a", "b"], "freq_minutes": 60, "start": "2023-01-01",
      "null_value": "zero"}, "null_value"),
])
def test_bad_manifest_rejected(tmp_path, manifest, match):
    root = _write(tmp_path / "ds")
    (root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=rf"manifest\.json.*{match}"):
        load_custom(root)


# --- files stay inside the dataset directory -----------------------------------------------
@pytest.mark.parametrize("name", ["../outside.npy", "sub/../../outside.npy"])
def test_manifest_file_outside_directory_refused(tmp_path, name):
    np.save(tmp_path / "outside.npy", np.zeros((T, N, C), dtype=np.float32))
    root = _write(tmp_path / "ds", values_file=name)
    with pytest.raises(DataError, match=r"'values_file'.*leaves the dataset directory.*inside"):
        load_custom(root)


def test_manifest_absolute_path_refused(tmp_path):
    np.save(tmp_path / "outside.npy", np.zeros((T, N, C), dtype=np.float32))
    root = _write(tmp_path / "ds", adjacency_file=str(tmp_path / "outside.npy"))
    with pytest.raises(DataError, match=r"'adjacency_file'.*absolute path.*relative path"):
        load_custom(root)


def test_symlink_escaping_directory_refused(tmp_path):
    np.save(tmp_path / "outside.npy", np.zeros((T, N, C), dtype=np.float32))
    root = _write(tmp_path / "ds", values_file="link.npy")
    (root / "link.npy").symlink_to(tmp_path / "outside.npy")
    with pytest.raises(DataError, match=r"'values_file'.*resolves outside.*symlink"):
        load_custom(root)
    (root / "sub").symlink_to(tmp_path)  # a folder on the way
    (root / "manifest.json").write_text(json.dumps(
        {**json.loads((root / "manifest.json").read_text()), "values_file": "sub/outside.npy"}))
    with pytest.raises(DataError, match="resolves outside"):
        load_custom(root)


def test_symlink_inside_directory_allowed(tmp_path):
    root = _write(tmp_path / "ds", values_file="link.npy")
    (root / "link.npy").symlink_to(root / "values.npy")
    assert load_custom(root).values.shape == (T, N, C)


# --- .npz values ----------------------------------------------------------------------------
def test_npz_single_array_and_named_member(tmp_path):
    v = np.arange(T * N * C, dtype=np.float32).reshape(T, N, C)
    root = _write(tmp_path / "ds", values_file="v.npz")
    np.savez(root / "v.npz", flows=v)
    assert np.array_equal(load_custom(root).values, v)
    np.savez_compressed(root / "v.npz", other=np.zeros(3), flows=v)
    with pytest.raises(DataError, match=r"2 members.*'values_member'"):
        load_custom(root)
    m = json.loads((root / "manifest.json").read_text())
    (root / "manifest.json").write_text(json.dumps({**m, "values_member": "flows"}))
    assert np.array_equal(load_custom(root).values, v)
    (root / "manifest.json").write_text(json.dumps({**m, "values_member": "nope"}))
    with pytest.raises(DataError, match="no member 'nope'"):
        load_custom(root)


def test_npz_many_members_message_is_short(tmp_path):
    root = _write(tmp_path / "ds", values_file="v.npz")
    np.savez(root / "v.npz", **{f"m{i}": np.zeros(1) for i in range(2000)})
    with pytest.raises(DataError) as e:
        load_custom(root)
    msg = str(e.value)
    assert "2000 members" in msg and "1995 more" in msg and len(msg) < 400 and "\n" not in msg


def test_npz_pickled_or_corrupt_refused(tmp_path):
    root = _write(tmp_path / "ds", values_file="v.npz")
    np.savez(root / "v.npz", v=np.array([{"a": 1}], dtype=object))
    with pytest.raises(DataError, match="without pickles"):
        load_custom(root)
    (root / "v.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DataError, match=r"v\.npz: cannot read"):
        load_custom(root)


# --- content hash ---------------------------------------------------------------------------
def test_content_hash_follows_every_named_file(tmp_path):
    from benchmark.data.custom import content_hash
    from benchmark.data.files import clear_sha_cache
    from benchmark.data.registry import dataset_content_hash

    root = _write(tmp_path / "ds", adjacency_file="adj.npy")
    np.save(root / "adj.npy", np.eye(N, dtype=np.float32))
    h0 = content_hash(root)
    assert h0 == content_hash(root) == dataset_content_hash("custom", path=str(root))
    assert dataset_content_hash("synthetic") is None
    v = np.load(root / "values.npy")
    v[0, 0, 0] += 1
    np.save(root / "values.npy", v)
    clear_sha_cache()  # same size, and mtime may not have ticked within this test
    h1 = content_hash(root)
    assert h1 != h0
    np.save(root / "adj.npy", 2 * np.eye(N, dtype=np.float32))
    clear_sha_cache()
    h2 = content_hash(root)
    assert h2 not in (h0, h1)
    m = json.loads((root / "manifest.json").read_text())
    (root / "manifest.json").write_text(json.dumps({**m, "description": "x"}))
    clear_sha_cache()
    assert content_hash(root) not in (h0, h1, h2)

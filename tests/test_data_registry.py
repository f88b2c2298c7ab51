"""Dataset registry: real-data shapes and checksums, tampering, resolution order, downloads."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmark.data import catalogue, files, registry
from benchmark.data.datasets.nyc_taxi_grid import grid_adjacency
from benchmark.data.datasets.pems07m import true_dates
from benchmark.data.files import clear_sha_cache, sha256_file
from benchmark.data.geo import gaussian_kernel_adjacency, haversine_km
from benchmark.data.registry import (
    DatasetSpec,
    FileSpec,
    dataset_ids,
    dataset_info,
    fetch,
    get_dataset_spec,
    list_datasets,
    load_dataset,
    locate,
    verify,
)
from benchmark.data.stdata import DataError, STData
from benchmark.data.timefeatures import day_of_week_index, time_of_day_index


def _real_data_dir() -> Path | None:
    env = os.environ.get("FLOWDISTILL_DATA")
    if env and Path(env).is_dir():
        return Path(env)
    return registry.mirror_dir()


REAL = _real_data_dir()
needs_data = pytest.mark.skipif(
    REAL is None or not (REAL / "nyc_taxi_manhattan").is_dir(),
    reason="real datasets not found (set FLOWDISTILL_DATA or provide ../shared/data)")

FILE_BACKED = [s.id for s in list_datasets() if s.files]
SHAPES = {
    "nyc_taxi_manhattan": ((35088, 69, 2), "2019-01-01T00:00", 48),
    "nyc_bike_manhattan": ((35088, 69, 2), "2019-01-01T00:00", 48),
    "nyc_taxi_grid": ((4320, 192, 2), "2016-01-01T00:00", 48),
    "pems07m": ((12672, 228, 1), "2012-05-01T00:00", 288),
    "metr_la_week": ((2016, 207, 1), "2012-03-01T00:00", 288),
}


@pytest.fixture
def real_env(monkeypatch):
    monkeypatch.setenv("FLOWDISTILL_DATA", str(REAL))
    monkeypatch.setenv("FLOWDISTILL_OFFLINE", "1")
    return REAL


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """Empty FLOWDISTILL_DATA, no mirror, a private cache; returns (data_dir, cache_dir)."""
    data = tmp_path / "data"
    data.mkdir()
    monkeypatch.setenv("FLOWDISTILL_DATA", str(data))
    monkeypatch.setenv("FLOWDISTILL_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("FLOWDISTILL_OFFLINE", raising=False)
    monkeypatch.setattr(files, "mirror_dir", lambda: None)
    clear_sha_cache()
    return data, tmp_path / "cache" / "data"


# --- real data ---------------------------------------------------------------------------------
@pytest.mark.data
@needs_data
@pytest.mark.parametrize("dataset_id", list(SHAPES))
def test_real_dataset_shapes(real_env, dataset_id):
    shape, start, spd = SHAPES[dataset_id]
    data = load_dataset(dataset_id)
    assert data.values.shape == shape
    assert data.values.dtype == np.float32
    assert data.adjacency.shape == (shape[1], shape[1])
    assert data.timestamps[0] == np.datetime64(start)
    assert data.steps_per_day == spd
    assert len(data.nodes) == shape[1] and data.nodes["name"].is_unique
    assert np.isfinite(data.values).all()


@pytest.mark.data
@needs_data
@pytest.mark.parametrize("dataset_id", FILE_BACKED)
def test_real_dataset_verifies(real_env, dataset_id):
    if not (real_env / dataset_id).is_dir():
        pytest.skip(f"{dataset_id} is not in {real_env}")
    checks = verify(dataset_id)
    assert len(checks) == len(get_dataset_spec(dataset_id).files)
    for name, ok, expected, actual in checks:
        assert ok, (name, expected, actual)


@pytest.mark.data
@needs_data
def test_manhattan_contents(real_env):
    taxi = load_dataset("nyc_taxi_manhattan")
    # every trip has both ends in Manhattan: total inflow equals total outflow
    assert taxi.values[..., 0].sum(dtype=np.float64) == taxi.values[..., 1].sum(dtype=np.float64)
    a = taxi.adjacency
    assert np.array_equal(a, a.T) and np.all(np.diag(a) == 0) and int(a.sum()) == 332
    assert taxi.nodes.loc[0, "name"] == "Alphabet City"
    od = load_dataset("nyc_taxi_manhattan", adjacency="od").adjacency
    assert od.max() == pytest.approx(1.0) and np.count_nonzero(od) > 332
    with pytest.raises(DataError, match="adjacency"):
        load_dataset("nyc_taxi_manhattan", adjacency="knn")


@pytest.mark.data
@needs_data
def test_load_speed_nyc_taxi_manhattan(real_env):
    clear_sha_cache()
    t0 = time.perf_counter()
    load_dataset("nyc_taxi_manhattan")
    assert time.perf_counter() - t0 < 2.0


@pytest.mark.data
@needs_data
def test_pems07m_graphs_and_calendar(real_env):
    shipped = load_dataset("pems07m").adjacency  # weighted despite the "rn_adj" name
    off = ~np.eye(228, dtype=bool)
    assert np.all(np.diag(shipped) == 1) and np.count_nonzero(shipped) == 1892
    assert shipped[off & (shipped > 0)].min() >= 0.5
    binary = load_dataset("pems07m", adjacency="binary")
    assert set(np.unique(binary.adjacency)) == {0.0, 1.0}
    assert np.array_equal(binary.adjacency > 0, shipped > 0)
    gauss = load_dataset("pems07m", adjacency="gaussian")
    w = gauss.adjacency
    assert np.all(np.diag(w) == 0) and np.array_equal(w, w.T)
    assert w[w > 0].min() >= 0.5 and w.max() <= 1.0
    # linked stations are close (< 2.63 km); the road-network graph links close stations too
    nodes = gauss.nodes
    d = haversine_km(nodes["latitude"].to_numpy(), nodes["longitude"].to_numpy())
    assert d[w > 0].max() <= np.sqrt(10 * np.log(2)) + 1e-6
    assert np.median(d[(binary.adjacency > 0) & off]) < 0.2 * np.median(d[off])
    # the shipped weights are STGCN Eq. 10 on (slightly longer) original distances
    both = off & (shipped > 0)
    assert np.corrcoef(shipped[both], np.exp(-d[both] ** 2 / 10))[0, 1] > 0.98
    assert len(binary.extra["true_dates"]) == 44
    assert binary.nodes.loc[0, "name"] == "I5-S station 716939"


@pytest.mark.data
@needs_data
def test_dataset_info_real(real_env):
    info = dataset_info("pems07m")
    assert info["shape"] == [12672, 228, 1]
    assert info["steps_per_day"] == 288 and info["step_minutes"] == 5
    assert info["default_protocol"]["split_ratios"] == [0.6, 0.2, 0.2]
    assert "real timestamps" in info["calendar_note"]
    assert info["regular"] is False and info["start"] == "2012-05-01T00:00:00"
    assert info["end"] == "2012-06-29T23:55:00"


@pytest.mark.data
@needs_data
def test_pems07m_timestamps_are_the_real_weekdays(real_env):
    data = load_dataset("pems07m")
    ts = data.timestamps
    assert ts[0] == np.datetime64("2012-05-01T00:00")
    assert ts[-1] == np.datetime64("2012-06-29T23:55")
    dates = np.unique(ts.astype("datetime64[D]"))
    assert len(dates) == 44 and np.array_equal(dates, true_dates())
    assert np.datetime64("2012-05-28") in dates  # Memorial Day is in the data (44, not 43)
    dow = day_of_week_index(ts)
    assert not np.isin(dow, (5, 6)).any()
    assert np.array_equal(dow, pd.DatetimeIndex(ts).day_of_week.to_numpy())
    assert dow[0] == 1 and dow[4 * 288] == 0  # Tuesday May 1, Monday May 7 (after a weekend)
    assert np.array_equal(time_of_day_index(ts, 288), np.tile(np.arange(288), 44))
    assert not data.regular
    # the time axis skips exactly the weekends: 8 gaps of 2 days + 5 min, all Fri -> Mon
    gaps = np.flatnonzero(np.diff(ts) != np.timedelta64(5, "m"))
    assert len(gaps) == 8 and np.all(np.diff(ts)[gaps] == np.timedelta64(2 * 1440 + 5, "m"))
    assert np.all(dow[gaps] == 4) and np.all(dow[gaps + 1] == 0)
    # the holiday is where the calendar says: no morning peak on Memorial Day
    am = data.values.reshape(44, 288, 228)[:, 84:108].mean(axis=(1, 2))
    assert int(np.argmax(am)) == int(np.flatnonzero(dates == np.datetime64("2012-05-28"))[0])


def _copy_dataset(dataset_id: str, dest_root: Path) -> Path:
    dest = dest_root / dataset_id
    dest.mkdir(parents=True)
    for f in get_dataset_spec(dataset_id).files:
        shutil.copyfile(REAL / dataset_id / f.name, dest / f.name)
    return dest


@pytest.mark.data
@needs_data
def test_tampered_file_fails_verify_and_load(isolated):
    data_root, _ = isolated
    d = _copy_dataset("nyc_taxi_grid", data_root)
    target = d / "flow_val.npz"
    raw = bytearray(target.read_bytes())
    raw[1000] ^= 0xFF
    target.write_bytes(bytes(raw))
    expected = get_dataset_spec("nyc_taxi_grid").files[1].sha256
    actual = hashlib.sha256(bytes(raw)).hexdigest()
    checks = {c.file: c for c in verify("nyc_taxi_grid")}
    assert not checks["flow_val.npz"].ok and checks["flow_train.npz"].ok
    assert checks["flow_val.npz"].actual_sha == actual
    with pytest.raises(DataError) as e:
        load_dataset("nyc_taxi_grid")
    msg = str(e.value)
    assert "flow_val.npz" in msg and expected in msg and actual in msg
    # fetch never overwrites a user's FLOWDISTILL_DATA file
    with pytest.raises(DataError, match="flow_val.npz"):
        fetch("nyc_taxi_grid")
    assert target.read_bytes() == bytes(raw)


@pytest.mark.data
@needs_data
def test_truncated_file_fails(isolated):
    data_root, _ = isolated
    d = _copy_dataset("metr_la_week", data_root)
    f = d / "los_adj.csv"
    f.write_bytes(f.read_bytes()[:5000])
    with pytest.raises(DataError, match="los_adj.csv.*expected sha256"):
        load_dataset("metr_la_week")


@pytest.mark.data
@needs_data
def test_download_real_files_from_file_urls(isolated, monkeypatch):
    _, cache = isolated
    spec = get_dataset_spec("nyc_taxi_grid")
    files = tuple(dataclasses.replace(f, url=(REAL / spec.id / f.name).as_uri())
                  for f in spec.files)
    monkeypatch.setitem(catalogue.REGISTERED, spec.id, dataclasses.replace(spec, files=files))
    data = load_dataset("nyc_taxi_grid")
    assert data.values.shape == (4320, 192, 2)
    assert locate("nyc_taxi_grid") == cache / "nyc_taxi_grid"
    assert all(c.ok for c in verify("nyc_taxi_grid"))


# --- resolution, download and errors without real data ------------------------------------------
def _tiny_loader(root: Path | None, scale: float = 1.0) -> STData:
    v = np.load(root / "tiny.npy", allow_pickle=False).astype(np.float32) * scale
    t = np.datetime64("2020-01-01T00:00", "ns") + np.arange(len(v)) * np.timedelta64(30, "m")
    return STData("tiny", v, t, None, pd.DataFrame({"name": ["a", "b"]}), ["x"], 48)


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """A registered dataset 'tiny' whose one file lives at a file:// URL."""
    src = tmp_path / "remote" / "tiny.npy"
    src.parent.mkdir()
    np.save(src, np.arange(20, dtype=np.float32).reshape(10, 2, 1))
    blob = src.read_bytes()
    fs = FileSpec("tiny.npy", src.as_uri(), hashlib.sha256(blob).hexdigest(), len(blob))
    spec = DatasetSpec("tiny", "test", (fs,), _tiny_loader,
                       get_dataset_spec("synthetic").default_protocol,
                       options={"scale": "factor"})
    monkeypatch.setitem(catalogue.REGISTERED, "tiny", spec)
    return spec, src


def test_download_into_cache_then_reuse(isolated, tiny):
    data_root, cache = isolated
    data = load_dataset("tiny")
    assert data.values.shape == (10, 2, 1)
    assert (cache / "tiny" / "tiny.npy").is_file()
    assert not any(data_root.iterdir())  # nothing written into FLOWDISTILL_DATA
    tiny[1].unlink()  # the "remote" file is gone: the cache is used now
    assert locate("tiny") == cache / "tiny"
    assert load_dataset("tiny", scale="2").values[-1, -1, 0] == 38.0  # option coerced to float


def test_download_sha_mismatch_leaves_nothing(isolated, tiny, monkeypatch):
    _, cache = isolated
    spec, _ = tiny
    bad = dataclasses.replace(spec.files[0], sha256="0" * 64)
    monkeypatch.setitem(catalogue.REGISTERED, "tiny", dataclasses.replace(spec, files=(bad,)))
    with pytest.raises(DataError) as e:
        load_dataset("tiny")
    msg = str(e.value)
    assert "0" * 64 in msg and spec.files[0].sha256 in msg and "FLOWDISTILL_DATA" in msg
    assert not [p for p in cache.rglob("*") if p.is_file()]


def test_download_falls_back_to_mirror_url(isolated, tiny, monkeypatch, tmp_path):
    spec, src = tiny
    wrong = tmp_path / "wrong.npy"
    wrong.write_bytes(b"not the file")
    f = dataclasses.replace(spec.files[0], url=wrong.as_uri(), mirrors=(src.as_uri(),))
    monkeypatch.setitem(catalogue.REGISTERED, "tiny", dataclasses.replace(spec, files=(f,)))
    assert load_dataset("tiny").values.shape == (10, 2, 1)


def test_missing_files_offline_names_env_var(isolated, tiny, monkeypatch):
    monkeypatch.setenv("FLOWDISTILL_OFFLINE", "1")
    with pytest.raises(DataError) as e:
        load_dataset("tiny")
    msg = str(e.value)
    assert "FLOWDISTILL_DATA" in msg and "tiny.npy" in msg and "'tiny'" in msg
    assert "user cache" in msg


def test_missing_files_no_network_names_env_var(isolated, tiny, monkeypatch, tmp_path):
    spec, _ = tiny
    f = dataclasses.replace(spec.files[0], url=(tmp_path / "nowhere.npy").as_uri())
    monkeypatch.setitem(catalogue.REGISTERED, "tiny", dataclasses.replace(spec, files=(f,)))
    with pytest.raises(DataError, match="FLOWDISTILL_DATA") as e:
        load_dataset("tiny")
    assert "Download failed" in str(e.value)
    with pytest.raises(DataError, match="FLOWDISTILL_DATA"):
        verify("tiny")


def test_resolution_order_env_then_mirror_then_cache(isolated, tiny, monkeypatch, tmp_path):
    data_root, cache = isolated
    spec, src = tiny
    mirror = tmp_path / "mirror"
    for root in (mirror, cache):
        (root / "tiny").mkdir(parents=True)
        shutil.copyfile(src, root / "tiny" / "tiny.npy")
    monkeypatch.setattr(files, "mirror_dir", lambda: mirror)
    assert locate("tiny") == mirror / "tiny"
    (data_root / "tiny").mkdir()
    shutil.copyfile(src, data_root / "tiny" / "tiny.npy")
    assert locate("tiny") == data_root / "tiny"
    monkeypatch.delenv("FLOWDISTILL_DATA")
    monkeypatch.setattr(files, "mirror_dir", lambda: None)
    assert locate("tiny") == cache / "tiny"


def test_fetch_repairs_corrupt_cache_file(isolated, tiny):
    _, cache = isolated
    (cache / "tiny").mkdir(parents=True)
    (cache / "tiny" / "tiny.npy").write_bytes(b"garbage")
    assert not verify("tiny")[0].ok
    assert fetch("tiny", progress=False) == cache / "tiny"
    assert verify("tiny")[0].ok


def test_sha_cache_keyed_by_size_and_mtime(tmp_path):
    clear_sha_cache()
    f = tmp_path / "a.bin"
    f.write_bytes(b"abc")
    first = sha256_file(f)
    assert first == hashlib.sha256(b"abc").hexdigest()
    st = f.stat()
    f.write_bytes(b"abd")  # same size, mtime restored: the cached digest is returned
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert sha256_file(f) == first
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert sha256_file(f) == hashlib.sha256(b"abd").hexdigest()


def test_registry_contents_and_errors():
    ids = dataset_ids()
    assert [s.id for s in list_datasets()] == ids
    for i in ("nyc_taxi_manhattan", "nyc_bike_manhattan", "nyc_taxi_grid", "pems07m",
              "metr_la_week", "synthetic", "custom"):
        assert i in ids
    for i in ids:
        spec = get_dataset_spec(i)
        for f in spec.files:
            assert f.url.startswith("https://raw.githubusercontent.com/")
            assert len(f.sha256) == 64 and f.size > 0
    p = get_dataset_spec("nyc_taxi_manhattan").default_protocol
    assert p.time_range == (0, 17520) and p.split_ratios == (0.5, 0.3, 0.2)
    assert p.null_value is None
    assert get_dataset_spec("pems07m").default_protocol.split_ratios == (0.6, 0.2, 0.2)
    assert get_dataset_spec("metr_la_week").default_protocol.split_ratios == (0.7, 0.1, 0.2)
    with pytest.raises(DataError, match="unknown dataset"):
        get_dataset_spec("nope")
    with pytest.raises(DataError, match="unknown option"):
        load_dataset("synthetic", bogus=1)
    with pytest.raises(DataError, match="path="):
        load_dataset("custom")


def test_dataset_info_synthetic():
    info = dataset_info("synthetic", num_nodes=5, num_days=3)
    assert info["shape"] == [144, 5, 2] and info["days"] == 3
    assert info["start"] == "2024-01-01T00:00:00" and info["step_minutes"] == 30


# --- graph helpers (hand-computed) -------------------------------------------------------------
def test_grid_adjacency_hand_counts():
    a8 = grid_adjacency(2, 2, 8)
    assert np.array_equal(a8, np.ones((4, 4)) - np.eye(4))
    a4 = grid_adjacency(2, 2, 4)
    assert np.array_equal(a4, np.array([[0, 1, 1, 0], [1, 0, 0, 1], [1, 0, 0, 1], [0, 1, 1, 0]]))
    a = grid_adjacency(3, 3, 8)
    assert a[4].sum() == 8 and a[0].sum() == 3 and a[1].sum() == 5
    assert grid_adjacency(3, 3, 4)[4].sum() == 4
    g = grid_adjacency(16, 12, 8)
    assert np.array_equal(g, g.T) and g.sum() == 2 * (16 * 11 + 15 * 12 + 2 * 15 * 11)


def test_haversine_and_gaussian_kernel_hand_values():
    d = haversine_km(np.array([0.0, 1.0]), np.array([0.0, 0.0]))
    assert d[0, 1] == pytest.approx(6371.0088 * np.pi / 180, rel=1e-9)  # 111.195 km
    dist = np.array([[0.0, 1.0, 3.0], [1.0, 0.0, 2.0], [3.0, 2.0, 0.0]])
    w = gaussian_kernel_adjacency(dist)  # sigma^2 = 10, epsilon = 0.5 (STGCN Eq. 10)
    assert w[0, 1] == pytest.approx(np.exp(-0.1), rel=1e-6)  # 0.9048
    assert w[1, 2] == pytest.approx(np.exp(-0.4), rel=1e-6)  # 0.6703
    assert w[0, 2] == 0.0  # exp(-0.9) = 0.4066 < 0.5
    assert np.all(np.diag(w) == 0)


def test_pems_true_dates_are_the_weekdays_of_may_june_2012():
    d = true_dates()
    assert len(d) == 44 and d[0] == np.datetime64("2012-05-01")
    assert d[-1] == np.datetime64("2012-06-29")
    assert not np.isin((d.astype(np.int64) + 3) % 7, (5, 6)).any()


# --- the catalogue: one module per dataset, registered on import --------------------------------
def test_dataset_modules_do_not_import_the_registry():
    """The registry imports every dataset module, so a dataset module that imported the registry
    would close an import cycle (benchmark.data.datasets finds its modules at run time, which
    tests/test_import_graph.py cannot see): they import benchmark.data.catalogue instead."""
    import ast

    import benchmark.data.datasets as pkg

    offenders = []
    for path in sorted(Path(pkg.__path__[0]).glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [f"{node.module or ''}.{a.name}" for a in node.names]
                     if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.name}: {n}" for n in names if "registry" in n.split(".")]
    assert offenders == []


def test_every_module_in_the_package_registers_a_dataset():
    import benchmark.data.datasets as pkg

    registered_by = {s.loader.__module__ for s in list_datasets()}
    modules = {f"{pkg.__name__}.{p.stem}" for p in Path(pkg.__path__[0]).glob("[!_]*.py")}
    assert modules <= registered_by


def test_register_dataset_refuses_a_taken_id(monkeypatch):
    from benchmark.data.catalogue import register_dataset

    monkeypatch.setattr(catalogue, "REGISTERED", dict(catalogue.REGISTERED))
    spec = get_dataset_spec("synthetic")
    with pytest.raises(ValueError, match="'synthetic' is already registered .*datasets.synthetic"):
        register_dataset(dataclasses.replace(spec, loader=_tiny_loader))
    # the module that registered an id may register it again (a re-import replaces its entry)
    again = dataclasses.replace(spec, description="reloaded")
    assert register_dataset(again) is again and get_dataset_spec("synthetic") is again

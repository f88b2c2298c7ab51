"""Bring-your-own dataset: a directory with ``manifest.json`` plus ``.npy``/``.npz``/``.csv``
files.

The format is documented in ``docs/custom_data.md``. :func:`load_custom` validates everything and
raises :class:`DataError` naming the offending file and the problem; :func:`write_custom` exports
any :class:`STData` in this format; :func:`content_hash` is the sha256 over the manifest and
every file it names (part of a run's identity, so editing the data changes the run id).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..atomic import atomic_file, atomic_write_json, atomic_write_text
from .files import sha256_file
from .stdata import DataError, STData

MANIFEST = "manifest.json"
REQUIRED_KEYS = ("name", "channels")
OPTIONAL_KEYS = ("steps_per_day", "start", "freq_minutes", "timestamps_file", "values_file",
                 "adjacency_file", "nodes_file", "null_value", "description", "license",
                 "citation", "values_member")
FILE_KEYS = ("values_file", "timestamps_file", "adjacency_file", "nodes_file")
DEFAULT_VALUES_FILE = "values.npy"
_NAMES_SHOWN = 5  # member names listed in an error before "..."


def _read_manifest(root: Path) -> dict:
    mpath = root / MANIFEST
    if not root.is_dir():
        raise DataError(f"{root}: custom dataset directory not found")
    if not mpath.is_file():
        raise DataError(f"{mpath}: file not found (a custom dataset needs a {MANIFEST})")
    try:
        m = json.loads(mpath.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{mpath}: invalid JSON: {e}") from e
    if not isinstance(m, dict):
        raise DataError(f"{mpath}: must hold a JSON object, got {type(m).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in m]
    if missing:
        raise DataError(f"{mpath}: missing required keys {missing}")
    unknown = sorted(set(m) - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS))
    if unknown:
        raise DataError(f"{mpath}: unknown keys {unknown} "
                        f"(allowed: {list(REQUIRED_KEYS + OPTIONAL_KEYS)})")
    if not isinstance(m["name"], str) or not m["name"]:
        raise DataError(f"{mpath}: 'name' must be a non-empty string")
    ch = m["channels"]
    if not isinstance(ch, list) or not ch or not all(isinstance(c, str) for c in ch):
        raise DataError(f"{mpath}: 'channels' must be a non-empty list of strings")
    if len(set(ch)) != len(ch):
        raise DataError(f"{mpath}: 'channels' has duplicate names {ch}")
    has_freq, has_ts = "freq_minutes" in m, "timestamps_file" in m
    if has_freq == has_ts:
        raise DataError(f"{mpath}: give exactly one of 'freq_minutes' (with 'start') or "
                        "'timestamps_file'")
    if has_freq:
        f = m["freq_minutes"]
        if isinstance(f, bool) or not isinstance(f, int | float) or not f > 0:
            raise DataError(f"{mpath}: 'freq_minutes' must be a positive number, got {f!r}")
        if "start" not in m:
            raise DataError(f"{mpath}: 'freq_minutes' needs a 'start' time (ISO 8601)")
    nv = m.get("null_value")
    if nv is not None and (isinstance(nv, bool) or not isinstance(nv, int | float)
                           or not math.isfinite(nv)):
        raise DataError(f"{mpath}: 'null_value' must be a finite number or null, got {nv!r}")
    spd = m.get("steps_per_day")
    if spd is not None and (isinstance(spd, bool) or not isinstance(spd, int) or spd < 1):
        raise DataError(f"{mpath}: 'steps_per_day' must be a positive integer, got {spd!r}")
    for key in FILE_KEYS + ("values_member",):
        if key in m and (not isinstance(m[key], str) or not m[key]):
            what = "an .npz member name" if key == "values_member" else "a file name"
            raise DataError(f"{mpath}: {key!r} must be {what} (string)")
    for key in FILE_KEYS:
        if key in m:
            _inside(root, m[key], key)
    return m


def _inside(root: Path, name: str, key: str) -> Path:
    """``root / name``, refusing names that leave the dataset directory: absolute paths, ``..``
    components, and symlinks (of the file or of a folder on its way) that resolve outside."""
    mpath = root / MANIFEST
    remedy = (f"name a file inside {root} by a relative path (copy the file into the dataset "
              "directory)")
    pure = Path(name)
    if pure.is_absolute() or pure.drive or name.startswith(("/", "\\")):
        raise DataError(f"{mpath}: {key!r} = {name!r} is an absolute path; {remedy}")
    if ".." in pure.parts or ".." in name.replace("\\", "/").split("/"):
        raise DataError(f"{mpath}: {key!r} = {name!r} leaves the dataset directory ('..'); "
                        f"{remedy}")
    p = root / pure
    try:
        inside = p.resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError) as e:  # symlink loops
        raise DataError(f"{mpath}: {key!r} = {name!r} cannot be resolved ({e}); {remedy}") from e
    if not inside:
        raise DataError(f"{mpath}: {key!r} = {name!r} resolves outside the dataset directory "
                        f"(a symlink to {p.resolve()}); {remedy}")
    return p


def _file(root: Path, name: str, key: str) -> Path:
    p = _inside(root, name, key)
    if not p.is_file():
        raise DataError(f"{p}: file not found (named by {key!r} in {root / MANIFEST})")
    return p


def _named_files(root: Path, m: dict) -> dict[str, Path]:
    """Manifest key -> path of every file the manifest names (values_file with its default)."""
    names = {k: m[k] for k in FILE_KEYS if m.get(k)}
    names.setdefault("values_file", DEFAULT_VALUES_FILE)
    return {k: _file(root, names[k], k) for k in FILE_KEYS if k in names}


def content_hash(path: str | os.PathLike) -> str:
    """sha256 (hex) over the manifest's bytes and every file it names, each file's digest
    labelled by its manifest key and name. File digests are cached in-process by (path, size,
    mtime_ns), so asking again for an unchanged dataset costs a few ``stat`` calls."""
    root = Path(path)
    m = _read_manifest(root)
    files = _named_files(root, m)
    blob = {"manifest": sha256_file(root / MANIFEST),
            "files": {k: [m.get(k, DEFAULT_VALUES_FILE), sha256_file(p)]
                      for k, p in files.items()}}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()


def _names_excerpt(names: list[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:_NAMES_SHOWN])
    more = f", ... ({len(names) - _NAMES_SHOWN} more)" if len(names) > _NAMES_SHOWN else ""
    return f"{len(names)} members: {shown}{more}"


def _load_array(path: Path, key: str, member: str | None = None) -> np.ndarray:
    """An array from ``.npy``, or from ``.npz`` (its only member, or ``member``), never
    unpickling. ``key`` is the manifest key naming the file (for messages)."""
    try:
        obj = np.load(path, allow_pickle=False)
    except Exception as e:
        raise DataError(f"{path}: cannot read as .npy/.npz without pickles: {e}") from e
    if isinstance(obj, np.ndarray):
        if member is not None:
            raise DataError(f"{path}: 'values_member' is set but the file is a single .npy "
                            "array; remove 'values_member' from the manifest")
        return obj
    with obj:  # NpzFile
        names = [n for n in obj.files]
        if not names:
            raise DataError(f"{path}: the .npz archive holds no arrays")
        if member is None:
            if len(names) != 1:
                hint = ("set 'values_member' in the manifest to the member to use"
                        if key == "values_file" else "save a single array in it")
                raise DataError(f"{path}: .npz with {_names_excerpt(names)}; {hint}")
            member = names[0]
        elif member not in names:
            raise DataError(f"{path}: no member {member!r} ('values_member') in the .npz "
                            f"({_names_excerpt(names)})")
        try:
            return obj[member]
        except Exception as e:
            raise DataError(f"{path}: cannot read member {member!r} without pickles: "
                            f"{str(e)[:200]}") from e


def _load_npy(path: Path) -> np.ndarray:
    return _load_array(path, "timestamps_file")


def _values(path: Path, channels: list[str], null_value: float | None,
            member: str | None = None) -> np.ndarray:
    v = _load_array(path, "values_file", member)
    if v.ndim != 3:
        raise DataError(f"{path}: values must have rank 3 [T, N, C], got shape {v.shape}")
    if v.dtype.kind not in "iuf":
        raise DataError(f"{path}: values must be numeric, got dtype {v.dtype}")
    if v.shape[2] != len(channels):
        raise DataError(f"{path}: {v.shape[2]} channels but the manifest names "
                        f"{len(channels)}: {channels}")
    if min(v.shape) == 0:
        raise DataError(f"{path}: values are empty, shape {v.shape}")
    v = v.astype(np.float32)
    if np.isinf(v).any():
        raise DataError(f"{path}: values contain {int(np.isinf(v).sum())} inf entries")
    nan = np.isnan(v)
    if nan.any():
        if null_value is None:
            raise DataError(f"{path}: values contain {int(nan.sum())} NaN entries and "
                            f"{MANIFEST} declares no 'null_value'")
        v[nan] = np.float32(null_value)
    return v


def _timestamps(root: Path, m: dict, num_steps: int) -> np.ndarray:
    if "freq_minutes" in m:
        mpath = root / MANIFEST
        try:
            start = np.datetime64(pd.Timestamp(m["start"]).tz_localize(None), "ns")
        except Exception as e:
            raise DataError(f"{mpath}: 'start' is not an ISO 8601 time: {m['start']!r}") from e
        step_s = float(m["freq_minutes"]) * 60
        if step_s != int(step_s):
            raise DataError(f"{mpath}: 'freq_minutes' must be a whole number of seconds")
        return start + np.arange(num_steps, dtype=np.int64) * np.timedelta64(int(step_s), "s")
    path = _file(root, m["timestamps_file"], "timestamps_file")
    if path.suffix in (".npy", ".npz"):
        t = _load_npy(path)
        if not np.issubdtype(t.dtype, np.datetime64):
            raise DataError(f"{path}: timestamps .npy must have a datetime64 dtype, got {t.dtype}")
        t = t.astype("datetime64[ns]")
    else:
        try:
            lines = [s.strip() for s in path.read_text(encoding="utf-8").splitlines()]
            t = pd.to_datetime([s for s in lines if s], format="ISO8601").to_numpy(
                "datetime64[ns]")
        except Exception as e:
            raise DataError(f"{path}: cannot parse timestamps (one ISO 8601 time per line): "
                            f"{e}") from e
    if t.ndim != 1 or len(t) != num_steps:
        raise DataError(f"{path}: {t.shape} timestamps for {num_steps} steps of values")
    if num_steps > 1:
        d = np.diff(t.astype(np.int64))
        if (d <= 0).any():
            i = int(np.argmax(d <= 0)) + 1
            raise DataError(f"{path}: timestamps are not strictly increasing at row {i} "
                            f"({t[i - 1]} then {t[i]})")
        # one step, or one step plus whole skipped days (STData's rule; e.g. weekdays only)
        step = d.min()
        bad = (d - step) % (86400 * 10**9) != 0
        if bad.any():
            i = int(np.argmax(bad)) + 1
            raise DataError(f"{path}: timestamps are irregular at row {i}: step "
                            f"{d[i - 1] / 1e9:g} s, expected {step / 1e9:g} s (or that plus "
                            "whole skipped days)")
    return t


def _steps_per_day(root: Path, m: dict, t: np.ndarray) -> int:
    mpath = root / MANIFEST
    if len(t) < 2:
        if "steps_per_day" not in m:
            raise DataError(f"{mpath}: one time step: give 'steps_per_day'")
        return int(m["steps_per_day"])
    step_s = int(np.diff(t).min() / np.timedelta64(1, "s"))  # skipped days are longer steps
    if step_s <= 0 or 86400 % step_s:
        raise DataError(f"{mpath}: a time step of {step_s} s does not divide a day")
    derived = 86400 // step_s
    given = m.get("steps_per_day")
    if given is not None and given != derived:
        raise DataError(f"{mpath}: 'steps_per_day'={given} disagrees with the time step of "
                        f"{step_s} s ({derived} steps per day)")
    return derived


def _adjacency(path: Path, n: int) -> np.ndarray:
    if path.suffix in (".npy", ".npz"):
        a = _load_array(path, "adjacency_file")
    else:
        try:
            a = pd.read_csv(path, header=None).to_numpy()
        except Exception as e:
            raise DataError(f"{path}: cannot read adjacency csv: {e}") from e
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise DataError(f"{path}: adjacency must be a square [N, N] matrix, got shape {a.shape}")
    if a.shape[0] != n:
        raise DataError(f"{path}: adjacency is {a.shape} but values have {n} nodes")
    if a.dtype.kind not in "iufb":
        raise DataError(f"{path}: adjacency must be numeric, got dtype {a.dtype}")
    a = a.astype(np.float32)
    if not np.isfinite(a).all():
        raise DataError(f"{path}: adjacency contains NaN/inf")
    return a


def _nodes(path: Path | None, n: int) -> pd.DataFrame:
    if path is None:
        return pd.DataFrame({"name": [f"node {i}" for i in range(n)]})
    try:
        df = pd.read_csv(path)
    except Exception as e:
        raise DataError(f"{path}: cannot read node table csv: {e}") from e
    if len(df) != n:
        raise DataError(f"{path}: node table has {len(df)} rows but values have {n} nodes")
    if "name" not in df.columns:
        df.insert(0, "name", [f"node {i}" for i in range(n)])
    df["name"] = df["name"].astype(str)
    return df.reset_index(drop=True)


def load_custom(path: str | os.PathLike) -> STData:
    """Load and validate a custom dataset directory (see docs/custom_data.md).

    Returns:
        STData with values float32 ``[T, N, C]``; ``extra`` holds the manifest and, when declared,
        ``null_value`` (NaNs in the values were replaced by it).
    """
    root = Path(path)
    m = _read_manifest(root)
    null_value = m.get("null_value")
    vpath = _file(root, m.get("values_file", DEFAULT_VALUES_FILE), "values_file")
    values = _values(vpath, m["channels"], null_value, m.get("values_member"))
    t, n = values.shape[0], values.shape[1]
    timestamps = _timestamps(root, m, t)
    spd = _steps_per_day(root, m, timestamps)
    adj = None
    if m.get("adjacency_file"):
        adj = _adjacency(_file(root, m["adjacency_file"], "adjacency_file"), n)
    nodes_path = _file(root, m["nodes_file"], "nodes_file") if m.get("nodes_file") else None
    nodes = _nodes(nodes_path, n)
    kind = f"custom ({m['adjacency_file']})" if adj is not None else "none"
    return STData(name=m["name"], values=values, timestamps=timestamps, adjacency=adj,
                  nodes=nodes, channels=list(m["channels"]), steps_per_day=spd,
                  source=str(root),
                  extra={"manifest": m, "null_value": null_value, "adjacency_kind": kind})


def _save_npy(path: Path, array: np.ndarray) -> None:
    """``np.save`` through :func:`~benchmark.atomic.atomic_file` (an open file, so no ``.npy``
    is appended to the temporary name)."""
    with atomic_file(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


def write_custom(data: STData, path: str | os.PathLike, null_value: float | None = None,
                 overwrite: bool = False) -> Path:
    """Export ``data`` as a custom dataset directory; each file is written atomically and the
    manifest last. Refuses to replace an existing manifest unless ``overwrite``."""
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    if (root / MANIFEST).exists() and not overwrite:
        raise DataError(f"{root / MANIFEST}: exists; pass overwrite=True to replace it")
    ts = data.timestamps.astype("datetime64[ns]")
    m: dict = {"name": data.name, "channels": list(data.channels),
               "steps_per_day": int(data.steps_per_day), "values_file": "values.npy"}
    step_s = 86400 // data.steps_per_day
    if step_s % 60 == 0 and len(ts) > 0 and data.regular:
        m["start"] = str(pd.Timestamp(ts[0]).isoformat())
        m["freq_minutes"] = step_s // 60
    else:
        m["timestamps_file"] = "timestamps.npy"
        _save_npy(root / "timestamps.npy", ts)
    _save_npy(root / "values.npy", np.ascontiguousarray(data.values, dtype=np.float32))
    if data.adjacency is not None:
        m["adjacency_file"] = "adjacency.npy"
        _save_npy(root / "adjacency.npy", data.adjacency.astype(np.float32))
    m["nodes_file"] = "nodes.csv"
    atomic_write_text(root / "nodes.csv", data.nodes.to_csv(index=False))
    if null_value is not None:
        m["null_value"] = float(null_value)
    atomic_write_json(root / MANIFEST, m, indent=2)
    return root

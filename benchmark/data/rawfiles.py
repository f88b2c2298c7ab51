"""Readers for raw dataset files that fail with one :class:`DataError` line naming the file,
and regular time axes; shared by the dataset modules (:mod:`benchmark.data.datasets`)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

from .stdata import DataError


def regular_timestamps(start: str, num_steps: int, minutes: int) -> np.ndarray:
    """``num_steps`` timestamps ``datetime64[ns]`` from ``start`` every ``minutes``."""
    t0 = np.datetime64(start, "ns")
    return t0 + np.arange(num_steps, dtype=np.int64) * np.timedelta64(minutes, "m")


def require(path: Path) -> Path:
    """``path`` if it is a file, else :class:`DataError` naming it."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    return path


def load_npz_key(source: Path | io.BytesIO, key: str, label: str | None = None) -> np.ndarray:
    """Array ``key`` of an ``.npz`` (path or bytes), without pickles."""
    name = label or str(source)
    try:
        with np.load(source, allow_pickle=False) as z:
            if key not in z.files:
                raise DataError(f"{name}: key {key!r} not found (keys: {z.files})")
            return z[key]
    except DataError:
        raise
    except Exception as e:  # zipfile.BadZipFile, ValueError, OSError ...
        raise DataError(f"{name}: cannot read npz: {e}") from e


def load_npy(source: Path | io.BytesIO, label: str | None = None) -> np.ndarray:
    """The array of an ``.npy`` (path or bytes), without pickles."""
    name = label or str(source)
    try:
        return np.load(source, allow_pickle=False)
    except Exception as e:
        raise DataError(f"{name}: cannot read npy: {e}") from e


def read_csv(path: Path, **kwargs) -> pd.DataFrame:
    """``pandas.read_csv(path, **kwargs)``; a missing or unreadable file is a DataError."""
    try:
        return pd.read_csv(require(path), **kwargs)
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"{path}: cannot read csv: {e}") from e


def square_matrix(a: np.ndarray, n: int, label: str) -> np.ndarray:
    """Check ``a`` is a finite ``[n, n]`` matrix and return it as float32."""
    if a.ndim != 2 or a.shape != (n, n):
        raise DataError(f"{label}: expected a {n}x{n} matrix, got shape {a.shape}")
    a = a.astype(np.float32)
    if not np.isfinite(a).all():
        raise DataError(f"{label}: matrix contains NaN/inf")
    return a


def check_choice(name: str, value, choices: tuple) -> None:
    """DataError unless option ``name`` has one of ``choices``."""
    if value not in choices:
        raise DataError(f"option {name}={value!r} is not one of {list(choices)}")

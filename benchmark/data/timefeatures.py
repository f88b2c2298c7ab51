"""Time-of-day and day-of-week indices from timestamps."""

from __future__ import annotations

import numpy as np


def time_of_day_index(timestamps: np.ndarray, steps_per_day: int) -> np.ndarray:
    """Slot of the day, int64 in ``[0, steps_per_day)``: seconds since midnight // step length."""
    ts = np.asarray(timestamps).astype("datetime64[s]")
    seconds = (ts - ts.astype("datetime64[D]")).astype(np.int64)
    return (seconds * steps_per_day // 86400).astype(np.int64)


def day_of_week_index(timestamps: np.ndarray) -> np.ndarray:
    """Day of the week, int64, Monday = 0 ... Sunday = 6 (1970-01-01 was a Thursday)."""
    days = np.asarray(timestamps).astype("datetime64[D]").astype(np.int64)
    return ((days + 3) % 7).astype(np.int64)

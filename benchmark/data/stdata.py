"""The in-memory dataset contract shared by every loader and model."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd


class DataError(ValueError):
    """A dataset file or array is missing, malformed or fails a check; the message names it."""


@dataclass
class STData:
    """A spatio-temporal dataset.

    Attributes:
        name: dataset id.
        values: float32 ``[T, N, C]`` observations in original units.
        timestamps: ``datetime64[ns]`` of length T, strictly increasing, the real times of the
            observations. Consecutive steps are one step length (``86400 / steps_per_day`` s)
            apart, except that the axis may skip *whole days*: a gap of one step plus k days
            (k >= 1), e.g. pems07m's missing weekends. :attr:`regular` is False then. Windows
            are built by index, so a window may span a skipped day; anything calendar-based
            (time of day, day of week, "one week earlier") must read the timestamps, never
            derive dates from a step index.
        adjacency: float32 ``[N, N]`` or None.
        nodes: node metadata, one row per node (at least a ``name`` column).
        channels: channel names, length C.
        steps_per_day: number of time steps per day (48 at 30 min, 288 at 5 min).
        source: where the arrays came from (paths), for error messages and records.
    """

    name: str
    values: np.ndarray
    timestamps: np.ndarray
    adjacency: np.ndarray | None
    nodes: pd.DataFrame
    channels: list[str]
    steps_per_day: int
    source: str = "<memory>"
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_stdata(self)

    @property
    def regular(self) -> bool:
        """True when no day is skipped: every step follows the previous by one step length."""
        return not skipped_day_gaps(self.timestamps, self.steps_per_day).any()

    @property
    def num_steps(self) -> int:
        return int(self.values.shape[0])

    @property
    def num_nodes(self) -> int:
        return int(self.values.shape[1])

    @property
    def num_channels(self) -> int:
        return int(self.values.shape[2])

    def slice_time(self, start: int, stop: int) -> STData:
        """A copy-free view of steps ``[start, stop)``."""
        return STData(
            name=self.name,
            values=self.values[start:stop],
            timestamps=self.timestamps[start:stop],
            adjacency=self.adjacency,
            nodes=self.nodes,
            channels=self.channels,
            steps_per_day=self.steps_per_day,
            source=self.source,
            extra=self.extra,
        )

    def select_channels(self, names: list[str]) -> STData:
        missing = [c for c in names if c not in self.channels]
        if missing:
            raise DataError(f"{self.source}: channels {missing} not in {self.channels}")
        idx = [self.channels.index(c) for c in names]
        return STData(
            name=self.name,
            values=np.ascontiguousarray(self.values[:, :, idx]),
            timestamps=self.timestamps,
            adjacency=self.adjacency,
            nodes=self.nodes,
            channels=list(names),
            steps_per_day=self.steps_per_day,
            source=self.source,
            extra=self.extra,
        )


def _step_seconds(timestamps: np.ndarray) -> np.ndarray:
    """Seconds between consecutive timestamps, int64 ``[T - 1]``."""
    return np.diff(np.asarray(timestamps).astype("datetime64[s]").astype(np.int64))


def skipped_day_gaps(timestamps: np.ndarray, steps_per_day: int) -> np.ndarray:
    """Whole days skipped between step i and step i + 1, int64 ``[T - 1]`` (0 where the steps
    are one step length apart). Assumes a time axis that passed :func:`validate_stdata`."""
    d = _step_seconds(timestamps)
    return (d - 86400 // steps_per_day) // 86400


def validate_stdata(data: STData, allow_nan: bool = False) -> None:
    """Check ranks, dtypes, timestamps and adjacency; raise :class:`DataError` naming the source."""
    src = data.source
    v = data.values
    if not isinstance(v, np.ndarray) or v.ndim != 3:
        shape = getattr(v, "shape", None)
        raise DataError(f"{src}: values must be a [T, N, C] array, got shape {shape}")
    if v.dtype != np.float32:
        raise DataError(f"{src}: values must be float32, got {v.dtype}")
    if not allow_nan and not np.isfinite(v).all():
        bad = int((~np.isfinite(v)).sum())
        raise DataError(f"{src}: values contain {bad} NaN/inf entries and no null value "
                        "is declared")
    t = data.timestamps
    if len(t) != v.shape[0]:
        raise DataError(f"{src}: {len(t)} timestamps for {v.shape[0]} steps")
    if not np.issubdtype(np.asarray(t).dtype, np.datetime64):
        raise DataError(f"{src}: timestamps must be datetime64, got {np.asarray(t).dtype}")
    if len(t) > 1:
        d = _step_seconds(t)
        if (d <= 0).any():
            i = int(np.argmax(d <= 0))
            raise DataError(f"{src}: timestamps are not strictly increasing at step {i + 1}")
        spd = data.steps_per_day
        step = 86400 // spd if spd >= 1 and 86400 % spd == 0 else None
        if step is None or ((d == d[0]).all() and d[0] != step):
            raise DataError(f"{src}: step of {d[0]} s does not give steps_per_day={spd}")
        # one step, or one step plus whole skipped days (see STData.timestamps)
        bad = (d < step) | ((d - step) % 86400 != 0)
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(f"{src}: timestamps are irregular at step {i + 1} "
                            f"(step {d[i]} s, expected {step} s, or that plus whole skipped "
                            f"days)")
    a = data.adjacency
    if a is not None:
        if a.ndim != 2 or a.shape[0] != a.shape[1]:
            raise DataError(f"{src}: adjacency must be square [N, N], got {a.shape}")
        if a.shape[0] != v.shape[1]:
            raise DataError(f"{src}: adjacency is {a.shape} but values have {v.shape[1]} nodes")
        if not np.isfinite(a).all():
            raise DataError(f"{src}: adjacency contains NaN/inf")
    if len(data.channels) != v.shape[2]:
        raise DataError(f"{src}: {len(data.channels)} channel names for {v.shape[2]} channels")
    if len(data.nodes) != v.shape[1]:
        raise DataError(f"{src}: node table has {len(data.nodes)} rows for {v.shape[1]} nodes")

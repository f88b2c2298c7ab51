"""Chronological splits of window start indices and the training-data fraction."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .protocol import Protocol


@dataclass(frozen=True)
class SplitStarts:
    """Window start indices per split (into the cropped series)."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    boundaries: tuple[int, int, int]  # end step (exclusive) of train, val, test segments


def segment_boundaries(num_steps: int, protocol: Protocol) -> tuple[int, int, int]:
    """End steps of the train, val and test segments of a series of ``num_steps`` steps."""
    if protocol.split_steps is not None:
        a, b, c = protocol.split_steps
        if a + b + c > num_steps:
            raise ValueError(f"split_steps {protocol.split_steps} exceed the {num_steps} steps")
        return a, a + b, a + b + c
    r_train, r_val, _ = protocol.split_ratios
    a = int(round(num_steps * r_train))
    b = int(round(num_steps * (r_train + r_val)))
    return a, b, num_steps


def split_window_starts(num_steps: int, protocol: Protocol) -> SplitStarts:
    """Assign each window to the split whose segment holds *all* of its target steps.

    A window starting at ``s`` reads inputs ``[s, s+T_in)`` and targets ``[s+T_in, s+T_in+T_out)``.
    Inputs may reach back into the previous segment (observable history); targets never cross a
    boundary, so no target step is both trained on and evaluated.
    """
    t_in, t_out = protocol.input_len, protocol.horizon
    bounds = segment_boundaries(num_steps, protocol)
    starts = np.arange(0, num_steps - t_in - t_out + 1, dtype=np.int64)
    first_target = starts + t_in
    last_target = starts + t_in + t_out - 1
    lo = 0
    out = []
    for hi in bounds:
        sel = (first_target >= lo) & (last_target < hi)
        out.append(starts[sel])
        lo = hi
    if any(len(s) == 0 for s in out):
        raise ValueError(f"a split has no windows: {num_steps} steps, boundaries {bounds}, "
                         f"T_in={t_in}, T_out={t_out}")
    return SplitStarts(out[0], out[1], out[2], bounds)


def training_subset(train_starts: np.ndarray, protocol: Protocol) -> np.ndarray:
    """The training windows a model may see under ``protocol.train_fraction``.

    recent: the most recent contiguous ``ceil(fraction * n)`` windows;
    random: a seeded random subset of that size, sorted.
    """
    n = len(train_starts)
    k = max(1, int(np.ceil(protocol.train_fraction * n)))
    if protocol.fraction_mode == "recent":
        return train_starts[n - k:]
    rng = np.random.default_rng(protocol.fraction_seed)
    return np.sort(rng.choice(train_starts, size=k, replace=False))


def covered_steps(starts: np.ndarray, length: int, num_steps: int) -> np.ndarray:
    """Boolean ``[num_steps]`` mask of the steps covered by windows ``[s, s+length)``."""
    mask = np.zeros(num_steps + 1, dtype=np.int64)
    np.add.at(mask, starts, 1)
    np.add.at(mask, np.minimum(starts + length, num_steps), -1)
    return np.cumsum(mask)[:num_steps] > 0

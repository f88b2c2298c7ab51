"""Zero-copy sliding windows and the loaders that turn them into :class:`Batch` es.

:class:`PreparedData` holds a dataset cut by a protocol: the scaled series once, the split
window starts, the scaler and time indices. Each window is gathered at batch time from the
series (no array of all windows is materialised).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol as TypingProtocol

import numpy as np
import torch

from ..batch import Batch
from .protocol import Protocol
from .scaler import Scaler
from .splits import SplitStarts, covered_steps, split_window_starts, training_subset
from .stdata import DataError, STData
from .timefeatures import day_of_week_index, time_of_day_index


class TeacherLabels(TypingProtocol):
    """Anything that returns teacher predictions for window starts (see SoftLabelStore)."""

    def gather(self, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return (labels ``[B, T_out, N, C_out]`` original units, mask ``[B]`` bool)."""
        ...


@dataclass
class PreparedData:
    """A dataset under a protocol, ready to batch.

    Attributes:
        data: the cropped, channel-selected :class:`STData` (original units).
        protocol: the protocol used.
        scaler: fitted on the steps covered by the training windows the model may see.
        scaled: float32 tensor ``[T, N, C]`` of scaled inputs.
        raw_targets: float32 tensor ``[T, N, C_out]`` of original-unit targets.
        tod, dow: int64 tensors ``[T]``.
        splits: all window starts per split; ``train_starts`` is the visible training subset.
        target_channel_idx: indices of target channels within the input channels.
    """

    data: STData
    protocol: Protocol
    scaler: Scaler
    scaled: torch.Tensor
    raw_targets: torch.Tensor
    tod: torch.Tensor
    dow: torch.Tensor
    splits: SplitStarts
    train_starts: np.ndarray
    target_channel_idx: list[int]
    dataset_id: str

    @property
    def num_nodes(self) -> int:
        return self.data.num_nodes

    @property
    def in_channels(self) -> int:
        return self.data.num_channels

    @property
    def out_channels(self) -> int:
        return len(self.target_channel_idx)

    def starts(self, split: str) -> np.ndarray:
        if split == "train":
            return self.train_starts
        if split in ("val", "test"):
            return getattr(self.splits, split)
        if split == "train_all":
            return self.splits.train
        raise ValueError(f"unknown split {split!r}")

    def make_batch(self, starts: np.ndarray, teacher: TeacherLabels | None = None) -> Batch:
        """Gather the windows beginning at ``starts`` (any order) into a :class:`Batch`."""
        t_in, t_out = self.protocol.input_len, self.protocol.horizon
        s = torch.as_tensor(np.asarray(starts, dtype=np.int64))
        ix = s[:, None] + torch.arange(t_in)[None, :]
        iy = s[:, None] + t_in + torch.arange(t_out)[None, :]
        batch = Batch(
            x=self.scaled[ix],
            y=self.raw_targets[iy],
            x_tod=self.tod[ix], x_dow=self.dow[ix],
            y_tod=self.tod[iy], y_dow=self.dow[iy],
            start=s,
        )
        if teacher is not None:
            labels, mask = teacher.gather(np.asarray(starts, dtype=np.int64))
            batch.teacher = torch.as_tensor(labels, dtype=torch.float32)
            batch.teacher_mask = torch.as_tensor(mask, dtype=torch.bool)
        return batch

    def batches(self, split: str, batch_size: int, shuffle: bool = False,
                generator: np.random.Generator | None = None,
                teacher: TeacherLabels | None = None) -> Iterator[Batch]:
        """Iterate over a split. Never drops the last partial batch. Shuffling permutes window
        starts, and teacher labels are looked up by start, so they stay paired."""
        starts = self.starts(split)
        if shuffle:
            rng = generator if generator is not None else np.random.default_rng()
            starts = starts[rng.permutation(len(starts))]
        for i in range(0, len(starts), batch_size):
            yield self.make_batch(starts[i:i + batch_size], teacher)

    def num_batches(self, split: str, batch_size: int) -> int:
        return -(-len(self.starts(split)) // batch_size)

    def inverse_targets(self, y_scaled: torch.Tensor) -> torch.Tensor:
        """Map a model's scaled output ``[..., C_out]`` back to original units."""
        return self.scaler.inverse(y_scaled, self.target_channel_idx)

    def scale_targets(self, y: torch.Tensor) -> torch.Tensor:
        return self.scaler.forward(y, self.target_channel_idx)


def prepare(data: STData, protocol: Protocol, dataset_id: str | None = None) -> PreparedData:
    """Crop, select channels, split, fit the scaler on the visible training steps, scale."""
    if protocol.time_range is not None:
        a, b = protocol.time_range
        if not 0 <= a < b <= data.num_steps:
            raise DataError(f"{data.source}: time_range {protocol.time_range} outside "
                            f"0..{data.num_steps}")
        data = data.slice_time(a, b)
    if protocol.channels is not None:
        data = data.select_channels(list(protocol.channels))
    targets = list(protocol.target_channels) if protocol.target_channels else list(data.channels)
    missing = [c for c in targets if c not in data.channels]
    if missing:
        raise DataError(f"{data.source}: target channels {missing} not among {data.channels}")
    target_idx = [data.channels.index(c) for c in targets]

    splits = split_window_starts(data.num_steps, protocol)
    train_starts = training_subset(splits.train, protocol)
    window_len = protocol.input_len + protocol.horizon
    visible = covered_steps(train_starts, window_len, data.num_steps)
    scaler = Scaler.fit(data.values, protocol.scaler, protocol.null_value, visible)
    scaled = scaler.transform(data.values)
    return PreparedData(
        data=data,
        protocol=protocol,
        scaler=scaler,
        scaled=torch.from_numpy(scaled),
        raw_targets=torch.from_numpy(np.ascontiguousarray(data.values[:, :, target_idx])),
        tod=torch.from_numpy(time_of_day_index(data.timestamps, data.steps_per_day)),
        dow=torch.from_numpy(day_of_week_index(data.timestamps)),
        splits=splits,
        train_starts=train_starts,
        target_channel_idx=target_idx,
        dataset_id=dataset_id or data.name,
    )

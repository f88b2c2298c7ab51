"""Zero-copy sliding windows and the loaders that turn them into :class:`Batch` es.

:class:`PreparedData` holds a dataset cut by a protocol: the scaled series once, the split
window starts, the scaler and time indices. Each window is gathered at batch time from the
series (no array of all windows is materialised).

:class:`DeviceWindows` is the same series resident on the training device (uploaded once per
device and kept by the :class:`PreparedData`): batches are gathered there from an index tensor,
so a training or evaluation step makes no host round trip. On the CPU it shares the
:class:`PreparedData` tensors (no copy) and gathers exactly what :meth:`PreparedData.make_batch`
gathers.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
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
    _on_device: dict = field(default_factory=dict, init=False, repr=False, compare=False)

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

    def on_device(self, device: torch.device | str) -> DeviceWindows:
        """The series, time indices and split starts on ``device`` (uploaded on the first call
        for that device, then kept)."""
        device = torch.device(device)
        key = str(device)
        if key not in self._on_device:
            self._on_device[key] = DeviceWindows.upload(self, device)
        return self._on_device[key]

    def num_batches(self, split: str, batch_size: int) -> int:
        return -(-len(self.starts(split)) // batch_size)

    def inverse_targets(self, y_scaled: torch.Tensor) -> torch.Tensor:
        """Map a model's scaled output ``[..., C_out]`` back to original units."""
        return self.scaler.inverse(y_scaled, self.target_channel_idx)

    def scale_targets(self, y: torch.Tensor) -> torch.Tensor:
        return self.scaler.forward(y, self.target_channel_idx)


@dataclass
class DeviceLabels:
    """Teacher labels of one split's windows, on the training device, in the order of
    :meth:`PreparedData.starts` (looked up once by window start, so they stay paired with their
    windows under any later permutation of positions).

    Attributes:
        labels: float32 ``[W, T_out, N, C_out]`` original units (zeros where unlabelled).
        mask: bool ``[W]``, True where the window has a label.
    """

    labels: torch.Tensor
    mask: torch.Tensor


class DeviceWindows:
    """A :class:`PreparedData` resident on one device; batches are gathered there by index.

    Build with :meth:`PreparedData.on_device`. ``batch(positions)`` takes positions into a
    split's window starts (an int64 tensor on the device, e.g. a slice of a permutation) and
    gathers ``x``, ``y``, the time indices and (given :class:`DeviceLabels` of that split) the
    teacher labels, without leaving the device.
    """

    def __init__(self, prepared: PreparedData, device: torch.device, scaled: torch.Tensor,
                 raw_targets: torch.Tensor, tod: torch.Tensor, dow: torch.Tensor) -> None:
        self.prepared, self.device = prepared, device
        self.scaled, self.raw_targets, self.tod, self.dow = scaled, raw_targets, tod, dow
        t_in, t_out = prepared.protocol.input_len, prepared.protocol.horizon
        self.x_offsets = torch.arange(t_in, device=device)[None, :]  # [1, T_in]
        self.y_offsets = torch.arange(t_in, t_in + t_out, device=device)[None, :]  # [1, T_out]
        self._starts: dict[str, torch.Tensor] = {}

    @classmethod
    def upload(cls, prepared: PreparedData, device: torch.device) -> DeviceWindows:
        """Copy the series and indices of ``prepared`` to ``device`` (no copy on the CPU)."""
        def put(t: torch.Tensor) -> torch.Tensor:
            return t.to(device)
        return cls(prepared, device, put(prepared.scaled), put(prepared.raw_targets),
                   put(prepared.tod), put(prepared.dow))

    def starts(self, split: str) -> torch.Tensor:
        """``PreparedData.starts(split)`` as an int64 tensor on the device (kept)."""
        if split not in self._starts:
            host = np.asarray(self.prepared.starts(split), dtype=np.int64)
            self._starts[split] = torch.from_numpy(host).to(self.device)
        return self._starts[split]

    def labels(self, split: str, teacher: TeacherLabels) -> DeviceLabels:
        """The teacher's labels for every window of ``split``, on the device."""
        labels, mask = teacher.gather(np.asarray(self.prepared.starts(split), dtype=np.int64))
        return DeviceLabels(torch.as_tensor(labels, dtype=torch.float32).to(self.device),
                            torch.as_tensor(mask, dtype=torch.bool).to(self.device))

    def batch(self, split: str, positions: torch.Tensor | slice,
              labels: DeviceLabels | None = None) -> Batch:
        """The windows at ``positions`` (an int64 tensor on the device, or a slice) of
        ``split``'s starts, as a :class:`Batch` on the device."""
        s = self.starts(split)[positions]
        ix = s[:, None] + self.x_offsets
        iy = s[:, None] + self.y_offsets
        batch = Batch(x=self.scaled[ix], y=self.raw_targets[iy],
                      x_tod=self.tod[ix], x_dow=self.dow[ix],
                      y_tod=self.tod[iy], y_dow=self.dow[iy], start=s)
        if labels is not None:
            batch.teacher = labels.labels[positions]
            batch.teacher_mask = labels.mask[positions]
        return batch

    def batches(self, split: str, batch_size: int, order: torch.Tensor | None = None,
                labels: DeviceLabels | None = None) -> Iterator[Batch]:
        """The split in batches of ``batch_size`` (the last one partial, never dropped), in
        window order or in the order of ``order`` (a permutation of positions, on the
        device)."""
        n = len(self.prepared.starts(split))
        for i in range(0, n, batch_size):
            sl = slice(i, min(i + batch_size, n))
            yield self.batch(split, sl if order is None else order[sl], labels)


def check_time_indices(tod: np.ndarray, dow: np.ndarray, steps_per_day: int,
                       source: str) -> None:
    """Refuse time-of-day indices outside ``[0, steps_per_day)`` and day-of-week indices outside
    ``[0, 7)`` once, here, so that the models' embedding look-ups need no check per batch."""
    if tod.size and (tod.min() < 0 or tod.max() >= steps_per_day):
        raise DataError(f"{source}: time-of-day index outside [0, {steps_per_day}) "
                        f"({tod.min()}..{tod.max()}); does steps_per_day match the timestamps?")
    if dow.size and (dow.min() < 0 or dow.max() >= 7):
        raise DataError(f"{source}: day-of-week index outside [0, 7) ({dow.min()}..{dow.max()})")


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
    tod = time_of_day_index(data.timestamps, data.steps_per_day)
    dow = day_of_week_index(data.timestamps)
    check_time_indices(tod, dow, data.steps_per_day, str(data.source))
    return PreparedData(
        data=data,
        protocol=protocol,
        scaler=scaler,
        scaled=torch.from_numpy(scaled),
        raw_targets=torch.from_numpy(np.ascontiguousarray(data.values[:, :, target_idx])),
        tod=torch.from_numpy(tod),
        dow=torch.from_numpy(dow),
        splits=splits,
        train_starts=train_starts,
        target_channel_idx=target_idx,
        dataset_id=dataset_id or data.name,
    )

"""The batch that every model and objective receives."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch


@dataclass
class Batch:
    """One mini-batch of forecasting windows.

    Attributes:
        x: ``[B, T_in, N, C]`` scaled inputs.
        y: ``[B, T_out, N, C_out]`` targets in original units.
        x_tod, x_dow: ``[B, T_in]`` int64 time-of-day slot and day-of-week (Mon=0) of inputs.
        y_tod, y_dow: ``[B, T_out]`` the same for the forecast steps.
        start: ``[B]`` int64 absolute start index of each window in the (cropped) series;
            the window covers ``[start, start + T_in + T_out)``.
        teacher: ``[B, T_out, N, C_out]`` teacher prediction for the same windows, original
            units, or None when not distilling.
        teacher_mask: ``[B]`` bool, True where ``teacher`` holds a label for that window.
    """

    x: torch.Tensor
    y: torch.Tensor
    x_tod: torch.Tensor
    x_dow: torch.Tensor
    y_tod: torch.Tensor
    y_dow: torch.Tensor
    start: torch.Tensor
    teacher: torch.Tensor | None = None
    teacher_mask: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> Batch:
        changes = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, torch.Tensor):
                changes[f.name] = v.to(device, non_blocking=True)
        return replace(self, **changes)

    @property
    def size(self) -> int:
        return int(self.x.shape[0])

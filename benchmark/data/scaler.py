"""Per-channel scalers fitted only on the observations a model may see."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class Scaler:
    """``scaled = (x - shift) / scale`` per channel. Shapes: ``shift, scale: [C]``.

    standard: shift = mean, scale = std (z-score); minmax: shift = min, scale = max - min;
    none: identity. Null observations are excluded from the statistics.
    """

    kind: str
    shift: np.ndarray
    scale: np.ndarray
    # (device, dtype, channels) -> (shift, scale) tensors: one upload per device, not one per
    # call (a host-to-device copy from pageable memory waits for the device's queue)
    _tensors: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    @classmethod
    def fit(cls, values: np.ndarray, kind: str = "standard", null_value: float | None = None,
            step_mask: np.ndarray | None = None) -> Scaler:
        """Fit on ``values [T, N, C]``, using only steps where ``step_mask [T]`` is True."""
        v = values if step_mask is None else values[step_mask]
        c = v.shape[-1]
        if kind == "none":
            return cls(kind, np.zeros(c, np.float32), np.ones(c, np.float32))
        flat = v.reshape(-1, c).astype(np.float64)
        shift = np.zeros(c)
        scale = np.ones(c)
        for j in range(c):
            col = flat[:, j]
            if null_value is not None:
                col = col[col != null_value]
            if col.size == 0:
                continue
            if kind == "standard":
                shift[j], scale[j] = col.mean(), col.std()
            elif kind == "minmax":
                shift[j], scale[j] = col.min(), col.max() - col.min()
            else:
                raise ValueError(f"unknown scaler kind {kind!r}")
        scale[scale < 1e-8] = 1.0
        return cls(kind, shift.astype(np.float32), scale.astype(np.float32))

    def transform(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.shift) / self.scale).astype(np.float32)

    def _shift_scale(self, x: torch.Tensor, channels: list[int] | None,
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """``shift`` and ``scale`` (of ``channels``) as tensors of ``x``'s dtype and device."""
        key = (str(x.device), x.dtype, None if channels is None else tuple(channels))
        if key not in self._tensors:
            shift = torch.as_tensor(self.shift, dtype=x.dtype, device=x.device)
            scale = torch.as_tensor(self.scale, dtype=x.dtype, device=x.device)
            if channels is not None:
                shift, scale = shift[channels], scale[channels]
            self._tensors[key] = (shift, scale)
        return self._tensors[key]

    def inverse(self, x: torch.Tensor, channels: list[int] | None = None) -> torch.Tensor:
        """Inverse-transform a tensor whose last axis holds the given channel indices."""
        shift, scale = self._shift_scale(x, channels)
        return x * scale + shift

    def forward(self, x: torch.Tensor, channels: list[int] | None = None) -> torch.Tensor:
        shift, scale = self._shift_scale(x, channels)
        return (x - shift) / scale

    def to_dict(self) -> dict:
        return {"kind": self.kind, "shift": self.shift.tolist(), "scale": self.scale.tolist()}

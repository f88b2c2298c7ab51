"""Evaluation protocols: everything about a split that a result depends on, hashed into records."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, replace


@dataclass(frozen=True)
class Protocol:
    """How a dataset is cut into windows and splits.

    Attributes:
        input_len: steps in each input window (T_in).
        horizon: steps to forecast (T_out).
        split_ratios: chronological train/val/test ratios of the (cropped) series.
        split_steps: alternative to ratios: explicit (train, val, test) step counts.
        time_range: optional (start, stop) step indices that crop the series first.
        channels: input channels (names); None means all.
        target_channels: channels to forecast; None means the input channels.
        null_value: observations equal to this are masked in metrics and losses (None: no mask).
        mask_threshold: targets ``y <= mask_threshold`` are masked in the training loss and in
            every metric (None: no such mask). The FlowDistill release masks zero flows this
            way (``mask_value`` 0.001 in its loss, ``true > 0`` in its metrics, which agree on
            count data), and so do BasicTS and LargeST on flow data. Records also carry the
            metrics over all finite targets.
        mape_threshold: |y| must exceed this for a point to count in MAPE.
        scaler: "standard" (z-score per channel), "minmax" or "none".
        train_fraction: share of the training windows a model may see.
        fraction_mode: "recent" (the most recent contiguous windows) or "random" (seeded subset).
        fraction_seed: seed for the "random" mode.
        report_horizons: 1-based horizons reported separately (those > horizon are skipped).
    """

    input_len: int = 12
    horizon: int = 12
    split_ratios: tuple[float, float, float] = (0.6, 0.2, 0.2)
    split_steps: tuple[int, int, int] | None = None
    time_range: tuple[int, int] | None = None
    channels: tuple[str, ...] | None = None
    target_channels: tuple[str, ...] | None = None
    null_value: float | None = 0.0
    mask_threshold: float | None = None
    mape_threshold: float = 0.0
    scaler: str = "standard"
    train_fraction: float = 1.0
    fraction_mode: str = "recent"
    fraction_seed: int = 0
    report_horizons: tuple[int, ...] = (3, 6, 12)
    notes: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.input_len < 1 or self.horizon < 1:
            raise ValueError("input_len and horizon must be >= 1, "
                             f"got {self.input_len}, {self.horizon}")
        if not 0.0 < self.train_fraction <= 1.0:
            raise ValueError(f"train_fraction must be in (0, 1], got {self.train_fraction}")
        if self.fraction_mode not in ("recent", "random"):
            raise ValueError("fraction_mode must be 'recent' or 'random', "
                             f"got {self.fraction_mode!r}")
        if self.scaler not in ("standard", "minmax", "none"):
            raise ValueError(f"scaler must be standard|minmax|none, got {self.scaler!r}")
        if self.split_steps is None:
            if len(self.split_ratios) != 3 or abs(sum(self.split_ratios) - 1.0) > 1e-6:
                raise ValueError("split_ratios must be three numbers summing to 1, "
                                 f"got {self.split_ratios}")
        for name in ("null_value", "mask_threshold", "mape_threshold"):
            v = getattr(self, name)
            if v is not None and not math.isfinite(float(v)):
                raise ValueError(f"{name} must be a finite number, got {v!r}")
        if any(h < 1 for h in self.report_horizons):
            raise ValueError(f"report_horizons {self.report_horizons} must be 1-based")

    def with_(self, **changes) -> Protocol:
        return replace(self, **changes)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("notes")
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    def evaluation_dict(self) -> dict:
        """The fields that define the validation/test windows and metrics (not the training
        subset)."""
        d = self.to_dict()
        for k in ("train_fraction", "fraction_mode", "fraction_seed"):
            d.pop(k)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Protocol:
        kw = {}
        for k, v in d.items():
            if k not in cls.__dataclass_fields__:
                raise ValueError(f"unknown protocol field {k!r}")
            kw[k] = tuple(v) if isinstance(v, list) else v
        return cls(**kw)


def protocol_hash(dataset_id: str, protocol: Protocol, evaluation_only: bool = True) -> str:
    """Short stable hash of (dataset, protocol). ``evaluation_only`` ignores the training subset,
    so every training fraction of one protocol shares the test set's hash."""
    d = protocol.evaluation_dict() if evaluation_only else protocol.to_dict()
    blob = json.dumps({"dataset": dataset_id, "protocol": d}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]

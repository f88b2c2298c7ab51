"""Masked forecasting metrics accumulated as sums and counts.

For predictions ``p`` and targets ``y`` (original units) and a validity mask ``m``
(``y`` finite, ``y != null_value`` and, when the protocol sets ``mask_threshold``,
``y > mask_threshold``):

    MAE  = sum(m * |p - y|) / sum(m)
    RMSE = sqrt(sum(m * (p - y)^2) / sum(m))
    MAPE = 100 * sum(m' * |p - y| / |y|) / sum(m'),  m' = m and |y| > mape_threshold

(the masked metrics of Li et al., DCRNN, ICLR 2018, Sec. 4 / its released ``masked_mae``,
with MAPE restricted to non-tiny targets). Because sums and counts are kept per horizon and
channel, the result does not depend on the batch size or on how the test set was split into
batches. The zero mask of flow data (``mask_threshold = 0``: only ``y > 0`` counts) is the
FlowDistill release's (``lib/metrics.py``: ``mask = true > mae_thresh`` with ``mae_thresh = 0``)
and BasicTS's / LargeST's ``masked_mae`` with ``null_val = 0``. Three summaries are reported:

* ``overall``: pooled over every horizon, node and channel (BasicTS-style);
* ``mean_of_horizons``: the metric at each horizon, then the plain mean over horizons
  (LargeST-style; for RMSE the mean of per-horizon RMSEs);
* ``@h``: the metric at 1-based horizon ``h``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

METRIC_NAMES = ("mae", "rmse", "mape")
SUM_NAMES = ("abs_sum", "sq_sum", "count", "ape_sum", "ape_count")  # MetricAccumulator's sums


def validity_mask(y: torch.Tensor, null_value: float | None,
                  mask_threshold: float | None = None) -> torch.Tensor:
    """True where ``y`` is finite, (when a null value is declared) not equal to it, and (when a
    mask threshold is declared) above it."""
    mask = torch.isfinite(y)
    if null_value is not None:
        mask &= (y - float(null_value)).abs() > 1e-6
    if mask_threshold is not None:
        mask &= y > float(mask_threshold)
    return mask


def _aligned(pred: torch.Tensor, true: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both detached, on ``pred``'s device and contiguous (a model's permuted output would make
    every reduction below stride through memory)."""
    return pred.detach().contiguous(), true.detach().to(pred.device).contiguous()


def _errors(pred: torch.Tensor, true: torch.Tensor, mape_threshold: float,
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``|p - y|``, ``|p - y| / max(|y|, 1e-12)`` and ``|y| > mape_threshold``: the element-wise
    work every view of the metrics shares (masks only select from it)."""
    diff_abs = (pred - true).abs_()
    true_abs = true.abs()
    mape_ok = true_abs > mape_threshold
    return diff_abs, diff_abs / true_abs.clamp_min_(1e-12), mape_ok


class _SumView:
    """One of :class:`MetricAccumulator`'s sums as a float64 numpy array ``[T_out, C_out]``
    (a host copy; assigning one sets the sum)."""

    def __init__(self, name: str, doc: str) -> None:
        self.index, self.__doc__ = SUM_NAMES.index(name), doc

    def __get__(self, acc, owner=None):
        if acc is None:
            return self
        return acc._sums[self.index].cpu().numpy().copy()

    def __set__(self, acc, value) -> None:
        acc._sums[self.index] = torch.as_tensor(value, dtype=torch.float64)


@dataclass
class MetricAccumulator:
    """Streaming masked MAE/RMSE/MAPE per (horizon, channel).

    Args:
        horizon: T_out.
        num_channels: C_out.
        null_value: targets equal to it are ignored (None: only non-finite targets are).
        mape_threshold: MAPE counts only targets with ``|y| > mape_threshold``.
        mask_threshold: targets ``<= mask_threshold`` are ignored (None: no such mask).
    """

    horizon: int
    num_channels: int
    null_value: float | None = None
    mape_threshold: float = 0.0
    mask_threshold: float | None = None

    def __post_init__(self) -> None:
        # the five sums, float64 [5, T_out, C_out], kept on the device of the updates (moved
        # there by the first one): an evaluation loop adds batches without a host sync and the
        # host reads them once, in summary(); the numpy views below read (and set) them
        self._sums = torch.zeros((len(SUM_NAMES), self.horizon, self.num_channels),
                                 dtype=torch.float64)

    abs_sum = _SumView("abs_sum", "sum of |p - y| over the valid entries")
    sq_sum = _SumView("sq_sum", "sum of (p - y)^2 over the valid entries")
    count = _SumView("count", "number of valid entries")
    ape_sum = _SumView("ape_sum", "sum of |p - y| / |y| over the entries that count for MAPE")
    ape_count = _SumView("ape_count", "number of entries that count for MAPE")

    @torch.no_grad()
    def update(self, pred: torch.Tensor, true: torch.Tensor) -> None:
        """Add a batch. ``pred, true: [B, T_out, N, C_out]`` in original units.

        Element-wise work stays in the input dtype; the sums are accumulated in float64.
        """
        self._check(pred, true)
        pred, true = _aligned(pred, true)
        diff_abs, ape_raw, mape_ok = _errors(pred, true, self.mape_threshold)
        self._accumulate(diff_abs, ape_raw, mape_ok,
                         validity_mask(true, self.null_value, self.mask_threshold))

    def _check(self, pred: torch.Tensor, true: torch.Tensor) -> None:
        if pred.shape != true.shape:
            raise ValueError(f"prediction shape {tuple(pred.shape)} != target shape "
                             f"{tuple(true.shape)}")
        if pred.shape[1] != self.horizon or pred.shape[3] != self.num_channels:
            raise ValueError(f"expected [B, {self.horizon}, N, {self.num_channels}], "
                             f"got {tuple(pred.shape)}")

    def _accumulate(self, diff_abs: torch.Tensor, ape_raw: torch.Tensor, mape_ok: torch.Tensor,
                    mask: torch.Tensor) -> None:
        """Add the sums of one batch under ``mask`` (all ``[B, T_out, N, C_out]``): ``diff_abs =
        |p - y|``, ``ape_raw = |p - y| / max(|y|, 1e-12)``, ``mape_ok = |y| > mape_threshold``."""
        dims = (0, 2)

        def total(x: torch.Tensor) -> torch.Tensor:
            return x.sum(dims, dtype=torch.float64)

        abs_err = diff_abs.masked_fill(~mask, 0.0)
        mmask = mask & mape_ok
        batch = torch.stack([total(abs_err), total(abs_err * abs_err), total(mask),
                             total(ape_raw.masked_fill(~mmask, 0.0)), total(mmask)])
        if self._sums.device != batch.device:
            self._sums = self._sums.to(batch.device)
        self._sums += batch  # element-wise float64 adds: the same sums as numpy's

    @staticmethod
    def _metrics(abs_s: float, sq_s: float, n: float, ape_s: float, ape_n: float) -> dict:
        return {
            "mae": float(abs_s / n) if n else math.nan,
            "rmse": float(math.sqrt(sq_s / n)) if n else math.nan,
            "mape": float(100.0 * ape_s / ape_n) if ape_n else math.nan,
        }

    def _over(self, sl_h, sl_c) -> dict:
        h = self._host
        return self._metrics(*(h[name][sl_h, sl_c].sum() for name in SUM_NAMES))

    def summary(self, report_horizons: tuple[int, ...] = (3, 6, 12),
                channel_names: list[str] | None = None) -> dict:
        """Nested dict: overall / mean_of_horizons / @h, each {mae, rmse, mape}; per channel too.
        (The one host read of the sums.)"""
        sums = self._sums.cpu().numpy()
        self._host = dict(zip(SUM_NAMES, sums, strict=True))
        out = self._summary_for(slice(None), report_horizons)
        if channel_names is not None and self.num_channels > 1:
            out["per_channel"] = {name: self._summary_for(slice(j, j + 1), report_horizons)
                                  for j, name in enumerate(channel_names)}
        return out

    def _summary_for(self, sl_c, report_horizons) -> dict:
        per_h = [self._over(slice(h, h + 1), sl_c) for h in range(self.horizon)]
        res = {"overall": self._over(slice(None), sl_c),
               "mean_of_horizons": {k: float(np.mean([m[k] for m in per_h])) for k in METRIC_NAMES}}
        for h in report_horizons:
            if 1 <= h <= self.horizon:
                res[f"@{h}"] = per_h[h - 1]
        res["per_horizon"] = {k: [m[k] for m in per_h] for k in METRIC_NAMES}
        return res


ALL_TARGETS = "all_targets"


@dataclass
class ProtocolMetrics:
    """Both views of one split's metrics: masked as the protocol says (``null_value``,
    ``mask_threshold``) and over every finite target (``all_targets``: no null or threshold
    mask, same MAPE threshold), so a record can be read under either convention.

    Args:
        horizon, num_channels, null_value, mape_threshold, mask_threshold: the protocol's.
    """

    horizon: int
    num_channels: int
    null_value: float | None = None
    mape_threshold: float = 0.0
    mask_threshold: float | None = None

    def __post_init__(self) -> None:
        self.masked = MetricAccumulator(self.horizon, self.num_channels, self.null_value,
                                        self.mape_threshold, self.mask_threshold)
        self.unmasked = MetricAccumulator(self.horizon, self.num_channels, None,
                                          self.mape_threshold, None)

    @classmethod
    def for_protocol(cls, protocol, num_channels: int) -> ProtocolMetrics:
        return cls(protocol.horizon, num_channels, protocol.null_value, protocol.mape_threshold,
                   getattr(protocol, "mask_threshold", None))

    @torch.no_grad()
    def update(self, pred: torch.Tensor, true: torch.Tensor) -> None:
        """Add a batch, ``pred, true: [B, T_out, N, C_out]`` original units, to both views.

        The errors are computed once and shared; only the masks differ between the views (the
        sums are the ones each view's :meth:`MetricAccumulator.update` would add)."""
        self.masked._check(pred, true)
        pred, true = _aligned(pred, true)
        diff_abs, ape_raw, mape_ok = _errors(pred, true, self.mape_threshold)
        finite = torch.isfinite(true)
        self.unmasked._accumulate(diff_abs, ape_raw, mape_ok, finite)
        self.masked._accumulate(diff_abs, ape_raw, mape_ok,
                                validity_mask(true, self.null_value, self.mask_threshold))

    def summary(self, report_horizons: tuple[int, ...] = (3, 6, 12),
                channel_names: list[str] | None = None) -> dict:
        """:meth:`MetricAccumulator.summary` of the protocol's view, with the all-targets view's
        ``overall``, ``mean_of_horizons`` and ``@h`` under ``"all_targets"``."""
        out = self.masked.summary(report_horizons, channel_names)
        full = self.unmasked.summary(report_horizons)
        out[ALL_TARGETS] = {k: v for k, v in full.items() if k != "per_horizon"}
        return out

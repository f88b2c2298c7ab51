"""Reference forecasters that prove the harness end to end: last value, historical averages and
a ridge regression on the input window. They are registered like any other model."""

from __future__ import annotations

import numpy as np
import torch

from .batch import Batch
from .data.splits import covered_steps
from .models import Forecaster, register_model


@register_model("last-value", citation="naive persistence forecast",
                description="Repeat the last observed value for every horizon.")
class LastValue(Forecaster):
    """``y_hat[t+h] = x[t]`` for every horizon h."""

    closed_form = True

    def __init__(self, horizon: int, target_channel_idx: tuple[int, ...]) -> None:
        super().__init__()
        self.horizon = horizon
        self.target_channel_idx = list(target_channel_idx)
        self._dummy = torch.nn.Parameter(torch.zeros(()), requires_grad=False)

    def fit_closed_form(self, prepared) -> None:
        pass

    def forward(self, batch: Batch) -> torch.Tensor:
        last = batch.x[:, -1:, :, self.target_channel_idx]
        return last.expand(-1, self.horizon, -1, -1).contiguous()


@register_model("ha-week", citation="seasonal naive forecast (one week earlier)",
                description="Value at the same time one calendar week earlier (last value if "
                            "unavailable).")
class HistoricalWeek(Forecaster):
    """``y_hat[t] = y[t']`` where step ``t'`` is the same time of day on the same weekday one
    week (7 calendar days) earlier, read from the real timestamps.

    On a regular time axis ``t' = t - 7 * steps_per_day``. On one that skips days (pems07m has
    weekdays only) ``t'`` is found by time, not by index: in pems07m it is ``5 * 288`` steps
    back, since the two weekend days between are absent. Where that step does not exist (the
    first week of the series, or a skipped day such as a missing holiday) or is not observed
    history (``t' >= start + input_len``, possible only when many days are skipped), the
    forecast falls back to the window's last observed value, as it always has at the series
    start. Without timestamps (a hand-built context) the axis is taken as regular.
    """

    closed_form = True

    def __init__(self, horizon: int, input_len: int, steps_per_day: int, series: torch.Tensor,
                 target_channel_idx: tuple[int, ...],
                 timestamps: np.ndarray | None = None) -> None:
        super().__init__()
        week = 7 * steps_per_day
        if horizon > week:
            raise ValueError(f"ha-week needs horizon <= one week ({week} steps), "
                             f"got {horizon}")
        self.horizon, self.input_len = horizon, input_len
        self.series = series
        self.target_channel_idx = list(target_channel_idx)
        self.week_back = torch.from_numpy(_one_week_earlier(series.shape[0], week, timestamps))
        self._dummy = torch.nn.Parameter(torch.zeros(()), requires_grad=False)

    def fit_closed_form(self, prepared) -> None:
        pass

    def forward(self, batch: Batch) -> torch.Tensor:
        start = batch.start.cpu()[:, None]
        t = start + self.input_len + torch.arange(self.horizon)[None, :]  # [B, T_out]
        src = self.week_back[t]
        ok = (src >= 0) & (src < start + self.input_len)  # observed history only
        vals = self.series[src.clamp_min(0)][..., self.target_channel_idx]  # [B, T_out, N, C_out]
        last = batch.x[:, -1:, :, self.target_channel_idx].cpu().expand_as(vals)
        out = torch.where(ok[:, :, None, None], vals, last)
        return out.to(batch.x.device)


def _one_week_earlier(num_steps: int, week_steps: int,
                      timestamps: np.ndarray | None) -> np.ndarray:
    """int64 ``[T]``: the index of the step exactly 7 days before each step, -1 where the series
    has none. ``timestamps`` None means a regular axis (``index - week_steps``)."""
    idx = np.arange(num_steps, dtype=np.int64)
    if timestamps is None:
        src = idx - week_steps
        return np.where(src >= 0, src, -1)
    ts = np.asarray(timestamps).astype("datetime64[ns]")
    if len(ts) != num_steps:
        raise ValueError(f"ha-week: {len(ts)} timestamps for a series of {num_steps} steps")
    want = ts - np.timedelta64(7, "D")
    src = np.searchsorted(ts, want).astype(np.int64)
    found = src < num_steps
    found[found] = ts[src[found]] == want[found]
    return np.where(found, src, -1)


@register_model("ha-slot", citation="historical average per (day-of-week, time-of-day) slot",
                description="Training-period mean per weekly slot and node.")
class HistoricalSlotMean(Forecaster):
    """``y_hat[t]`` = mean of the visible training steps with the same (day-of-week,
    time-of-day) slot.

    The slots come from the batch's ``dow``/``tod`` indices, i.e. from the real timestamps
    (:mod:`benchmark.data.timefeatures`), so on pems07m the weekday is the real one. A slot with
    no visible training step (a weekend slot of a weekday-only series) holds the overall mean.
    """

    closed_form = True

    def __init__(self, num_nodes: int, steps_per_day: int,
                 target_channel_idx: tuple[int, ...]) -> None:
        super().__init__()
        c = len(target_channel_idx)
        self.steps_per_day = steps_per_day
        self.target_channel_idx = list(target_channel_idx)
        self.register_buffer("table", torch.zeros(7 * steps_per_day, num_nodes, c))

    def fit_closed_form(self, prepared) -> None:
        p = prepared.protocol
        visible = covered_steps(prepared.train_starts, p.input_len + p.horizon,
                                prepared.scaled.shape[0])
        slot = (prepared.dow * self.steps_per_day + prepared.tod).numpy()[visible]
        vals = prepared.scaled.numpy()[visible][..., self.target_channel_idx].astype(np.float64)
        n_slots = self.table.shape[0]
        sums = np.zeros((n_slots,) + vals.shape[1:])
        counts = np.zeros(n_slots)
        np.add.at(sums, slot, vals)
        np.add.at(counts, slot, 1)
        overall = vals.mean(axis=0)
        table = np.where(counts[:, None, None] > 0, sums / np.maximum(counts, 1)[:, None, None],
                         overall[None])
        self.table.copy_(torch.as_tensor(table, dtype=torch.float32))

    def forward(self, batch: Batch) -> torch.Tensor:
        slot = batch.y_dow * self.steps_per_day + batch.y_tod  # [B, T_out]
        return self.table[slot]


@register_model("ridge", citation="ridge regression (Hoerl & Kennard 1970) on the input window",
                alpha=1.0)
class RidgeWindow(Forecaster):
    """Linear map from a node's input window to its forecasts, shared by all nodes.

    Fitted in closed form: ``W = (X^T X + alpha I)^-1 X^T Y`` (Hoerl & Kennard 1970, eq. 2.2)
    with ``X: [windows * N, T_in * C + 1]`` (a bias column, not penalised) and
    ``Y: [windows * N, T_out * C_out]``, in scaled units.
    """

    closed_form = True

    def __init__(self, input_len: int, horizon: int, in_channels: int, out_channels: int,
                 alpha: float = 1.0) -> None:
        super().__init__()
        self.alpha = alpha
        self.horizon, self.out_channels = horizon, out_channels
        self.linear = torch.nn.Linear(input_len * in_channels, horizon * out_channels)

    def fit_closed_form(self, prepared, chunk: int = 512) -> None:
        d_in = self.linear.in_features + 1
        xtx = torch.zeros(d_in, d_in, dtype=torch.float64)
        xty = torch.zeros(d_in, self.linear.out_features, dtype=torch.float64)
        starts = prepared.train_starts
        for i in range(0, len(starts), chunk):
            b = prepared.make_batch(starts[i:i + chunk])
            x = self._features(b.x).double()
            x = torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype)], 1)
            y = prepared.scale_targets(b.y).permute(0, 2, 1, 3).reshape(x.shape[0], -1).double()
            xtx += x.T @ x
            xty += x.T @ y
        reg = self.alpha * torch.eye(d_in, dtype=torch.float64)
        reg[-1, -1] = 0.0
        w = torch.linalg.solve(xtx + reg, xty)
        with torch.no_grad():
            self.linear.weight.copy_(w[:-1].T.float())
            self.linear.bias.copy_(w[-1].float())

    @staticmethod
    def _features(x: torch.Tensor) -> torch.Tensor:
        b, t, n, c = x.shape
        return x.permute(0, 2, 1, 3).reshape(b * n, t * c)

    def forward(self, batch: Batch) -> torch.Tensor:
        b, _, n, _ = batch.x.shape
        out = self.linear(self._features(batch.x))
        return out.reshape(b, n, self.horizon, self.out_channels).permute(0, 2, 1, 3)

"""Calendar-based reference forecasters on time axes that skip whole days (weekdays only)."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from benchmark.data.protocol import Protocol
from benchmark.data.stdata import STData
from benchmark.data.windows import prepare
from benchmark.models import ModelContext, build_model

SPD = 4  # steps per day (6-hour steps): small enough to check every window


def weekday_data(days: np.ndarray, n: int = 2) -> STData:
    """Values encode (day, slot): ``100 * day ordinal + 10 * slot + node``."""
    slots = np.arange(SPD) * np.timedelta64(86400 // SPD, "s")
    ts = (days.astype("datetime64[ns]")[:, None] + slots[None, :]).reshape(-1)
    ordinal = (days - days[0]).astype(np.int64)
    v = (100.0 * ordinal[:, None, None] + 10.0 * np.arange(SPD)[None, :, None]
         + np.arange(n)[None, None, :]).reshape(-1, n, 1).astype(np.float32)
    return STData("weekdays", v, ts, None, pd.DataFrame({"name": [f"s{i}" for i in range(n)]}),
                  ["speed"], SPD)


def weekdays(start: str, stop: str) -> np.ndarray:
    d = np.arange(np.datetime64(start), np.datetime64(stop))
    return d[np.is_busday(d)]


def ha_week_on_all_windows(data: STData, input_len: int, horizon: int):
    p = Protocol(input_len=input_len, horizon=horizon, split_ratios=(0.6, 0.2, 0.2),
                 null_value=None, scaler="none")
    pr = prepare(data, p)
    m = build_model("ha-week", ModelContext.from_prepared(pr))
    starts = np.arange(pr.scaled.shape[0] - input_len - horizon + 1)
    b = pr.make_batch(starts)
    return pr, starts, b, m(b)


def test_ha_week_reads_the_same_weekday_7_calendar_days_earlier():
    # three weeks of weekdays from Monday 2019-01-07; Wednesday 2019-01-09 is missing
    days = weekdays("2019-01-07", "2019-01-26")
    days = days[days != np.datetime64("2019-01-09")]
    data = weekday_data(days)
    pr, starts, b, out = ha_week_on_all_windows(data, input_len=3, horizon=3)
    ts = data.timestamps
    pos = {t: i for i, t in enumerate(ts)}
    checked_back = 0
    for w, s in enumerate(starts):
        for h in range(3):
            t = s + 3 + h
            src = pos.get(ts[t] - np.timedelta64(7, "D"))
            got = out[w, h, :, 0].numpy()
            if src is None:  # first week, or the missing Wednesday: last observed value
                np.testing.assert_array_equal(got, data.values[s + 2, :, 0])
            else:
                assert pd.Timestamp(ts[src]).day_name() == pd.Timestamp(ts[t]).day_name()
                assert src < s + 3  # observed history only
                np.testing.assert_array_equal(got, data.values[src, :, 0])
                checked_back += 1
    assert checked_back > 0
    # in the weekday-only series a full week back is 5 days of steps, not 7
    week_back = m_week_back(pr)
    tuesday2 = int(np.flatnonzero(ts == np.datetime64("2019-01-15T06:00"))[0])
    assert tuesday2 - week_back[tuesday2] == 4 * SPD  # Wed 9 missing in between: 4 days back
    friday3 = int(np.flatnonzero(ts == np.datetime64("2019-01-25T12:00"))[0])
    assert friday3 - week_back[friday3] == 5 * SPD
    wednesday2 = int(np.flatnonzero(ts == np.datetime64("2019-01-16T00:00"))[0])
    assert week_back[wednesday2] == -1


def m_week_back(pr) -> np.ndarray:
    return build_model("ha-week", ModelContext.from_prepared(pr)).week_back.numpy()


def test_ha_week_never_reads_the_forecast_period_when_many_days_are_skipped():
    # Mondays only: one week back is one day of steps, shorter than this horizon
    days = np.arange(np.datetime64("2019-01-07"), np.datetime64("2019-04-01"), 7)
    data = weekday_data(days)
    _, starts, b, out = ha_week_on_all_windows(data, input_len=2, horizon=6)
    for w, s in enumerate(starts):
        for h in range(6):
            t = s + 2 + h
            src = t - SPD
            want = data.values[src] if 0 <= src < s + 2 else data.values[s + 1]
            np.testing.assert_array_equal(out[w, h].numpy(), want)


def _ha_week_regular_reference(series, starts, input_len, horizon, week, x_last):
    """The index-based rule on a regular axis: y[t - 7 * steps_per_day], else last value."""
    t = torch.as_tensor(starts)[:, None] + input_len + torch.arange(horizon)[None, :]
    src = t - week
    vals = series[src.clamp_min(0)]
    return torch.where((src >= 0)[:, :, None, None], vals, x_last.expand_as(vals))


def test_regular_series_unchanged(synthetic_prepared):
    pr = synthetic_prepared
    assert pr.data.regular
    ctx = ModelContext.from_prepared(pr)
    p = pr.protocol
    starts = np.concatenate([pr.splits.train, pr.splits.val, pr.splits.test])
    b = pr.make_batch(starts)
    idx = list(pr.target_channel_idx)
    want = _ha_week_regular_reference(pr.scaled[..., idx], starts, p.input_len, p.horizon,
                                      7 * pr.data.steps_per_day, b.x[:, -1:, :, idx])
    for c in (ctx, dataclasses.replace(ctx, timestamps=None)):
        got = build_model("ha-week", c)(b)
        assert torch.equal(got, want)
    # ha-slot: day of week and time of day of a regular axis are index arithmetic from its start
    t0 = pd.Timestamp(pr.data.timestamps[0])
    k = np.arange(pr.scaled.shape[0])
    spd = pr.data.steps_per_day
    assert np.array_equal(pr.tod.numpy(), (k + t0.hour * spd // 24) % spd)
    assert np.array_equal(pr.dow.numpy(), (t0.day_of_week + k // spd) % 7)


def test_ha_slot_uses_the_real_weekday():
    days = weekdays("2019-01-07", "2019-02-02")  # four weeks, Mon-Fri
    data = weekday_data(days)
    p = Protocol(input_len=2, horizon=2, split_ratios=(0.6, 0.2, 0.2), null_value=None,
                 scaler="none")
    pr = prepare(data, p)
    m = build_model("ha-slot", ModelContext.from_prepared(pr))
    m.fit_closed_form(pr)
    assert set(np.unique(pr.dow.numpy())) == {0, 1, 2, 3, 4}
    # Monday slot 1 = mean over the visible Mondays of the training period
    from benchmark.data.splits import covered_steps

    vis = covered_steps(pr.train_starts, 4, pr.scaled.shape[0])
    mondays = vis & (pr.dow.numpy() == 0) & (pr.tod.numpy() == 1)
    assert mondays.sum() >= 2
    expected = data.values[mondays].mean(0)
    np.testing.assert_allclose(m.table[0 * SPD + 1].numpy(), expected, rtol=1e-6)


@pytest.mark.parametrize("gap_minutes", [6 * 60 + 1, 36 * 60])
def test_stdata_rejects_gaps_that_are_not_whole_days(gap_minutes):
    from benchmark.data.stdata import DataError

    data = weekday_data(weekdays("2019-01-07", "2019-01-12"))
    ts = data.timestamps.copy()
    ts[6:] += np.timedelta64(gap_minutes - 6 * 60, "m")
    with pytest.raises(DataError, match="irregular at step 6"):
        dataclasses.replace(data, timestamps=ts)

"""Metric variants against values worked out by hand (see comments)."""

import math

import numpy as np
import pytest
import torch

from benchmark.losses import masked_huber_loss, masked_mae_loss, masked_mse_loss
from benchmark.metrics import MetricAccumulator

# one window, 2 horizons, 2 nodes, 1 channel
TRUE = torch.tensor([[[[1.0], [2.0]], [[0.0], [4.0]]]])
PRED = torch.tensor([[[[2.0], [2.0]], [[1.0], [1.0]]]])
# absolute errors: h1: 1, 0   h2: 1, 3


def summary(null_value, report=(1, 2), mape_threshold=0.0):
    acc = MetricAccumulator(horizon=2, num_channels=1, null_value=null_value,
                            mape_threshold=mape_threshold)
    acc.update(PRED, TRUE)
    return acc.summary(report)


def test_unmasked_pooled():
    s = summary(None)["overall"]
    assert s["mae"] == pytest.approx((1 + 0 + 1 + 3) / 4)
    assert s["rmse"] == pytest.approx(math.sqrt((1 + 0 + 1 + 9) / 4))
    # MAPE skips y = 0 (|y| > 0 threshold): 1/1, 0/2, 3/4
    assert s["mape"] == pytest.approx(100 * (1 + 0 + 0.75) / 3)


def test_masked_pooled():
    s = summary(0.0)["overall"]  # the y = 0 point is masked
    assert s["mae"] == pytest.approx((1 + 0 + 3) / 3)
    assert s["rmse"] == pytest.approx(math.sqrt(10 / 3))
    assert s["mape"] == pytest.approx(100 * 1.75 / 3)


def test_masked_mean_of_horizons_and_at_h():
    s = summary(0.0)
    # h1: MAE (1+0)/2 = .5, RMSE sqrt(1/2), MAPE (100+0)/2 = 50
    # h2: MAE 3, RMSE 3, MAPE 75
    assert s["mean_of_horizons"]["mae"] == pytest.approx((0.5 + 3) / 2)
    assert s["mean_of_horizons"]["rmse"] == pytest.approx((math.sqrt(0.5) + 3) / 2)
    assert s["mean_of_horizons"]["mape"] == pytest.approx((50 + 75) / 2)
    assert s["@1"] == pytest.approx({"mae": 0.5, "rmse": math.sqrt(0.5), "mape": 50.0})
    assert s["@2"] == pytest.approx({"mae": 3.0, "rmse": 3.0, "mape": 75.0})


def test_unmasked_mean_of_horizons():
    s = summary(None)
    # h1: MAE .5 ; h2: MAE (1+3)/2 = 2, RMSE sqrt(10/2)
    assert s["mean_of_horizons"]["mae"] == pytest.approx((0.5 + 2) / 2)
    assert s["mean_of_horizons"]["rmse"] == pytest.approx((math.sqrt(0.5) + math.sqrt(5)) / 2)


def test_mape_threshold():
    # threshold 1.5 keeps only y = 2 and y = 4: APE 0 and .75
    s = summary(None, mape_threshold=1.5)["overall"]
    assert s["mape"] == pytest.approx(100 * 0.75 / 2)


def test_nan_targets_are_always_masked():
    t = TRUE.clone()
    t[0, 0, 0, 0] = float("nan")
    acc = MetricAccumulator(2, 1)
    acc.update(PRED, t)
    assert acc.summary((1,))["overall"]["mae"] == pytest.approx((0 + 1 + 3) / 3)


def test_independent_of_batching():
    rng = np.random.default_rng(0)
    y = torch.tensor(rng.integers(0, 5, (37, 12, 5, 2)).astype(np.float32))
    p = torch.tensor(rng.normal(2, 2, (37, 12, 5, 2)).astype(np.float32))
    results = []
    for bs in (1, 8, 37):
        acc = MetricAccumulator(12, 2, null_value=0.0)
        for i in range(0, 37, bs):
            acc.update(p[i:i + bs], y[i:i + bs])
        results.append(acc.summary((3, 6, 12), ["in", "out"]))
    assert results[0]["overall"] == pytest.approx(results[1]["overall"])
    assert results[0]["overall"] == pytest.approx(results[2]["overall"])
    # against a direct numpy computation
    m = y.numpy() != 0
    e = np.abs(p.numpy() - y.numpy())[m]
    assert results[2]["overall"]["mae"] == pytest.approx(e.mean(), rel=1e-6)
    assert results[2]["per_channel"]["in"]["overall"]["mae"] == pytest.approx(
        np.abs(p.numpy() - y.numpy())[..., 0][m[..., 0]].mean(), rel=1e-6)


def test_shape_mismatch_is_an_error():
    acc = MetricAccumulator(2, 1)
    with pytest.raises(ValueError, match="shape"):
        acc.update(PRED, TRUE[:, :1])


def test_losses_by_hand():
    assert float(masked_mae_loss(PRED, TRUE, None)) == pytest.approx(5 / 4)
    assert float(masked_mae_loss(PRED, TRUE, 0.0)) == pytest.approx(4 / 3)
    assert float(masked_mse_loss(PRED, TRUE, 0.0)) == pytest.approx(10 / 3)
    # Huber, delta 1: errors 1, 0, 3 (masked 0 excluded) -> .5, 0, 2.5
    assert float(masked_huber_loss(PRED, TRUE, 0.0, delta=1.0)) == pytest.approx(3.0 / 3)


def test_mask_threshold_masks_nonpositive_targets():
    """mask_threshold=0 (the FlowDistill release's ``true > 0``): y = 0 drops out; and a
    negative target drops out too (unlike null_value=0, which masks exactly 0)."""
    from benchmark.metrics import validity_mask

    y = torch.tensor([-1.0, 0.0, 0.0005, 2.0, float("nan")])
    assert validity_mask(y, None, 0.0).tolist() == [False, False, True, True, False]
    assert validity_mask(y, 0.0).tolist() == [True, False, True, True, False]
    acc = MetricAccumulator(horizon=2, num_channels=1, mask_threshold=0.0)
    acc.update(PRED, TRUE)
    s = acc.summary((1, 2))["overall"]
    assert s["mae"] == pytest.approx((1 + 0 + 3) / 3)
    assert s["mape"] == pytest.approx(100 * (1 + 0 + 0.75) / 3)
    assert float(masked_mae_loss(PRED, TRUE, None, mask_threshold=0.0)) == pytest.approx(4 / 3)
    assert float(masked_huber_loss(PRED, TRUE, None, 1.0, mask_threshold=0.0)) == \
        pytest.approx(3.0 / 3)


def test_protocol_metrics_carry_both_views():
    """ProtocolMetrics: the protocol's masked view on top, every finite target under
    ``all_targets`` (here: the y = 0 point counts there)."""
    from benchmark.data.protocol import Protocol
    from benchmark.metrics import ProtocolMetrics

    p = Protocol(input_len=1, horizon=2, null_value=None, mask_threshold=0.0,
                 report_horizons=(1, 2))
    acc = ProtocolMetrics.for_protocol(p, 1)
    acc.update(PRED, TRUE)
    s = acc.summary(p.report_horizons)
    assert s["overall"]["mae"] == pytest.approx(4 / 3)
    assert s["all_targets"]["overall"]["mae"] == pytest.approx(5 / 4)
    assert s["all_targets"]["@2"]["mae"] == pytest.approx((1 + 3) / 2)
    assert s["@2"]["mae"] == pytest.approx(3.0)  # h2: y=0 masked, only |1 - 4|


def test_protocol_rejects_non_finite_mask_settings():
    from benchmark.data.protocol import Protocol

    with pytest.raises(ValueError, match="mask_threshold"):
        Protocol(mask_threshold=float("nan"))


def _reference_update(acc: MetricAccumulator, pred: torch.Tensor, true: torch.Tensor) -> None:
    """The accumulator's update as it was before the views shared their element-wise work."""
    from benchmark.metrics import validity_mask

    mask = validity_mask(true, acc.null_value, acc.mask_threshold)
    abs_err = (pred - true).abs().masked_fill(~mask, 0.0)

    def total(x):
        return x.sum((0, 2), dtype=torch.float64).numpy()

    acc.abs_sum += total(abs_err)
    acc.sq_sum += total(abs_err * abs_err)
    acc.count += total(mask)
    true_abs = true.abs()
    mmask = mask & (true_abs > acc.mape_threshold)
    acc.ape_sum += total((abs_err / true_abs.clamp_min(1e-12)).masked_fill(~mmask, 0.0))
    acc.ape_count += total(mmask)


def test_protocol_metrics_shared_work_is_bitwise_the_separate_views():
    """Both views from the shared errors hold exactly the sums of separate, independent updates
    (zeros, NaN and null targets, a permuted non-contiguous prediction, several batches)."""
    from benchmark.metrics import ProtocolMetrics

    g = torch.Generator().manual_seed(0)
    acc = ProtocolMetrics(horizon=3, num_channels=2, null_value=-1.0, mape_threshold=0.5,
                          mask_threshold=0.0)
    ref_masked = MetricAccumulator(3, 2, -1.0, 0.5, 0.0)
    ref_all = MetricAccumulator(3, 2, None, 0.5, None)
    for b in (5, 7, 1):
        true = torch.randn(b, 3, 4, 2, generator=g) * 10
        true[true.abs() < 2] = 0.0
        true[0, 0, 0, 0], true[-1, 1, 2, 1] = float("nan"), -1.0
        pred = (torch.randn(b, 3, 2, 4, generator=g) * 10).permute(0, 1, 3, 2)
        assert not pred.is_contiguous()
        acc.update(pred, true)
        _reference_update(ref_masked, pred, true)
        _reference_update(ref_all, pred, true)
    for got, want in ((acc.masked, ref_masked), (acc.unmasked, ref_all)):
        for name in ("abs_sum", "sq_sum", "count", "ape_sum", "ape_count"):
            np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)
    single = MetricAccumulator(3, 2, -1.0, 0.5, 0.0)
    g = torch.Generator().manual_seed(0)
    true = torch.randn(5, 3, 4, 2, generator=g)
    single.update(true + 1, true)
    ref = MetricAccumulator(3, 2, -1.0, 0.5, 0.0)
    _reference_update(ref, true + 1, true)
    np.testing.assert_array_equal(single.abs_sum, ref.abs_sum)
    np.testing.assert_array_equal(single.ape_sum, ref.ape_sum)

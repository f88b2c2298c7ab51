"""benchmark/losses.py against torch.nn.functional and hand-worked values."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from benchmark.losses import LOSS_NAMES, masked_loss, pointwise_loss, regression_loss

REFERENCE = {"mae": F.l1_loss, "mse": F.mse_loss,
             "huber": lambda p, y, reduction: F.huber_loss(p, y, reduction=reduction, delta=0.7)}


def _pair(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(4, 3, 5, 2, generator=g) * 2, torch.randn(4, 3, 5, 2, generator=g) * 2


@pytest.mark.parametrize("kind", LOSS_NAMES)
def test_pointwise_and_mean_equal_torch_functional(kind):
    pred, y = _pair()
    pred.requires_grad_(True)
    ours = pointwise_loss(pred, y, kind, huber_delta=0.7)
    assert torch.equal(ours, REFERENCE[kind](pred, y, reduction="none"))
    mean = regression_loss(pred, y, kind, huber_delta=0.7)
    ref = REFERENCE[kind](pred, y, reduction="mean")
    assert torch.equal(mean, ref)
    (g_ours,) = torch.autograd.grad(mean, pred)
    (g_ref,) = torch.autograd.grad(ref, pred)
    assert torch.equal(g_ours, g_ref)


def test_huber_by_hand():
    # delta 1: |e| = 0.5 -> 0.5 * 0.25 = 0.125; |e| = 2 -> 1 * (2 - 0.5) = 1.5; e = -3 -> 2.5
    pred, y = torch.tensor([0.5, 2.0, -3.0]), torch.zeros(3)
    assert pointwise_loss(pred, y, "huber", 1.0).tolist() == [0.125, 1.5, 2.5]
    assert float(regression_loss(pred, y, "huber", 1.0)) == pytest.approx(4.125 / 3)


@pytest.mark.parametrize("kind", LOSS_NAMES)
def test_masked_loss_is_the_reference_over_valid_entries(kind):
    pred, y = _pair(1)
    y[0, 0] = 0.0  # the null value
    y[1, 2, 3] = float("nan")
    pred.requires_grad_(True)
    mask = torch.isfinite(y) & (y.abs() > 1e-6) & (y > -1.0)
    value = masked_loss(pred, y, kind, null_value=0.0, mask_threshold=-1.0, huber_delta=0.7)
    ref = REFERENCE[kind](pred[mask], y[mask], reduction="mean")
    torch.testing.assert_close(value, ref)
    value.backward()
    assert torch.isfinite(pred.grad).all()  # the NaN target adds no 0 * NaN to the gradient
    assert (pred.grad[~mask] == 0).all()


def test_masked_loss_without_valid_entries_is_zero_and_bad_names_fail():
    pred = torch.ones(2, 2)
    assert float(masked_loss(pred, torch.zeros(2, 2), "mae", null_value=0.0)) == 0.0
    with pytest.raises(ValueError, match="unknown loss"):
        pointwise_loss(pred, pred, "l1")
    with pytest.raises(ValueError, match="reduction"):
        pointwise_loss(pred, pred, "mae", reduction="sum")

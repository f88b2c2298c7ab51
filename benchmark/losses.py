"""Regression losses: MAE, MSE and Huber, defined once for every loop of the suite.

For predictions ``p``, targets ``y`` and the error ``e = p - y`` the pointwise losses are

    mae:   |e|
    mse:   e^2
    huber: 0.5 e^2 if |e| <= delta, else delta (|e| - 0.5 delta)

(Huber, "Robust Estimation of a Location Parameter", Ann. Math. Statist. 35, 1964, eq. 7; the
values equal ``torch.nn.functional.l1_loss`` / ``mse_loss`` / ``huber_loss``, which
``tests/test_regression_losses.py`` checks). Two reductions:

* :func:`masked_loss`: the mean over the entries :func:`benchmark.metrics.validity_mask` keeps
  (finite, not the protocol's null value, above its mask threshold), ``sum(m * l) / sum(m)``:
  the masked training loss of DCRNN's released ``masked_mae_loss`` (Li et al., ICLR 2018) that
  the baselines and the distillation objective use, in original units;
* :func:`regression_loss`: the plain mean over every entry (the teacher's loss on scaled
  targets).

Non-finite targets are replaced by the (detached) prediction before the pointwise loss, so a
masked NaN target contributes neither to the value nor (as ``0 * NaN``) to the gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .metrics import validity_mask

LOSS_NAMES = ("mae", "huber", "mse")


def pointwise_loss(pred: torch.Tensor, target: torch.Tensor, kind: str = "mae",
                   huber_delta: float = 1.0, reduction: str = "none") -> torch.Tensor:
    """The loss of ``kind`` ("mae", "mse" or "huber" with threshold ``huber_delta``; see the
    module docstring) per entry (``reduction="none"``: same shape as the inputs) or its mean
    over every entry (``"mean"``)."""
    if kind not in LOSS_NAMES:
        raise ValueError(f"unknown loss {kind!r}; choose from {LOSS_NAMES}")
    if reduction not in ("none", "mean"):
        raise ValueError(f"reduction must be 'none' or 'mean', got {reduction!r}")
    target = torch.where(torch.isfinite(target), target, pred.detach())
    if kind == "huber":
        return F.huber_loss(pred, target, reduction=reduction, delta=huber_delta)
    e = pred - target
    loss = e.abs() if kind == "mae" else e * e
    return loss.mean() if reduction == "mean" else loss


def masked_loss(pred: torch.Tensor, target: torch.Tensor, kind: str, null_value: float | None,
                mask_threshold: float | None = None, huber_delta: float = 1.0) -> torch.Tensor:
    """Mean of :func:`pointwise_loss` over the valid entries of ``target`` (0 when none is)."""
    mask = validity_mask(target, null_value, mask_threshold)
    n = mask.sum().clamp_min(1)
    d = pointwise_loss(pred, target, kind, huber_delta)
    return torch.where(mask, d, torch.zeros_like(d)).sum() / n


def regression_loss(pred: torch.Tensor, target: torch.Tensor, kind: str,
                    huber_delta: float = 1.0) -> torch.Tensor:
    """Mean of :func:`pointwise_loss` over every entry (no mask)."""
    return pointwise_loss(pred, target, kind, huber_delta, reduction="mean")


def masked_mae_loss(pred: torch.Tensor, true: torch.Tensor, null_value: float | None,
                    mask_threshold: float | None = None) -> torch.Tensor:
    """Masked MAE, the training loss of most baselines."""
    return masked_loss(pred, true, "mae", null_value, mask_threshold)


def masked_huber_loss(pred: torch.Tensor, true: torch.Tensor, null_value: float | None,
                      delta: float = 1.0, mask_threshold: float | None = None) -> torch.Tensor:
    """Masked Huber loss with threshold ``delta``."""
    return masked_loss(pred, true, "huber", null_value, mask_threshold, delta)


def masked_mse_loss(pred: torch.Tensor, true: torch.Tensor, null_value: float | None,
                    mask_threshold: float | None = None) -> torch.Tensor:
    """Masked mean squared error."""
    return masked_loss(pred, true, "mse", null_value, mask_threshold)

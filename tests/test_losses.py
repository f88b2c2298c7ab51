"""Checks of flowdistill/losses.py against torch.distributions and hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from flowdistill.losses import (
    BetaAnnealing,
    kl_standard_normal,
    pointwise_distance,
    soft_label_loss,
    teacher_bounded_loss,
)


# ------------------------------------------------------------------------------ KL
def test_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(3, 5, 7, generator=g, dtype=torch.float64)
    sigma = torch.nn.functional.softplus(torch.randn(3, 5, 7, generator=g, dtype=torch.float64))
    ref = kl_divergence(Normal(mu, sigma), Normal(torch.zeros_like(mu), torch.ones_like(sigma)))
    # sum over the latent axis, mean over batch and nodes
    torch.testing.assert_close(kl_standard_normal(mu, sigma), ref.sum(-1).mean())


def test_kl_hand_values():
    # mu = 1, sigma = 1: 1/2 (1 + 1 - 0 - 1) = 0.5 per dim; K = 2 -> 1.0
    assert float(kl_standard_normal(torch.ones(1, 1, 2), torch.ones(1, 1, 2))) == pytest.approx(1.0)
    # mu = 0, sigma = 2: 1/2 (0 + 4 - log 4 - 1) per dim
    v = kl_standard_normal(torch.zeros(2, 1), torch.full((2, 1), 2.0))
    assert float(v) == pytest.approx(0.5 * (3.0 - math.log(4.0)))
    # the prior itself has zero KL
    assert float(kl_standard_normal(torch.zeros(4, 3), torch.ones(4, 3))) == 0.0
    # a collapsed sigma gives a large finite value, not inf
    assert math.isfinite(float(kl_standard_normal(torch.zeros(1, 1), torch.zeros(1, 1))))
    with pytest.raises(ValueError, match="shape"):
        kl_standard_normal(torch.zeros(2, 3), torch.ones(2, 4))


# ------------------------------------------------------------------------- annealing
def test_beta_annealing_hand_values_20_epochs():
    s = BetaAnnealing(beta_start=1.0, beta_end=0.2)
    # n = 5: epochs 0-4 constant; 5..9 are p = 0, 1/4, 1/2, 3/4, 1 with (1 - p)^3 =
    # 1, 27/64, 1/8, 1/64, 0; epochs >= 10 constant beta_end.
    expected = [1.0] * 5 + [0.2 + 0.8 * f for f in (1.0, 27 / 64, 1 / 8, 1 / 64, 0.0)]
    expected += [0.2] * 10
    got = [s(e, 20) for e in range(20)]
    assert got == pytest.approx(expected)


def test_beta_annealing_is_beta14_pdf_normalised():
    s = BetaAnnealing(beta_start=3.0, beta_end=1.0)
    e_total, n = 40, 10
    for j in range(n):
        p = j / (n - 1)
        pdf = math.gamma(5) / (math.gamma(1) * math.gamma(4)) * (1 - p) ** 3  # Beta(1,4) density
        assert s(n + j, e_total) == pytest.approx(1.0 + 2.0 * pdf / 4.0)


def test_beta_annealing_short_runs_and_constant():
    s = BetaAnnealing(beta_start=1.0, beta_end=0.5)
    assert [s(e, 3) for e in range(3)] == [0.5, 0.5, 0.5]  # n = 0: beta_end throughout
    assert [s(e, 4) for e in range(4)] == [1.0, 1.0, 0.5, 0.5]  # n = 1: p = 0 at epoch 1
    assert [s(e, 8) for e in range(8)] == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.5]
    c = BetaAnnealing(0.3, 0.3)
    assert {c(e, 17) for e in range(17)} == {0.3}
    defaults = BetaAnnealing()
    assert defaults(0, 100) == 0.002 and defaults(99, 100) == 0.001
    with pytest.raises(ValueError):
        BetaAnnealing(-1.0, 0.0)


# ----------------------------------------------------------------- teacher bound
def _t(values) -> torch.Tensor:
    """[N] values -> a [1, 1, N, 1] tensor (one window, one step, N nodes, one channel)."""
    return torch.tensor(values, dtype=torch.float64).reshape(1, 1, -1, 1)


def test_window_gate_per_node():
    y = _t([10.0, 10.0])
    student = _t([12.0, 10.5])  # |e| = 2, 0.5
    teacher = _t([11.0, 13.0])  # |e| = 1, 3
    loss, logs = teacher_bounded_loss(student, y, teacher, None, None, bound_weight=0.5,
                                      bound_margin=0.01, gate="window", distance="mae")
    # node 0: 2 + 0.01 > 1 -> open (weight 1.5); node 1: 0.5 + 0.01 > 3 false -> weight 1
    assert float(loss) == pytest.approx((1.5 * 2.0 + 0.5) / 2)
    assert logs["loss_gt"] == pytest.approx(1.25)
    assert logs["gate_open"] == pytest.approx(0.5)


def test_batch_gate_release_rule():
    y = _t([10.0, 10.0])
    student = _t([12.0, 10.5])
    teacher = _t([11.0, 13.0])
    # batch means: student 1.25, teacher 2.0 -> 1.26 > 2 false -> plain loss
    loss, logs = teacher_bounded_loss(student, y, teacher, None, None, bound_weight=0.5,
                                      bound_margin=0.01, gate="batch", distance="mae")
    assert float(loss) == pytest.approx(1.25) and logs["gate_open"] == 0.0
    # a perfect teacher: 1.26 > 0 -> (1 + lambda) * plain
    loss, logs = teacher_bounded_loss(student, y, y.clone(), None, None, bound_weight=0.5,
                                      bound_margin=0.01, gate="batch", distance="mae")
    assert float(loss) == pytest.approx(1.5 * 1.25) and logs["gate_open"] == 1.0


@pytest.mark.parametrize("gate", ["window", "batch"])
def test_margin(gate):
    y = _t([0.5])
    student, teacher = _t([1.5]), _t([1.55])  # errors 1.0 and 1.05: student better by 0.05
    open_, _ = teacher_bounded_loss(student, y, teacher, None, None, bound_weight=1.0,
                                    bound_margin=0.1, gate=gate, distance="mae")
    shut, _ = teacher_bounded_loss(student, y, teacher, None, None, bound_weight=1.0,
                                   bound_margin=0.01, gate=gate, distance="mae")
    assert float(open_) == pytest.approx(2.0)  # 1.0 + 0.1 > 1.05
    assert float(shut) == pytest.approx(1.0)  # 1.0 + 0.01 > 1.05 is false


@pytest.mark.parametrize("gate", ["window", "batch"])
def test_unlabelled_windows_fall_back_to_plain_loss(gate):
    y = torch.full((2, 1, 1, 1), 10.0)
    student = torch.tensor([12.0, 13.0]).reshape(2, 1, 1, 1)  # errors 2 and 3
    teacher = y.clone()  # perfect: every labelled gate opens
    mask = torch.tensor([True, False])
    loss, logs = teacher_bounded_loss(student, y, teacher, mask, None, bound_weight=1.0,
                                      bound_margin=0.0, gate=gate, distance="mae")
    assert float(loss) == pytest.approx((2.0 * 2.0 + 3.0) / 2)  # only window 0 doubled
    assert logs["labelled"] == 0.5
    none, _ = teacher_bounded_loss(student, y, teacher, torch.tensor([False, False]), None,
                                   bound_weight=1.0, bound_margin=0.0, gate=gate,
                                   distance="mae")
    assert float(none) == pytest.approx(2.5)


def test_null_values_and_nan_teacher_are_masked():
    y = _t([0.0, 10.0, 10.0])  # the first target is the null value
    student = _t([100.0, 11.0, 14.0])  # |e| = (masked), 1, 4
    teacher = _t([0.0, float("nan"), 10.0])  # node 1 teacher missing; node 2 perfect
    loss, logs = teacher_bounded_loss(student, y, teacher, None, 0.0, bound_weight=1.0,
                                      bound_margin=0.0, gate="window", distance="mae")
    # valid entries: nodes 1 and 2; only node 2 is compared (open) -> (1 + 2 * 4) / 2
    assert float(loss) == pytest.approx(4.5)
    assert logs["loss_gt"] == pytest.approx(2.5)
    assert logs["gate_open"] == 1.0  # one compared (window, node) pair, open


def test_huber_distance_hand_values_and_gradient():
    y = _t([0.0, 0.0])
    student = _t([2.0, 0.5]).requires_grad_(True)
    # Huber, delta 1: |e| = 2 -> 1 * (2 - 0.5) = 1.5; |e| = 0.5 -> 0.5 * 0.25 = 0.125
    d = pointwise_distance(student, y, "huber", 1.0)
    assert d.flatten().tolist() == pytest.approx([1.5, 0.125])
    teacher = _t([0.0, 3.0])  # node 0 open (1.5 > 0), node 1 shut (0.125 < Huber(3) = 2.5)
    loss, _ = teacher_bounded_loss(student, y, teacher, None, None, bound_weight=1.0,
                                   bound_margin=0.0, gate="window", distance="huber")
    assert float(loss.detach()) == pytest.approx((2 * 1.5 + 0.125) / 2)
    loss.backward()
    # d/dp: node 0: 2 * sign * delta / 2 = 1.0; node 1: 1 * e / 2 = 0.25
    assert student.grad.flatten().tolist() == pytest.approx([1.0, 0.25])


def test_bound_input_checks():
    y = _t([1.0])
    with pytest.raises(ValueError, match="gate"):
        teacher_bounded_loss(y, y, y, None, None, bound_weight=1, bound_margin=0, gate="node")
    with pytest.raises(ValueError, match="shapes"):
        teacher_bounded_loss(y, y, _t([1.0, 2.0]), None, None, bound_weight=1, bound_margin=0)
    with pytest.raises(ValueError, match="distance"):
        pointwise_distance(y, y, "mse")


def test_soft_label_loss():
    y = _t([0.0, 5.0, 5.0])
    student = _t([1.0, 2.0, 4.0])
    teacher = _t([9.0, 3.0, float("nan")])
    # node 0: null target -> out; node 2: no teacher -> out; node 1: |2 - 3| = 1
    v = soft_label_loss(student, teacher, None, y, 0.0, "mae")
    assert float(v) == pytest.approx(1.0)
    assert float(soft_label_loss(student, teacher, torch.tensor([False]), y, 0.0, "mae")) == 0.0

"""FlowDistillStudent: shapes, VIB behaviour in train/eval, regulariser, parameter count."""

from __future__ import annotations

import pytest
import torch

from benchmark.batch import Batch
from benchmark.models import ModelContext, build_model, count_parameters
from flowdistill.losses import BetaAnnealing, kl_standard_normal
from flowdistill.student import FlowDistillStudent

B, T_IN, T_OUT, N, C, C_OUT, SPD = 3, 4, 5, 6, 2, 1, 24
SMALL = dict(embed_dim=8, node_dim=4, tod_dim=4, dow_dim=4, num_layers=2)


def _batch(seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    tod = torch.randint(0, SPD, (B, 1), generator=g) + torch.arange(T_IN)
    return Batch(
        x=torch.randn(B, T_IN, N, C, generator=g), y=torch.rand(B, T_OUT, N, C_OUT, generator=g),
        x_tod=tod % SPD, x_dow=torch.randint(0, 7, (B, T_IN), generator=g),
        y_tod=torch.zeros(B, T_OUT, dtype=torch.long),
        y_dow=torch.zeros(B, T_OUT, dtype=torch.long), start=torch.arange(B))


def _student(**kw) -> FlowDistillStudent:
    torch.manual_seed(0)
    return FlowDistillStudent(N, T_IN, T_OUT, C, C_OUT, SPD, **{**SMALL, **kw})


@pytest.mark.parametrize("use_ib", [True, False])
def test_forward_shape_and_latent_width(use_ib):
    m = _student(use_ib=use_ib)
    assert m.hidden_dim == 20 and m.latent_dim == 10
    for mode in (m.train, m.eval):
        mode()
        assert m(_batch()).shape == (B, T_OUT, N, C_OUT)


def test_eval_is_deterministic_and_uses_mu():
    m = _student().eval()
    b = _batch()
    out1, out2 = m(b), m(b)
    torch.testing.assert_close(out1, out2, rtol=0, atol=0)
    mu, _ = m.encode(b)
    expected = m.regression(mu).reshape(B, N, T_OUT, C_OUT).permute(0, 2, 1, 3)
    torch.testing.assert_close(out1, expected)


def test_training_and_sample_eval_are_stochastic():
    m = _student(dropout=0.0)
    b = _batch()
    m.train()
    assert not torch.equal(m(b), m(b))  # reparameterised sampling (dropout is off)
    m.eval()
    m.sample_eval = True
    assert not torch.equal(m(b), m(b))
    # averaging more samples moves the training output toward the mu-based output
    m.sample_eval = False
    mean_out = m(b)
    m.train()
    m.num_samples = 1
    err1 = torch.stack([(m(b) - mean_out).abs().mean() for _ in range(20)]).mean()
    m.num_samples = 50
    err50 = torch.stack([(m(b) - mean_out).abs().mean() for _ in range(20)]).mean()
    assert err50 < err1


def test_extra_loss_is_kl_of_last_forward_and_weight_is_annealed():
    m = _student(beta_start=0.4, beta_end=0.1).eval()
    b = _batch()
    m(b)
    mu, sigma = m.encode(b)
    torch.testing.assert_close(m.extra_loss(), kl_standard_normal(mu, sigma))
    sched = BetaAnnealing(0.4, 0.1)
    assert [m.extra_loss_weight(e, 12) for e in range(12)] == [sched(e, 12) for e in range(12)]
    assert _student(use_ib=False)(b) is not None and _student(use_ib=False).extra_loss() is None


def test_gradients_reach_every_parameter():
    m = _student().train()
    b = _batch()
    loss = m(b).square().mean() + m.extra_loss()
    loss.backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_time_of_day_out_of_range_is_reported():
    m = FlowDistillStudent(N, T_IN, T_OUT, C, C_OUT, steps_per_day=12, **SMALL)
    with pytest.raises(ValueError, match="steps_per_day"):
        m(_batch())


def test_registered_defaults_and_parameter_count():
    ctx = ModelContext(num_nodes=69, input_len=12, horizon=12, in_channels=2, out_channels=2,
                       steps_per_day=48)
    m = build_model("flowdistill", ctx)
    assert (m.hidden_dim, m.latent_dim, m.num_samples, len(m.blocks)) == (256, 128, 10, 3)
    # history 24*64+64 = 1600; node 69*64 = 4416; tod 48*64 = 3072; dow 7*64 = 448;
    # 3 blocks * 2 * (256*256 + 256) = 394752; head 128*24 + 24 = 3096 -> 407384
    assert count_parameters(m) == 407384
    assert count_parameters(build_model("mlp", ctx)) == 407384
    assert build_model("mlp", ctx).use_ib is False
    assert build_model("flowdistill-noib", ctx).use_ib is False
    assert build_model("flowdistill-noteacher", ctx).use_ib is True

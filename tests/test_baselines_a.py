"""Unit tests for STGCN, Graph WaveNet, DCRNN and T-GCN (tiny synthetic inputs, CPU)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from baselines import graph
from baselines.dcrnn import DCRNN
from baselines.gwnet import GraphWaveNet
from baselines.stgcn import STGCN
from baselines.tgcn import TGCN
from benchmark.batch import Batch
from benchmark.models import ModelContext, build_model, count_parameters

N, T_IN, C, C_OUT, B, SPD = 7, 12, 2, 2, 2, 48
MODELS = ["stgcn", "stgcn-gcn", "gwnet", "dcrnn", "tgcn"]


pytestmark = pytest.mark.usefixtures("one_thread")


def ring_adjacency(n: int = N) -> np.ndarray:
    a = np.zeros((n, n), dtype=np.float32)
    for i in range(n):
        a[i, (i + 1) % n] = a[(i + 1) % n, i] = 1.0
    return a


def two_components() -> np.ndarray:
    """Nodes 0-3 form a path, nodes 4-6 another; no edge between the two groups."""
    a = np.zeros((N, N), dtype=np.float32)
    for i, j in [(0, 1), (1, 2), (2, 3), (4, 5), (5, 6)]:
        a[i, j] = a[j, i] = 1.0
    return a


def make_batch(horizon: int, seed: int = 0, start: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    tod = (torch.arange(T_IN)[None] + torch.tensor([[0], [20]])) % SPD
    y_tod = (tod[:, -1:] + 1 + torch.arange(horizon)[None]) % SPD
    return Batch(
        x=torch.randn(B, T_IN, N, C, generator=g),
        y=torch.randn(B, horizon, N, C_OUT, generator=g),
        x_tod=tod, x_dow=torch.zeros(B, T_IN, dtype=torch.long),
        y_tod=y_tod, y_dow=torch.zeros(B, horizon, dtype=torch.long),
        start=torch.tensor([start, start + 5]),
    )


def context(horizon: int, adjacency=None, series=None, n: int = N) -> ModelContext:
    return ModelContext(num_nodes=n, input_len=T_IN, horizon=horizon, in_channels=C,
                        out_channels=C_OUT, steps_per_day=SPD, adjacency=adjacency,
                        series=series, target_channel_idx=(0, 1))


@pytest.mark.parametrize("horizon", [12, 3])
@pytest.mark.parametrize("name", MODELS)
def test_output_shape_backward_and_params(name, horizon):
    torch.manual_seed(0)
    model = build_model(name, context(horizon, ring_adjacency()))
    batch = make_batch(horizon)
    out = model(batch)
    assert out.shape == (B, horizon, N, C_OUT)
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    missing = [k for k, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"{name}: parameters without gradient: {missing}"
    assert count_parameters(model) > 0


@pytest.mark.parametrize("name", ["stgcn", "stgcn-gcn", "dcrnn", "tgcn"])
def test_models_needing_a_graph_raise_clearly(name):
    with pytest.raises(ValueError, match="needs an adjacency"):
        build_model(name, context(3, None))
    cls = {"stgcn": STGCN, "stgcn-gcn": STGCN, "dcrnn": DCRNN, "tgcn": TGCN}[name]
    kwargs = dict(num_nodes=N, input_len=T_IN, horizon=3, in_channels=C, out_channels=C_OUT,
                  steps_per_day=SPD, adjacency=None)
    accepted = cls.__init__.__code__.co_varnames
    with pytest.raises(ValueError, match="needs an adjacency"):
        cls(**{k: v for k, v in kwargs.items() if k in accepted})
    with pytest.raises(ValueError, match="has 4 nodes but the data has 7"):
        build_model(name, context(3, np.ones((4, 4), dtype=np.float32)))


def test_gwnet_adaptive_only_fixed_only_and_no_time_of_day():
    torch.manual_seed(0)
    batch = make_batch(3)
    m = build_model("gwnet", context(3, None))  # adaptive-only (paper Table 3)
    assert m.num_fixed == 0 and len(m.supports()) == 1
    assert m(batch).shape == (B, 3, N, C_OUT)
    m = build_model("gwnet", context(3, ring_adjacency()), {"adaptive_adj": False,
                                                             "time_of_day": False})
    assert len(m.supports()) == 2 and m.start_conv.in_channels == C
    assert m(batch).shape == (B, 3, N, C_OUT)
    with pytest.raises(ValueError, match="adaptive_adj=True"):
        build_model("gwnet", context(3, None), {"adaptive_adj": False})
    # Receptive field 1 + 4 * (1 + 2) = 13 > 12 input steps: the input is left-padded.
    assert m.receptive_field == 13


def test_gwnet_adaptive_adjacency_is_row_softmax_of_relu():
    torch.manual_seed(0)
    m = build_model("gwnet", context(3, None))
    with torch.no_grad():
        m.node_emb1.copy_(torch.tensor([[1.0, 0.0]] + [[0.0, 0.0]] * (N - 1)).repeat(1, 5))
        m.node_emb2.copy_(torch.tensor([[2.0, 0.0]] + [[-1.0, 0.0]] * (N - 1)).repeat(1, 5))
    adp = m.supports()[0]
    # Row 0: E1[0] . E2[j] = 5 * 2 = 10 for j = 0, 5 * (-1) -> relu 0 otherwise.
    e = math.exp(10.0)
    np.testing.assert_allclose(adp[0, 0].item(), e / (e + N - 1), rtol=1e-6)
    np.testing.assert_allclose(adp[1].detach().numpy(), np.full(N, 1.0 / N), rtol=1e-6)
    np.testing.assert_allclose(adp.sum(1).detach().numpy(), 1.0, rtol=1e-6)


@pytest.mark.parametrize("name, overrides", [("stgcn-gcn", {}), ("dcrnn", {}), ("tgcn", {}),
                                             ("gwnet", {"adaptive_adj": False})])
def test_no_information_flows_between_disconnected_components(name, overrides):
    """A change at node 6 must not reach nodes 0-3 when the graph has no path between them.

    STGCN(Cheb) is excluded: its layer norm over [N, C] mixes every node by design; STGCN(1st)
    is included with its layer norms removed for this check.
    """
    torch.manual_seed(0)
    model = build_model(name, context(3, two_components()), overrides).eval()
    if name == "stgcn-gcn":
        for block in model.blocks:
            block.norm = torch.nn.Identity()
        model.out_norm = torch.nn.Identity()
    batch = make_batch(3)
    out1 = model(batch)
    batch.x[:, :, 6] += 5.0
    out2 = model(batch)
    torch.testing.assert_close(out1[:, :, :4], out2[:, :, :4])
    assert not torch.allclose(out1[:, :, 4:], out2[:, :, 4:])


def test_stgcn_basis_and_short_input_error():
    a = ring_adjacency()
    m = build_model("stgcn", context(3, a))
    expected = graph.chebyshev_basis(graph.scaled_laplacian(a), 3)
    np.testing.assert_allclose(m.basis.numpy(), expected, atol=1e-6)
    m1 = build_model("stgcn-gcn", context(3, a))
    np.testing.assert_allclose(m1.basis[0].numpy(), graph.symmetric_normalize(a), atol=1e-6)
    with pytest.raises(ValueError, match="input_len=8 is too short"):
        STGCN(num_nodes=N, input_len=8, horizon=3, in_channels=C, out_channels=C_OUT,
              adjacency=a)


def test_dcrnn_scheduled_sampling_reads_truth_only_in_training():
    torch.manual_seed(0)
    horizon, total = 3, 40
    series = torch.randn(total, N, C)
    ctx = context(horizon, ring_adjacency(), series=series)
    model = build_model("dcrnn", ctx, {"scheduled_sampling": True, "cl_decay_steps": 10**6})
    assert model.teacher_forcing_prob() == pytest.approx(1e6 / (1e6 + 1.0))
    batch = make_batch(horizon, start=0)
    series2 = series.clone()
    series2[T_IN:T_IN + horizon] += 3.0  # the future of the first window
    model2 = build_model("dcrnn", context(horizon, ring_adjacency(), series=series2),
                         {"scheduled_sampling": True, "cl_decay_steps": 10**6})
    model2.load_state_dict(model.state_dict())
    model.eval()
    model2.eval()
    torch.testing.assert_close(model(batch), model2(batch))  # evaluation never reads it
    assert int(model.batches_seen) == 0
    model.train()
    model2.train()
    torch.manual_seed(1)
    o1 = model(batch)
    torch.manual_seed(1)
    o2 = model2(batch)
    torch.testing.assert_close(o1[:, 0], o2[:, 0])  # the first step sees only the GO symbol
    assert not torch.allclose(o1[0, 1:], o2[0, 1:])  # later steps were fed the truth
    assert int(model.batches_seen) == 1
    with pytest.raises(ValueError, match="needs the scaled series"):
        build_model("dcrnn", context(horizon, ring_adjacency()), {"scheduled_sampling": True})


def test_parameter_counts_follow_the_architectures():
    ctx = context(12, ring_adjacency())
    # T-GCN: gates (C + H) * 2H + 2H, candidate (C + H) * H + H, head H * 12 * C_out + 12 * C_out.
    h = 64
    expected_tgcn = (C + h) * 2 * h + 2 * h + (C + h) * h + h + h * 12 * C_OUT + 12 * C_OUT
    assert count_parameters(build_model("tgcn", ctx)) == expected_tgcn
    # DCRNN: each gconv has (in + H) * (2K + 1) inputs; encoder input C + 1 (time of day).
    def cell(d_in: int) -> int:
        f = (d_in + h) * 5
        return f * 2 * h + 2 * h + f * h + h
    expected_dcrnn = cell(C + 1) + cell(h) + cell(C_OUT) + cell(h) + h * C_OUT + C_OUT
    assert count_parameters(build_model("dcrnn", ctx)) == expected_dcrnn
    assert isinstance(build_model("gwnet", ctx), GraphWaveNet)


def test_gwnet_last_step_skip_matches_the_full_skip_path():
    """The skip convs run on the last step only; the authors' form (every step, summed, then the
    last step taken) gives the same prediction."""
    from torch.nn import functional as F

    from baselines.layers import with_time_of_day

    torch.manual_seed(0)
    m = build_model("gwnet", context(3, ring_adjacency())).eval()
    batch = make_batch(3)

    def full_skip_forward(self, batch):
        x = with_time_of_day(batch, self.steps_per_day).permute(0, 3, 2, 1)
        x = self.start_conv(F.pad(x, (self.receptive_field - x.shape[-1], 0)))
        supports, skip = self.supports(), None
        for i in range(len(self.filter_convs)):
            residual = x
            h = torch.tanh(self.filter_convs[i](x)) * torch.sigmoid(self.gate_convs[i](x))
            s = self.skip_convs[i](h)
            skip = s if skip is None else s + skip[..., -s.shape[-1]:]
            if i < len(self.gconvs):
                x = self.norms[i](self.gconvs[i](h, supports) + residual[..., -h.shape[-1]:])
        y = self.end_conv2(F.relu(self.end_conv1(F.relu(skip[..., -1:]))))[..., 0]
        return y.reshape(y.shape[0], self.horizon, self.out_channels, -1).permute(0, 1, 3, 2)

    with torch.no_grad():
        torch.testing.assert_close(m(batch), full_skip_forward(m, batch), rtol=1e-5, atol=1e-6)

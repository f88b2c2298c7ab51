"""The shared layers of :mod:`baselines.layers` against hand-worked values, the per-model code
they replaced, and the seeded models built before the layers were shared."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from baselines import layers
from baselines.dcrnn import DCRNN
from baselines.gwnet import GraphWaveNet
from baselines.stid import STID
from benchmark.batch import Batch
from flowdistill.student import FlowDistillStudent

REFERENCE_DIR = Path(__file__).resolve().parent / "model_reference"


pytestmark = pytest.mark.usefixtures("one_thread")


def _reference_module():
    spec = importlib.util.spec_from_file_location("make_reference",
                                                  REFERENCE_DIR / "make_reference.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ---- ResidualMLP --------------------------------------------------------------------------

def test_residual_mlp_hand_example():
    """h = [1, -2]; FC1 = [[1, 0], [1, 1]], b1 = 0 -> [1, -1] -> ReLU [1, 0];
    FC2 = [[2, 0], [0, 3]], b2 = [0.5, 0] -> [2.5, 0]; + h -> [3.5, -2]."""
    block = layers.ResidualMLP(2, dropout=0.5).eval()
    with torch.no_grad():
        block.fc1.weight.copy_(torch.tensor([[1.0, 0.0], [1.0, 1.0]]))
        block.fc1.bias.zero_()
        block.fc2.weight.copy_(torch.tensor([[2.0, 0.0], [0.0, 3.0]]))
        block.fc2.bias.copy_(torch.tensor([0.5, 0.0]))
        out = block(torch.tensor([[1.0, -2.0]]))
    assert out.tolist() == [[3.5, -2.0]]


def test_residual_mlp_keys_seeded_init_and_dropout():
    """Keys fc1.*, fc2.* (checkpoints of STID and the student load unchanged); fc1 is drawn
    before fc2; dropout acts between the two maps in training only."""
    torch.manual_seed(0)
    block = layers.ResidualMLP(3, dropout=0.5)
    torch.manual_seed(0)
    fc1, fc2 = nn.Linear(3, 3), nn.Linear(3, 3)
    assert list(block.state_dict()) == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    assert torch.equal(block.fc1.weight, fc1.weight) and torch.equal(block.fc2.bias, fc2.bias)

    h = torch.randn(4, 5, 3)
    torch.manual_seed(1)
    out = block.train()(h)
    torch.manual_seed(1)
    mask_scaled = nn.functional.dropout(torch.relu(fc1(h)), 0.5, training=True)
    assert torch.equal(out, h + fc2(mask_scaled))
    assert torch.equal(block.eval()(h), h + fc2(torch.relu(fc1(h))))


def test_stid_and_student_use_the_shared_block():
    stid = STID(4, 3, 2, 1, 1, 24, num_layers=2)
    student = FlowDistillStudent(4, 3, 2, 1, 1, 24, num_layers=2)
    assert all(isinstance(b, layers.ResidualMLP) for b in (*stid.encoder, *student.blocks))


# ---- diffusion terms -----------------------------------------------------------------------

SHIFT = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])


def test_diffusion_terms_hand_example():
    """x = [1, 2, 3] on a path 0 <- 1 <- 2 (S x)_i = x_{i+1}: S x = [2, 3, 0], S^2 x = [3, 0, 0];
    S^T x = [0, 1, 2], (S^T)^2 x = [0, 0, 1]; the identity term once, then each support's
    powers in order."""
    x = torch.tensor([[[1.0], [2.0], [3.0]]])  # [B=1, N=3, D=1]
    out = layers.diffusion_terms(x, torch.stack([SHIFT, SHIFT.T]), 2, node_dim=1, feature_dim=-1)
    assert out.tolist() == [[[1, 2, 3, 0, 0], [2, 3, 0, 1, 0], [3, 0, 0, 2, 1]]]
    k0 = layers.diffusion_terms(x, [SHIFT], 0, node_dim=1, feature_dim=-1)
    assert torch.equal(k0, x)


def test_diffusion_terms_match_matrix_powers_in_both_layouts():
    """DCRNN's [B, N, D] and Graph WaveNet's [B, C, N, L] stacks are the same numbers: each
    against float64 matrix powers, and against each other after the layout permutation."""
    g = torch.Generator().manual_seed(0)
    b, n, c, t, k = 2, 5, 3, 4, 3
    supports = [torch.rand(n, n, generator=g) for _ in range(3)]
    x = torch.randn(b, c, n, t, generator=g)  # Graph WaveNet layout
    gw = layers.diffusion_terms(x, supports, k, node_dim=2, feature_dim=1)
    assert gw.shape == (b, c * (3 * k + 1), n, t)
    xn = x.double().numpy()
    expected = [xn] + [np.einsum("nm,bcml->bcnl", np.linalg.matrix_power(s.double().numpy(), p),
                                 xn) for s in supports for p in range(1, k + 1)]
    np.testing.assert_allclose(gw.double().numpy(), np.concatenate(expected, axis=1),
                               rtol=1e-5, atol=1e-5)

    x_dc = x.permute(0, 3, 2, 1).reshape(b * t, n, c)  # DCRNN layout, one row per (batch, step)
    dc = layers.diffusion_terms(x_dc, supports, k, node_dim=1, feature_dim=-1)
    as_gw = dc.reshape(b, t, n, -1).permute(0, 3, 2, 1)
    torch.testing.assert_close(as_gw, gw, rtol=1e-6, atol=1e-6)


def _old_dcrnn_terms(x, supports, k):
    """The loop DCRNN's DiffusionGraphConv ran before the stack was shared."""
    terms = [x]
    for s in supports:
        h = x
        for _ in range(k):
            h = torch.einsum("nm,bmd->bnd", s, h)
            terms.append(h)
    return torch.cat(terms, dim=-1)


def _old_gwnet_terms(x, supports, k):
    """The loop Graph WaveNet's DiffusionConv ran before the stack was shared."""
    out = [x]
    for s in supports:
        h = x
        for _ in range(k):
            h = torch.einsum("nm,bcml->bcnl", s, h)
            out.append(h)
    return torch.cat(out, dim=1)


def test_diffusion_terms_are_bitwise_the_replaced_loops():
    g = torch.Generator().manual_seed(1)
    n = 6
    supports = torch.rand(2, n, n, generator=g)
    x3 = torch.randn(4, n, 9, generator=g)
    x4 = torch.randn(4, 5, n, 7, generator=g)
    for k in (1, 2, 3):
        assert torch.equal(layers.diffusion_terms(x3, supports, k, 1, -1),
                           _old_dcrnn_terms(x3, supports, k))
        assert torch.equal(layers.diffusion_terms(x4, list(supports), k, 2, 1),
                           _old_gwnet_terms(x4, list(supports), k))


def test_diffusion_terms_rejects_a_bad_node_axis():
    with pytest.raises(ValueError, match="node_dim 3 outside x's 3 axes"):
        layers.diffusion_terms(torch.zeros(2, 3, 4), [SHIFT], 1, node_dim=3, feature_dim=-1)


def test_dual_random_walk_supports_hand_example():
    """A = [[0, 1, 3], [0, 0, 0], [2, 0, 0]]: out-degrees 4, 0, 2 -> P_f rows [0, 1/4, 3/4],
    [0, 0, 0] (no out-edge), [1, 0, 0]; A^T has rows [0, 0, 2], [1, 0, 0], [3, 0, 0] ->
    P_b = [[0, 0, 1], [1, 0, 0], [1, 0, 0]]."""
    a = np.array([[0, 1, 3], [0, 0, 0], [2, 0, 0]], dtype=np.float32)
    s = layers.dual_random_walk_supports(a)
    assert s.dtype == torch.float32 and s.shape == (2, 3, 3)
    assert s[0].tolist() == [[0, 0.25, 0.75], [0, 0, 0], [1, 0, 0]]
    assert s[1].tolist() == [[0, 0, 1], [1, 0, 0], [1, 0, 0]]


def test_with_time_of_day_hand_example():
    x = torch.arange(8, dtype=torch.float32).reshape(1, 2, 2, 2)
    batch = Batch(x=x, y=torch.zeros(1, 1, 2, 2), x_tod=torch.tensor([[6, 12]]),
                  x_dow=torch.zeros(1, 2, dtype=torch.long), y_tod=torch.zeros(1, 1),
                  y_dow=torch.zeros(1, 1), start=torch.zeros(1, dtype=torch.long))
    out = layers.with_time_of_day(batch, 24)
    assert torch.equal(out[..., :2], x)
    assert out[0, :, :, 2].tolist() == [[0.25, 0.25], [0.5, 0.5]]


def test_dcrnn_and_gwnet_use_the_shared_stack(monkeypatch):
    """Both models route their diffusion convolution through layers.diffusion_terms."""
    ref = _reference_module()
    calls = []
    shared = layers.diffusion_terms

    def spy(*args, **kwargs):
        calls.append(kwargs["node_dim"])
        return shared(*args, **kwargs)

    monkeypatch.setattr(layers, "diffusion_terms", spy)
    for case, node_dim, cls in (("dcrnn", 1, DCRNN), ("gwnet", 2, GraphWaveNet)):
        calls.clear()
        model = ref.build(case)
        assert isinstance(model, cls)
        with torch.no_grad():
            model.eval()(ref.make_batch())
        assert calls and set(calls) == {node_dim}


# ---- the models against the code before the layers were shared -----------------------------

REFERENCE = json.loads((REFERENCE_DIR / "reference.json").read_text())


@pytest.mark.parametrize("case", sorted(REFERENCE))
def test_models_match_the_code_before_sharing(case):
    """Same state_dict keys (old checkpoints load), same seeded parameters (creation order),
    same eval and training outputs and gradients as the tree before the layers were shared
    (``model_reference/reference.json``; to float32 rounding, since BLAS may differ between
    machines)."""
    ref = _reference_module()
    assert set(ref.CASES) == set(REFERENCE)
    expected, got = REFERENCE[case], ref.digest(case)
    assert got["keys"] == expected["keys"]
    for group in ("state", "outputs", "grads"):
        assert list(got[group]) == list(expected[group]), group
        for key, values in expected[group].items():
            np.testing.assert_allclose(got[group][key], values, rtol=2e-5, atol=1e-6,
                                       err_msg=f"{case} {group} {key}")

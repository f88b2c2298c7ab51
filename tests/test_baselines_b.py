"""Unit tests for ASTGCN, STSGCN, ST-WA, AGCRN, MTGNN and STID (tiny sizes, CPU, seeded)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from baselines.agcrn import AdaptiveGraphConv, adaptive_supports
from baselines.astgcn import scaled_combinatorial_laplacian
from baselines.mtgnn import GraphConstructor, MixProp
from baselines.stsgcn import localized_st_adjacency
from baselines.stwa import gaussian_kl, prime_factors_desc
from benchmark.batch import Batch
from benchmark.models import ModelContext, build_model, count_parameters, get_spec

N, T_IN, C, C_OUT, STEPS_PER_DAY = 7, 12, 2, 2, 48

# small widths so the whole file runs in a few seconds
SMALL = {
    "astgcn": {"cheb_filters": 8, "time_filters": 8},
    "stsgcn": {"embed_dim": 8, "filters": (8, 8, 8), "out_hidden": 16},
    "stwa": {"hidden": 8, "heads": 2, "memory_size": 4, "skip_dim": 16, "end_dim": 16,
             "encoder_hidden": 8},
    "agcrn": {"embed_dim": 4, "hidden": 8},
    "mtgnn": {"conv_channels": 8, "residual_channels": 8, "skip_channels": 8,
              "end_channels": 16, "node_dim": 8, "subgraph_size": 3},
    "stid": {"embed_dim": 8, "node_dim": 8, "tod_dim": 8, "dow_dim": 8},
}
MODELS = sorted(SMALL)
NEEDS_ADJ = {"astgcn", "stsgcn"}


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """Tiny tensors: one intra-op thread is faster and steadier on a shared 2-core CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, atol: float = 1e-6) -> None:
    """Light stand-in for torch.testing.assert_close (whose first call imports for seconds)."""
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert torch.allclose(actual, expected, rtol=1e-5, atol=atol), (actual, expected)


def ring_adjacency(n: int = N) -> np.ndarray:
    a = np.zeros((n, n), dtype=np.float32)
    for i in range(n):
        a[i, (i + 1) % n] = a[(i + 1) % n, i] = 1.0
    return a


def make_ctx(horizon: int = 12, input_len: int = T_IN, adjacency=None) -> ModelContext:
    return ModelContext(num_nodes=N, input_len=input_len, horizon=horizon, in_channels=C,
                        out_channels=C_OUT, steps_per_day=STEPS_PER_DAY,
                        adjacency=ring_adjacency() if adjacency is None else adjacency)


def make_batch(b: int = 3, input_len: int = T_IN, horizon: int = 12, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    return Batch(
        x=torch.randn(b, input_len, N, C, generator=g),
        y=torch.randn(b, horizon, N, C_OUT, generator=g),
        x_tod=torch.randint(0, STEPS_PER_DAY, (b, input_len), generator=g),
        x_dow=torch.randint(0, 7, (b, input_len), generator=g),
        y_tod=torch.randint(0, STEPS_PER_DAY, (b, horizon), generator=g),
        y_dow=torch.randint(0, 7, (b, horizon), generator=g),
        start=torch.arange(b),
    )


def build(name: str, horizon: int = 12, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return build_model(name, make_ctx(horizon), {**SMALL[name], **overrides})


# --------------------------------------------------------------------------- shapes, grads


@pytest.mark.parametrize("horizon", [12, 3])
@pytest.mark.parametrize("name", MODELS)
def test_output_shape(name, horizon):
    model = build(name, horizon)
    for mode in (model.train, model.eval):
        mode()
        out = model(make_batch(horizon=horizon))
        assert out.shape == (3, horizon, N, C_OUT)
        assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", MODELS)
def test_backward_reaches_every_parameter(name):
    model = build(name)
    model.train()
    out = model(make_batch())
    loss = out.abs().mean()
    extra = model.extra_loss()
    if extra is not None:
        loss = loss + extra
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"{name}: no gradient for {missing}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", MODELS)
def test_deterministic_with_seed(name):
    batch = make_batch()
    outs = []
    for _ in range(2):
        model = build(name, seed=123)
        model.train()  # dropout / latent sampling active: the seed must fix them too
        torch.manual_seed(7)
        outs.append(model(batch))
    assert torch.equal(outs[0], outs[1])
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(batch), model(batch))


@pytest.mark.parametrize("name", MODELS)
def test_registered_defaults_build_and_run(name):
    spec = get_spec(name)
    assert spec.citation and spec.defaults
    assert spec.needs_adjacency == (name in NEEDS_ADJ)
    torch.manual_seed(0)
    model = build_model(name, make_ctx())
    assert count_parameters(model) > 0
    with torch.no_grad():
        assert model.eval()(make_batch(b=1)).shape == (1, 12, N, C_OUT)


# --------------------------------------------------------------------------- clear errors


@pytest.mark.parametrize("name", MODELS)
def test_wrong_input_shape_names_the_model(name):
    model = build(name)
    bad = make_batch()
    bad.x = bad.x[:, :, :-1]  # one node short
    with pytest.raises(ValueError, match=name):
        model(bad)


@pytest.mark.parametrize("name", sorted(NEEDS_ADJ))
def test_missing_adjacency(name):
    ctx = ModelContext(num_nodes=N, input_len=T_IN, horizon=12, in_channels=C,
                       out_channels=C_OUT, steps_per_day=STEPS_PER_DAY, adjacency=None)
    with pytest.raises(ValueError, match="adjacency"):
        build_model(name, ctx, SMALL[name])
    factory = get_spec(name).factory
    with pytest.raises(ValueError, match="adjacency"):
        factory(num_nodes=N, input_len=T_IN, horizon=12, in_channels=C, out_channels=C_OUT,
                adjacency=None, **SMALL[name])
    with pytest.raises(ValueError, match="3 nodes but the data has 7"):
        factory(num_nodes=N, input_len=T_IN, horizon=12, in_channels=C, out_channels=C_OUT,
                adjacency=np.ones((3, 3)), **SMALL[name])


@pytest.mark.parametrize(("name", "overrides", "input_len", "match"), [
    ("stsgcn", {}, 8, "too short"),
    ("stsgcn", {"filters": (8, 16)}, T_IN, "must be equal"),
    ("stsgcn", {"mask_init": "zeros"}, T_IN, "mask_init"),
    ("astgcn", {"time_strides": 5}, T_IN, "divisible"),
    ("astgcn", {"laplacian": "random"}, T_IN, "laplacian"),
    ("stwa", {"hidden": 10, "heads": 4}, T_IN, "divisible"),
    ("stwa", {"window_sizes": (5, 2)}, T_IN, "product"),
    ("mtgnn", {"conv_channels": 6}, T_IN, "divisible by 4"),
    ("mtgnn", {"prop_beta": 1.5}, T_IN, "prop_beta"),
    ("agcrn", {"cheb_k": 1}, T_IN, "cheb_k"),
    ("stid", {"embed_dim": 0}, T_IN, "embed_dim"),
])
def test_unsupported_configs(name, overrides, input_len, match):
    with pytest.raises(ValueError, match=match):
        build_model(name, make_ctx(input_len=input_len), {**SMALL[name], **overrides})


def test_stid_rejects_out_of_range_time_index():
    model = build("stid")
    batch = make_batch()
    batch.x_tod[0, -1] = STEPS_PER_DAY
    with pytest.raises(ValueError, match="time-of-day"):
        model(batch)


def test_edge_lengths():
    """Short inputs where the paper allows them: MTGNN pads, ST-WA uses one window, STSGCN's
    minimum is 2 * layers + 1."""
    for name, t_in, overrides in [("mtgnn", 3, {}), ("stwa", 7, {}), ("agcrn", 1, {}),
                                  ("stid", 1, {}), ("astgcn", 4, {}),
                                  ("stsgcn", 9, {})]:
        torch.manual_seed(0)
        model = build_model(name, make_ctx(horizon=5, input_len=t_in),
                            {**SMALL[name], **overrides})
        out = model(make_batch(input_len=t_in, horizon=5))
        assert out.shape == (3, 5, N, C_OUT), name


# --------------------------------------------------------------------------- formulas


def test_localized_st_adjacency_hand_example():
    """STSGCN localized graph for N=2 with one edge 0-1 (weight 0.3 -> binarised)."""
    a = np.array([[0.0, 0.3], [0.3, 0.0]])
    expected = np.array([
        [1, 1, 1, 0, 0, 0],
        [1, 1, 0, 1, 0, 0],
        [1, 0, 1, 1, 1, 0],
        [0, 1, 1, 1, 0, 1],
        [0, 0, 1, 0, 1, 1],
        [0, 0, 0, 1, 1, 1],
    ], dtype=np.float32)
    np.testing.assert_array_equal(localized_st_adjacency(a), expected)


def test_stsgcn_row_normalized_mask_starts_as_mean_aggregation():
    model = build("stsgcn")
    eff = model.adj * model.mask
    assert_close(eff.sum(dim=1), torch.ones(3 * N))
    ones = build("stsgcn", mask_init="ones")
    assert_close(ones.adj * ones.mask, ones.adj)


def test_scaled_combinatorial_laplacian_hand_example():
    """Two nodes, one edge: L = [[1,-1],[-1,1]], lambda_max = 2, L~ = L - I."""
    lap = scaled_combinatorial_laplacian(np.array([[0.0, 1.0], [1.0, 0.0]]))
    np.testing.assert_allclose(lap, [[0.0, -1.0], [-1.0, 0.0]], atol=1e-12)
    # path 0-1-2: L eigenvalues 0, 1, 3
    path = np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]], dtype=float)
    lap3 = np.array([[1, -1, 0], [-1, 2, -1], [0, -1, 1]], dtype=float)
    np.testing.assert_allclose(scaled_combinatorial_laplacian(path),
                               2 * lap3 / 3 - np.eye(3), atol=1e-12)
    with pytest.raises(ValueError, match="no edges"):
        scaled_combinatorial_laplacian(np.zeros((3, 3)))


def test_astgcn_attention_columns_are_convex_weights():
    model = build("astgcn").eval()
    block = model.blocks[0]
    x = make_batch().x.permute(0, 2, 3, 1)  # [B, N, C, T]
    e = block.t_att(x)
    s = block.s_att(x)
    assert e.shape == (3, T_IN, T_IN) and s.shape == (3, N, N)
    assert_close(e.sum(dim=1), torch.ones(3, T_IN))
    assert_close(s.sum(dim=1), torch.ones(3, N))


def test_agcrn_supports_hand_example():
    """E = I_2: E E^T = I, so A = row softmax of I = [[e, 1], [1, e]] / (e + 1)."""
    sup = adaptive_supports(torch.eye(2), cheb_k=3)
    a = torch.tensor([[math.e, 1.0], [1.0, math.e]]) / (math.e + 1)
    assert_close(sup[0], torch.eye(2))
    assert_close(sup[1], a)
    assert_close(sup[2], 2 * a @ a - torch.eye(2))


def test_agcrn_graph_conv_matches_explicit_formula():
    """out_n = sum_k (T_k x)_n (E_n W_pool)_k + E_n b_pool, written out with einsum."""
    torch.manual_seed(0)
    conv = AdaptiveGraphConv(in_dim=3, out_dim=4, cheb_k=2, embed_dim=5)
    torch.nn.init.normal_(conv.bias_pool)
    emb, x = torch.randn(N, 5), torch.randn(2, N, 3)
    sup = adaptive_supports(emb, 2)
    theta = torch.einsum("nd,dkio->nkio", emb, conv.weights_pool)
    expected = (torch.einsum("knm,bmi,nkio->bno", sup, x, theta)
                + emb @ conv.bias_pool)
    assert_close(conv(x, sup, conv.node_params(emb)), expected)


def test_mtgnn_graph_is_sparse_and_unidirectional():
    torch.manual_seed(0)
    adj = GraphConstructor(num_nodes=6, k=2, dim=4, alpha=3.0)()
    assert (adj >= 0).all()
    assert ((adj > 0).sum(dim=1) <= 2).all()
    assert not ((adj > 0) & (adj.T > 0)).any()  # ReLU of an antisymmetric matrix


def test_mtgnn_topk_ties_go_to_the_lower_index():
    torch.manual_seed(0)
    graph = GraphConstructor(num_nodes=4, k=2, dim=2, alpha=100.0)  # saturates: ties at 1.0
    with torch.no_grad():
        graph.emb1.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]))
        graph.emb2.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0]]))
        for lin in (graph.lin1, graph.lin2):
            lin.weight.copy_(torch.eye(2))
            lin.bias.zero_()
    adj = graph()
    # row 0 scores nodes 1, 2, 3 equally (1.0); k=2 keeps nodes 1 and 2
    assert adj[0].tolist() == [0.0, 1.0, 1.0, 0.0]


def test_mtgnn_mixprop_hand_example():
    """Depth 1: H1 = beta X + (1 - beta) D~^-1 (A + I) X; the 1x1 conv picks H1."""
    beta = 0.25
    prop = MixProp(c_in=1, c_out=1, depth=1, beta=beta)
    with torch.no_grad():
        prop.mlp.weight.copy_(torch.tensor([0.0, 1.0]).view(1, 2, 1, 1))
        prop.mlp.bias.zero_()
    adj = torch.tensor([[0.0, 1.0], [0.0, 0.0]])  # edge 0 -> 1 only
    x = torch.tensor([2.0, 4.0]).view(1, 1, 2, 1)
    # A + I = [[1, 1], [0, 1]], rows normalised: [[.5, .5], [0, 1]]; A~ x = [3, 4]
    expected = torch.tensor([beta * 2 + (1 - beta) * 3, beta * 4 + (1 - beta) * 4])
    assert_close(prop(x, adj).view(2), expected)


def test_mtgnn_receptive_field_and_padding():
    model = build("mtgnn")
    assert model.receptive_field == 19 and model.padded_len == 19  # 3 layers, kernel 7
    de2 = build("mtgnn", dilation_exponential=2)
    assert de2.receptive_field == 1 + 6 * (2 ** 3 - 1)


def test_stwa_helpers():
    assert prime_factors_desc(12) == (3, 2, 2)
    assert prime_factors_desc(72) == (3, 3, 2, 2, 2)
    assert prime_factors_desc(7) == (7,)
    assert prime_factors_desc(1) == (1,)
    mu, logvar = torch.randn(3, 4), torch.randn(3, 4)
    ref = torch.distributions.kl_divergence(
        torch.distributions.Normal(mu, (0.5 * logvar).exp()),
        torch.distributions.Normal(torch.zeros(3, 4), torch.ones(3, 4))).sum()
    assert_close(gaussian_kl(mu, logvar), ref)


def test_stwa_extra_loss_is_weighted_kl():
    model = build("stwa", kl_weight=0.1).eval()
    batch = make_batch()
    with torch.no_grad():
        model(batch)
        hist = batch.x.permute(0, 2, 1, 3).reshape(3, N, -1)
        kl = gaussian_kl(model.mu_encoder(hist), model.logvar_encoder(hist))
        kl = kl + sum(gaussian_kl(layer.node_mu, layer.node_logvar) for layer in model.layers)
        assert_close(model.extra_loss(), 0.1 * kl)
    assert [layer.window for layer in model.layers] == [3, 2, 2]


def test_stid_uses_the_last_input_time_index():
    model = build("stid").eval()
    batch = make_batch()
    with torch.no_grad():
        ref = model(batch)
        batch.x_tod[:, :-1] = 0
        batch.x_dow[:, :-1] = 0
        assert_close(model(batch), ref)
        batch.x_tod[:, -1] = (batch.x_tod[:, -1] + 1) % STEPS_PER_DAY
        assert not torch.allclose(model(batch), ref)

"""baselines/sparse_graph.py and the sparse path of every fixed-graph model.

The normalisations against hand-worked values and against their dense namesakes in
baselines/graph.py; Lanczos' lambda_max against closed forms and ``numpy.linalg.eigvalsh``; each
model built with ``sparse_supports=True`` against the same seeded model with dense supports
(same parameters, forward and gradients within 1e-5); "auto", errors, run ids, copies.
"""

from __future__ import annotations

import copy
import io
import math
import warnings

import numpy as np
import pytest
import torch

from baselines import graph, layers, sparse_graph
from baselines.stsgcn import localized_st_adjacency
from benchmark.batch import Batch
from benchmark.experiment import RunSpec
from benchmark.models import ModelContext, build_model, registry, resolve_hparams

PATH = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])  # 0 - 1 - 2
N, T_IN, T_OUT, C, SPD, B = 30, 12, 3, 2, 48, 2


pytestmark = pytest.mark.usefixtures("one_thread")


def weighted_directed(n: int = N, seed: int = 7) -> np.ndarray:
    """Directed weights in [0.5, 2] on ~20% of pairs, a self loop on node 0, node n-1 isolated
    and node n-2 without out-edges: every corner the conventions name."""
    rng = np.random.default_rng(seed)
    a = rng.uniform(0.5, 2.0, (n, n)) * (rng.uniform(size=(n, n)) < 0.2)
    np.fill_diagonal(a, 0.0)
    a[0, 0] = 0.7
    a[n - 1], a[:, n - 1] = 0.0, 0.0
    a[n - 2] = 0.0
    return a.astype(np.float32)


def cycle(n: int) -> np.ndarray:
    a = np.zeros((n, n))
    for i in range(n):
        a[i, (i + 1) % n] = a[(i + 1) % n, i] = 1.0
    return a


# ------------------------------------------------------------------ normalisations, by hand


def test_normalisations_of_the_path_graph_by_hand():
    s6, h = 1.0 / math.sqrt(6.0), 1.0 / math.sqrt(2.0)
    # A + I has degrees (2, 3, 2): entry (i, j) = 1 / sqrt(d_i d_j)
    np.testing.assert_allclose(sparse_graph.symmetric_normalize(PATH).to_dense(),
                               [[0.5, s6, 0.0], [s6, 1 / 3, s6], [0.0, s6, 0.5]], atol=1e-15)
    np.testing.assert_allclose(
        sparse_graph.symmetric_normalize(PATH, add_self_loops=False).to_dense(),
        [[0.0, h, 0.0], [h, 0.0, h], [0.0, h, 0.0]], atol=1e-15)
    np.testing.assert_allclose(sparse_graph.random_walk_normalize(PATH).to_dense(),
                               [[0, 1, 0], [0.5, 0, 0.5], [0, 1, 0]])
    lap = np.array([[1.0, -h, 0.0], [-h, 1.0, -h], [0.0, -h, 1.0]])
    np.testing.assert_allclose(sparse_graph.normalized_laplacian(PATH).to_dense(), lap,
                               atol=1e-15)
    # eigenvalues of L: {0, 1, 2}, so lambda_max = 2 and L~ = L - I
    assert sparse_graph.lambda_max(sparse_graph.normalized_laplacian(PATH)) == \
        pytest.approx(2.0, abs=1e-12)
    np.testing.assert_allclose(sparse_graph.scaled_laplacian(PATH).to_dense(), lap - np.eye(3),
                               atol=1e-12)


def test_directed_transitions_self_loops_and_isolated_nodes_by_hand():
    a = np.array([[0.0, 2.0, 2.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    p_f, p_b = sparse_graph.transition_matrices(a)
    # row sums (4, 1, 0) -> P_f; A^T has row sums (0, 2, 3) -> P_b (zero rows stay zero)
    np.testing.assert_allclose(p_f.to_dense(), [[0, .5, .5], [0, 0, 1], [0, 0, 0]])
    np.testing.assert_allclose(p_b.to_dense(), [[0, 0, 0], [1, 0, 0], [2 / 3, 1 / 3, 0]])
    # a self loop of 1 on node 0 of the path: A + I has (0, 0) = 2 and degrees (3, 3, 2)
    looped = PATH.copy()
    looped[0, 0] = 1.0
    np.testing.assert_allclose(sparse_graph.symmetric_normalize(looped).to_dense()[0, :2],
                               [2 / 3, 1 / 3])
    # node 3 isolated: a zero row and column in L (graph.py's convention, unlike PyG's 1)
    iso = np.zeros((4, 4))
    iso[:3, :3] = PATH
    lap = sparse_graph.normalized_laplacian(iso).to_dense()
    assert lap[3, 3] == 0.0 and not lap[3].any() and not lap[:, 3].any()
    assert sparse_graph.symmetric_normalize(iso).to_dense()[3, 3] == 1.0  # only its loop
    # max(A, A^T) keeps the stronger direction
    np.testing.assert_allclose(sparse_graph.symmetrize(a).to_dense(),
                               [[0, 2, 2], [2, 0, 1], [2, 1, 0]])


@pytest.mark.parametrize("n", [5, 6, 13])
def test_lambda_max_of_cycles_matches_the_closed_form(n):
    # normalised Laplacian of the n-cycle: eigenvalues 1 - cos(2 pi k / n), k = 0..n-1
    expected = max(1 - math.cos(2 * math.pi * k / n) for k in range(n))
    got = sparse_graph.lambda_max(sparse_graph.normalized_laplacian(cycle(n)))
    assert got == pytest.approx(expected, abs=1e-10)


@pytest.mark.parametrize("n, seed", [(2, 0), (9, 1), (60, 2), (400, 3)])
def test_lambda_max_matches_eigvalsh(n, seed):
    a = graph.symmetrize(weighted_directed(n, seed))
    dense = np.linalg.eigvalsh(graph.normalized_laplacian(a)).max()
    assert sparse_graph.lambda_max(sparse_graph.normalized_laplacian(a)) == \
        pytest.approx(dense, abs=1e-10)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_normalisation_equals_its_dense_namesake(seed):
    a = weighted_directed(N, seed)
    s = graph.symmetrize(a)
    pairs = [(graph.symmetrize(a), sparse_graph.symmetrize(a)),
             (graph.symmetric_normalize(a), sparse_graph.symmetric_normalize(a)),
             (graph.symmetric_normalize(a, False), sparse_graph.symmetric_normalize(a, False)),
             (graph.random_walk_normalize(a), sparse_graph.random_walk_normalize(a)),
             (graph.normalized_laplacian(s), sparse_graph.normalized_laplacian(s)),
             (graph.scaled_laplacian(s), sparse_graph.scaled_laplacian(s)),
             (localized_st_adjacency(a), sparse_graph.localized_st_adjacency(a))]
    pairs += list(zip(graph.transition_matrices(a), sparse_graph.transition_matrices(a),
                      strict=True))
    for dense, sparse in pairs:
        np.testing.assert_allclose(sparse.to_dense(), dense, rtol=0, atol=1e-12)
    supports = sparse_graph.dual_random_walk_supports(a)
    stacked = layers.dual_random_walk_supports(a)
    for s_sparse, s_dense in zip(supports, stacked, strict=True):
        assert s_sparse.layout == torch.sparse_coo and s_sparse.dtype == torch.float32
        torch.testing.assert_close(s_sparse.to_dense(), s_dense, rtol=0, atol=1e-7)


def test_edge_list_input_forms_and_errors():
    a = weighted_directed(8)
    from_dense = sparse_graph.edge_list(a)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Sparse CSR tensor support is in beta state"
        csr = torch.tensor(a).to_sparse_csr()
    for other in (torch.tensor(a), torch.tensor(a).to_sparse(), csr):
        g = sparse_graph.edge_list(other)
        assert torch.equal(g.index, from_dense.index)
        torch.testing.assert_close(g.weight, from_dense.weight)
    explicit_zero = torch.sparse_coo_tensor([[0, 1], [1, 0]], [0.0, 2.0], (2, 2))
    assert sparse_graph.edge_list(explicit_zero).num_edges == 1
    with pytest.raises(ValueError, match="negative weights"):
        sparse_graph.edge_list(torch.sparse_coo_tensor([[0], [1]], [-1.0], (2, 2)))
    with pytest.raises(ValueError, match="NaN or infinite"):
        sparse_graph.edge_list(torch.sparse_coo_tensor([[0], [1]], [math.nan], (2, 2)))
    with pytest.raises(ValueError, match="square"):
        sparse_graph.edge_list(torch.zeros(2, 3).to_sparse())
    with pytest.raises(ValueError, match="has 8 nodes but the data has 9"):
        sparse_graph.edge_list(a, num_nodes=9)
    with pytest.raises(ValueError, match="symmetric"):
        sparse_graph.normalized_laplacian(a)
    with pytest.raises(ValueError, match="needs an adjacency"):
        sparse_graph.require_edge_list(None, 3, "STGCN")
    # a dense-path helper given a sparse graph densifies it
    np.testing.assert_array_equal(graph.as_adjacency(torch.tensor(a).to_sparse()), a)


# ------------------------------------------------------------- models: sparse against dense


def make_batch(n: int = N) -> Batch:
    g = torch.Generator().manual_seed(3)
    tod = (torch.randint(0, SPD, (B, 1), generator=g) + torch.arange(T_IN)) % SPD
    return Batch(x=torch.randn(B, T_IN, n, C, generator=g),
                 y=torch.randn(B, T_OUT, n, C, generator=g), x_tod=tod,
                 x_dow=torch.randint(0, 7, (B, T_IN), generator=g),
                 y_tod=torch.zeros(B, T_OUT, dtype=torch.long),
                 y_dow=torch.zeros(B, T_OUT, dtype=torch.long), start=torch.arange(B))


def context(adjacency, n: int = N) -> ModelContext:
    return ModelContext(num_nodes=n, input_len=T_IN, horizon=T_OUT, in_channels=C,
                        out_channels=C, steps_per_day=SPD, adjacency=adjacency)


SMALL_GWNET = dict(residual_channels=4, dilation_channels=4, skip_channels=8, end_channels=16,
                   blocks=2)
SPARSE_CASES = {
    "stgcn": ("stgcn", {"blocks": ((8, 4, 8), (8, 4, 8))}),
    "stgcn-ks4": ("stgcn", {"blocks": ((8, 4, 8), (8, 4, 8)), "ks": 4}),
    "stgcn-gcn": ("stgcn-gcn", {"blocks": ((8, 4, 8), (8, 4, 8))}),
    "tgcn": ("tgcn", {"hidden_dim": 8}),
    "dcrnn": ("dcrnn", {"rnn_units": 8}),
    "dcrnn-k3": ("dcrnn", {"rnn_units": 8, "max_diffusion_step": 3}),
    "gwnet": ("gwnet", SMALL_GWNET),
    "gwnet-fixed-only": ("gwnet", {**SMALL_GWNET, "adaptive_adj": False}),
    "stsgcn-no-mask": ("stsgcn", {"filters": (8, 8), "embed_dim": 8, "out_hidden": 8,
                                  "use_mask": False}),
}


def _run(model: str, hparams: dict, adjacency, sparse) -> tuple:
    torch.manual_seed(0)
    m = build_model(model, context(adjacency), {**hparams, "sparse_supports": sparse})
    batch = make_batch()
    m.eval()
    with torch.no_grad():
        evaluated = m(batch)
    m.train()
    torch.manual_seed(1)
    out = m(batch)
    out.pow(2).mean().backward()
    grads = {k: p.grad.clone() for k, p in m.named_parameters() if p.grad is not None}
    return m, evaluated, out.detach(), grads


@pytest.mark.parametrize("case", sorted(SPARSE_CASES))
def test_sparse_supports_equal_dense_forward_and_gradients(case):
    model, hparams = SPARSE_CASES[case]
    a = weighted_directed()
    dense, e_dense, o_dense, g_dense = _run(model, hparams, a, False)
    sparse, e_sparse, o_sparse, g_sparse = _run(model, hparams, torch.tensor(a).to_sparse(),
                                                True)
    assert sparse.sparse and not dense.sparse
    # same parameters in the same order (seeded: bitwise), same state_dict keys
    assert list(dense.state_dict()) == list(sparse.state_dict())
    for (k, p), (k2, q) in zip(dense.named_parameters(), sparse.named_parameters(), strict=True):
        assert k == k2 and torch.equal(p, q), k
    buffers = [b for b in sparse.buffers() if b.layout != torch.strided]
    assert buffers, "the sparse model holds no sparse support"
    torch.testing.assert_close(e_sparse, e_dense, rtol=0, atol=1e-5)
    torch.testing.assert_close(o_sparse, o_dense, rtol=0, atol=1e-5)
    assert g_dense.keys() == g_sparse.keys() and g_dense
    for k in g_dense:
        torch.testing.assert_close(g_sparse[k], g_dense[k], rtol=0, atol=1e-5, msg=k)


def test_gradient_reaches_the_input_through_sparse_products():
    torch.manual_seed(0)
    a = weighted_directed()
    grads = []
    for sparse in (False, True):
        m = build_model("tgcn", context(a), {"hidden_dim": 8, "sparse_supports": sparse})
        batch = make_batch()
        batch.x.requires_grad_(True)
        m(batch).sum().backward()
        grads.append(batch.x.grad)
        torch.manual_seed(0)
    assert grads[1].abs().sum() > 0
    torch.testing.assert_close(grads[1], grads[0], rtol=0, atol=1e-5)


def test_auto_is_dense_for_small_dense_graphs_and_sparse_otherwise(monkeypatch):
    a = weighted_directed()
    assert not build_model("stgcn", context(a)).sparse  # the default: "auto"
    assert build_model("stgcn", context(torch.tensor(a).to_sparse())).sparse
    monkeypatch.setattr(sparse_graph, "SPARSE_AUTO_MIN_NODES", N)
    for name in ("stgcn", "stgcn-gcn", "dcrnn", "tgcn"):
        assert build_model(name, context(a)).sparse, name
    # STSGCN: "auto" stays dense with its (dense) mask, sparse without it
    assert not build_model("stsgcn", context(a)).sparse
    assert build_model("stsgcn", context(a), {"use_mask": False}).sparse
    monkeypatch.setattr(sparse_graph, "SPARSE_AUTO_MIN_NODES", N + 1)
    assert not build_model("dcrnn", context(a)).sparse


def test_bad_option_and_stsgcn_mask_raise_clearly():
    a = weighted_directed()
    with pytest.raises(ValueError, match="sparse_supports must be true, false or \"auto\""):
        build_model("dcrnn", context(a), {"sparse_supports": "yes"})
    with pytest.raises(ValueError, match="needs use_mask=False"):
        build_model("stsgcn", context(a), {"sparse_supports": True})
    with pytest.raises(ValueError, match="needs an adjacency"):
        build_model("tgcn", context(None), {"sparse_supports": True})


def test_option_is_not_a_registered_default_so_run_ids_stay():
    for name in registry():
        assert "sparse_supports" not in resolve_hparams(name), name
    plain = RunSpec(model="stgcn", dataset="synthetic")
    chosen = RunSpec(model="stgcn", dataset="synthetic", hparams={"sparse_supports": True})
    assert chosen.run_id() != plain.run_id()  # an explicit choice is part of the identity
    graph_free = RunSpec(model="stid", dataset="synthetic", hparams={"sparse_supports": True})
    assert graph_free.run_id() == RunSpec(model="stid", dataset="synthetic").run_id()


def test_sparse_models_copy_and_reload():
    a = torch.tensor(weighted_directed()).to_sparse()
    for name, hparams in (("dcrnn", {"rnn_units": 8}),
                          ("stsgcn", {"filters": (8, 8), "embed_dim": 8, "out_hidden": 8,
                                      "use_mask": False})):
        torch.manual_seed(0)
        m = build_model(name, context(a), {**hparams, "sparse_supports": True}).eval()
        twin = copy.deepcopy(m)
        buf = io.BytesIO()
        torch.save(m.state_dict(), buf)
        buf.seek(0)
        torch.manual_seed(5)
        fresh = build_model(name, context(a), {**hparams, "sparse_supports": True}).eval()
        fresh.load_state_dict(torch.load(buf, weights_only=True))
        with torch.no_grad():
            out = m(make_batch())
            torch.testing.assert_close(twin(make_batch()), out, rtol=0, atol=0)
            torch.testing.assert_close(fresh(make_batch()), out, rtol=0, atol=0)


def test_dense_by_design_models_say_why():
    reg = registry()
    for name in ("astgcn", "mtgnn", "agcrn", "gwnet", "stsgcn"):
        reason = reg[name].factory.dense_graph_reason(resolve_hparams(name))
        assert isinstance(reason, str) and "dense" in reason, name
    assert reg["gwnet"].factory.dense_graph_reason({"adaptive_adj": False}) is None
    assert reg["stsgcn"].factory.dense_graph_reason({"use_mask": False}) is None
    for name in ("stgcn", "dcrnn", "tgcn", "stid", "flowdistill"):
        assert not hasattr(reg[name].factory, "dense_graph_reason"), name


def test_node_matmul_and_diffusion_terms_match_einsum():
    g = torch.Generator().manual_seed(0)
    s = torch.rand(5, 5, generator=g) * (torch.rand(5, 5, generator=g) < 0.4)
    x = torch.randn(2, 5, 3, 4, generator=g)
    torch.testing.assert_close(layers.node_matmul(s.to_sparse(), x, 1),
                               torch.einsum("nm,bmcd->bncd", s, x))
    y = torch.randn(3, 4, 5, generator=g)
    torch.testing.assert_close(layers.node_matmul(s.to_sparse(), y, 2),
                               torch.einsum("nm,abm->abn", s, y))
    # a sparse and a dense support in one call (Graph WaveNet: fixed sparse + adaptive dense)
    mixed = [s, s.T.contiguous().to_sparse()]
    torch.testing.assert_close(
        layers.diffusion_terms(y, mixed, 2, node_dim=2, feature_dim=0),
        layers.diffusion_terms(y, [s, s.T.contiguous()], 2, node_dim=2, feature_dim=0))

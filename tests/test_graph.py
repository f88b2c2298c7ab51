"""Hand-worked checks for baselines/graph.py (every expected value derived in the comments)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from baselines import graph

# Path graph 0 - 1 - 2 (unit weights), used throughout.
PATH = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])


def test_symmetric_normalize_path_graph():
    # A + I = [[1,1,0],[1,1,1],[0,1,1]], degrees (2, 3, 2); entry (i,j) = 1 / sqrt(d_i d_j).
    s6 = 1.0 / math.sqrt(6.0)
    expected = np.array([[0.5, s6, 0.0], [s6, 1.0 / 3.0, s6], [0.0, s6, 0.5]])
    np.testing.assert_allclose(graph.symmetric_normalize(PATH), expected, atol=1e-12)
    # Without self loops: degrees (1, 2, 1) -> off-diagonal 1/sqrt(2), zero diagonal.
    h = 1.0 / math.sqrt(2.0)
    expected_nl = np.array([[0.0, h, 0.0], [h, 0.0, h], [0.0, h, 0.0]])
    np.testing.assert_allclose(graph.symmetric_normalize(PATH, add_self_loops=False), expected_nl)


def test_random_walk_and_transition_matrices_directed():
    a = np.array([[0.0, 2.0, 2.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    # Row sums (4, 1, 0): P_f = [[0,.5,.5],[0,0,1],[0,0,0]] (zero row stays zero).
    p_f_expected = np.array([[0.0, 0.5, 0.5], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    # A^T = [[0,0,0],[2,0,0],[2,1,0]], row sums (0, 2, 3).
    p_b_expected = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [2 / 3, 1 / 3, 0.0]])
    np.testing.assert_allclose(graph.random_walk_normalize(a), p_f_expected)
    p_f, p_b = graph.transition_matrices(a)
    np.testing.assert_allclose(p_f, p_f_expected)
    np.testing.assert_allclose(p_b, p_b_expected)
    np.testing.assert_allclose(graph.random_walk_normalize(PATH),
                               [[0, 1, 0], [0.5, 0, 0.5], [0, 1, 0]])


def test_laplacian_scaled_laplacian_and_chebyshev_on_path():
    h = 1.0 / math.sqrt(2.0)
    lap = np.array([[1.0, -h, 0.0], [-h, 1.0, -h], [0.0, -h, 1.0]])
    np.testing.assert_allclose(graph.normalized_laplacian(PATH), lap, atol=1e-12)
    # Eigenvalues of L are 1 - {sqrt2, 0, -sqrt2}/sqrt2 = {0, 1, 2}, so lambda_max = 2
    # and L~ = L - I = -D^-1/2 A D^-1/2.
    lt = graph.scaled_laplacian(PATH)
    np.testing.assert_allclose(lt, lap - np.eye(3), atol=1e-12)
    np.testing.assert_allclose(graph.scaled_laplacian(PATH, lambda_max=2.0), lt, atol=1e-12)
    # T2 = 2 L~^2 - I; L~^2 = [[.5,0,.5],[0,1,0],[.5,0,.5]] -> T2 = anti-identity.
    basis = graph.chebyshev_basis(lt, 3)
    assert basis.shape == (3, 3, 3)
    np.testing.assert_allclose(basis[0], np.eye(3))
    np.testing.assert_allclose(basis[1], lt)
    np.testing.assert_allclose(basis[2], np.fliplr(np.eye(3)), atol=1e-12)
    # T3 = 2 L~ T2 - T1 (recurrence), checked against the cos form: T_k(cos t) = cos(k t).
    b4 = graph.chebyshev_basis(lt, 4)
    evals, evecs = np.linalg.eigh(lt)
    t3 = evecs @ np.diag(np.cos(3 * np.arccos(np.clip(evals, -1, 1)))) @ evecs.T
    np.testing.assert_allclose(b4[3], t3, atol=1e-10)


def test_laplacian_matches_torch_geometric_and_handles_isolated_nodes():
    from torch_geometric.utils import get_laplacian, to_dense_adj

    a = np.array([[0, 1, 2, 0], [1, 0, 0, 0], [2, 0, 0, 0], [0, 0, 0, 0]], dtype=float)
    idx = np.nonzero(a)
    ei, ew = get_laplacian(torch.tensor(np.stack(idx)), torch.tensor(a[idx]),
                           normalization="sym", num_nodes=4)
    ref = to_dense_adj(ei, edge_attr=ew, max_num_nodes=4)[0].numpy()
    ours = graph.normalized_laplacian(a)
    # PyG puts 1 on the diagonal of an isolated node; we follow the STGCN code (0 there).
    np.testing.assert_allclose(ours[:3, :3], ref[:3, :3], atol=1e-12)
    assert ours[3, 3] == 0.0 and np.all(np.isfinite(graph.scaled_laplacian(a)))
    # D^-1/2 A D^-1/2 = I - L_sym on the non-isolated nodes (PyG's Laplacian as reference).
    np.testing.assert_allclose(graph.symmetric_normalize(a, add_self_loops=False)[:3, :3],
                               np.eye(3) - ref[:3, :3], atol=1e-12)
    # With self loops: the Laplacian of (A + I) in PyG drops the loops, so compare by hand:
    # degrees of A + I are (4, 2, 3, 1), entry (0, 2) = 2 / sqrt(4 * 3).
    np.testing.assert_allclose(graph.symmetric_normalize(a)[0, 2], 2 / math.sqrt(12.0))
    assert graph.symmetric_normalize(a)[3, 3] == 1.0
    assert np.all(np.isfinite(graph.symmetric_normalize(a)))
    assert np.all(np.isfinite(graph.random_walk_normalize(a)))


def test_gaussian_kernel_adjacency_stgcn_units():
    d_km = np.array([[0.0, 1.0, 3.0], [1.0, 0.0, 2.0], [3.0, 2.0, 0.0]])
    w = graph.gaussian_kernel_adjacency(d_km, sigma2=10.0, epsilon=0.5)
    # exp(-1/10) = 0.9048 kept; exp(-4/10) = 0.6703 kept; exp(-9/10) = 0.4066 < 0.5 dropped;
    # the diagonal is zero (i != j).
    e1, e4 = math.exp(-0.1), math.exp(-0.4)
    np.testing.assert_allclose(w, [[0, e1, 0], [e1, 0, e4], [0, e4, 0]], atol=1e-12)
    # The STGCN code's form: metres / 1e4 with sigma2 = 0.1 gives the same matrix.
    d_m = d_km * 1000.0
    w_code = np.exp(-((d_m / 1e4) ** 2) / 0.1)
    w_code = w_code * (w_code >= 0.5) * (1 - np.eye(3))
    np.testing.assert_allclose(w, w_code, atol=1e-12)
    # Link radius sqrt(10 ln 2) = 2.633 km.
    r = math.sqrt(10 * math.log(2))
    w2 = graph.gaussian_kernel_adjacency(np.array([[0, r - 1e-6], [r - 1e-6, 0]]))
    w3 = graph.gaussian_kernel_adjacency(np.array([[0, r + 1e-6], [r + 1e-6, 0]]))
    assert w2[0, 1] > 0 and w3[0, 1] == 0
    assert graph.gaussian_kernel_adjacency(np.array([[0, np.inf], [np.inf, 0]]))[0, 1] == 0


def test_haversine_known_distances():
    # One degree of latitude = R * pi / 180 = 111.195 km; a quarter of the equator = R * pi / 2.
    r = graph.EARTH_RADIUS_KM
    d = graph.haversine_km([0.0, 1.0, 0.0], [0.0, 0.0, 90.0])
    np.testing.assert_allclose(d[0, 1], r * math.pi / 180, rtol=1e-12)
    np.testing.assert_allclose(d[0, 2], r * math.pi / 2, rtol=1e-12)
    np.testing.assert_allclose(d, d.T)
    np.testing.assert_allclose(np.diag(d), 0.0)
    # Two stations 1 km apart on the equator: adjacency weight exp(-1/10).
    dlon = math.degrees(1.0 / r)
    w = graph.distance_adjacency_from_coords([0.0, 0.0], [0.0, dlon])
    np.testing.assert_allclose(w[0, 1], math.exp(-0.1), rtol=1e-9)


@pytest.mark.parametrize(
    "bad, msg",
    [
        (np.zeros((2, 3)), "square"),
        (np.array([[0, np.nan], [1, 0]]), "NaN"),
        (np.array([[0, -1.0], [1, 0]]), "negative"),
    ],
)
def test_bad_adjacency_raises_clear_errors(bad, msg):
    with pytest.raises(ValueError, match=msg):
        graph.symmetric_normalize(bad)


def test_require_adjacency_and_wrong_size():
    with pytest.raises(ValueError, match="needs an adjacency"):
        graph.require_adjacency(None, 3, "STGCN")
    with pytest.raises(ValueError, match="has 3 nodes but the data has 4"):
        graph.require_adjacency(PATH, 4, "STGCN")
    with pytest.raises(ValueError, match="symmetric"):
        graph.scaled_laplacian(np.array([[0, 1.0], [0, 0]]))
    np.testing.assert_allclose(graph.symmetrize(np.array([[0, 1.0], [0.5, 0]])),
                               [[0, 1], [1, 0]])

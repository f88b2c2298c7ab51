"""STGCN's spatial layer projects channels before propagating over the graph
(``sum_k T_k (x theta_k)``); it must equal the paper's written order ``sum_k (T_k x) theta_k``
(Yu et al. 2018, eq. 3), computed here independently with explicit Chebyshev polynomials of a
dense matrix, on the dense and the sparse path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from baselines.stgcn import SpatialConv


def _scaled_laplacian(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.random((n, n)) * (rng.random((n, n)) < 0.4)
    a = np.maximum(a, a.T)
    np.fill_diagonal(a, 0.0)
    d = a.sum(1)
    d_inv = np.where(d > 0, d ** -0.5, 0.0)
    lap = np.eye(n) - d_inv[:, None] * a * d_inv[None, :]
    lam = np.linalg.eigvalsh(lap).max()
    return 2.0 * lap / lam - np.eye(n)


def _cheb(l_tilde: np.ndarray, ks: int) -> np.ndarray:
    n = l_tilde.shape[0]
    polys = [np.eye(n), l_tilde]
    while len(polys) < ks:
        polys.append(2.0 * l_tilde @ polys[-1] - polys[-2])
    return np.stack(polys[:ks])


def _propagate_first(layer: SpatialConv, x: torch.Tensor, basis: np.ndarray) -> torch.Tensor:
    """relu(theta([T_0 x | ... | T_{Ks-1} x]) + align(x)) in float64."""
    xd = x.double()
    terms = [torch.einsum("nm,btmc->btnc", torch.from_numpy(bk), xd) for bk in basis]
    w, bias = layer.theta.weight.double(), layer.theta.bias.double()
    y = torch.cat(terms, dim=-1) @ w.T + bias
    return torch.relu(y + layer.align(x).double())


@pytest.mark.parametrize("ks, c_in, c_out, chebyshev", [
    (3, 64, 16, True), (2, 8, 5, True), (1, 6, 6, True), (4, 5, 7, True), (1, 12, 4, False)])
@pytest.mark.parametrize("sparse", [False, True])
def test_projection_first_equals_paper_order(ks, c_in, c_out, chebyshev, sparse):
    torch.manual_seed(0)
    n = 11
    l_tilde = _scaled_laplacian(n, seed=ks)
    basis = _cheb(l_tilde, ks) if chebyshev else l_tilde[None]  # any matrix stands in for eq. 6
    layer = SpatialConv(ks, c_in, c_out, chebyshev=chebyshev)
    x = torch.randn(2, 3, n, c_in)
    if sparse:
        support = torch.tensor(l_tilde, dtype=torch.float32).to_sparse_coo()
    else:
        support = torch.tensor(basis, dtype=torch.float32)
    got = layer(x, support).double()
    want = _propagate_first(layer, x, basis)
    assert got.shape == (2, 3, n, c_out)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_projection_first_gradients_match():
    torch.manual_seed(1)
    n, ks = 9, 3
    basis = _cheb(_scaled_laplacian(n, seed=3), ks)
    layer = SpatialConv(ks, 10, 4)
    x = torch.randn(2, 2, n, 10, requires_grad=True)
    layer(x, torch.tensor(basis, dtype=torch.float32)).square().sum().backward()
    got = (x.grad.clone(), layer.theta.weight.grad.clone())
    x.grad = None
    layer.zero_grad()
    _propagate_first(layer, x, basis).square().sum().backward()
    torch.testing.assert_close(x.grad, got[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(layer.theta.weight.grad, got[1], rtol=1e-4, atol=1e-5)

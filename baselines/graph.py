"""Adjacency utilities shared by the graph baselines (dense numpy, float64 in, float64 out).

Sparse counterparts (edge lists, for large N): :mod:`baselines.sparse_graph`.

Conventions: ``adj`` is a dense ``[N, N]`` array with ``adj[i, j]`` the weight of the edge
i -> j; degrees are row sums unless stated otherwise. Zero-degree rows are left at zero
(``1/0`` is taken as 0), so isolated nodes never produce NaN. Every function validates its input
and raises :class:`ValueError` naming the argument and the problem.

Distance graphs (STGCN, Yu et al. IJCAI 2018, eq. 10): the paper states sigma^2 = 10 and
epsilon = 0.5 without units. The authors' code (``utils/math_graph.py::weight_matrix`` in
VeritasYin/STGCN_IJCAI-18) divides the PeMSD7 distance matrix, given in metres, by 10 000 and uses
sigma2 = 0.1: exp(-(d_m / 1e4)^2 / 0.1) = exp(-d_km^2 / 10). So the paper's sigma^2 = 10 is in
**kilometres squared**; with epsilon = 0.5 two stations are linked iff d <= sqrt(10 ln 2) ~ 2.63 km.
:func:`gaussian_kernel_adjacency` therefore takes distances in km and :func:`haversine_km` returns
km.
"""

from __future__ import annotations

import numpy as np
import torch

EARTH_RADIUS_KM = 6371.0088  # IUGG mean Earth radius


def as_adjacency(adj, num_nodes: int | None = None, name: str = "adjacency") -> np.ndarray:
    """Validate a dense adjacency and return it as float64 ``[N, N]`` (a torch sparse tensor is
    densified; :mod:`baselines.sparse_graph` keeps it sparse).

    Raises ValueError when ``adj`` is not square, has the wrong N, holds NaN/inf or negative
    weights.
    """
    if adj is None:
        raise ValueError(f"{name}: got None, expected an [N, N] array")
    if isinstance(adj, torch.Tensor):  # dense or sparse (a dense path given a sparse graph)
        adj = adj.detach().cpu().to_dense().numpy()
    a = np.asarray(adj, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"{name}: expected a square [N, N] array, got shape {a.shape}")
    if num_nodes is not None and a.shape[0] != num_nodes:
        raise ValueError(f"{name}: has {a.shape[0]} nodes but the data has {num_nodes}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name}: contains NaN or infinite weights")
    if np.any(a < 0):
        raise ValueError(f"{name}: contains negative weights (min {a.min():g})")
    return a


def require_adjacency(adjacency, num_nodes: int, model: str) -> np.ndarray:
    """Validated adjacency for a model that cannot run without one (clear error otherwise)."""
    if adjacency is None:
        raise ValueError(
            f"{model} needs an adjacency matrix (got adjacency=None); use a dataset with a "
            "graph or build one, e.g. baselines.graph.distance_adjacency_from_coords"
        )
    return as_adjacency(adjacency, num_nodes, name=f"{model} adjacency")


def symmetrize(adj) -> np.ndarray:
    """max(A, A^T): an undirected graph keeping the stronger of the two directions."""
    a = as_adjacency(adj)
    return np.maximum(a, a.T)


def _inv(x: np.ndarray) -> np.ndarray:
    out = np.zeros_like(x)
    nz = x > 0
    out[nz] = 1.0 / x[nz]
    return out


def symmetric_normalize(adj, add_self_loops: bool = True) -> np.ndarray:
    """Renormalised adjacency D~^-1/2 (A + I) D~^-1/2 with D~_ii = sum_j (A + I)_ij.

    Kipf & Welling, ICLR 2017, eq. 2 (the "renormalization trick"); STGCN's first-order
    approximation (Yu et al. 2018, eq. 6) and T-GCN (Zhao et al. 2019, eq. 2) use the same matrix.
    With ``add_self_loops=False`` it returns D^-1/2 A D^-1/2. Assumes a symmetric A for the
    result to be symmetric.
    """
    a = as_adjacency(adj)
    if add_self_loops:
        a = a + np.eye(a.shape[0])
    d_isqrt = np.sqrt(_inv(a.sum(axis=1)))
    return d_isqrt[:, None] * a * d_isqrt[None, :]


def random_walk_normalize(adj) -> np.ndarray:
    """Random-walk matrix D^-1 A with D_ii = sum_j A_ij (rows sum to 1; zero rows stay zero).

    Li et al., DCRNN, ICLR 2018, section 2.2 (D_O^-1 W).
    """
    a = as_adjacency(adj)
    return _inv(a.sum(axis=1))[:, None] * a


def transition_matrices(adj) -> tuple[np.ndarray, np.ndarray]:
    """Forward and backward transition matrices (P_f, P_b).

    P_f = A / rowsum(A) = D_O^-1 A and P_b = A^T / rowsum(A^T) = D_I^-1 A^T
    (Li et al., DCRNN, ICLR 2018, eq. 2; Wu et al., Graph WaveNet, IJCAI 2019, eq. 6).
    """
    a = as_adjacency(adj)
    return random_walk_normalize(a), random_walk_normalize(a.T)


def normalized_laplacian(adj) -> np.ndarray:
    """L = I - D^-1/2 A D^-1/2 for a symmetric A (Defferrard et al., NeurIPS 2016, section 2.1).

    Isolated nodes get a zero row and column (L_ii = 0), as in the STGCN authors' code.
    """
    a = as_adjacency(adj)
    if not np.allclose(a, a.T):
        raise ValueError("adjacency: the normalised Laplacian needs a symmetric matrix; "
                         "call symmetrize() first")
    deg = a.sum(axis=1)
    d_isqrt = np.sqrt(_inv(deg))
    lap = np.diag((deg > 0).astype(np.float64)) - d_isqrt[:, None] * a * d_isqrt[None, :]
    return lap


def scaled_laplacian(adj, lambda_max: float | None = None) -> np.ndarray:
    """L~ = 2 L / lambda_max - I, with L the normalised Laplacian of the symmetric ``adj``.

    Defferrard et al., NeurIPS 2016, eq. 4; Yu et al., STGCN, IJCAI 2018, eq. 3. ``lambda_max``
    defaults to the largest eigenvalue of L (computed exactly); pass 2.0 for the usual bound.
    """
    lap = normalized_laplacian(adj)
    if lambda_max is None:
        lambda_max = float(np.linalg.eigvalsh(lap).max())
    if not lambda_max > 0:
        raise ValueError(f"adjacency: lambda_max must be positive, got {lambda_max:g} "
                         "(a graph without edges has no useful scaled Laplacian)")
    return 2.0 * lap / lambda_max - np.eye(lap.shape[0])


def chebyshev_basis(lap_scaled, order: int) -> np.ndarray:
    """Chebyshev polynomials T_0..T_{order-1} of ``lap_scaled``, stacked as ``[order, N, N]``.

    T_0 = I, T_1 = L~, T_k = 2 L~ T_{k-1} - T_{k-2} (Defferrard et al., NeurIPS 2016, eq. 4;
    STGCN eq. 3 with Ks = ``order`` terms).
    """
    lap = np.asarray(lap_scaled, dtype=np.float64)
    if lap.ndim != 2 or lap.shape[0] != lap.shape[1]:
        raise ValueError(f"lap_scaled: expected a square [N, N] array, got shape {lap.shape}")
    if order < 1:
        raise ValueError(f"order: need at least one Chebyshev term, got {order}")
    n = lap.shape[0]
    basis = [np.eye(n)]
    if order > 1:
        basis.append(lap.copy())
    for _ in range(2, order):
        basis.append(2.0 * lap @ basis[-1] - basis[-2])
    return np.stack(basis)


def gaussian_kernel_adjacency(dist_km, sigma2: float = 10.0, epsilon: float = 0.5) -> np.ndarray:
    """Thresholded Gaussian kernel: w_ij = exp(-d_ij^2 / sigma^2) if that is >= epsilon and
    i != j, else 0.

    Yu et al., STGCN, IJCAI 2018, eq. 10, with the paper's sigma^2 = 10 and epsilon = 0.5 for
    distances in km (see the module docstring for how the units were established). ``inf``
    distances (unreachable pairs) give 0.
    """
    d = np.asarray(dist_km, dtype=np.float64)
    if d.ndim != 2 or d.shape[0] != d.shape[1]:
        raise ValueError(f"dist_km: expected a square [N, N] array, got shape {d.shape}")
    if np.any(np.isnan(d)) or np.any(d < 0):
        raise ValueError("dist_km: distances must be non-negative and not NaN")
    if sigma2 <= 0:
        raise ValueError(f"sigma2 must be positive, got {sigma2:g}")
    w = np.exp(-(d**2) / sigma2)
    w[w < epsilon] = 0.0
    np.fill_diagonal(w, 0.0)
    return w


def haversine_km(lat, lon) -> np.ndarray:
    """Pairwise great-circle distances ``[N, N]`` in km from latitudes and longitudes in degrees.

    d = 2 R asin(sqrt(sin^2(dphi / 2) + cos(phi_i) cos(phi_j) sin^2(dlambda / 2))),
    R = 6371.0088 km (the haversine formula; Sinnott, Sky & Telescope 68(2), 1984).
    """
    lat = np.asarray(lat, dtype=np.float64).reshape(-1)
    lon = np.asarray(lon, dtype=np.float64).reshape(-1)
    if lat.shape != lon.shape:
        raise ValueError(f"lat/lon: lengths differ ({lat.size} vs {lon.size})")
    if not (np.all(np.isfinite(lat)) and np.all(np.isfinite(lon))):
        raise ValueError("lat/lon: contain NaN or infinite coordinates")
    if np.any(np.abs(lat) > 90) or np.any(np.abs(lon) > 360):
        raise ValueError("lat/lon: expected degrees (|lat| <= 90, |lon| <= 360)")
    phi, lam = np.radians(lat), np.radians(lon)
    dphi = phi[:, None] - phi[None, :]
    dlam = lam[:, None] - lam[None, :]
    h = np.sin(dphi / 2) ** 2 + np.cos(phi)[:, None] * np.cos(phi)[None, :] * np.sin(dlam / 2) ** 2
    return 2.0 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))


def distance_adjacency_from_coords(lat, lon, sigma2: float = 10.0,
                                   epsilon: float = 0.5) -> np.ndarray:
    """STGCN eq. 10 adjacency from station coordinates: great-circle km, then the Gaussian kernel.

    The STGCN paper's W_228 used distances between stations (road distances are not published
    with the data); great-circle distances are a lower bound on those.
    """
    return gaussian_kernel_adjacency(haversine_km(lat, lon), sigma2=sigma2, epsilon=epsilon)

"""Sparse counterparts of :mod:`baselines.graph`: the same matrices as edge lists, for large N.

The fixed-graph models (STGCN, T-GCN, DCRNN, Graph WaveNet's fixed supports, STSGCN without
its mask) take ``sparse_supports: bool | "auto"``. With it their supports are float32 sparse
COO tensors built here, and the models multiply node features by them with
:func:`baselines.layers.node_matmul` (``torch.sparse.mm``): ``O(E)`` memory and work per
feature column instead of ``O(N^2)``. ``"auto"`` (the constructor default; not a registered
default, so it never enters a run id) picks sparse when the adjacency arrives sparse or
``N >= SPARSE_AUTO_MIN_NODES``; every registered dataset is far below that (at most 228 nodes),
so their runs keep the dense path.

Every function returns the matrix of its dense namesake in :mod:`baselines.graph` (float64,
same conventions: ``adj[i, j]`` is the weight of i -> j, degrees are row sums, ``1/0`` is 0,
isolated nodes keep zero rows), as an :class:`EdgeList`; ``tests/test_sparse_graph.py`` checks
each against the dense function and against hand-worked values.

torch-geometric (``torch_geometric.utils``, imported on first use: it takes seconds) supplies
the edge-list plumbing where it computes exactly that: ``dense_to_sparse``, ``to_edge_index``,
``to_undirected(reduce="max")`` (= ``max(A, A^T)``), ``add_self_loops`` + ``coalesce`` (sum:
``A + I`` also where ``A`` has a diagonal), ``scatter`` (row sums) and ``to_torch_coo_tensor``.
Not used, because they compute something else: ``get_laplacian`` (drops existing self loops and
puts 1 on the diagonal of isolated nodes, where :func:`baselines.graph.normalized_laplacian`
keeps ``a_ii`` and puts 0), ``gcn_norm`` (``add_remaining_self_loops`` keeps an existing
``a_ii`` instead of adding 1, and it takes column degrees), ``ChebConv`` (its own weights, one
linear map per order, and ``lambda_max = 2`` unless given; STGCN keeps its single ``theta``
over the concatenated terms and the exact ``lambda_max``).

The largest eigenvalue that the scaled Laplacian needs (dense: ``numpy.linalg.eigvalsh``) comes
from :func:`lambda_max`, Lanczos iteration with full reorthogonalisation (Lanczos, J. Res. Natl.
Bur. Stand. 45, 1950; Golub & Van Loan, Matrix Computations, 4th ed., Alg. 10.1.1 and
Sec. 10.3.1): a few hundred sparse products where ``eigvalsh`` is ``O(N^3)``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from baselines import graph

#: ``sparse_supports="auto"`` is sparse from this many nodes on. Below it a dense ``[N, N]``
#: float32 support (16 MB at 2,000 nodes) and a dense matmul are cheap and bitwise what the
#: models always computed; above it the dense supports dominate memory and time (the dense
#: graph baselines ran out of time at 5,000 nodes in ``results/scaling/cpu.json``).
SPARSE_AUTO_MIN_NODES = 2000


def _pyg():
    """``torch_geometric.utils`` (imported here, on first use: the import takes seconds)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import torch_geometric.utils as pyg_utils
    return pyg_utils


def is_sparse_tensor(x: Any) -> bool:
    """True for a torch sparse tensor (COO, CSR, CSC, BSR or BSC layout)."""
    return isinstance(x, torch.Tensor) and x.layout != torch.strided


def use_sparse(option: bool | str, adjacency: Any, num_nodes: int, model: str) -> bool:
    """Resolve a model's ``sparse_supports`` option: True, False, or ``"auto"`` (sparse when
    ``adjacency`` is a torch sparse tensor or ``num_nodes >= SPARSE_AUTO_MIN_NODES``)."""
    if option is True or option is False:
        return option
    if option == "auto":
        return is_sparse_tensor(adjacency) or num_nodes >= SPARSE_AUTO_MIN_NODES
    raise ValueError(f"{model}: sparse_supports must be true, false or \"auto\", got {option!r}")


@dataclass(frozen=True)
class EdgeList:
    """A weighted directed graph as torch-geometric holds one: ``index [2, E]`` int64 (row =
    source i, column = target j of ``adj[i, j]``), ``weight [E]`` float64, coalesced (sorted
    by row then column, no duplicates)."""

    index: torch.Tensor
    weight: torch.Tensor
    num_nodes: int

    @property
    def num_edges(self) -> int:
        return int(self.weight.numel())

    def transpose(self) -> EdgeList:
        """``A^T``."""
        return _coalesced(self.index.flip(0), self.weight, self.num_nodes)

    def to_sparse(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Coalesced ``[N, N]`` sparse COO tensor (what the models hold as buffers). COO, not
        CSR: a module holding a CSR buffer cannot be deep-copied (torch 2.13); the products
        convert it to CSR first (:func:`baselines.layers.node_matmul`)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Sparse invariant checks are implicitly disabled"
            return _pyg().to_torch_coo_tensor(self.index, self.weight.to(dtype),
                                              size=(self.num_nodes, self.num_nodes),
                                              is_coalesced=True)

    def to_dense(self) -> np.ndarray:
        """Dense float64 ``[N, N]`` (for tests and small graphs)."""
        out = np.zeros((self.num_nodes, self.num_nodes))
        out[self.index[0].numpy(), self.index[1].numpy()] = self.weight.numpy()
        return out


def _coalesced(index: torch.Tensor, weight: torch.Tensor, n: int, reduce: str = "sum") -> EdgeList:
    index, weight = _pyg().coalesce(index, weight, num_nodes=n, reduce=reduce)
    return EdgeList(index, weight, n)


def edge_list(adj: Any, num_nodes: int | None = None, name: str = "adjacency") -> EdgeList:
    """Validated :class:`EdgeList` of a dense ``[N, N]`` array/tensor or a torch sparse tensor
    (explicit zeros dropped). Raises ValueError, naming ``name``, for a non-square shape, the
    wrong N, NaN/inf or negative weights (as :func:`baselines.graph.as_adjacency`)."""
    if isinstance(adj, EdgeList):
        if num_nodes is not None and adj.num_nodes != num_nodes:
            raise ValueError(f"{name}: has {adj.num_nodes} nodes but the data has {num_nodes}")
        return adj
    if not is_sparse_tensor(adj):
        dense = torch.from_numpy(graph.as_adjacency(adj, num_nodes, name))
        index, weight = _pyg().dense_to_sparse(dense)
        return _coalesced(index, weight, dense.shape[0])
    if adj.dim() != 2 or adj.shape[0] != adj.shape[1]:
        raise ValueError(f"{name}: expected a square [N, N] sparse tensor, got shape "
                         f"{tuple(adj.shape)}")
    n = int(adj.shape[0])
    if num_nodes is not None and n != num_nodes:
        raise ValueError(f"{name}: has {n} nodes but the data has {num_nodes}")
    coo = adj.to_sparse_coo().coalesce()
    index, weight = coo.indices(), coo.values().to(torch.float64)
    if not bool(torch.isfinite(weight).all()):
        raise ValueError(f"{name}: contains NaN or infinite weights")
    if bool((weight < 0).any()):
        raise ValueError(f"{name}: contains negative weights (min {float(weight.min()):g})")
    keep = weight != 0
    return _coalesced(index[:, keep], weight[keep], n)


def require_edge_list(adjacency: Any, num_nodes: int, model: str) -> EdgeList:
    """:func:`edge_list` for a model that cannot run without a graph (clear error otherwise)."""
    if adjacency is None:
        graph.require_adjacency(None, num_nodes, model)  # raises the shared message
    return edge_list(adjacency, num_nodes, name=f"{model} adjacency")


def _inv(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x > 0, 1.0 / torch.where(x > 0, x, 1.0), 0.0)


def _row_sums(g: EdgeList) -> torch.Tensor:
    return _pyg().scatter(g.weight, g.index[0], dim=0, dim_size=g.num_nodes, reduce="sum")


def symmetrize(adj: Any) -> EdgeList:
    """``max(A, A^T)`` (:func:`baselines.graph.symmetrize`)."""
    g = edge_list(adj)
    index, weight = _pyg().to_undirected(g.index, g.weight, num_nodes=g.num_nodes, reduce="max")
    return EdgeList(index, weight, g.num_nodes)


def symmetric_normalize(adj: Any, add_self_loops: bool = True) -> EdgeList:
    """``D~^-1/2 (A + I) D~^-1/2`` (Kipf & Welling, ICLR 2017, eq. 2; STGCN eq. 6, T-GCN eq.
    2), or ``D^-1/2 A D^-1/2`` without self loops (:func:`baselines.graph.symmetric_normalize`)."""
    g = edge_list(adj)
    if add_self_loops:
        index, weight = _pyg().add_self_loops(g.index, g.weight, fill_value=1.0,
                                              num_nodes=g.num_nodes)
        g = _coalesced(index, weight, g.num_nodes)  # duplicates summed: a_ii + 1
    d_isqrt = torch.sqrt(_inv(_row_sums(g)))
    row, col = g.index
    return EdgeList(g.index, d_isqrt[row] * g.weight * d_isqrt[col], g.num_nodes)


def random_walk_normalize(adj: Any) -> EdgeList:
    """``D^-1 A``, rows summing to 1 (DCRNN section 2.2; :func:`baselines.graph.
    random_walk_normalize`)."""
    g = edge_list(adj)
    return EdgeList(g.index, _inv(_row_sums(g))[g.index[0]] * g.weight, g.num_nodes)


def transition_matrices(adj: Any) -> tuple[EdgeList, EdgeList]:
    """``(P_f, P_b) = (D_O^-1 A, D_I^-1 A^T)`` (DCRNN eq. 2, Graph WaveNet eq. 6;
    :func:`baselines.graph.transition_matrices`)."""
    g = edge_list(adj)
    return random_walk_normalize(g), random_walk_normalize(g.transpose())


def dual_random_walk_supports(adjacency: Any) -> list[torch.Tensor]:
    """``[P_f, P_b]`` as float32 sparse COO tensors (the sparse
    :func:`baselines.layers.dual_random_walk_supports`)."""
    return [p.to_sparse() for p in transition_matrices(adjacency)]


def _is_symmetric(g: EdgeList) -> bool:
    """``numpy.allclose(A, A^T)`` (rtol 1e-5, atol 1e-8) on the edge list."""
    t = g.transpose()
    index = torch.cat([g.index, t.index], dim=1)
    zeros_a, zeros_t = torch.zeros_like(g.weight), torch.zeros_like(t.weight)
    _, (a, b) = _pyg().coalesce(index, [torch.cat([g.weight, zeros_t]),
                                        torch.cat([zeros_a, t.weight])],
                                num_nodes=g.num_nodes, reduce="sum")
    return bool(((a - b).abs() <= 1e-8 + 1e-5 * b.abs()).all())


def normalized_laplacian(adj: Any) -> EdgeList:
    """``L = I - D^-1/2 A D^-1/2`` of a symmetric ``A``, isolated nodes with ``L_ii = 0``
    (Defferrard et al., NeurIPS 2016, section 2.1; :func:`baselines.graph.normalized_laplacian`).
    """
    g = edge_list(adj)
    if not _is_symmetric(g):
        raise ValueError("adjacency: the normalised Laplacian needs a symmetric matrix; "
                         "call symmetrize() first")
    deg = _row_sums(g)
    d_isqrt = torch.sqrt(_inv(deg))
    row, col = g.index
    nodes = torch.arange(g.num_nodes)
    index = torch.cat([torch.stack([nodes, nodes]), g.index], dim=1)
    weight = torch.cat([(deg > 0).to(torch.float64), -(d_isqrt[row] * g.weight * d_isqrt[col])])
    lap = _coalesced(index, weight, g.num_nodes)  # diagonal: 1 - a_ii / d_i
    keep = lap.weight != 0
    return EdgeList(lap.index[:, keep], lap.weight[keep], g.num_nodes)


def lambda_max(matrix: EdgeList, tol: float = 1e-10, max_steps: int = 1000,
               seed: int = 0) -> float:
    """Largest eigenvalue of the symmetric ``matrix`` by Lanczos iteration with full
    reorthogonalisation (module docstring), in float64.

    Stops when the Ritz residual ``|beta_j s_j|`` of the largest Ritz value is below ``tol``
    (for a symmetric matrix the Ritz value is then within ``tol`` of an eigenvalue), when the
    Krylov space is invariant, or after ``min(N, max_steps)`` steps (exact at ``N``). The
    start vector is uniform in ``[0, 1)`` from ``seed``: the result is deterministic.
    """
    n = matrix.num_nodes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Sparse CSR tensor support is in beta state"
        op = matrix.to_sparse(torch.float64).to_sparse_csr()
    g = torch.Generator().manual_seed(seed)
    q = torch.rand(n, dtype=torch.float64, generator=g)
    basis = [q / q.norm()]
    alphas: list[float] = []
    betas: list[float] = []
    steps = min(n, max_steps)
    for j in range(steps):
        w = torch.sparse.mm(op, basis[j][:, None])[:, 0]
        alphas.append(float(w @ basis[j]))
        stack = torch.stack(basis)
        for _ in range(2):  # classical Gram-Schmidt, twice ("twice is enough")
            w = w - stack.T @ (stack @ w)
        beta = float(w.norm())
        last = beta <= 1e-12 * max(1.0, max(abs(a) for a in alphas)) or j + 1 == steps
        if last or j % 8 == 7:
            t = torch.diag(torch.tensor(alphas, dtype=torch.float64))
            if betas:
                off = torch.tensor(betas, dtype=torch.float64)
                t = t + torch.diag(off, 1) + torch.diag(off, -1)
            values, vectors = torch.linalg.eigh(t)
            if last or abs(beta * float(vectors[-1, -1])) < tol:
                return float(values[-1])
        betas.append(beta)
        basis.append(w / beta)
    raise AssertionError("unreachable: the loop returns at its last step")


def scaled_laplacian(adj: Any, lambda_max_value: float | None = None) -> EdgeList:
    """``L~ = 2 L / lambda_max - I`` of the symmetric ``adj`` (Defferrard et al. eq. 4, STGCN
    eq. 3; :func:`baselines.graph.scaled_laplacian`); ``lambda_max_value`` defaults to
    :func:`lambda_max` of ``L``."""
    lap = normalized_laplacian(adj)
    lam = lambda_max(lap) if lambda_max_value is None else lambda_max_value
    if not lam > 0:
        raise ValueError(f"adjacency: lambda_max must be positive, got {lam:g} "
                         "(a graph without edges has no useful scaled Laplacian)")
    n = lap.num_nodes
    nodes = torch.arange(n)
    index = torch.cat([lap.index, torch.stack([nodes, nodes])], dim=1)
    weight = torch.cat([2.0 * lap.weight / lam, torch.full((n,), -1.0, dtype=torch.float64)])
    return _coalesced(index, weight, n)


def localized_st_adjacency(adjacency: Any, steps: int = 3) -> EdgeList:
    """STSGCN's ``[steps N, steps N]`` localized spatial-temporal graph (Song et al., AAAI 2020,
    Fig. 2; :func:`baselines.stsgcn.localized_st_adjacency`): the binarised ``A`` in every
    diagonal block, ``I`` in the blocks next to it, a self loop on every vertex; all weights 1."""
    g = edge_list(adjacency, name="stsgcn adjacency")
    n, total = g.num_nodes, steps * g.num_nodes
    nodes = torch.arange(n)
    parts = [g.index + t * n for t in range(steps)]
    for t in range(steps - 1):
        parts += [torch.stack([nodes + t * n, nodes + (t + 1) * n]),
                  torch.stack([nodes + (t + 1) * n, nodes + t * n])]
    every = torch.arange(total)
    parts.append(torch.stack([every, every]))
    index = torch.cat(parts, dim=1)
    return _coalesced(index, torch.ones(index.shape[1], dtype=torch.float64), total, reduce="max")

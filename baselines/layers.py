"""Layers shared by more than one model, each computing exactly what every user of it computed.

* :class:`ResidualMLP`: STID's encoder block (Shao et al., CIKM 2022), also the block of the
  FlowDistill student (Yu et al., arXiv 2504.02094, Supplement A), which takes STID's encoder.
* :func:`diffusion_terms`: the stack ``[X, S_1 X, ..., S_1^K X, S_2 X, ..., S_S^K X]`` of the
  diffusion convolution of DCRNN (Li et al., ICLR 2018, eq. 2) as this suite implements it, and
  of Graph WaveNet (Wu et al., IJCAI 2019, eq. 7); each model keeps its own projection of the
  stack (DCRNN: a linear layer with Xavier-normal weights and a gate-dependent bias start;
  Graph WaveNet: a 1x1 convolution then dropout).
* :func:`dual_random_walk_supports`: DCRNN's and Graph WaveNet's fixed supports
  ``(P_f, P_b)`` as float32 tensors (sparse ones: :func:`baselines.sparse_graph.
  dual_random_walk_supports`).
* :func:`node_matmul`: ``S X`` along the node axis for a sparse support (STGCN, T-GCN,
  STSGCN on their sparse path).
* :func:`with_time_of_day`: the time-of-day input channel both official codes append.

What is *not* shared, and why: the authors' DCRNN code computes the diffusion terms with the
recurrence ``x_k = 2 S x_{k-1} - x_{k-2}`` (Chebyshev-like; for a random-walk ``S`` that is not
``S^k x``, and it does not reset ``x_{k-2}`` between the two supports), on transposed supports,
and orders the stacked features feature-major. This suite's DCRNN deliberately computes eq. 2's
plain powers ``S^k X`` (see :mod:`baselines.dcrnn`), the same terms, in the same order, as its
Graph WaveNet, so the stack is shared and the recurrence is not reproduced anywhere. The two
projections differ (layout, initialisation, dropout, parameter names) and stay in their models.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

import numpy as np
import torch
from torch import nn

from baselines import graph
from benchmark.batch import Batch


class ResidualMLP(nn.Module):
    """``h + FC2(Dropout(ReLU(FC1(h))))`` on the last axis, ``[..., dim] -> [..., dim]``.

    The encoder block of STID (Shao, Zhang, Wang, Wei, Xu, "Spatial-Temporal Identity", CIKM
    2022, Sec. 3; official code ``MultiLayerPerceptron``: two 1x1 convolutions, i.e. per-node
    linear maps, ReLU, dropout, then the residual sum), used unchanged by the FlowDistill student
    (Yu, Xie, Huang, Qiu, arXiv 2504.02094, Supplement A). ``fc1`` is created before ``fc2``
    (seeded initialisation follows that order).
    """

    def __init__(self, dim: int, dropout: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, dim)
        self.fc2 = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.fc2(self.drop(torch.relu(self.fc1(h))))


_AXES = "abcdefghijkl"  # einsum labels for x's axes ("n", "m" name the support's)


def diffusion_terms(x: torch.Tensor, supports: Iterable[torch.Tensor], max_step: int,
                    node_dim: int, feature_dim: int) -> torch.Tensor:
    """``concat[X, S_1 X, S_1^2 X, ..., S_1^K X, S_2 X, ..., S_S^K X]`` along ``feature_dim``.

    ``S X`` mixes the nodes of ``x`` along ``node_dim``: ``(S X)[.., i, ..] = sum_j S_ij
    X[.., j, ..]`` (row i of S gathers node i's neighbours, as DCRNN eq. 2 and Graph WaveNet eq.
    7 are written). ``supports``: ``[N, N]`` tensors, dense or sparse
    (:mod:`baselines.sparse_graph`; sparse ones go through ``torch.sparse.mm``), or an
    ``[S, N, N]`` stack, ``K = max_step``; the k = 0 identity term appears once. Output:
    ``x``'s shape with ``feature_dim`` ``(S K + 1)`` times as wide.

    Li, Yu, Shahabi, Liu, DCRNN, ICLR 2018, eq. 2 (dual random walk, the terms before the
    filter weights theta); Wu, Pan, Long, Jiang, Zhang, Graph WaveNet, IJCAI 2019, eq. 7 (with
    the adaptive matrix as one more support).
    """
    if not 0 <= node_dim < x.dim() <= len(_AXES):
        raise ValueError(f"diffusion_terms: node_dim {node_dim} outside x's {x.dim()} axes")
    axes = _AXES[:x.dim()]
    source = axes[:node_dim] + "m" + axes[node_dim + 1:]
    target = axes[:node_dim] + "n" + axes[node_dim + 1:]
    equation = f"nm,{source}->{target}"
    terms = [x]
    for s in supports:
        if s.layout != torch.strided:  # sparse: the node axis first, one sparse product a step
            s = _csr(s)
            nodes_first = x.movedim(node_dim, 0)
            h = nodes_first.reshape(nodes_first.shape[0], -1)
            for _ in range(max_step):
                h = torch.sparse.mm(s, h)
                terms.append(h.reshape(nodes_first.shape).movedim(0, node_dim))
            continue
        h = x
        for _ in range(max_step):
            h = torch.einsum(equation, s, h)
            terms.append(h)
    return torch.cat(terms, dim=feature_dim)


def _csr(support: torch.Tensor) -> torch.Tensor:
    """A sparse COO support as CSR for the product: ``torch.sparse.mm`` is 1.3-2x faster on CSR
    on the CPU (measured at N = 50,000 with 8 neighbours, one thread), and the conversion costs
    one pass over the non-zeros. The models keep COO buffers: a module holding a CSR buffer
    cannot be deep-copied (torch 2.13)."""
    if support.layout != torch.sparse_coo:
        return support
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Sparse CSR tensor support is in beta state"
        return support.to_sparse_csr()


def node_matmul(support: torch.Tensor, x: torch.Tensor, node_dim: int) -> torch.Tensor:
    """``S X`` along ``node_dim``, ``out[.., i, ..] = sum_j S_ij x[.., j, ..]``, for a sparse
    ``[N, N]`` ``support``: ``torch.sparse.mm`` on ``x`` with its node axis first and the other
    axes flattened. Output: ``x``'s shape."""
    nodes_first = x.movedim(node_dim, 0)
    out = torch.sparse.mm(_csr(support), nodes_first.reshape(nodes_first.shape[0], -1))
    return out.reshape(support.shape[0], *nodes_first.shape[1:]).movedim(0, node_dim)


def dual_random_walk_supports(adjacency: np.ndarray) -> torch.Tensor:
    """``[2, N, N]`` float32 stack of ``P_f = D_O^-1 A`` and ``P_b = D_I^-1 A^T``
    (:func:`baselines.graph.transition_matrices`; DCRNN eq. 2, Graph WaveNet eq. 6)."""
    p_f, p_b = graph.transition_matrices(adjacency)
    return torch.tensor(np.stack([p_f, p_b]), dtype=torch.float32)


def with_time_of_day(batch: Batch, steps_per_day: int) -> torch.Tensor:
    """x: [B, T, N, C] -> [B, T, N, C + 1] with ``x_tod / steps_per_day`` as the last channel.

    The time-in-day feature of the DCRNN data pipeline (``generate_training_data.py``,
    ``add_time_in_day``), which the Graph WaveNet code reuses.
    """
    x = batch.x
    tod = (batch.x_tod.to(x.dtype) / steps_per_day)[:, :, None, None]
    return torch.cat([x, tod.expand(-1, -1, x.shape[2], 1)], dim=-1)

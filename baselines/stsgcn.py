"""STSGCN: Spatial-Temporal Synchronous Graph Convolutional Network.

Song, Lin, Guo, Wan. "Spatial-Temporal Synchronous Graph Convolutional Networks: A New Framework
for Spatial-Temporal Network Data Forecasting." AAAI 2020.

* Localized spatial-temporal graph (paper, "Localized Spatial-Temporal Graph Construction"):
  three consecutive steps of the N-node graph form one ``3N x 3N`` adjacency ``A'`` with the
  spatial graph ``A`` in each diagonal block and identity blocks linking every node to itself at
  the previous and next step; a self loop on each of the ``3N`` vertices (as in the authors'
  release). ``A`` is binarised (``A_ij != 0``): the paper uses connectivity.
* A learnable mask ``W_mask`` (same shape as ``A'``) re-weights the edges:
  ``A' <- W_mask * A'``; one mask is shared by all layers. The aggregation is *not* normalised
  (the paper's GCN operation is ``A' h W + b``), so the initial mask sets the initial scale.
  The release initialises the mask to ones, which suits sparse PeMS road graphs and MXNet's small
  default weight init, but the activations grow roughly geometrically in (degree + 3) over the
  12 stacked convolutions: with PyTorch's default init and degree ~10, initial outputs reach
  ~1e7. Default here: ``mask_init="row_normalized"`` (``W_mask_ij = 1 / sum_j A'_ij`` on the
  support), so the model starts as a mean aggregator and learns the weights from there;
  ``mask_init="ones"`` reproduces the release. Only the initialisation differs.
* STSGCM ("Spatial-Temporal Synchronous Graph Convolutional Module"): ``L`` graph convolutions
  ``h <- GLU(A' h W + b)`` (the GLU splits ``2F`` outputs into value and sigmoid gate);
  aggregation by element-wise max over the ``L`` outputs, then *cropping* to the middle step's
  N vertices.
* STSGCL: spatial and temporal position embeddings are added to its input, then one STSGCM per
  sliding window of 3 steps (stride 1, a separate STSGCM for every window: the paper's
  "individual" setting), so each layer shortens the sequence by 2.
* Input layer: a fully connected layer with ReLU to ``embed_dim``; output layer: one two-layer
  FC head per forecast step (``ReLU(X W1 + b1) W2 + b2`` on the flattened remaining steps).

Defaults from the paper: 4 STSGCLs, each STSGCM with 3 graph convolutions of 64 filters,
embedding 64, output hidden 128. ``T_in`` must be at least ``2 * num_layers + 1`` (each layer
removes 2 steps); any ``T_out``. The paper trains with the Huber loss: pick it in the
trainer's objective (``loss_name="huber"``); this module does not choose its loss.

Sparse supports (``sparse_supports``: True, False or "auto", see :mod:`baselines.sparse_graph`):
only without the mask (``use_mask=False``), where ``A'`` is fixed and has ``O(3 E + 9 N)``
non-zeros: then the buffer ``adj`` is a sparse ``[3N, 3N]`` tensor multiplied through
``torch.sparse.mm``, equal to the dense path up to float rounding. With the mask (the default)
the graph is dense by design: ``W_mask`` is a learnable dense ``[3N, 3N]`` parameter
(9 N^2 values: 90 GB in float32 at N = 50,000), whatever the sparsity of ``A``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from baselines import layers, sparse_graph
from baselines.graph import as_adjacency, require_adjacency
from benchmark.batch import Batch
from benchmark.models import Forecaster, register_model
from benchmark.recipes import Recipe

# Training recipe: the official code (Davidham3/STSGCN config/PEMS04/individual_GLU_mask_emb.json,
# main.py, models/stsgcn.py): Adam lr 1e-3, batch 32, 200 epochs, Huber loss (rho 1) on
# original-unit values, no clipping, the best validation epoch kept. Differs: the official LR
# has a one-epoch warm-up and a polynomial (power 2) decay to 0 (mxnet PolyScheduler); constant
# here.
RECIPE = Recipe(
    source="Davidham3/STSGCN config/PEMS04/individual_GLU_mask_emb.json (adam, learning_rate "
           "1e-3, batch_size 32, epochs 200) + models/stsgcn.py huber_loss(rho=1) + main.py",
    optimizer="adam", lr=1e-3, batch_size=32, epochs=200, patience=None, grad_clip=None,
    loss="huber", huber_delta=1.0,
    notes="official warm-up (1 epoch) and polynomial LR decay (power 2) not applied")


def localized_st_adjacency(adjacency: np.ndarray, steps: int = 3) -> np.ndarray:
    """``[steps*N, steps*N]`` localized spatial-temporal graph (STSGCN Fig. 2).

    Block ``(t, t)`` is the binarised ``A``; blocks ``(t, t+1)`` and ``(t+1, t)`` are ``I``;
    every vertex gets a self loop.
    """
    a = as_adjacency(adjacency, name="stsgcn adjacency")
    n = a.shape[0]
    binary = (a != 0).astype(np.float32)
    out = np.zeros((steps * n, steps * n), dtype=np.float32)
    eye = np.eye(n, dtype=np.float32)
    for t in range(steps):
        out[t * n:(t + 1) * n, t * n:(t + 1) * n] = binary
        if t + 1 < steps:
            out[t * n:(t + 1) * n, (t + 1) * n:(t + 2) * n] = eye
            out[(t + 1) * n:(t + 2) * n, t * n:(t + 1) * n] = eye
    np.fill_diagonal(out, 1.0)
    return out


class STSGCM(nn.Module):
    """Graph convolutions on the localized graph, max aggregation, cropping.

    ``h: [B, 3N, C]`` -> ``[B, N, F]`` (STSGCN, STSGCM: graph
    convolution with GLU, aggregation, cropping).
    """

    def __init__(self, in_dim: int, filters: Sequence[int], num_nodes: int) -> None:
        super().__init__()
        self.num_nodes = num_nodes
        if len(set(filters)) != 1:
            raise ValueError(f"stsgcn: the filters of one STSGCM must be equal for the max "
                             f"aggregation, got {list(filters)}")
        dims = [in_dim, *filters]
        self.convs = nn.ModuleList(nn.Linear(dims[i], 2 * dims[i + 1])
                                   for i in range(len(filters)))

    def forward(self, h: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        n = self.num_nodes
        outs = []
        for conv in self.convs:
            mixed = adj @ h if adj.layout == torch.strided else layers.node_matmul(adj, h, 1)
            h = nn.functional.glu(conv(mixed), dim=-1)
            outs.append(h[:, n:2 * n])  # crop to the middle step
        return torch.stack(outs, dim=0).amax(dim=0)


class STSGCL(nn.Module):
    """Position embeddings + one STSGCM per 3-step window.

    ``[B, T, N, C]`` -> ``[B, T-2, N, F]``.
    """

    def __init__(self, in_len: int, in_dim: int, filters: Sequence[int], num_nodes: int) -> None:
        super().__init__()
        self.temporal_emb = nn.Parameter(torch.empty(1, in_len, 1, in_dim))
        self.spatial_emb = nn.Parameter(torch.empty(1, 1, num_nodes, in_dim))
        nn.init.xavier_normal_(self.temporal_emb.view(in_len, in_dim))
        nn.init.xavier_normal_(self.spatial_emb.view(num_nodes, in_dim))
        self.modules_per_window = nn.ModuleList(
            STSGCM(in_dim, filters, num_nodes) for _ in range(in_len - 2))

    def forward(self, x: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        x = x + self.temporal_emb + self.spatial_emb
        b, _, n, c = x.shape
        outs = [module(x[:, i:i + 3].reshape(b, 3 * n, c), adj)
                for i, module in enumerate(self.modules_per_window)]
        return torch.stack(outs, dim=1)


@register_model(
    "stsgcn", recipe=RECIPE,
    citation="Song et al., Spatial-Temporal Synchronous Graph Convolutional Networks: A New "
             "Framework for Spatial-Temporal Network Data Forecasting, AAAI 2020",
    description="STSGCN: synchronous graph convolutions on a localized 3-step graph",
    needs_adjacency=True,
    tags=("graph",),
    embed_dim=64, filters=(64, 64, 64), num_layers=4, out_hidden=128, use_mask=True,
    mask_init="row_normalized",
)
class STSGCN(Forecaster):
    """STSGCN. ``forward(batch)``: ``x: [B, T_in, N, C]`` -> ``[B, T_out, N, C_out]`` (scaled).

    Args:
        num_nodes, input_len, horizon, in_channels, out_channels, adjacency: from the harness
            (``adjacency`` is required, ``[N, N]``, non-zero entries are edges).
        embed_dim: width of the input FC layer.
        filters: filters of the graph convolutions inside each STSGCM (all equal).
        num_layers: STSGCLs.
        out_hidden: hidden units of each per-step output head.
        use_mask: learn the edge mask ``W_mask`` (False: fixed, unnormalised ``A'``).
        mask_init: "row_normalized" (default, ``1 / deg``) or "ones" (release).
        sparse_supports: True, False or "auto" (module docstring); True needs
            ``use_mask=False``, "auto" is dense with the mask.
    """

    @staticmethod
    def dense_graph_reason(hparams: dict) -> str | None:
        """Why this configuration needs a dense graph (None: it has a sparse path)."""
        if not hparams.get("use_mask", True):
            return None
        return "its learnable edge mask W_mask is a dense 3N x 3N parameter"

    def __init__(self, num_nodes: int, input_len: int, horizon: int, in_channels: int,
                 out_channels: int, adjacency: np.ndarray | None, embed_dim: int = 64,
                 filters: Sequence[int] = (64, 64, 64), num_layers: int = 4,
                 out_hidden: int = 128, use_mask: bool = True,
                 mask_init: str = "row_normalized", sparse_supports: bool | str = "auto") -> None:
        super().__init__()
        for name, v in (("num_nodes", num_nodes), ("horizon", horizon),
                        ("in_channels", in_channels), ("out_channels", out_channels),
                        ("embed_dim", embed_dim), ("num_layers", num_layers),
                        ("out_hidden", out_hidden), ("len(filters)", len(filters))):
            if v < 1:
                raise ValueError(f"stsgcn: {name} must be >= 1, got {v}")
        sparse = sparse_graph.use_sparse(sparse_supports, adjacency, num_nodes, "stsgcn")
        if sparse_supports is True and use_mask:
            raise ValueError("stsgcn: sparse_supports=True needs use_mask=False: the learnable "
                             "mask W_mask is a dense 3N x 3N parameter")
        self.sparse = sparse and not use_mask  # "auto" stays dense with the mask
        if self.sparse:
            adjacency = sparse_graph.require_edge_list(adjacency, num_nodes, "stsgcn")
        else:
            adjacency = require_adjacency(adjacency, num_nodes, "stsgcn")
        out_len = input_len - 2 * num_layers
        if out_len < 1:
            raise ValueError(f"stsgcn: input_len={input_len} is too short for {num_layers} "
                             f"STSGCLs (each removes 2 steps; need >= {2 * num_layers + 1})")
        self.num_nodes, self.input_len, self.horizon = num_nodes, input_len, horizon
        self.in_channels, self.out_channels = in_channels, out_channels

        if mask_init not in ("row_normalized", "ones"):
            raise ValueError(f"stsgcn: mask_init must be 'row_normalized' or 'ones', "
                             f"got {mask_init!r}")
        if self.sparse:
            local_adj = sparse_graph.localized_st_adjacency(adjacency).to_sparse()
        else:
            local_adj = torch.from_numpy(localized_st_adjacency(adjacency))
        self.register_buffer("adj", local_adj)
        self.mask = None
        if use_mask:
            init = torch.ones_like(local_adj)
            if mask_init == "row_normalized":  # every row has its self loop, so deg >= 1
                init = init / local_adj.sum(dim=1, keepdim=True)
            self.mask = nn.Parameter(init)
        self.input_fc = nn.Linear(in_channels, embed_dim)
        layers, length, dim = [], input_len, embed_dim
        for _ in range(num_layers):
            layers.append(STSGCL(length, dim, filters, num_nodes))
            length, dim = length - 2, filters[-1]
        self.layers = nn.ModuleList(layers)
        # one two-layer FC head per forecast step, evaluated together with batched weights
        flat = out_len * dim
        self.head_w1 = nn.Parameter(torch.empty(horizon, flat, out_hidden))
        self.head_b1 = nn.Parameter(torch.zeros(horizon, out_hidden))
        self.head_w2 = nn.Parameter(torch.empty(horizon, out_hidden, out_channels))
        self.head_b2 = nn.Parameter(torch.zeros(horizon, out_channels))
        for w in (self.head_w1, self.head_w2):  # nn.Linear's default U(+-1/sqrt(fan_in))
            bound = w.shape[1] ** -0.5
            nn.init.uniform_(w, -bound, bound)

    def forward(self, batch: Batch) -> torch.Tensor:
        x = batch.x
        if x.dim() != 4 or x.shape[1:] != (self.input_len, self.num_nodes, self.in_channels):
            raise ValueError(f"stsgcn: expected x [B, {self.input_len}, {self.num_nodes}, "
                             f"{self.in_channels}], got {list(x.shape)}")
        adj = self.adj * self.mask if self.mask is not None else self.adj
        h = torch.relu(self.input_fc(x))
        for layer in self.layers:
            h = layer(h, adj)
        b = h.shape[0]
        h = h.permute(0, 2, 1, 3).reshape(b, self.num_nodes, -1)  # [B, N, T_last * F]
        hid = torch.relu(torch.einsum("bnf,hfk->bhnk", h, self.head_w1)
                         + self.head_b1[None, :, None])
        return torch.einsum("bhnk,hkc->bhnc", hid, self.head_w2) + self.head_b2[None, :, None]

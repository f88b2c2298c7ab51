"""ASTGCN: Attention based Spatial-Temporal Graph Convolutional Network (recent component).

Guo, Lin, Feng, Song, Wan. "Attention Based Spatial-Temporal Graph Convolutional Networks for
Traffic Flow Forecasting." AAAI 2019.

Each ST block (paper, "Spatial-Temporal Attention" and "Spatial-Temporal Convolution"),
with ``X: [B, N, C, T]`` in the paper's layout:

* temporal attention ("Temporal attention"):
  ``E = V_e sigmoid(((X^T U_1) U_2)(U_3 X) + b_e)``, ``[T, T]`` per sample, normalised by a
  softmax so that every attended step is a convex combination of the input steps; ``X^ = X E'``;
* spatial attention ("Spatial attention") on the temporally attended ``X^``:
  ``S = V_s sigmoid((X^ W_1) W_2 (W_3 X^)^T + b_s)``, ``[N, N]``, softmax-normalised the same way;
* Chebyshev graph convolution with spatial attention ("Graph convolution in spatial
  dimension"), ``K = 3`` terms:
  ``ReLU(sum_k (T_k(L~) * S') X Theta_k)`` with ``L~ = 2 L / lambda_max - I``;
* a temporal convolution (kernel 3 along time, ``time_strides``), a 1x1 residual convolution,
  ReLU and layer normalisation over the channels.

Two ST blocks with 64 graph-conv and 64 time-conv filters (paper, experiment settings); a final
convolution maps the ``T`` steps x 64 features of each node to ``T_out`` predictions.

Only the *recent* component is implemented: the daily-periodic and weekly-periodic components
need the same time window one day / one week earlier, which the harness's ``T_in``-step input
window does not contain. With one component the multi-component fusion ``Y = W_h * Y_h`` is an
element-wise rescaling and is omitted, as in the authors' recent-only release (ASTGCN-r).

Laplacian: the authors' release uses the combinatorial ``L = D - A`` (the paper defines both it
and the normalised form); ``laplacian="normalized"`` uses ``I - D^-1/2 A D^-1/2`` from
:mod:`baselines.graph` instead. The adjacency is symmetrised (``max(A, A^T)``) and its weights
kept. Any ``N``; ``T_in`` divisible by ``time_strides``; any ``T_out``.

No sparse path (unlike STGCN, DCRNN, T-GCN): the graph is dense by design. The spatial attention
``S'`` is a dense ``[N, N]`` matrix per sample (a column softmax has no zeros), with the
``[N, N]`` parameters ``V_s`` and ``b_s``, and it multiplies every Chebyshev term element-wise,
so memory and work are ``O(N^2)`` whatever the sparsity of ``A``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from baselines.graph import chebyshev_basis, require_adjacency, scaled_laplacian, symmetrize
from benchmark.batch import Batch
from benchmark.models import Forecaster, register_model
from benchmark.recipes import Recipe

# Training recipe: the official PyTorch code (guoshnBJTU/ASTGCN-r-pytorch
# configurations/PEMS04_astgcn.conf [Training]; train_ASTGCN_r.py): Adam lr 1e-3, batch 32,
# 80 epochs, MSE loss, no clipping, no LR schedule, the best validation epoch kept.
RECIPE = Recipe(
    source="guoshnBJTU/ASTGCN-r-pytorch configurations/PEMS04_astgcn.conf [Training] "
           "(learning_rate 0.001, batch_size 32, epochs 80, loss_function mse) + "
           "train_ASTGCN_r.py (Adam, best validation epoch)",
    optimizer="adam", lr=1e-3, batch_size=32, epochs=80, patience=None, grad_clip=None,
    loss="mse")


def scaled_combinatorial_laplacian(adj: np.ndarray) -> np.ndarray:
    """``L~ = 2 L / lambda_max - I`` with the combinatorial ``L = D - A`` of a symmetric ``A``
    (Guo et al., ASTGCN, AAAI 2019, "Graph convolution in spatial dimension"; Defferrard et
    al., NeurIPS 2016, eq. 4). Kept here because :mod:`baselines.graph` only offers the
    normalised Laplacian; move it there when the two are unified."""
    lap = np.diag(adj.sum(axis=1)) - adj
    lambda_max = float(np.linalg.eigvalsh(lap).max())
    if not lambda_max > 0:
        raise ValueError("astgcn adjacency: the graph has no edges, so it has no scaled Laplacian")
    return 2.0 * lap / lambda_max - np.eye(adj.shape[0])


class TemporalAttention(nn.Module):
    """``x: [B, N, C, T]`` -> ``E': [B, T, T]`` with ``E'[:, i, j]`` the weight of input step i
    in attended step j (ASTGCN, "Temporal attention")."""

    def __init__(self, num_nodes: int, channels: int, length: int) -> None:
        super().__init__()
        self.u1 = nn.Parameter(torch.empty(num_nodes))
        self.u2 = nn.Parameter(torch.empty(channels, num_nodes))
        self.u3 = nn.Parameter(torch.empty(channels))
        self.b_e = nn.Parameter(torch.zeros(1, length, length))
        self.v_e = nn.Parameter(torch.empty(length, length))
        for p in (self.u1, self.u3):
            nn.init.uniform_(p)
        for p in (self.u2, self.v_e):
            nn.init.xavier_uniform_(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lhs = torch.einsum("bnct,n->btc", x, self.u1) @ self.u2  # [B, T, N]
        rhs = torch.einsum("bnct,c->bnt", x, self.u3)  # [B, N, T]
        e = self.v_e @ torch.sigmoid(lhs @ rhs + self.b_e)
        return torch.softmax(e, dim=1)


class SpatialAttention(nn.Module):
    """``x: [B, N, C, T]`` -> ``S': [B, N, N]``, ``S'[:, i, j]`` the weight of node i for node j
    (ASTGCN, "Spatial attention")."""

    def __init__(self, num_nodes: int, channels: int, length: int) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.empty(length))
        self.w2 = nn.Parameter(torch.empty(channels, length))
        self.w3 = nn.Parameter(torch.empty(channels))
        self.b_s = nn.Parameter(torch.zeros(1, num_nodes, num_nodes))
        self.v_s = nn.Parameter(torch.empty(num_nodes, num_nodes))
        for p in (self.w1, self.w3):
            nn.init.uniform_(p)
        for p in (self.w2, self.v_s):
            nn.init.xavier_uniform_(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lhs = torch.einsum("bnct,t->bnc", x, self.w1) @ self.w2  # [B, N, T]
        rhs = torch.einsum("bnct,c->btn", x, self.w3)  # [B, T, N]
        s = self.v_s @ torch.sigmoid(lhs @ rhs + self.b_s)
        return torch.softmax(s, dim=1)


class ChebConvWithAttention(nn.Module):
    """``ReLU(sum_k (T_k * S')^T x Theta_k)`` per time step (ASTGCN, Chebyshev
    graph convolution with spatial attention).

    ``x: [B, N, C, T]``, ``cheb: [K, N, N]``, ``att: [B, N, N]`` -> ``[B, N, F, T]``.
    """

    def __init__(self, in_dim: int, out_dim: int, order: int) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.empty(order, in_dim, out_dim))
        nn.init.xavier_uniform_(self.theta.view(order * in_dim, out_dim))

    def forward(self, x: torch.Tensor, cheb: torch.Tensor, att: torch.Tensor) -> torch.Tensor:
        weighted = cheb.unsqueeze(0) * att.unsqueeze(1)  # [B, K, N, N]
        out = torch.einsum("bkij,bict,kcf->bjft", weighted, x, self.theta)
        return torch.relu(out)


class ASTGCNBlock(nn.Module):
    """Attention, graph conv, temporal conv, residual: ``[B, N, C, T]`` -> ``[B, N, F, T/s]``."""

    def __init__(self, num_nodes: int, in_dim: int, length: int, cheb_filters: int,
                 time_filters: int, order: int, time_strides: int) -> None:
        super().__init__()
        self.t_att = TemporalAttention(num_nodes, in_dim, length)
        self.s_att = SpatialAttention(num_nodes, in_dim, length)
        self.cheb = ChebConvWithAttention(in_dim, cheb_filters, order)
        self.time_conv = nn.Conv2d(cheb_filters, time_filters, (1, 3),
                                   stride=(1, time_strides), padding=(0, 1))
        self.residual = nn.Conv2d(in_dim, time_filters, (1, 1), stride=(1, time_strides))
        self.norm = nn.LayerNorm(time_filters)

    def forward(self, x: torch.Tensor, cheb: torch.Tensor) -> torch.Tensor:
        b, n, c, t = x.shape
        e = self.t_att(x)  # [B, T, T]
        x_hat = (x.reshape(b, n * c, t) @ e).view(b, n, c, t)
        s = self.s_att(x_hat)
        g = self.cheb(x, cheb, s)  # [B, N, F, T]
        # convolutions in [B, F, N, T] layout
        out = self.time_conv(g.permute(0, 2, 1, 3)) + self.residual(x.permute(0, 2, 1, 3))
        out = self.norm(torch.relu(out).permute(0, 3, 2, 1))  # [B, T', N, F]
        return out.permute(0, 2, 3, 1)  # [B, N, F, T']


@register_model(
    "astgcn", recipe=RECIPE,
    citation="Guo et al., Attention Based Spatial-Temporal Graph Convolutional Networks for "
             "Traffic Flow Forecasting, AAAI 2019",
    description="ASTGCN (recent component): spatial/temporal attention, Chebyshev graph conv",
    needs_adjacency=True,
    tags=("graph", "attention"),
    cheb_order=3, cheb_filters=64, time_filters=64, num_blocks=2, time_strides=1,
    laplacian="combinatorial",
)
class ASTGCN(Forecaster):
    """ASTGCN recent component. ``forward(batch)``: ``x: [B, T_in, N, C]`` ->
    ``[B, T_out, N, C_out]`` (scaled).

    Args:
        num_nodes, input_len, horizon, in_channels, out_channels, adjacency: from the harness.
        cheb_order: Chebyshev terms ``K``.
        cheb_filters, time_filters: graph-conv and temporal-conv filters.
        num_blocks: ST blocks.
        time_strides: stride of the first block's temporal convolution (the paper uses it to
            sub-sample longer recent segments); ``input_len`` must be divisible by it.
        laplacian: "combinatorial" (``D - A``, release) or "normalized".

    No sparse path: the graph is dense by design (:meth:`dense_graph_reason`).
    """

    @staticmethod
    def dense_graph_reason(hparams: dict) -> str:
        """Why the graph convolution needs dense ``[N, N]`` matrices."""
        return ("its spatial attention S' (with the N x N parameters V_s, b_s) is a dense "
                "N x N matrix per sample that multiplies every Chebyshev term element-wise")

    def __init__(self, num_nodes: int, input_len: int, horizon: int, in_channels: int,
                 out_channels: int, adjacency: np.ndarray | None, cheb_order: int = 3,
                 cheb_filters: int = 64, time_filters: int = 64, num_blocks: int = 2,
                 time_strides: int = 1, laplacian: str = "combinatorial") -> None:
        super().__init__()
        for name, v in (("num_nodes", num_nodes), ("input_len", input_len),
                        ("horizon", horizon), ("in_channels", in_channels),
                        ("out_channels", out_channels), ("cheb_order", cheb_order),
                        ("cheb_filters", cheb_filters), ("time_filters", time_filters),
                        ("num_blocks", num_blocks), ("time_strides", time_strides)):
            if v < 1:
                raise ValueError(f"astgcn: {name} must be >= 1, got {v}")
        if input_len % time_strides:
            raise ValueError(f"astgcn: input_len={input_len} is not divisible by "
                             f"time_strides={time_strides}")
        adj = symmetrize(require_adjacency(adjacency, num_nodes, "astgcn"))
        if laplacian == "combinatorial":
            lap = scaled_combinatorial_laplacian(adj)
        elif laplacian == "normalized":
            lap = scaled_laplacian(adj)
        else:
            raise ValueError(f"astgcn: laplacian must be 'combinatorial' or 'normalized', "
                             f"got {laplacian!r}")
        self.num_nodes, self.input_len, self.horizon = num_nodes, input_len, horizon
        self.in_channels, self.out_channels = in_channels, out_channels
        self.register_buffer("cheb", torch.from_numpy(chebyshev_basis(lap, cheb_order)).float())
        blocks, length, dim = [], input_len, in_channels
        for i in range(num_blocks):
            stride = time_strides if i == 0 else 1
            blocks.append(ASTGCNBlock(num_nodes, dim, length, cheb_filters, time_filters,
                                      cheb_order, stride))
            length, dim = length // stride, time_filters
        self.blocks = nn.ModuleList(blocks)
        # the release's final conv: T' input channels, kernel (1, F) -> T_out * C_out channels
        self.final_conv = nn.Conv2d(length, horizon * out_channels, (1, time_filters))

    def forward(self, batch: Batch) -> torch.Tensor:
        x = batch.x
        if x.dim() != 4 or x.shape[1:] != (self.input_len, self.num_nodes, self.in_channels):
            raise ValueError(f"astgcn: expected x [B, {self.input_len}, {self.num_nodes}, "
                             f"{self.in_channels}], got {list(x.shape)}")
        h = x.permute(0, 2, 3, 1)  # [B, N, C, T]
        for block in self.blocks:
            h = block(h, self.cheb)
        out = self.final_conv(h.permute(0, 3, 1, 2))  # [B, T_out*C_out, N, 1]
        b = out.shape[0]
        out = out.view(b, self.horizon, self.out_channels, self.num_nodes)
        return out.permute(0, 1, 3, 2).contiguous()

"""STGCN: Spatio-Temporal Graph Convolutional Networks (Yu, Yin & Zhu, IJCAI 2018; 1709.04875).

Architecture (paper section 3 and Fig. 2), ``x: [B, T_in, N, C] -> y_hat: [B, T_out, N, C_out]``:
two ST-Conv blocks, each
  temporal gated conv (GLU, kernel Kt, eq. 8)  ->  spatial graph conv (eq. 3 Chebyshev with
  Ks terms, or eq. 6 first-order)  ->  temporal conv (ReLU)  ->  layer norm over [N, C]
  ->  dropout,
with the paper's channels (64, 16, 64) in both blocks, Kt = Ks = 3. Each block shortens the
sequence by 2 (Kt - 1), so T_in must be at least 4 (Kt - 1) + 1 (9 with the defaults). The
output layer is a GLU temporal conv over the remaining steps, layer norm, a 1x1 sigmoid conv
and a fully connected layer.

Faithful to the paper / authors' code (VeritasYin/STGCN_IJCAI-18):
- residual connections inside every temporal and spatial layer as in the authors' code
  (zero-padded channels when c_in < c_out, a 1x1 conv when c_in > c_out); GLU = (P + x) * sigma(Q);
- Chebyshev basis on the scaled Laplacian 2L/lambda_max - I of the (symmetrised) W;
- layer norm with per-node, per-channel affine parameters ``[N, C]``.

Deviations (documented choices):
- Multi-output head: the paper predicts one step and rolls out iteratively; here the final fully
  connected layer maps the hidden channels to T_out * C_out values, predicting all horizons at once
  (as BasicTS / LargeST do). The paper's single-step model is recovered with T_out = 1.
- First-order variant (``stgcn-gcn``) uses the paper's renormalised matrix D~^-1/2 (A+I) D~^-1/2
  (eq. 6); the authors' code adds a further identity (I + that matrix).
- The paper's channels (64, 16, 64) are used; the authors' released script uses
  [[1, 32, 64], [64, 32, 128]].
- Dropout defaults to 0: the authors' training feeds keep_prob = 1.0.
- A directed adjacency is symmetrised with max(A, A^T) before the Laplacian.

Sparse supports (``sparse_supports``: True, False or "auto", see :mod:`baselines.sparse_graph`):
the dense path stores the basis ``[Ks, N, N]``; the sparse path stores only L~ (or the eq. 6
matrix) as a sparse ``[N, N]`` tensor and sums the Chebyshev series on the features (Defferrard
et al., eq. 4-5) by Clenshaw's recurrence, with lambda_max from Lanczos iteration. Both paths
project the channels before propagating over the graph (``SpatialConv``), equal to the dense
path up to float rounding (``tests/test_sparse_graph.py``); parameters unchanged.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from baselines import graph, layers, sparse_graph
from benchmark.batch import Batch
from benchmark.models import Forecaster, register_model
from benchmark.recipes import Recipe, every

# Training recipe: Yu, Yin, Zhu, IJCAI 2018, Sec. 4.3 "Experimental Settings" and the official
# code (VeritasYin/STGCN_IJCAI-18 main.py defaults; models/trainer.py): RMSprop, lr 1e-3 decayed
# x0.7 every 5 epochs (staircase exponential decay), batch 50, 50 epochs, L2 loss, no gradient
# clipping, the best validation epoch kept (no early stopping). Differs: the official L2 loss is
# tf.nn.l2_loss (half the sum of squares), here the masked mean squared error (same minimiser).
RECIPE = Recipe(
    source="Yu et al., IJCAI 2018, Sec. 4.3; VeritasYin/STGCN_IJCAI-18 main.py + "
           "models/trainer.py (RMSProp, lr 1e-3 x0.7 every 5 epochs, batch 50, 50 epochs, L2)",
    optimizer="rmsprop", lr=1e-3, lr_milestones=every(5, 50), lr_gamma=0.7, batch_size=50,
    epochs=50, patience=None, grad_clip=None, loss="mse",
    notes="official loss tf.nn.l2_loss (half sum of squares); here masked MSE")

CITATION = ("Yu, Yin, Zhu. Spatio-Temporal Graph Convolutional Networks: A Deep Learning "
            "Framework for Traffic Forecasting. IJCAI 2018.")


class _Align(nn.Module):
    """Residual path: zero-pad channels up, or 1x1 conv down (authors' code). x: [B, T, N, C]."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.c_in, self.c_out = c_in, c_out
        self.proj = nn.Linear(c_in, c_out, bias=False) if c_in > c_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.proj is not None:
            return self.proj(x)
        if self.c_in < self.c_out:
            return nn.functional.pad(x, (0, self.c_out - self.c_in))
        return x


class TemporalConv(nn.Module):
    """Temporal conv along T without padding (paper eq. 8). x: [B, T, N, c_in] ->
    [B, T - Kt + 1, N, c_out]; act 'glu' = (P + x) * sigma(Q), 'relu' = relu(conv + x),
    'sigmoid' = sigma(conv)."""

    def __init__(self, kt: int, c_in: int, c_out: int, act: str) -> None:
        super().__init__()
        if act not in ("glu", "relu", "sigmoid"):
            raise ValueError(f"TemporalConv: unknown activation {act!r}")
        self.kt, self.act, self.c_out = kt, act, c_out
        self.align = _Align(c_in, c_out)
        self.conv = nn.Conv2d(c_in, 2 * c_out if act == "glu" else c_out, kernel_size=(kt, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)  # [B, T', N, c]
        if self.act == "sigmoid":
            return torch.sigmoid(h)
        res = self.align(x)[:, self.kt - 1:]
        if self.act == "glu":
            p, q = h[..., : self.c_out], h[..., self.c_out:]
            return (p + res) * torch.sigmoid(q)
        return torch.relu(h + res)


class SpatialConv(nn.Module):
    """Graph conv sum_k T_k x theta_k (paper eq. 3; Ks = 1 basis = eq. 6 matrix) + residual, ReLU.

    x: [B, T, N, c_in] -> [B, T, N, c_out]; ``basis``: the model's buffer, either the dense
    basis [Ks, N, N] or a sparse [N, N] operator: L~ when ``chebyshev`` (the Ks terms by the
    recurrence), else the eq. 6 matrix (one term).

    Order of operations: T_k acts on the node axis and theta_k on the channel axis, so
    ``sum_k T_k (x theta_k)`` equals ``sum_k (T_k x) theta_k`` (associativity); the channels are
    projected first (c_in = 64 -> c_out = 16 in the paper's blocks), which cuts the graph
    propagation's work by c_in / c_out, as LargeST's STGCN does. The parameters are unchanged:
    ``theta`` is a Linear over the Ks * c_in stacked terms, k-major (``theta.weight[:, k * c_in
    + c]`` multiplies channel c of T_k x). The sparse path sums the series by Clenshaw's
    recurrence (b_k = z_k + 2 L~ b_{k+1} - b_{k+2}, result z_0 + L~ b_1 - b_2, with
    z_k = x theta_k), Ks - 1 sparse products at c_out channels. Equal to the propagate-first
    order up to float rounding (``tests/test_stgcn_order.py``).
    """

    def __init__(self, ks: int, c_in: int, c_out: int, chebyshev: bool = True) -> None:
        super().__init__()
        self.ks, self.chebyshev, self.c_in, self.c_out = ks, chebyshev, c_in, c_out
        self.align = _Align(c_in, c_out)
        self.theta = nn.Linear(ks * c_in, c_out)

    def projected_terms(self, x: torch.Tensor) -> torch.Tensor:
        """``z_k = x theta_k`` for every k: [B, T, N, c_in] -> [B, T, Ks, N, c_out] (no bias)."""
        b, t, n, _ = x.shape
        w = self.theta.weight.view(self.c_out, self.ks, self.c_in)  # [o, k, c]
        z = x @ w.permute(2, 1, 0).reshape(self.c_in, self.ks * self.c_out)  # [B, T, N, k*o]
        return z.view(b, t, n, self.ks, self.c_out).transpose(2, 3)

    def forward(self, x: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
        b, t, n, _ = x.shape
        z = self.projected_terms(x)  # [B, T, Ks, N, c_out]
        if basis.layout == torch.strided:
            # sum_k sum_m basis[k, n, m] z[b, t, k, m, o] as one [N, Ks*N] @ [Ks*N, o] product
            flat = basis.transpose(0, 1).reshape(n, self.ks * n)
            y = flat @ z.reshape(b, t, self.ks * n, self.c_out)
        else:
            y = self._sparse_series(z, basis)
        return torch.relu(y + self.theta.bias + self.align(x))

    def _sparse_series(self, z: torch.Tensor, op: torch.Tensor) -> torch.Tensor:
        """``sum_k T_k(L~) z_k`` by Clenshaw's recurrence, or ``A^ z_0`` (first order).
        z: [B, T, Ks, N, c] -> [B, T, N, c]."""
        if not self.chebyshev:
            return layers.node_matmul(op, z[:, :, 0], node_dim=2)
        if self.ks == 1:
            return z[:, :, 0]
        b_next = z[:, :, self.ks - 1]
        b_next2 = torch.zeros_like(b_next)
        for k in range(self.ks - 2, 0, -1):
            b_k = z[:, :, k] + 2.0 * layers.node_matmul(op, b_next, node_dim=2) - b_next2
            b_next, b_next2 = b_k, b_next
        return z[:, :, 0] + layers.node_matmul(op, b_next, node_dim=2) - b_next2


class STConvBlock(nn.Module):
    """Temporal GLU -> spatial -> temporal ReLU -> LayerNorm([N, C]) -> dropout (Fig. 2)."""

    def __init__(self, kt: int, ks: int, num_nodes: int, c_in: int, channels: tuple[int, int, int],
                 dropout: float, chebyshev: bool = True) -> None:
        super().__init__()
        c_t, c_s, c_o = channels
        self.temporal1 = TemporalConv(kt, c_in, c_t, "glu")
        self.spatial = SpatialConv(ks, c_t, c_s, chebyshev)
        self.temporal2 = TemporalConv(kt, c_s, c_o, "relu")
        self.norm = nn.LayerNorm([num_nodes, c_o])
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
        x = self.temporal2(self.spatial(self.temporal1(x), basis))
        return self.dropout(self.norm(x))


def stgcn_graph_basis(adjacency: np.ndarray, num_nodes: int, graph_conv: str,
                      ks: int) -> np.ndarray:
    """``[Ks, N, N]`` basis: Chebyshev T_0..T_{Ks-1}(L~) or the first-order matrix ``[1, N, N]``."""
    a = graph.symmetrize(graph.require_adjacency(adjacency, num_nodes, "STGCN"))
    if graph_conv == "cheb":
        return graph.chebyshev_basis(graph.scaled_laplacian(a), ks)
    if graph_conv == "gcn":
        return graph.symmetric_normalize(a)[None]
    raise ValueError(f"STGCN: graph_conv must be 'cheb' or 'gcn', got {graph_conv!r}")


def stgcn_sparse_operator(adjacency, num_nodes: int, graph_conv: str) -> torch.Tensor:
    """Sparse float32 ``[N, N]``: L~ (``"cheb"``) or the eq. 6 matrix (``"gcn"``), the sparse
    counterparts of :func:`stgcn_graph_basis`'s T_1 and of its first-order basis."""
    a = sparse_graph.symmetrize(sparse_graph.require_edge_list(adjacency, num_nodes, "STGCN"))
    if graph_conv == "cheb":
        return sparse_graph.scaled_laplacian(a).to_sparse()
    if graph_conv == "gcn":
        return sparse_graph.symmetric_normalize(a).to_sparse()
    raise ValueError(f"STGCN: graph_conv must be 'cheb' or 'gcn', got {graph_conv!r}")


class STGCN(Forecaster):
    """STGCN (Yu et al., IJCAI 2018). ``forward(batch)``: x [B, T_in, N, C] -> [B, T_out, N, C_out].

    ``sparse_supports``: True, False or "auto" (sparse from
    :data:`baselines.sparse_graph.SPARSE_AUTO_MIN_NODES` nodes or for a sparse adjacency); the
    dense path keeps the buffer ``basis`` [Ks, N, N], the sparse one ``operator`` [N, N].
    """

    def __init__(self, num_nodes: int, input_len: int, horizon: int, in_channels: int,
                 out_channels: int, adjacency: np.ndarray | None = None,
                 graph_conv: str = "cheb", ks: int = 3, kt: int = 3,
                 blocks: tuple[tuple[int, int, int], ...] = ((64, 16, 64), (64, 16, 64)),
                 dropout: float = 0.0, sparse_supports: bool | str = "auto") -> None:
        super().__init__()
        ko = input_len - len(blocks) * 2 * (kt - 1)
        if ko < 1:
            raise ValueError(
                f"STGCN: input_len={input_len} is too short for {len(blocks)} ST-Conv blocks "
                f"with Kt={kt}; need input_len >= {len(blocks) * 2 * (kt - 1) + 1}")
        ks_eff = ks if graph_conv == "cheb" else 1
        self.sparse = sparse_graph.use_sparse(sparse_supports, adjacency, num_nodes, "STGCN")
        if self.sparse:
            self.register_buffer("operator", stgcn_sparse_operator(adjacency, num_nodes,
                                                                   graph_conv), persistent=False)
        else:
            basis = stgcn_graph_basis(adjacency, num_nodes, graph_conv, ks)
            self.register_buffer("basis", torch.tensor(basis, dtype=torch.float32),
                                 persistent=False)
        self.horizon, self.out_channels = horizon, out_channels
        blocks_, c = [], in_channels
        for ch in blocks:
            blocks_.append(STConvBlock(kt, ks_eff, num_nodes, c, tuple(ch), dropout,
                                       chebyshev=graph_conv == "cheb"))
            c = ch[-1]
        self.blocks = nn.ModuleList(blocks_)
        # Output layer (authors' code): GLU temporal conv over the remaining Ko steps, layer
        # norm, 1x1 sigmoid conv, then a fully connected layer (here to T_out * C_out values).
        self.out_temporal = TemporalConv(ko, c, c, "glu")
        self.out_norm = nn.LayerNorm([num_nodes, c])
        self.out_sigmoid = TemporalConv(1, c, c, "sigmoid")
        self.out_fc = nn.Linear(c, horizon * out_channels)

    def forward(self, batch: Batch) -> torch.Tensor:
        x = batch.x
        graph_op = self.operator if self.sparse else self.basis
        for block in self.blocks:
            x = block(x, graph_op)
        x = self.out_sigmoid(self.out_norm(self.out_temporal(x)))  # [B, 1, N, c]
        y = self.out_fc(x[:, 0])  # [B, N, T_out * C_out]
        b, n = y.shape[:2]
        return y.reshape(b, n, self.horizon, self.out_channels).permute(0, 2, 1, 3)


register_model("stgcn", recipe=RECIPE,
               citation=CITATION, needs_adjacency=True, tags=("graph",),
               description="STGCN with Chebyshev graph convolution (Ks=3)",
               graph_conv="cheb", ks=3, kt=3, blocks=((64, 16, 64), (64, 16, 64)),
               dropout=0.0)(STGCN)


@register_model("stgcn-gcn", recipe=RECIPE,
                citation=CITATION, needs_adjacency=True, tags=("graph",),
                description="STGCN with the first-order graph convolution approximation",
                kt=3, blocks=((64, 16, 64), (64, 16, 64)), dropout=0.0)
class STGCNFirstOrder(STGCN):
    """STGCN(1st): the first-order approximation of the graph conv (paper eq. 6)."""

    def __init__(self, num_nodes: int, input_len: int, horizon: int, in_channels: int,
                 out_channels: int, adjacency: np.ndarray | None = None, kt: int = 3,
                 blocks: tuple[tuple[int, int, int], ...] = ((64, 16, 64), (64, 16, 64)),
                 dropout: float = 0.0, sparse_supports: bool | str = "auto") -> None:
        super().__init__(num_nodes, input_len, horizon, in_channels, out_channels, adjacency,
                         graph_conv="gcn", ks=1, kt=kt, blocks=blocks, dropout=dropout,
                         sparse_supports=sparse_supports)

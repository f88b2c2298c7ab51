"""Graph WaveNet (Wu, Pan, Long, Jiang, Zhang, IJCAI 2019, arXiv 1906.00121).

``x: [B, T_in, N, C] -> y_hat: [B, T_out, N, C_out]``. A 1x1 start conv, then 8 layers
(4 blocks x 2, dilations 1, 2, 1, 2, ...) each of
  gated dilated causal conv  tanh(Theta_1 * x) . sigma(Theta_2 * x)  (kernel 2, eq. 8)
  -> 1x1 skip conv (256 channels, summed over layers)
  -> diffusion graph conv (eq. 7): Z = sum_{k=0..K} P_f^k X W_k1 + P_b^k X W_k2 + A_apt^k X W_k3
     (the k = 0 term shared), K = 2, with P_f = A / rowsum(A), P_b = A^T / rowsum(A^T) and the
     self-adaptive A_apt = SoftMax(ReLU(E1 E2^T)) (eq. 5, embeddings of size 10), dropout 0.3
  -> + residual, batch norm;
then ReLU(skip) -> 1x1 conv to 512 -> ReLU -> 1x1 conv to T_out * C_out.

The input is left-padded with zeros to the receptive field (13 steps with the defaults), as in
the authors' code; with a longer input the last output step (the last 13 input steps' receptive
field) is used.

``adjacency=None`` runs the adaptive-only variant (paper Table 3 "Adaptive-only");
``adaptive_adj=False`` the fixed-graph variant.

Faithful: the paper's defaults (8 layers, 32 residual / dilation channels, 256 skip, 512 end,
dropout 0.3, K = 2, embeddings 10, random N(0, 1) init of E1, E2).
Deviations / choices:
- ``time_of_day=True`` appends the time-of-day fraction (slot / steps_per_day) as an extra input
  channel, as the authors' code (and the DCRNN data pipeline it uses) does; the paper does not
  mention it. Set False for pure sensor input.
- Supports are applied as in the paper's equations (row i of P mixes neighbours of node i);
  the authors' ``nconv`` contracts the other index (P^T X).
- The output conv emits T_out * C_out channels (the authors' emits the horizon for one channel).
- The last layer's graph conv and batch norm are not built: their output never reaches the
  prediction (only the skip path does). The authors' code builds them (7,264 parameters with the
  defaults) and also 1x1 ``residual_convs`` that are unused when the graph conv is on (8,448), so
  its parameter count is 15,712 higher for the same configuration.

Sparse supports (``sparse_supports``: True, False or "auto", see :mod:`baselines.sparse_graph`):
P_f and P_b as sparse ``[N, N]`` tensors through ``torch.sparse.mm``, equal to the dense path up
to float rounding. The self-adaptive matrix (eq. 5) stays dense by design: SoftMax(ReLU(E1
E2^T)) is a full ``[N, N]`` matrix, recomputed at every forward pass, with every entry positive
(the softmax of a row has no zeros), so the default model costs ``O(N^2)`` memory and work per
layer whatever the fixed graph; only the fixed-graph variant (``adaptive_adj=False``) is sparse
throughout.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from baselines import graph, layers, sparse_graph
from benchmark.batch import Batch
from benchmark.models import Forecaster, register_model
from benchmark.recipes import Recipe

# Training recipe: the official code (nnzhan/Graph-WaveNet train.py defaults, engine.py):
# Adam lr 1e-3, weight decay 1e-4, batch 64, 100 epochs, gradient clipping at norm 5, masked
# MAE, no LR schedule, the best validation epoch kept (no early stopping).
RECIPE = Recipe(
    source="nnzhan/Graph-WaveNet train.py defaults (--learning_rate 0.001 --weight_decay 0.0001 "
           "--batch_size 64 --epochs 100) + engine.py (Adam, clip 5, util.masked_mae)",
    optimizer="adam", lr=1e-3, weight_decay=1e-4, batch_size=64, epochs=100, patience=None,
    grad_clip=5.0, loss="mae")

CITATION = ("Wu, Pan, Long, Jiang, Zhang. Graph WaveNet for Deep Spatial-Temporal Graph "
            "Modeling. IJCAI 2019.")


class DiffusionConv(nn.Module):
    """Eq. 7: concat[X, S_1 X, ..., S_1^K X, S_2 X, ...] -> 1x1 conv -> dropout.

    x: [B, c_in, N, L], supports: list of [N, N] -> [B, c_out, N, L]. The stack is
    :func:`baselines.layers.diffusion_terms` (shared with DCRNN) on the channel axis.
    """

    def __init__(self, c_in: int, c_out: int, num_supports: int, order: int,
                 dropout: float) -> None:
        super().__init__()
        self.order = order
        self.mlp = nn.Conv2d((order * num_supports + 1) * c_in, c_out, kernel_size=1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, supports: list[torch.Tensor]) -> torch.Tensor:
        terms = layers.diffusion_terms(x, supports, self.order, node_dim=2, feature_dim=1)
        return self.dropout(self.mlp(terms))


class GraphWaveNet(Forecaster):
    """Graph WaveNet. ``forward(batch)``: x [B, T_in, N, C] -> [B, T_out, N, C_out].

    ``sparse_supports``: True, False or "auto" for the fixed supports (module docstring).
    """

    @staticmethod
    def dense_graph_reason(hparams: dict) -> str | None:
        """Why this configuration needs a dense ``[N, N]`` graph (None: it has a sparse path)."""
        if not hparams.get("adaptive_adj", True):
            return None
        return ("its self-adaptive adjacency SoftMax(ReLU(E1 E2^T)) (eq. 5) is a dense N x N "
                "matrix recomputed every forward pass")

    def __init__(self, num_nodes: int, horizon: int, in_channels: int, out_channels: int,
                 steps_per_day: int, adjacency: np.ndarray | None = None,
                 residual_channels: int = 32, dilation_channels: int = 32,
                 skip_channels: int = 256, end_channels: int = 512, kernel_size: int = 2,
                 blocks: int = 4, layers_per_block: int = 2, diffusion_steps: int = 2,
                 dropout: float = 0.3, adaptive_adj: bool = True, embedding_dim: int = 10,
                 time_of_day: bool = True, sparse_supports: bool | str = "auto") -> None:
        super().__init__()
        self.horizon, self.out_channels = horizon, out_channels
        self.steps_per_day, self.time_of_day = steps_per_day, time_of_day
        if adjacency is None and not adaptive_adj:
            raise ValueError("GWNet: adjacency=None needs adaptive_adj=True (adaptive-only "
                             "variant); there is no graph to convolve over otherwise")
        supports = []
        sparse = sparse_graph.use_sparse(sparse_supports, adjacency, num_nodes, "GWNet")
        self.sparse = adjacency is not None and sparse  # fixed supports sparse
        if self.sparse:
            a = sparse_graph.edge_list(adjacency, num_nodes, name="GWNet adjacency")
            supports = sparse_graph.dual_random_walk_supports(a)
        elif adjacency is not None:
            a = graph.as_adjacency(adjacency, num_nodes, name="GWNet adjacency")
            supports = list(layers.dual_random_walk_supports(a))
        for i, s in enumerate(supports):
            self.register_buffer(f"support_{i}", s, persistent=False)
        self.num_fixed = len(supports)
        self.adaptive_adj = adaptive_adj
        if adaptive_adj:
            self.node_emb1 = nn.Parameter(torch.randn(num_nodes, embedding_dim))
            self.node_emb2 = nn.Parameter(torch.randn(num_nodes, embedding_dim))
        num_supports = self.num_fixed + int(adaptive_adj)

        c_in = in_channels + int(time_of_day)
        self.start_conv = nn.Conv2d(c_in, residual_channels, kernel_size=1)
        self.filter_convs, self.gate_convs = nn.ModuleList(), nn.ModuleList()
        self.skip_convs, self.gconvs, self.norms = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        receptive_field = 1
        num_layers = blocks * layers_per_block
        for b in range(blocks):
            dilation = 1
            for i in range(layers_per_block):
                self.filter_convs.append(nn.Conv2d(residual_channels, dilation_channels,
                                                   (1, kernel_size), dilation=(1, dilation)))
                self.gate_convs.append(nn.Conv2d(residual_channels, dilation_channels,
                                                 (1, kernel_size), dilation=(1, dilation)))
                self.skip_convs.append(nn.Conv2d(dilation_channels, skip_channels, 1))
                if b * layers_per_block + i < num_layers - 1:  # the last one feeds only skip
                    self.gconvs.append(DiffusionConv(dilation_channels, residual_channels,
                                                     num_supports, diffusion_steps, dropout))
                    self.norms.append(nn.BatchNorm2d(residual_channels))
                receptive_field += dilation * (kernel_size - 1)
                dilation *= 2
        self.receptive_field = receptive_field
        self.end_conv1 = nn.Conv2d(skip_channels, end_channels, 1)
        self.end_conv2 = nn.Conv2d(end_channels, horizon * out_channels, 1)

    def supports(self) -> list[torch.Tensor]:
        out = [getattr(self, f"support_{i}") for i in range(self.num_fixed)]
        if self.adaptive_adj:
            out.append(F.softmax(F.relu(self.node_emb1 @ self.node_emb2.T), dim=1))
        return out

    def forward(self, batch: Batch) -> torch.Tensor:
        x = layers.with_time_of_day(batch, self.steps_per_day) if self.time_of_day else batch.x
        x = x.permute(0, 3, 2, 1)  # [B, C, N, T]
        if x.shape[-1] < self.receptive_field:
            x = F.pad(x, (self.receptive_field - x.shape[-1], 0))
        x = self.start_conv(x)
        supports = self.supports()
        skip = None
        for i in range(len(self.filter_convs)):
            residual = x
            h = torch.tanh(self.filter_convs[i](x)) * torch.sigmoid(self.gate_convs[i](x))
            # the output reads the skip sum at the last step only, and the skip convs are 1x1
            # (per step): so only the last step of each is computed (the authors' code computes
            # every step and then drops all but the last: a [B, 256, N, T] temporary per layer)
            s = self.skip_convs[i](h[..., -1:])
            skip = s if skip is None else s + skip
            if i < len(self.gconvs):
                x = self.gconvs[i](h, supports) + residual[..., -h.shape[-1]:]
                x = self.norms[i](x)
        h = F.relu(self.end_conv1(F.relu(skip)))
        y = self.end_conv2(h)[..., 0]  # [B, T_out * C_out, N]
        b, _, n = y.shape
        return y.reshape(b, self.horizon, self.out_channels, n).permute(0, 1, 3, 2)


register_model("gwnet", recipe=RECIPE,
               citation=CITATION, needs_adjacency=False, tags=("graph",),
               description="Graph WaveNet (diffusion + self-adaptive adjacency, gated TCN)",
               residual_channels=32, dilation_channels=32, skip_channels=256, end_channels=512,
               kernel_size=2, blocks=4, layers_per_block=2, diffusion_steps=2, dropout=0.3,
               adaptive_adj=True, embedding_dim=10, time_of_day=True)(GraphWaveNet)

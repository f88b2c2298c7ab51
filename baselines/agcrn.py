"""AGCRN: Adaptive Graph Convolutional Recurrent Network.

Bai, Yao, Li, Wang, Wang. "Adaptive Graph Convolutional Recurrent Network for Traffic
Forecasting." NeurIPS 2020.

* Node Adaptive Parameter Learning (NAPL): each node's graph-convolution weights and
  bias are generated from its embedding ``E [N, d]`` and shared pools:
  ``Theta = E W_pool`` (``W_pool [d, K, C_in, C_out]``), ``b = E b_pool``.
* Data Adaptive Graph Generation (DAGG): ``A = softmax(ReLU(E E^T))`` (row softmax), no
  predefined graph.
* The graph convolution uses the Chebyshev-style support set ``{I, A, 2 A T_1 - T_0, ...}`` of
  order ``cheb_k`` with a separate weight per support. With ``cheb_k=2`` this is
  ``I X Theta_0 + A X Theta_1``, the form of the authors' release; the paper's DAGG formula
  writes the special case ``(I + A) X Theta`` with one shared weight.
* AGCRN cell: a GRU whose matrix products are replaced by the adaptive graph
  convolution; ``num_layers`` stacked cells read the ``T_in`` steps; the last hidden state of the
  top layer is mapped by a linear layer ("end conv", a ``1 x hidden`` convolution) to all
  ``T_out`` steps at once.

Defaults from the paper: embedding dim 10, hidden 64, 2 layers, K=2. Any ``T_in``/``T_out``.
"""

from __future__ import annotations

import torch
from torch import nn

from benchmark.batch import Batch
from benchmark.models import Forecaster, register_model
from benchmark.recipes import Recipe

# Training recipe: the official code (LeiBAI/AGCRN model/PEMSD4_AGCRN.conf [train]): Adam
# lr_init 3e-3 without decay (lr_decay False), batch 64, 100 epochs, early-stopping patience 15,
# no clipping (grad_norm False), MAE loss. Differs: the official MAE is unmasked.
RECIPE = Recipe(
    source="LeiBAI/AGCRN model/PEMSD4_AGCRN.conf [train] (loss_func mae, batch_size 64, "
           "epochs 100, lr_init 0.003, lr_decay False, early_stop_patience 15, grad_norm False)",
    optimizer="adam", lr=3e-3, batch_size=64, epochs=100, patience=15, grad_clip=None,
    loss="mae", notes="official MAE is unmasked")


def adaptive_supports(node_emb: torch.Tensor, cheb_k: int) -> torch.Tensor:
    """``[K, N, N]`` supports ``T_0 = I``, ``T_1 = softmax(ReLU(E E^T))``,
    ``T_k = 2 A T_{k-1} - T_{k-2}`` (AGCRN DAGG with the Chebyshev recursion)."""
    n = node_emb.shape[0]
    adj = torch.softmax(torch.relu(node_emb @ node_emb.T), dim=1)
    supports = [torch.eye(n, device=node_emb.device, dtype=node_emb.dtype), adj]
    for _ in range(2, cheb_k):
        supports.append(2 * adj @ supports[-1] - supports[-2])
    return torch.stack(supports[:cheb_k])


class AdaptiveGraphConv(nn.Module):
    """NAPL graph convolution: ``x: [B, N, C_in]`` -> ``[B, N, C_out]`` (AGCRN NAPL + DAGG).

    :meth:`node_params` generates the per-node weights once per sequence; :meth:`forward`
    applies them at one time step.
    """

    def __init__(self, in_dim: int, out_dim: int, cheb_k: int, embed_dim: int) -> None:
        super().__init__()
        self.weights_pool = nn.Parameter(torch.empty(embed_dim, cheb_k, in_dim, out_dim))
        self.bias_pool = nn.Parameter(torch.zeros(embed_dim, out_dim))
        nn.init.xavier_normal_(self.weights_pool.view(embed_dim * cheb_k, in_dim, out_dim))

    def node_params(self, node_emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``Theta = E W_pool`` as ``[N, K * C_in, C_out]`` and ``b = E b_pool`` ``[N, C_out]``."""
        d, k, i, o = self.weights_pool.shape
        weights = (node_emb @ self.weights_pool.view(d, -1)).view(-1, k * i, o)
        return weights, node_emb @ self.bias_pool

    def forward(self, x: torch.Tensor, supports: torch.Tensor,
                params: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        weights, bias = params
        b, n, _ = x.shape
        x_g = torch.einsum("knm,bmc->nbkc", supports, x).reshape(n, b, -1)  # [N, B, K*C_in]
        return torch.bmm(x_g, weights).transpose(0, 1) + bias


class AGCRNCell(nn.Module):
    """GRU cell with adaptive graph convolutions (AGCRN, "AGCRN" cell)."""

    def __init__(self, in_dim: int, hidden: int, cheb_k: int, embed_dim: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.gates = AdaptiveGraphConv(in_dim + hidden, 2 * hidden, cheb_k, embed_dim)
        self.candidate = AdaptiveGraphConv(in_dim + hidden, hidden, cheb_k, embed_dim)

    def forward(self, seq: torch.Tensor, node_emb: torch.Tensor,
                supports: torch.Tensor) -> torch.Tensor:
        """``seq: [B, T, N, C_in]`` -> hidden states ``[B, T, N, hidden]`` (zero initial state)."""
        gate_params = self.gates.node_params(node_emb)
        cand_params = self.candidate.node_params(node_emb)
        h = seq.new_zeros(seq.shape[0], seq.shape[2], self.hidden)
        outs = []
        for t in range(seq.shape[1]):
            x = seq[:, t]
            zr = torch.sigmoid(self.gates(torch.cat([x, h], dim=-1), supports, gate_params))
            z, r = zr.split(self.hidden, dim=-1)  # update gate, reset gate
            h_tilde = torch.tanh(self.candidate(torch.cat([x, r * h], dim=-1), supports,
                                                cand_params))
            h = z * h + (1 - z) * h_tilde
            outs.append(h)
        return torch.stack(outs, dim=1)


@register_model(
    "agcrn", recipe=RECIPE,
    citation="Bai et al., Adaptive Graph Convolutional Recurrent Network for Traffic "
             "Forecasting, NeurIPS 2020",
    description="AGCRN: GRU with node-adaptive parameters and a learned graph",
    tags=("graph", "rnn", "adaptive-graph"),
    embed_dim=10, hidden=64, num_layers=2, cheb_k=2,
)
class AGCRN(Forecaster):
    """AGCRN. ``forward(batch)``: ``x: [B, T_in, N, C]`` -> ``[B, T_out, N, C_out]`` (scaled).

    Args:
        num_nodes, input_len, horizon, in_channels, out_channels: from the harness.
        embed_dim: node embedding size ``d``.
        hidden: GRU hidden units.
        num_layers: stacked AGCRN cells.
        cheb_k: number of supports (``>= 2``; 2 = ``{I, A}``).

    No sparse path: the graph is dense by design (:meth:`dense_graph_reason`).
    """

    @staticmethod
    def dense_graph_reason(hparams: dict) -> str:
        """Why the adaptive graph is a dense ``[N, N]`` matrix."""
        return ("its adaptive adjacency softmax(ReLU(E E^T)) and the supports built from it are "
                "dense N x N matrices (a row softmax has no zeros)")

    def __init__(self, num_nodes: int, input_len: int, horizon: int, in_channels: int,
                 out_channels: int, embed_dim: int = 10, hidden: int = 64, num_layers: int = 2,
                 cheb_k: int = 2) -> None:
        super().__init__()
        for name, v in (("num_nodes", num_nodes), ("input_len", input_len),
                        ("horizon", horizon), ("in_channels", in_channels),
                        ("out_channels", out_channels), ("embed_dim", embed_dim),
                        ("hidden", hidden), ("num_layers", num_layers)):
            if v < 1:
                raise ValueError(f"agcrn: {name} must be >= 1, got {v}")
        if cheb_k < 2:
            raise ValueError(f"agcrn: cheb_k must be >= 2 (supports I and A), got {cheb_k}")
        self.num_nodes, self.input_len, self.horizon = num_nodes, input_len, horizon
        self.in_channels, self.out_channels = in_channels, out_channels
        self.hidden, self.cheb_k = hidden, cheb_k
        self.node_emb = nn.Parameter(torch.randn(num_nodes, embed_dim))
        self.cells = nn.ModuleList(
            AGCRNCell(in_channels if i == 0 else hidden, hidden, cheb_k, embed_dim)
            for i in range(num_layers))
        self.end_conv = nn.Linear(hidden, horizon * out_channels)

    def forward(self, batch: Batch) -> torch.Tensor:
        x = batch.x
        if x.dim() != 4 or x.shape[2:] != (self.num_nodes, self.in_channels):
            raise ValueError(f"agcrn: expected x [B, T_in, {self.num_nodes}, "
                             f"{self.in_channels}], got {list(x.shape)}")
        b = x.shape[0]
        supports = adaptive_supports(self.node_emb, self.cheb_k)
        seq = x
        for cell in self.cells:
            seq = cell(seq, self.node_emb, supports)
        out = self.end_conv(seq[:, -1]).view(b, self.num_nodes, self.horizon, self.out_channels)
        return out.permute(0, 2, 1, 3).contiguous()

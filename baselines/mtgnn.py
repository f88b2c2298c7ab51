"""MTGNN: Multivariate Time series forecasting with Graph Neural Networks.

Wu, Pan, Long, Jiang, Chang, Zhang. "Connecting the Dots: Multivariate Time Series Forecasting
with Graph Neural Networks." KDD 2020.

* Graph learning layer (paper, "Graph Learning Layer"): ``M1 = tanh(a E1 Theta1)``,
  ``M2 = tanh(a E2 Theta2)``, ``A = ReLU(tanh(a (M1 M2^T - M2 M1^T)))``, then only the ``k``
  largest entries of each row are kept (``subgraph_size``): a uni-directional sparse graph.
* Mix-hop propagation ("Graph Convolution Module"):
  ``H^(k) = beta H_in + (1 - beta) A~ H^(k-1)`` with ``A~ = D~^-1 (A + I)``, output
  ``sum_k H^(k) W^(k)`` (a 1x1 conv on the concatenated hops). Two such layers run on ``A`` and
  ``A^T`` and are summed (inflow and outflow information).
* Dilated inception temporal convolution ("Temporal Convolution Module"): kernels 1x2, 1x3,
  1x6, 1x7 each producing a quarter of the channels, truncated to the shortest output and
  concatenated; a tanh filter and a sigmoid gate multiply (gated TCN).
* Residual and skip connections, layer normalisation per layer (with per-node affine
  parameters), two 1x1 output convolutions mapping to all ``T_out`` steps at once.

Defaults are the paper's multi-step settings (experimental setup / release ``train_multi_step``):
3 layers, dilation exponential 1, gcn depth 2, conv/residual channels 32, skip 64, end 128,
node embedding 40, subgraph size 20, beta (propalpha) 0.05, saturation a (tanhalpha) 3,
dropout 0.3. Inputs shorter than the receptive field (19 steps with these settings) are
left-padded with zeros, as in the paper. Any ``T_in``/``T_out``.

Deviations: the graph is always learned (no predefined adjacency is used); the release adds small
random noise before the top-k to break ties (with ``tanh_alpha=3`` many entries saturate at
exactly 1.0); here ties go to the lower node index instead, so the forward is deterministic and
the same on CPU and GPU up to rounding; ``subgraph_size`` is capped at ``N``. The paper's
training tricks (curriculum learning over horizons, random node-subset training) belong to the
trainer and are not applied by this module.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.batch import Batch
from benchmark.models import Forecaster, register_model
from benchmark.recipes import Recipe

# Training recipe: the official code (nnzhan/MTGNN train_multi_step.py defaults, trainer.py):
# Adam lr 1e-3, weight decay 1e-4, batch 64, 100 epochs, clipping at norm 5, masked MAE, the best
# validation epoch kept. Differs: its curriculum over the horizon (--cl, step_size1 2500) is not
# implemented.
RECIPE = Recipe(
    source="nnzhan/MTGNN train_multi_step.py defaults (learning_rate 0.001, weight_decay 0.0001, "
           "batch_size 64, epochs 100, clip 5) + trainer.py (Adam, masked_mae)",
    optimizer="adam", lr=1e-3, weight_decay=1e-4, batch_size=64, epochs=100, patience=None,
    grad_clip=5.0, loss="mae", notes="horizon curriculum learning (cl) not applied")


class GraphConstructor(nn.Module):
    """Learned uni-directional adjacency ``[N, N]`` (MTGNN, graph learning layer)."""

    def __init__(self, num_nodes: int, k: int, dim: int, alpha: float) -> None:
        super().__init__()
        self.k, self.alpha = min(k, num_nodes), alpha
        self.emb1 = nn.Embedding(num_nodes, dim)
        self.emb2 = nn.Embedding(num_nodes, dim)
        self.lin1 = nn.Linear(dim, dim)
        self.lin2 = nn.Linear(dim, dim)

    def forward(self) -> torch.Tensor:
        m1 = torch.tanh(self.alpha * self.lin1(self.emb1.weight))
        m2 = torch.tanh(self.alpha * self.lin2(self.emb2.weight))
        adj = torch.relu(torch.tanh(self.alpha * (m1 @ m2.T - m2 @ m1.T)))
        # many entries saturate at exactly 1.0; a stable sort breaks ties towards the lower
        # index on every device (topk's choice among ties is unspecified)
        idx = torch.sort(adj, dim=1, descending=True, stable=True).indices[:, :self.k]
        mask = torch.zeros_like(adj).scatter_(1, idx, 1.0)
        return adj * mask


class MixProp(nn.Module):
    """MTGNN mix-hop propagation. ``x: [B, C, N, T]`` -> ``[B, C_out, N, T]``."""

    def __init__(self, c_in: int, c_out: int, depth: int, beta: float) -> None:
        super().__init__()
        self.depth, self.beta = depth, beta
        self.mlp = nn.Conv2d((depth + 1) * c_in, c_out, kernel_size=1)

    def forward(self, x: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        adj = adj + torch.eye(adj.shape[0], device=adj.device, dtype=adj.dtype)
        adj = adj / adj.sum(dim=1, keepdim=True)
        h, hops = x, [x]
        for _ in range(self.depth):
            h = self.beta * x + (1 - self.beta) * torch.einsum("vw,bcwt->bcvt", adj, h)
            hops.append(h)
        return self.mlp(torch.cat(hops, dim=1))


class DilatedInception(nn.Module):
    """Parallel dilated convolutions with kernels 2, 3, 6, 7 (MTGNN, dilated inception)."""

    KERNELS = (2, 3, 6, 7)

    def __init__(self, c_in: int, c_out: int, dilation: int) -> None:
        super().__init__()
        if c_out % len(self.KERNELS):
            raise ValueError(f"mtgnn: conv_channels must be divisible by {len(self.KERNELS)}, "
                             f"got {c_out}")
        self.convs = nn.ModuleList(
            nn.Conv2d(c_in, c_out // len(self.KERNELS), (1, k), dilation=(1, dilation))
            for k in self.KERNELS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [conv(x) for conv in self.convs]
        t = outs[-1].shape[-1]
        return torch.cat([o[..., -t:] for o in outs], dim=1)


@register_model(
    "mtgnn", recipe=RECIPE,
    citation="Wu et al., Connecting the Dots: Multivariate Time Series Forecasting with Graph "
             "Neural Networks, KDD 2020",
    description="MTGNN: learned sparse graph, mix-hop propagation, dilated inception TCN",
    tags=("graph", "cnn", "adaptive-graph"),
    gcn_depth=2, conv_channels=32, residual_channels=32, skip_channels=64, end_channels=128,
    num_layers=3, dilation_exponential=1, node_dim=40, subgraph_size=20, prop_beta=0.05,
    tanh_alpha=3.0, dropout=0.3,
)
class MTGNN(Forecaster):
    """MTGNN. ``forward(batch)``: ``x: [B, T_in, N, C]`` -> ``[B, T_out, N, C_out]`` (scaled).

    Args:
        num_nodes, input_len, horizon, in_channels, out_channels: from the harness.
        gcn_depth: mix-hop propagation depth ``K``.
        conv_channels, residual_channels, skip_channels, end_channels: layer widths.
        num_layers: temporal/graph convolution layers.
        dilation_exponential: dilation growth per layer (1 = no dilation).
        node_dim: graph-learning embedding size.
        subgraph_size: ``k`` of the top-k sparsification (capped at N).
        prop_beta: retain ratio ``beta`` of mix-hop propagation.
        tanh_alpha: saturation rate ``a`` of the graph learning layer.
        dropout: dropout on the input of the first skip conv and after each gated TCN.

    No sparse path: the graph is dense by design (:meth:`dense_graph_reason`).
    """

    @staticmethod
    def dense_graph_reason(hparams: dict) -> str:
        """Why the learned graph is a dense ``[N, N]`` matrix."""
        return ("its graph learning layer computes a dense N x N matrix (then keeps the top k "
                "per row) at every forward pass")

    KERNEL = 7  # largest inception kernel

    def __init__(self, num_nodes: int, input_len: int, horizon: int, in_channels: int,
                 out_channels: int, gcn_depth: int = 2, conv_channels: int = 32,
                 residual_channels: int = 32, skip_channels: int = 64, end_channels: int = 128,
                 num_layers: int = 3, dilation_exponential: int = 1, node_dim: int = 40,
                 subgraph_size: int = 20, prop_beta: float = 0.05, tanh_alpha: float = 3.0,
                 dropout: float = 0.3) -> None:
        super().__init__()
        for name, v in (("num_nodes", num_nodes), ("input_len", input_len),
                        ("horizon", horizon), ("in_channels", in_channels),
                        ("out_channels", out_channels), ("gcn_depth", gcn_depth),
                        ("num_layers", num_layers), ("dilation_exponential", dilation_exponential),
                        ("subgraph_size", subgraph_size), ("node_dim", node_dim)):
            if v < 1:
                raise ValueError(f"mtgnn: {name} must be >= 1, got {v}")
        if not 0.0 <= prop_beta <= 1.0:
            raise ValueError(f"mtgnn: prop_beta must be in [0, 1], got {prop_beta}")
        self.num_nodes, self.input_len, self.horizon = num_nodes, input_len, horizon
        self.in_channels, self.out_channels = in_channels, out_channels
        self.dropout = dropout

        k, de = self.KERNEL, dilation_exponential
        if de > 1:
            self.receptive_field = int(1 + (k - 1) * (de ** num_layers - 1) / (de - 1))
        else:
            self.receptive_field = num_layers * (k - 1) + 1
        self.padded_len = max(input_len, self.receptive_field)

        self.graph = GraphConstructor(num_nodes, subgraph_size, node_dim, tanh_alpha)
        self.start_conv = nn.Conv2d(in_channels, residual_channels, kernel_size=1)
        self.skip0 = nn.Conv2d(in_channels, skip_channels, (1, self.padded_len))
        self.filter_convs, self.gate_convs = nn.ModuleList(), nn.ModuleList()
        self.skip_convs, self.gconv_fwd, self.gconv_bwd = (nn.ModuleList(), nn.ModuleList(),
                                                           nn.ModuleList())
        self.norms = nn.ParameterList()
        length, dilation = self.padded_len, 1
        for _ in range(num_layers):
            self.filter_convs.append(DilatedInception(residual_channels, conv_channels, dilation))
            self.gate_convs.append(DilatedInception(residual_channels, conv_channels, dilation))
            length -= (k - 1) * dilation
            self.skip_convs.append(nn.Conv2d(conv_channels, skip_channels, (1, length)))
            self.gconv_fwd.append(MixProp(conv_channels, residual_channels, gcn_depth,
                                          prop_beta))
            self.gconv_bwd.append(MixProp(conv_channels, residual_channels, gcn_depth,
                                          prop_beta))
            # layer norm over [C, N, T] with elementwise affine (weight, bias)
            self.norms.append(nn.Parameter(torch.ones(residual_channels, num_nodes, length)))
            self.norms.append(nn.Parameter(torch.zeros(residual_channels, num_nodes, length)))
            dilation *= de
        self.skip_end = nn.Conv2d(residual_channels, skip_channels, (1, length))
        self.end_conv1 = nn.Conv2d(skip_channels, end_channels, kernel_size=1)
        self.end_conv2 = nn.Conv2d(end_channels, horizon * out_channels, kernel_size=1)

    def forward(self, batch: Batch) -> torch.Tensor:
        x = batch.x
        if x.dim() != 4 or x.shape[1:] != (self.input_len, self.num_nodes, self.in_channels):
            raise ValueError(f"mtgnn: expected x [B, {self.input_len}, {self.num_nodes}, "
                             f"{self.in_channels}], got {list(x.shape)}")
        b = x.shape[0]
        x = x.permute(0, 3, 2, 1)  # [B, C, N, T]
        if self.input_len < self.padded_len:
            x = F.pad(x, (self.padded_len - self.input_len, 0))
        adj = self.graph()
        skip = self.skip0(F.dropout(x, self.dropout, self.training))
        h = self.start_conv(x)
        for i in range(len(self.filter_convs)):
            residual = h
            h = torch.tanh(self.filter_convs[i](h)) * torch.sigmoid(self.gate_convs[i](h))
            h = F.dropout(h, self.dropout, self.training)
            skip = skip + self.skip_convs[i](h)
            h = self.gconv_fwd[i](h, adj) + self.gconv_bwd[i](h, adj.T)
            h = h + residual[..., -h.shape[-1]:]
            weight, bias = self.norms[2 * i], self.norms[2 * i + 1]
            h = F.layer_norm(h, tuple(h.shape[1:]), weight, bias, eps=1e-5)
        skip = skip + self.skip_end(h)
        out = self.end_conv2(torch.relu(self.end_conv1(torch.relu(skip))))  # [B, T_out*C_out, N, 1]
        out = out.view(b, self.horizon, self.out_channels, self.num_nodes)
        return out.permute(0, 1, 3, 2).contiguous()

"""STID: Spatial-Temporal IDentity, an MLP with node and time embeddings.

Shao, Zhang, Wang, Wei, Xu. "Spatial-Temporal Identity: A Simple yet Effective Baseline for
Multivariate Time Series Forecasting." CIKM 2022.

The model (paper Fig. 2):

* time-series embedding: the ``T_in * C`` history of each node, flattened, through one fully
  connected layer to ``embed_dim`` (the release's 1x1 conv over the flattened
  history is the same linear map);
* spatial identity: a learned vector per node (``node_dim``);
* temporal identities: a learned vector per time-of-day slot (``steps_per_day`` of them) and
  per day of week (7), looked up at the *last input step* (``batch.x_tod[:, -1]``,
  ``batch.x_dow[:, -1]``);
* the four are concatenated and passed through ``num_layers`` residual MLP blocks
  ``H <- H + FC2(Dropout(ReLU(FC1(H))))`` (:class:`baselines.layers.ResidualMLP`, shared
  with the FlowDistill student) and a linear regression layer to ``T_out`` steps.

Defaults follow the paper (32-dim embeddings, 3 layers, dropout 0.15). Deviation: the release
embeds only the first input channel; here all ``C`` input channels are flattened into the
history embedding and the regression layer emits ``T_out * C_out`` values per node.
"""

from __future__ import annotations

import torch
from torch import nn

from baselines.layers import ResidualMLP
from benchmark.batch import Batch
from benchmark.models import Forecaster, register_model
from benchmark.recipes import Recipe

# Training recipe: the official code (zezhishao/STID, BasicTS config STID_PEMS04.py, the flow
# dataset closest to ours): Adam lr 2e-3, weight decay 1e-4, MultiStepLR x0.5 at epochs 1, 50,
# 80, batch 32, 200 epochs, masked MAE, no clipping, the best validation epoch kept.
RECIPE = Recipe(
    source="zezhishao/STID STID_PEMS04.py (Adam lr 0.002 weight_decay 0.0001, MultiStepLR "
           "[1, 50, 80] gamma 0.5, batch 32, 200 epochs, masked_mae)",
    optimizer="adam", lr=2e-3, weight_decay=1e-4, lr_milestones=(1, 50, 80), lr_gamma=0.5,
    batch_size=32, epochs=200, patience=None, grad_clip=None, loss="mae")


@register_model(
    "stid", recipe=RECIPE,
    citation="Shao et al., Spatial-Temporal Identity: A Simple yet Effective Baseline for "
             "Multivariate Time Series Forecasting, CIKM 2022",
    description="STID: MLP over the flattened history plus node/time-of-day/day-of-week "
                "embeddings",
    tags=("mlp",),
    embed_dim=32, node_dim=32, tod_dim=32, dow_dim=32, num_layers=3, dropout=0.15,
)
class STID(Forecaster):
    """STID. ``forward(batch)``: ``x: [B, T_in, N, C]`` -> ``[B, T_out, N, C_out]`` (scaled).

    Args:
        num_nodes, input_len, horizon, in_channels, out_channels, steps_per_day: from the
            harness's :class:`~benchmark.models.ModelContext`.
        embed_dim: width of the history embedding.
        node_dim, tod_dim, dow_dim: widths of the node / time-of-day / day-of-week identities
            (0 disables one, as in the paper's ablations).
        num_layers: residual MLP blocks.
        dropout: dropout inside each block.
    """

    def __init__(self, num_nodes: int, input_len: int, horizon: int, in_channels: int,
                 out_channels: int, steps_per_day: int, embed_dim: int = 32,
                 node_dim: int = 32, tod_dim: int = 32, dow_dim: int = 32, num_layers: int = 3,
                 dropout: float = 0.15) -> None:
        super().__init__()
        for name, v in (("num_nodes", num_nodes), ("input_len", input_len),
                        ("horizon", horizon), ("in_channels", in_channels),
                        ("out_channels", out_channels), ("embed_dim", embed_dim)):
            if v < 1:
                raise ValueError(f"stid: {name} must be >= 1, got {v}")
        if tod_dim > 0 and steps_per_day < 1:
            raise ValueError(f"stid: steps_per_day must be >= 1 for the time-of-day "
                             f"embedding, got {steps_per_day}")
        if min(node_dim, tod_dim, dow_dim, num_layers) < 0:
            raise ValueError("stid: node_dim, tod_dim, dow_dim and num_layers must be >= 0")
        self.num_nodes, self.input_len, self.horizon = num_nodes, input_len, horizon
        self.in_channels, self.out_channels = in_channels, out_channels
        self.steps_per_day = steps_per_day

        self.history = nn.Linear(input_len * in_channels, embed_dim)
        self.node_emb = nn.Parameter(torch.empty(num_nodes, node_dim)) if node_dim else None
        self.tod_emb = nn.Parameter(torch.empty(steps_per_day, tod_dim)) if tod_dim else None
        self.dow_emb = nn.Parameter(torch.empty(7, dow_dim)) if dow_dim else None
        for p in (self.node_emb, self.tod_emb, self.dow_emb):
            if p is not None:
                nn.init.xavier_uniform_(p)
        hidden = embed_dim + node_dim + tod_dim + dow_dim
        self.encoder = nn.Sequential(*[ResidualMLP(hidden, dropout) for _ in range(num_layers)])
        self.regression = nn.Linear(hidden, horizon * out_channels)

    def forward(self, batch: Batch) -> torch.Tensor:
        x = batch.x
        if x.dim() != 4 or x.shape[1:] != (self.input_len, self.num_nodes, self.in_channels):
            raise ValueError(f"stid: expected x [B, {self.input_len}, {self.num_nodes}, "
                             f"{self.in_channels}], got {list(x.shape)}")
        b = x.shape[0]
        parts = [self.history(x.permute(0, 2, 1, 3).reshape(b, self.num_nodes, -1))]
        if self.node_emb is not None:
            parts.append(self.node_emb.unsqueeze(0).expand(b, -1, -1))
        # the data preparation checks every time index once (check_time_indices); the checks
        # here run on eager CPU tensors only (on a GPU they would be a host sync per step)
        check = x.device.type == "cpu" and not torch.compiler.is_compiling()
        if self.tod_emb is not None:
            tod = batch.x_tod[:, -1].long()
            if check and bool(((tod < 0) | (tod >= self.steps_per_day)).any()):
                raise ValueError(f"stid: time-of-day index outside [0, {self.steps_per_day})")
            parts.append(self.tod_emb[tod].unsqueeze(1).expand(-1, self.num_nodes, -1))
        if self.dow_emb is not None:
            dow = batch.x_dow[:, -1].long()
            if check and bool(((dow < 0) | (dow >= 7)).any()):
                raise ValueError("stid: day-of-week index outside [0, 7)")
            parts.append(self.dow_emb[dow].unsqueeze(1).expand(-1, self.num_nodes, -1))
        h = self.encoder(torch.cat(parts, dim=-1))  # [B, N, hidden]
        out = self.regression(h).view(b, self.num_nodes, self.horizon, self.out_channels)
        return out.permute(0, 2, 1, 3).contiguous()

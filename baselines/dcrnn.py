"""DCRNN: Diffusion Convolutional Recurrent Neural Network (Li, Yu, Shahabi, Liu, ICLR 2018,
arXiv 1707.01926).

``x: [B, T_in, N, C] -> y_hat: [B, T_out, N, C_out]``. Sequence-to-sequence model: an encoder
of 2 stacked DCGRU layers (64 units) reads the input; its final states initialise a decoder of 2
DCGRU layers that starts from a zero GO symbol and feeds back its own previous prediction; a
linear projection maps each node's hidden state to C_out values.

DCGRU (eq. 3): r = sigma(Theta_r *G [X, H] + b_r), u = sigma(Theta_u *G [X, H] + b_u),
C = tanh(Theta_C *G [X, r . H] + b_c), H' = u . H + (1 - u) . C, with the diffusion convolution
(eq. 2)  X *G f_theta = sum_{k=0..K} (theta_{k,1} (D_O^-1 W)^k + theta_{k,2} (D_I^-1 W^T)^k) X,
K = ``max_diffusion_step`` = 2 (the k = 0 identity term shared), i.e. 2K + 1 = 5 matrices.

Faithful: 2 layers, 64 units, K = 2, dual random walk, gate biases initialised to 1, Xavier
weights, zero GO symbol, decoder fed its own predictions, one projection shared across nodes.
Deviations / choices:
- Scheduled sampling (paper section 2.3, inverse-sigmoid decay eps_i = tau / (tau + exp(i / tau)),
  tau = ``cl_decay_steps``) is optional and **off by default**: models do not own the training
  loop and ``Batch.y`` is in original units. When ``scheduled_sampling=True`` the model reads the
  scaled ground truth of the training windows from ``series`` (the harness's scaled series) at
  ``start + input_len + t`` and counts its own training batches; evaluation never reads it.
- Diffusion powers are computed as written in eq. 2 (P^k X, :func:`baselines.layers.
  diffusion_terms`, shared with Graph WaveNet); the authors' code uses the recurrence
  2 P x_{k-1} - x_{k-2} (without resetting x_{k-2} between the two supports) on transposed
  supports, and orders the stacked terms feature-major.
- ``time_of_day=True`` (the authors' METR-LA setting, input_dim = 2) appends slot /
  steps_per_day to the encoder input; the decoder input is the C_out target channels only.

Sparse supports (``sparse_supports``: True, False or "auto", see :mod:`baselines.sparse_graph`):
P_f and P_b as sparse ``[N, N]`` tensors (buffers ``support_0``, ``support_1``) instead of the
dense ``[2, N, N]`` stack (buffer ``supports``); the same terms through ``torch.sparse.mm``,
equal up to float rounding; parameters unchanged.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from baselines import graph, layers, sparse_graph
from benchmark.batch import Batch
from benchmark.models import Forecaster, register_model
from benchmark.recipes import Recipe

# Training recipe: the official code (liyaguang/DCRNN data/model/dcrnn_la.yaml, [train]; the
# PEMS-BAY file is the same): Adam base_lr 0.01 x0.1 at epochs 20, 30, 40, 50, batch 64,
# 100 epochs, patience 50, max_grad_norm 5, masked MAE. Differs: Adam epsilon 1e-3 there (torch's
# 1e-8 here); its LR floor (min_learning_rate 2e-6) is not applied (the LR reaches 1e-6 after
# epoch 50); scheduled sampling (use_curriculum_learning, cl_decay_steps 2000) is this model's
# ``scheduled_sampling`` hyperparameter, off by default.
RECIPE = Recipe(
    source="liyaguang/DCRNN data/model/dcrnn_la.yaml [train] (base_lr 0.01, steps [20,30,40,50], "
           "lr_decay_ratio 0.1, batch_size 64, epochs 100, patience 50, max_grad_norm 5; "
           "masked MAE)",
    optimizer="adam", lr=0.01, lr_milestones=(20, 30, 40, 50), lr_gamma=0.1, batch_size=64,
    epochs=100, patience=50, grad_clip=5.0, loss="mae",
    notes="Adam epsilon 1e-3 and LR floor 2e-6 not applied; scheduled sampling is the model's "
          "scheduled_sampling hparam (off by default)")

CITATION = ("Li, Yu, Shahabi, Liu. Diffusion Convolutional Recurrent Neural Network: "
            "Data-Driven Traffic Forecasting. ICLR 2018.")


class DiffusionGraphConv(nn.Module):
    """Eq. 2 on node features: x [B, N, D] -> [B, N, out]; ``supports`` [S, N, N].

    The terms ``[X, S_1 X, ..., S_S^K X]`` (:func:`baselines.layers.diffusion_terms`, the
    stack Graph WaveNet shares) concatenated on the feature axis, then one linear map (the
    filters theta) with Xavier-normal weights and the bias started at ``bias_init``.
    """

    def __init__(self, in_dim: int, out_dim: int, num_supports: int, max_diffusion_step: int,
                 bias_init: float) -> None:
        super().__init__()
        self.k = max_diffusion_step
        self.linear = nn.Linear(in_dim * (num_supports * max_diffusion_step + 1), out_dim)
        nn.init.xavier_normal_(self.linear.weight)
        nn.init.constant_(self.linear.bias, bias_init)

    def forward(self, x: torch.Tensor, supports) -> torch.Tensor:
        return self.linear(layers.diffusion_terms(x, supports, self.k, node_dim=1,
                                                  feature_dim=-1))


class DCGRUCell(nn.Module):
    """Diffusion convolutional GRU cell (eq. 3). x [B, N, D_in], h [B, N, H] -> h' [B, N, H]."""

    def __init__(self, in_dim: int, units: int, num_supports: int, max_diffusion_step: int) -> None:
        super().__init__()
        self.units = units
        self.gates = DiffusionGraphConv(in_dim + units, 2 * units, num_supports,
                                        max_diffusion_step, bias_init=1.0)
        self.candidate = DiffusionGraphConv(in_dim + units, units, num_supports,
                                            max_diffusion_step, bias_init=0.0)

    def forward(self, x: torch.Tensor, h: torch.Tensor, supports) -> torch.Tensor:
        r, u = torch.sigmoid(self.gates(torch.cat([x, h], -1), supports)).chunk(2, dim=-1)
        c = torch.tanh(self.candidate(torch.cat([x, r * h], -1), supports))
        return u * h + (1.0 - u) * c


class DCRNN(Forecaster):
    """DCRNN encoder-decoder. ``forward(batch)``: x [B, T_in, N, C] -> [B, T_out, N, C_out].

    ``sparse_supports``: True, False or "auto" (module docstring).
    """

    def __init__(self, num_nodes: int, input_len: int, horizon: int, in_channels: int,
                 out_channels: int, steps_per_day: int, adjacency: np.ndarray | None = None,
                 series: torch.Tensor | None = None, target_channel_idx: tuple[int, ...] = (),
                 rnn_units: int = 64, num_rnn_layers: int = 2, max_diffusion_step: int = 2,
                 time_of_day: bool = True, scheduled_sampling: bool = False,
                 cl_decay_steps: int = 2000, sparse_supports: bool | str = "auto") -> None:
        super().__init__()
        self.sparse = sparse_graph.use_sparse(sparse_supports, adjacency, num_nodes, "DCRNN")
        if self.sparse:
            a = sparse_graph.require_edge_list(adjacency, num_nodes, "DCRNN")
            for i, s in enumerate(sparse_graph.dual_random_walk_supports(a)):
                self.register_buffer(f"support_{i}", s, persistent=False)
        else:
            a = graph.require_adjacency(adjacency, num_nodes, "DCRNN")
            self.register_buffer("supports", layers.dual_random_walk_supports(a),
                                 persistent=False)
        self.num_nodes, self.input_len = num_nodes, input_len
        self.horizon, self.out_channels = horizon, out_channels
        self.steps_per_day, self.time_of_day = steps_per_day, time_of_day
        self.units = rnn_units
        enc_in = in_channels + int(time_of_day)
        self.encoder = nn.ModuleList(
            DCGRUCell(enc_in if i == 0 else rnn_units, rnn_units, 2, max_diffusion_step)
            for i in range(num_rnn_layers))
        self.decoder = nn.ModuleList(
            DCGRUCell(out_channels if i == 0 else rnn_units, rnn_units, 2, max_diffusion_step)
            for i in range(num_rnn_layers))
        self.projection = nn.Linear(rnn_units, out_channels)
        self.scheduled_sampling, self.cl_decay_steps = scheduled_sampling, cl_decay_steps
        if scheduled_sampling:
            if series is None:
                raise ValueError("DCRNN: scheduled_sampling=True needs the scaled series "
                                 "(ModelContext.series) to read training targets")
            idx = list(target_channel_idx) or list(range(out_channels))
            if len(idx) != out_channels:
                raise ValueError(f"DCRNN: {len(idx)} target channels but out_channels="
                                 f"{out_channels}")
            self._series = torch.as_tensor(series)  # plain attribute: kept out of checkpoints
            self._target_idx = idx
        self.register_buffer("batches_seen", torch.zeros((), dtype=torch.long))

    def teacher_forcing_prob(self) -> float:
        """Inverse sigmoid decay tau / (tau + exp(i / tau)) (paper section 2.3)."""
        tau = float(self.cl_decay_steps)
        i = float(self.batches_seen)
        return tau / (tau + math.exp(min(i / tau, 700.0)))

    def _scaled_targets(self, batch: Batch) -> torch.Tensor:
        """Scaled ground truth [B, T_out, N, C_out] of the batch's windows (training only)."""
        steps = batch.start.cpu()[:, None] + self.input_len + torch.arange(self.horizon)
        y = self._series[steps][..., self._target_idx]
        return y.to(device=batch.x.device, dtype=batch.x.dtype)

    def graph_supports(self) -> torch.Tensor | list[torch.Tensor]:
        """The dense ``[2, N, N]`` stack, or ``[P_f, P_b]`` sparse."""
        return [self.support_0, self.support_1] if self.sparse else self.supports

    def forward(self, batch: Batch) -> torch.Tensor:
        x = layers.with_time_of_day(batch, self.steps_per_day) if self.time_of_day else batch.x
        b, t_in, n, _ = x.shape
        supports = self.graph_supports()
        h = [x.new_zeros(b, n, self.units) for _ in self.encoder]
        for t in range(t_in):
            inp = x[:, t]
            for i, cell in enumerate(self.encoder):
                h[i] = cell(inp, h[i], supports)
                inp = h[i]

        use_truth = self.scheduled_sampling and self.training
        targets = self._scaled_targets(batch) if use_truth else None
        eps = self.teacher_forcing_prob() if use_truth else 0.0
        inp_dec = x.new_zeros(b, n, self.out_channels)  # GO symbol
        outputs = []
        for t in range(self.horizon):
            inp = inp_dec
            for i, cell in enumerate(self.decoder):
                h[i] = cell(inp, h[i], supports)
                inp = h[i]
            y_t = self.projection(inp)
            outputs.append(y_t)
            if targets is not None and float(torch.rand(())) < eps:
                inp_dec = targets[:, t]
            else:
                inp_dec = y_t
        if use_truth:
            self.batches_seen += 1
        return torch.stack(outputs, dim=1)


register_model("dcrnn", recipe=RECIPE,
               citation=CITATION, needs_adjacency=True, tags=("graph",),
               description="DCRNN (diffusion convolutional GRU encoder-decoder)",
               rnn_units=64, num_rnn_layers=2, max_diffusion_step=2, time_of_day=True,
               scheduled_sampling=False, cl_decay_steps=2000)(DCRNN)

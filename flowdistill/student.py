"""The FlowDistill student: an MLP with spatio-temporal embeddings and a variational
information-bottleneck (VIB) head (Yu et al., FlowDistill, arXiv 2504.02094, Sec. 4 and
Supplement A).

Per node and window:

* history embedding: the ``T_in x C`` scaled history, flattened, through one linear layer to
  ``embed_dim`` (the release's 1x1 convolution over the flattened history is the same map);
* spatial embedding: a learned vector per node (``node_dim``);
* temporal embeddings: a learned vector per time-of-day slot (``steps_per_day`` slots) and per
  day of week (7), looked up at the last input step (``batch.x_tod[:, -1]``,
  ``batch.x_dow[:, -1]``);
* the four are concatenated to ``hidden = embed_dim + node_dim + tod_dim + dow_dim`` and passed
  through ``num_layers`` residual blocks ``h <- h + FC2(Dropout(ReLU(FC1(h))))`` (STID's
  encoder block, :class:`baselines.layers.ResidualMLP`);
* VIB head: the block output is split in two halves of ``K = hidden // 2``: ``mu`` and
  ``sigma = softplus(.)``; in training ``num_samples`` reparameterised samples
  ``z = mu + sigma * eps`` (Kingma & Welling 2014) are averaged; at evaluation ``z = mu``
  unless ``sample_eval`` is set;
* regression head: one linear layer ``K -> T_out * C_out``.

``use_ib=False`` keeps the same layers but uses ``z = mu`` always (a deterministic bottleneck,
no KL): the ``mlp`` baseline and the ``flowdistill-noib`` ablation.

Defaults follow the authors' release (``conf/KDMLP/KDMLP.conf``): 64-dim embeddings, 3 blocks,
dropout 0.15, 10 samples. Deviations: the release also samples at evaluation (we use ``mu``) and
hard-codes 48 time-of-day slots (we use the dataset's ``steps_per_day``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from baselines.layers import ResidualMLP
from benchmark.batch import Batch
from benchmark.models import Forecaster

from .losses import BetaAnnealing, kl_standard_normal


class FlowDistillStudent(Forecaster):
    """FlowDistill's MLP student. ``forward(batch)``: ``x: [B, T_in, N, C]`` (scaled) ->
    ``[B, T_out, N, C_out]`` (scaled).

    Args:
        num_nodes, input_len, horizon, in_channels, out_channels, steps_per_day: from the
            harness's :class:`~benchmark.models.ModelContext`.
        embed_dim, node_dim, tod_dim, dow_dim: widths of the four embeddings.
        num_layers: residual MLP blocks.
        dropout: dropout inside each block.
        use_ib: VIB head (True) or deterministic bottleneck (False).
        num_samples: reparameterised samples averaged per forward in training.
        sample_eval: sample (instead of using ``mu``) at evaluation too.
        beta_start, beta_end: IB weight schedule (:class:`~flowdistill.losses.BetaAnnealing`).
    """

    def __init__(self, num_nodes: int, input_len: int, horizon: int, in_channels: int,
                 out_channels: int, steps_per_day: int, embed_dim: int = 64, node_dim: int = 64,
                 tod_dim: int = 64, dow_dim: int = 64, num_layers: int = 3,
                 dropout: float = 0.15, use_ib: bool = True, num_samples: int = 10,
                 sample_eval: bool = False, beta_start: float = 0.002,
                 beta_end: float = 0.001) -> None:
        super().__init__()
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        if steps_per_day < 1:
            raise ValueError(f"steps_per_day must be >= 1, got {steps_per_day}")
        self.horizon, self.out_channels = horizon, out_channels
        self.steps_per_day = steps_per_day
        self.use_ib, self.num_samples, self.sample_eval = use_ib, num_samples, sample_eval
        self.hidden_dim = embed_dim + node_dim + tod_dim + dow_dim
        if self.hidden_dim < 2:
            raise ValueError(f"hidden width {self.hidden_dim} too small for a bottleneck")
        self.latent_dim = self.hidden_dim // 2

        self.history_emb = nn.Linear(input_len * in_channels, embed_dim)
        self.node_emb = nn.Parameter(torch.empty(num_nodes, node_dim))
        self.tod_emb = nn.Parameter(torch.empty(steps_per_day, tod_dim))
        self.dow_emb = nn.Parameter(torch.empty(7, dow_dim))
        for p in (self.node_emb, self.tod_emb, self.dow_emb):
            nn.init.xavier_uniform_(p)
        self.blocks = nn.Sequential(*[ResidualMLP(self.hidden_dim, dropout)
                                      for _ in range(num_layers)])
        self.regression = nn.Linear(self.latent_dim, horizon * out_channels)
        self.beta_schedule = BetaAnnealing(beta_start, beta_end)
        self._kl: torch.Tensor | None = None

    def encode(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, sigma)``, each ``[B, N, K]``; ``sigma`` is ``softplus`` of the second half."""
        x = batch.x
        b, _, n, _ = x.shape
        hist = self.history_emb(x.permute(0, 2, 1, 3).reshape(b, n, -1))  # [B, N, E]
        tod = batch.x_tod[:, -1]
        # the data preparation checks every index once (benchmark.data.windows.
        # check_time_indices); here only eager batches on the CPU are checked, where reading
        # the range costs no host sync (on a GPU it would stall every step; under
        # torch.compile it would break the graph)
        if (tod.device.type == "cpu" and not torch.compiler.is_compiling()
                and (int(tod.max()) >= self.steps_per_day or int(tod.min()) < 0)):
            raise ValueError(f"time-of-day index outside [0, {self.steps_per_day}); "
                             "does steps_per_day match the dataset?")
        h = torch.cat([
            hist,
            self.node_emb.unsqueeze(0).expand(b, -1, -1),
            self.tod_emb[tod].unsqueeze(1).expand(-1, n, -1),
            self.dow_emb[batch.x_dow[:, -1]].unsqueeze(1).expand(-1, n, -1),
        ], dim=-1)
        h = self.blocks(h)
        k = self.latent_dim
        return h[..., :k], F.softplus(h[..., k:2 * k])

    def forward(self, batch: Batch) -> torch.Tensor:
        mu, sigma = self.encode(batch)
        if self.use_ib:
            self._kl = kl_standard_normal(mu, sigma)
            if self.training or self.sample_eval:
                eps = torch.randn((self.num_samples, *mu.shape), dtype=mu.dtype,
                                  device=mu.device)
                z = (mu + sigma * eps).mean(0)
            else:
                z = mu
        else:
            self._kl = None
            z = mu
        out = self.regression(z)  # [B, N, T_out * C_out]
        b, n, _ = out.shape
        return out.reshape(b, n, self.horizon, self.out_channels).permute(0, 2, 1, 3)

    def extra_loss(self) -> torch.Tensor | None:
        """KL(N(mu, sigma^2) || N(0, I)) of the last forward (Supplement eq. 22); None without
        the VIB."""
        return self._kl

    def extra_loss_weight(self, epoch: int, num_epochs: int) -> float:
        """The annealed IB weight beta_e of :class:`~flowdistill.losses.BetaAnnealing`;
        ``num_epochs`` is the recipe's epoch count (``TrainConfig.schedule_epochs``)."""
        return self.beta_schedule(epoch, num_epochs)

    def extra_loss_weight_end(self, num_epochs: int) -> int:
        """The first epoch of the anneal's final weight (the trainer reports a run that
        stopped before it)."""
        return self.beta_schedule.end_epoch(num_epochs)

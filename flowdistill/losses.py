"""FlowDistill's loss terms: the information-bottleneck KL with its annealed weight, and the
teacher-bounded regression loss with an optional direct soft-label (KD) term.

Shapes: predictions, targets and teacher labels are ``[B, T_out, N, C_out]`` in ORIGINAL units
(the objective inverse-scales the model output first); ``teacher_mask: [B]`` bool says which
windows carry a teacher label. The VIB parameters are ``mu, sigma: [..., K]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from benchmark.loop import StepLogs
from benchmark.losses import pointwise_loss
from benchmark.metrics import validity_mask

GATES = ("window", "batch")
DISTANCES = ("huber", "mae")


# ----------------------------------------------------------------------------- IB term
def kl_standard_normal(mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag sigma^2) || N(0, I)) in nats (FlowDistill Supplement A, eq. 22; the
    variational IB of Alemi et al., ICLR 2017, eq. 14 with an isotropic Gaussian prior):

        KL = 1/2 * sum_k (mu_k^2 + sigma_k^2 - log sigma_k^2 - 1)

    Reduction: summed over the latent dimension (last axis, K), then averaged over every other
    axis (batch and nodes): ``mu, sigma: [B, N, K] -> scalar``. This is the reduction of the
    authors' release (sum over the latent channels, mean over batch and nodes); the release also
    divides by ln 2 (bits), a global rescaling of the whole loss that we do not apply.

    ``sigma`` is clamped at the smallest normal float before the log so a collapsed unit gives a
    large finite penalty instead of ``inf``.
    """
    if mu.shape != sigma.shape:
        raise ValueError(f"mu shape {tuple(mu.shape)} != sigma shape {tuple(sigma.shape)}")
    var = sigma * sigma
    log_var = 2.0 * torch.log(sigma.clamp_min(torch.finfo(sigma.dtype).tiny))
    kl = 0.5 * (mu * mu + var - log_var - 1.0).sum(-1)
    return kl.mean()


@dataclass(frozen=True)
class BetaAnnealing:
    """Epoch schedule of the IB weight beta_e (FlowDistill Supplement A; the authors' release
    ``build_anneal_beta``).

    With ``E = num_epochs``, ``n = floor(E / 4)`` and 0-based epoch ``e``:

    * ``e < n`` (first quarter): ``beta_start``;
    * ``n <= e < 2n`` (second quarter): with progress ``p = (e - n) / (n - 1)`` (``p = 0`` when
      ``n == 1``), i.e. ``n`` points evenly spaced on [0, 1] including both ends,

          beta_e = beta_end + (beta_start - beta_end) * f(p) / f(0),
          f = pdf of Beta(1, 4),  f(p) = 4 (1 - p)^3,  so  f(p) / f(0) = (1 - p)^3;

    * ``e >= 2n``: ``beta_end``.

    "Beta(1,4)-shaped" therefore means the Beta(1, 4) density normalised by its maximum (the
    release divides the density by 4), not one minus its CDF (which would be (1 - p)^4).
    Example, ``E = 20``: epochs 0-5 give ``beta_start``; epochs 6, 7, 8 give
    ``beta_end + (beta_start - beta_end) * (27/64, 1/8, 1/64)``; epochs 9+ give ``beta_end``.
    With ``E < 4`` the first two phases are empty and every epoch gives ``beta_end`` (as in the
    release). ``beta_start == beta_end`` is a constant weight.

    Defaults: the release's ``beta = 0.001 -> lamb = 0.0005``, multiplied by 2 because the
    release adds ``2 * beta_e * KL`` to the prediction loss; here the weight multiplies the KL
    directly.
    """

    beta_start: float = 0.002
    beta_end: float = 0.001

    def __post_init__(self) -> None:
        if self.beta_start < 0 or self.beta_end < 0:
            raise ValueError(f"IB weights must be >= 0, got {self.beta_start}, {self.beta_end}")

    def __call__(self, epoch: int, num_epochs: int) -> float:
        if epoch < 0 or num_epochs < 1:
            raise ValueError(f"need epoch >= 0 and num_epochs >= 1, got {epoch}, {num_epochs}")
        n = num_epochs // 4
        if epoch < n:
            return float(self.beta_start)
        if epoch < 2 * n:
            p = (epoch - n) / (n - 1) if n > 1 else 0.0
            return float(self.beta_end + (self.beta_start - self.beta_end) * (1.0 - p) ** 3)
        return float(self.beta_end)

    def end_epoch(self, num_epochs: int) -> int:
        """The first 0-based epoch at which the weight is ``beta_end`` for good: ``2n - 1``
        (the anneal's last point is ``beta_end``), ``2`` when ``n == 1``, ``0`` when ``n == 0``.
        A run whose last epoch is before this one stopped inside the anneal."""
        n = num_epochs // 4
        return 2 * n - 1 if n > 1 else 2 * n

    def describe(self) -> dict:
        return {"kind": "beta(1,4)-pdf", "beta_start": self.beta_start, "beta_end": self.beta_end}


# ------------------------------------------------------------------ regression terms
def pointwise_distance(pred: torch.Tensor, target: torch.Tensor, distance: str = "huber",
                       huber_delta: float = 1.0) -> torch.Tensor:
    """Elementwise distance of the distillation loss, same shape as the inputs: the "mae" or
    "huber" loss of :func:`benchmark.losses.pointwise_loss` (Huber 1964). Non-finite targets
    must be masked by the caller (they count as equal to the prediction here)."""
    if distance not in DISTANCES:
        raise ValueError(f"unknown distance {distance!r}; choose from {DISTANCES}")
    return pointwise_loss(pred, target, distance, huber_delta)


def _window_mask(teacher_mask: torch.Tensor | None, batch_size: int,
                 device: torch.device) -> torch.Tensor:
    if teacher_mask is None:
        return torch.ones(batch_size, dtype=torch.bool, device=device)
    if teacher_mask.shape != (batch_size,):
        raise ValueError(f"teacher_mask must be [B]=[{batch_size}], "
                         f"got {tuple(teacher_mask.shape)}")
    return teacher_mask.to(device=device, dtype=torch.bool)


def teacher_bounded_loss(pred: torch.Tensor, target: torch.Tensor, teacher: torch.Tensor,
                         teacher_mask: torch.Tensor | None, null_value: float | None, *,
                         bound_weight: float, bound_margin: float, gate: str = "window",
                         distance: str = "huber", huber_delta: float = 1.0,
                         mask_threshold: float | None = None,
                         ) -> tuple[torch.Tensor, dict[str, float]]:
    """Ground-truth loss with the teacher bound (Chen et al., "Learning Efficient Object
    Detection Models with Knowledge Distillation", NeurIPS 2017, eqs. 4-5, as adopted by
    FlowDistill):

        L_b = L(student, y)  if  L(student, y) + delta > L(teacher, y)  else 0     (eq. 4)
        L   = L(student, y) + lambda * L_b                                          (eq. 5)

    i.e. the student's ground-truth loss is up-weighted by ``(1 + lambda)`` unless the student
    already beats the teacher by at least the margin ``delta`` (``bound_margin``). ``L`` is the
    masked ``distance`` in original units; the mask is
    :func:`benchmark.metrics.validity_mask` of ``y`` under the protocol's ``null_value`` and
    ``mask_threshold``.

    Gates (which losses the condition compares):

    * ``"window"`` (default): per (window, node): ``L(., y)`` is the masked mean over the
      ``T_out x C_out`` entries of that node in that window; the gate and weight apply to those
      entries only.
    * ``"batch"``: the authors' release: one comparison of the batch-mean losses, one weight for
      the whole batch.

    Only windows with ``teacher_mask`` True take part in the comparison and get weights; other
    windows keep weight 1 (plain loss). Teacher entries that are not finite are left out of
    the comparison. The result is ``sum(w * m * d) / sum(m)`` with ``d`` the pointwise distance,
    ``m`` the validity mask and ``w = 1 + lambda * gate`` (broadcast to entries), so with all
    gates open it is ``(1 + lambda)`` times the plain masked loss, with all gates shut the
    plain loss: the release's ``(1 + lam) * stu_loss`` when every window is labelled.

    Args:
        pred, target, teacher: ``[B, T_out, N, C_out]`` original units.
        teacher_mask: ``[B]`` bool or None (all labelled).

    Returns:
        (loss, logs) with logs ``loss_gt`` (plain masked loss), ``gate_open`` (fraction of
        compared units, (window, node) pairs or batches, whose gate is open) and ``labelled``
        (fraction of windows with a teacher label).
    """
    if gate not in GATES:
        raise ValueError(f"unknown gate {gate!r}; choose from {GATES}")
    if pred.shape != target.shape or teacher.shape != target.shape:
        raise ValueError(f"shapes differ: prediction {tuple(pred.shape)}, target "
                         f"{tuple(target.shape)}, teacher {tuple(teacher.shape)}")
    b = pred.shape[0]
    m = validity_mask(target, null_value, mask_threshold)
    d = pointwise_distance(pred, target, distance, huber_delta)
    n_valid = m.sum().clamp_min(1)
    plain = torch.where(m, d, torch.zeros_like(d)).sum() / n_valid
    labelled = _window_mask(teacher_mask, b, pred.device)

    with torch.no_grad():
        # comparison set: valid target, finite teacher, labelled window
        cm = m & torch.isfinite(teacher) & labelled[:, None, None, None]
        d_t = pointwise_distance(teacher.nan_to_num(0.0), target, distance, huber_delta)
        zero = torch.zeros_like(d)
        if gate == "window":
            cnt = cm.sum(dim=(1, 3))  # [B, N]
            e_s = torch.where(cm, d, zero).sum(dim=(1, 3)) / cnt.clamp_min(1)
            e_t = torch.where(cm, d_t, zero).sum(dim=(1, 3)) / cnt.clamp_min(1)
            g = (e_s + bound_margin > e_t) & (cnt > 0)  # [B, N]
            w = 1.0 + bound_weight * g.to(d.dtype)[:, None, :, None]
            # open / compared units in float64 (0 when none is compared), on the device
            n_units = (cnt > 0).sum().double()
            open_frac = torch.where(n_units > 0, g.sum().double() / n_units.clamp_min(1),
                                    torch.zeros((), dtype=torch.float64, device=d.device))
        else:
            cnt = cm.sum()
            e_s = torch.where(cm, d, zero).sum() / cnt.clamp_min(1)
            e_t = torch.where(cm, d_t, zero).sum() / cnt.clamp_min(1)
            g = (cnt > 0) & (e_s + bound_margin > e_t)  # 0-d bool, on the device
            # the open gate's weight 1 + lambda is formed in float64 and then rounded to the
            # loss dtype, as the Python float it was before
            w_open = (1.0 + bound_weight * g.double()).to(d.dtype)
            w = torch.where(labelled[:, None, None, None], w_open,
                            torch.ones((), dtype=d.dtype, device=d.device))
            open_frac = g.double()
    loss = torch.where(m, w * d, torch.zeros_like(d)).sum() / n_valid
    # logs as 0-d tensors (no host sync per step); reading one gives the float it always was
    logs = StepLogs({"loss_gt": plain.detach(), "gate_open": open_frac,
                     "labelled": labelled.float().mean() if b else 0.0})
    return loss, logs


def soft_label_loss(pred: torch.Tensor, teacher: torch.Tensor, teacher_mask: torch.Tensor | None,
                    target: torch.Tensor, null_value: float | None, distance: str = "huber",
                    huber_delta: float = 1.0, mask_threshold: float | None = None) -> torch.Tensor:
    """Direct soft-label term (classic regression KD: the student is pulled toward the
    teacher's prediction, Hinton et al. 2015 applied to regression outputs):

        L_kd = sum(m * d(student, teacher)) / sum(m)

    with ``m`` = labelled window AND finite teacher entry AND valid ground truth (the entries
    that count in the metrics). Returns 0 when nothing is labelled.
    """
    if pred.shape != teacher.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} != teacher {tuple(teacher.shape)}")
    labelled = _window_mask(teacher_mask, pred.shape[0], pred.device)
    m = validity_mask(target, null_value, mask_threshold) & torch.isfinite(teacher)
    m = m & labelled[:, None, None, None]
    d = pointwise_distance(pred, teacher, distance, huber_delta)
    return torch.where(m, d, torch.zeros_like(d)).sum() / m.sum().clamp_min(1)

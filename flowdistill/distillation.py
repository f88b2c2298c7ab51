"""DistillationObjective: FlowDistill's training loss as a strategy for the harness's trainer.

    loss = L_gt with the teacher bound  (+ kd_weight * L_kd)  (+ beta_e * KL)

* the ground-truth loss with the teacher bound of Chen et al. (NeurIPS 2017, eqs. 4-5) on the
  windows whose teacher label is present (``batch.teacher_mask``); unlabelled windows, and every
  window when there is no teacher, get the plain ground-truth loss
  (:func:`flowdistill.losses.teacher_bounded_loss`);
* optionally the direct soft-label term (:func:`flowdistill.losses.soft_label_loss`);
* the model's own regulariser (the student's VIB KL) weighted by its annealed beta_e
  (:func:`benchmark.objectives.add_model_regulariser`).

The teacher labels come from a :class:`~flowdistill.teacher.label_store.SoftLabelStore`, which the
trainer hands to the batch loader; each batch's labels are looked up by window start, so they
stay paired with their windows under shuffling.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from benchmark.batch import Batch
from benchmark.objectives import Objective, StepContext, add_model_regulariser

from .losses import DISTANCES, GATES, soft_label_loss, teacher_bounded_loss


@dataclass
class DistillationConfig:
    """Hyperparameters of the distillation loss.

    Attributes:
        bound_weight: lambda of the teacher bound (Chen et al. eq. 5): the ground-truth loss is
            multiplied by ``1 + bound_weight`` where the gate is open; 0 disables the bound.
            Release default 0.21.
        bound_margin: delta, the margin m of Chen et al. eq. 4, in loss units (original units
            for MAE): the gate stays shut only where the student beats the teacher by at least
            this much. Release default 0.01.
        gate: "window" (per node per window, default) or "batch" (the authors' release: one
            comparison per batch).
        kd_weight: weight of the direct soft-label term (student toward teacher); 0 = off.
        distance: "huber" (release default) or "mae", on original-unit values, for the
            ground-truth loss, the gate's comparisons and the soft-label term alike.
        huber_delta: Huber transition point in original units (release: 1.0).
    """

    bound_weight: float = 0.21
    bound_margin: float = 0.01
    gate: str = "window"
    kd_weight: float = 0.0
    distance: str = "huber"
    huber_delta: float = 1.0

    def __post_init__(self) -> None:
        if self.gate not in GATES:
            raise ValueError(f"gate must be one of {GATES}, got {self.gate!r}")
        if self.distance not in DISTANCES:
            raise ValueError(f"distance must be one of {DISTANCES}, got {self.distance!r}")
        if self.bound_weight < 0 or self.kd_weight < 0:
            raise ValueError("bound_weight and kd_weight must be >= 0")
        if self.huber_delta <= 0:
            raise ValueError(f"huber_delta must be > 0, got {self.huber_delta}")


class DistillationObjective(Objective):
    """Distillation from stored teacher labels (or the same loss without a teacher).

    Args:
        teacher: a :class:`~flowdistill.teacher.label_store.SoftLabelStore` (anything with
            ``gather(starts)``), or None: then the loss is the plain ground-truth loss plus the
            model regulariser (the ``-noteacher`` and ``mlp`` variants, same distance).
        config: :class:`DistillationConfig`.
        requires_teacher: a teacher must be attached (``objective.store = ...``) before
            training; :meth:`teacher_labels` raises while it is missing.
    """

    name = "distillation"

    def __init__(self, teacher=None, config: DistillationConfig | None = None,
                 requires_teacher: bool = False) -> None:
        self.teacher = teacher
        self.config = config or DistillationConfig()
        self.requires_teacher = requires_teacher

    @property
    def store(self):
        """The teacher label store (alias of ``teacher``; may be attached after construction)."""
        return self.teacher

    @store.setter
    def store(self, value) -> None:
        self.teacher = value

    def teacher_labels(self):
        if self.requires_teacher and self.teacher is None:
            raise ValueError("this distillation objective needs teacher labels and has none: "
                             "pass a soft-label store (e.g. RunSpec.teacher / --teacher PATH)")
        return self.teacher

    def loss(self, model: torch.nn.Module, batch: Batch, y_hat: torch.Tensor,
             ctx: StepContext) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.config
        prepared = ctx.prepared
        null = prepared.protocol.null_value
        thresh = prepared.protocol.mask_threshold
        pred = prepared.inverse_targets(y_hat)  # [B, T_out, N, C_out] original units
        logs: dict[str, float] = {}
        have_teacher = self.teacher is not None and batch.teacher is not None
        if self.teacher is not None and batch.teacher is None:
            raise ValueError("DistillationObjective has a teacher but the batch carries no "
                             "labels: pass objective.teacher_labels() to the batch loader")
        if have_teacher and batch.teacher.shape != batch.y.shape:
            raise ValueError(f"teacher labels {self._where()} have shape "
                             f"{tuple(batch.teacher.shape)[1:]} per window, targets "
                             f"{tuple(batch.y.shape)[1:]}: wrong dataset or protocol?")
        if have_teacher:
            teacher = batch.teacher.to(pred.device, pred.dtype)
            mask = batch.teacher_mask
            total, logs = teacher_bounded_loss(
                pred, batch.y, teacher, mask, null, bound_weight=cfg.bound_weight,
                bound_margin=cfg.bound_margin, gate=cfg.gate, distance=cfg.distance,
                huber_delta=cfg.huber_delta, mask_threshold=thresh)
            if cfg.kd_weight > 0:
                kd = soft_label_loss(pred, teacher, mask, batch.y, null, cfg.distance,
                                     cfg.huber_delta, mask_threshold=thresh)
                total = total + cfg.kd_weight * kd
                logs["loss_kd"] = kd.detach()
        else:
            # no teacher: every gate shut, i.e. the plain masked loss
            zeros = torch.zeros(pred.shape[0], dtype=torch.bool, device=pred.device)
            total, logs = teacher_bounded_loss(
                pred, batch.y, pred.detach(), zeros, null, bound_weight=0.0, bound_margin=0.0,
                gate=cfg.gate, distance=cfg.distance, huber_delta=cfg.huber_delta,
                mask_threshold=thresh)
        return add_model_regulariser(model, ctx, total, logs), logs

    def _where(self) -> str:
        return str(getattr(self.teacher, "path", type(self.teacher).__name__))

    def describe(self) -> dict:
        d = {"name": self.name, **asdict(self.config), "requires_teacher": self.requires_teacher,
             "teacher_bound": self.teacher is not None and self.config.bound_weight > 0,
             "soft_label_term": self.teacher is not None and self.config.kd_weight > 0}
        describe = getattr(self.teacher, "describe", None)
        d["teacher"] = describe() if callable(describe) else (
            None if self.teacher is None else type(self.teacher).__name__)
        return d

"""Training objectives: strategies the trainer calls to turn a forward pass into a loss."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .batch import Batch
from .loop import StepLogs
from .losses import LOSS_NAMES, masked_loss


@dataclass
class StepContext:
    """What an objective may know about the current step.

    Attributes:
        epoch: 0-based epoch.
        num_epochs: the configured maximum number of epochs.
        prepared: the :class:`~benchmark.data.windows.PreparedData` (scaler, protocol).
    """

    epoch: int
    num_epochs: int
    prepared: object


class Objective:
    """Base class. Forecasting objectives override :meth:`loss` (the trainer's forward pass is
    ``model(batch)``); objectives of other models (the LLM teacher's prompts) override
    :meth:`step_loss`. Distillation also provides labels."""

    name = "objective"

    def teacher_labels(self):
        """A :class:`~benchmark.data.windows.TeacherLabels` to attach to training batches."""
        return None

    def step_loss(self, model: nn.Module, batch, ctx: StepContext,
                  ) -> tuple[torch.Tensor, dict[str, float]]:
        """The training loss of ``batch`` (forward pass included) and its logs: numbers, or
        detached 0-d tensors, which the trainer reads once per epoch instead of once per step
        (:class:`~benchmark.loop.StepLogs`)."""
        return self.loss(model, batch, model(batch), ctx)

    def loss(self, model: nn.Module, batch: Batch, y_hat: torch.Tensor,
             ctx: StepContext) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def describe(self) -> dict:
        return {"name": self.name}


def model_regulariser(model: nn.Module, ctx: StepContext) -> tuple[torch.Tensor | None, float]:
    """The model's ``extra_loss()`` and its weight (``model.extra_loss_weight(epoch, num_epochs)``
    when the model defines one, else 1)."""
    extra_fn = getattr(model, "extra_loss", None)
    extra = extra_fn() if callable(extra_fn) else None
    if extra is None:
        return None, 0.0
    weight_fn = getattr(model, "extra_loss_weight", None)
    weight = float(weight_fn(ctx.epoch, ctx.num_epochs)) if callable(weight_fn) else 1.0
    return extra, weight


def add_model_regulariser(model: nn.Module, ctx: StepContext, total: torch.Tensor,
                          logs: dict[str, float]) -> torch.Tensor:
    """``total`` plus the model's weighted regulariser (see :func:`model_regulariser`), logging
    its value and weight into ``logs``."""
    extra, w = model_regulariser(model, ctx)
    if extra is None:
        return total
    logs["extra"] = extra.detach()
    logs["extra_weight"] = w
    return total + w * extra


@dataclass
class SupervisedObjective(Objective):
    """Ground-truth loss on inverse-scaled predictions (masked by the protocol's null value and
    mask threshold),
    plus the model's own regulariser.

    Args:
        loss: "mae" (default of most baselines), "huber" or "mse".
        huber_delta: delta of the Huber loss, in original units.
    """

    loss_name: str = "mae"
    huber_delta: float = 1.0
    name = "supervised"

    def __post_init__(self) -> None:
        if self.loss_name not in LOSS_NAMES:
            raise ValueError(f"unknown loss {self.loss_name!r}; choose from {sorted(LOSS_NAMES)}")

    def ground_truth_loss(self, pred: torch.Tensor, true: torch.Tensor, null_value,
                          mask_threshold: float | None = None) -> torch.Tensor:
        return masked_loss(pred, true, self.loss_name, null_value, mask_threshold,
                           self.huber_delta)

    def loss(self, model, batch, y_hat, ctx):
        prepared = ctx.prepared
        pred = prepared.inverse_targets(y_hat)
        p = prepared.protocol
        gt = self.ground_truth_loss(pred, batch.y, p.null_value, p.mask_threshold)
        logs = StepLogs({"loss_gt": gt.detach()})
        return add_model_regulariser(model, ctx, gt, logs), logs

    def describe(self) -> dict:
        return {"name": self.name, "loss": self.loss_name, "huber_delta": self.huber_delta}

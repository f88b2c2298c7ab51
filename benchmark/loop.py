"""The pieces a training loop is made of: its state, a step plan, callback hooks and the
checkpoint-layout interface. :class:`benchmark.trainer.Trainer` runs them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from .trainer import Trainer


@dataclass
class LoopState:
    """Where a loop stands; a :class:`Checkpoint` saves it and gives it back on resumption.

    Attributes:
        epoch: epochs completed (during an epoch: its 0-based index).
        step: optimiser steps completed (counted across resumptions by step-based loops).
        best_val: the best validation score so far (lower is better; inf: none yet).
        best_at: the epoch (epoch-based loops) or step (step-based) of ``best_val``; -1: none.
        bad_validations: validations since the last improvement (early stopping).
        history: one row per epoch (epoch-based) or per validation (step-based).
        train_seconds: training time including validation, summed across resumptions.
        extra: what a checkpoint layout or callback keeps alongside (JSON-able).
        best_state: the best weights (CPU tensors, :meth:`Checkpoint.snapshot`) when held in
            memory, else None.
        best_unsaved: ``best_state`` changed since the last checkpoint.
        running_loss: exponential moving average (0.95) of the step losses in this process.
        resumed_from: the epoch (or step) a resumed loop started from; None when fresh.
        stopped_by: "max_epochs", "max_steps", "early_stopping" or "time_budget".
    """

    epoch: int = 0
    step: int = 0
    best_val: float = math.inf
    best_at: int = -1
    bad_validations: int = 0
    history: list[dict] = field(default_factory=list)
    train_seconds: float = 0.0
    extra: dict = field(default_factory=dict)
    best_state: dict[str, torch.Tensor] | None = None
    best_unsaved: bool = False
    running_loss: float | None = None
    resumed_from: int | None = None
    stopped_by: str = ""


@dataclass(frozen=True)
class StepPlan:
    """A step-based loop: ``total`` optimiser steps (counted across resumptions), a validation
    every ``validate_every`` steps and a checkpoint every ``checkpoint_every`` steps, both also
    after the last step; a loop stopped early (time budget, patience) is validated and saved
    where it stops. The batch source yields batches without end; the config's ``epochs`` and
    ``max_train_batches`` do not apply."""

    total: int
    validate_every: int
    checkpoint_every: int

    def __post_init__(self) -> None:
        if self.total < 0 or self.validate_every < 1 or self.checkpoint_every < 1:
            raise ValueError(f"StepPlan needs total >= 0 and intervals >= 1, got {self}")


class Callback:
    """Hooks of the loop, after BasicTS 1.x's runner callbacks; each does nothing by default.
    ``trainer`` gives the model, optimiser, config and device; ``state`` is the
    :class:`LoopState`."""

    def on_fit_start(self, trainer: Trainer, state: LoopState) -> None:
        """After resumption (or with the fresh state), before the first step."""

    def on_epoch_start(self, trainer: Trainer, state: LoopState) -> None:
        """Before an epoch's first batch (a step-based loop is one epoch)."""

    def on_step_start(self, trainer: Trainer, state: LoopState) -> None:
        """Before step ``state.step`` (0-based), e.g. to set its learning rate."""

    def on_step_end(self, trainer: Trainer, state: LoopState, batch, logs: dict) -> None:
        """After the optimiser update; ``state.step`` counts the step, ``logs["loss"]`` is its
        loss."""

    def on_validation_end(self, trainer: Trainer, state: LoopState, row: dict) -> None:
        """After a validation and the best-state update; ``row`` is its history row."""

    def on_fit_end(self, trainer: Trainer, state: LoopState) -> None:
        """After the last step and checkpoint, before the best weights are restored."""


class Checkpoint(Callback):
    """A checkpoint layout: what a resumable loop writes and reads back, every file written
    atomically (:mod:`benchmark.atomic`). The trainer calls :meth:`save` at its checkpoints,
    :meth:`load` before the first step and :meth:`load_best` to restore the best weights."""

    def snapshot(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The tensors a best state keeps (CPU copies): the whole state dict."""
        return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}

    def load(self, trainer: Trainer) -> LoopState | None:
        """Restore the model, optimiser, batch source and RNGs of the last checkpoint and return
        its loop state; None when there is none."""
        return None

    def save(self, trainer: Trainer, state: LoopState) -> None:
        """Write the loop (and ``state.best_state`` when ``state.best_unsaved``)."""

    def load_best(self) -> dict[str, torch.Tensor] | None:
        """The saved best weights, None when there are none."""
        return None


def no_validation(trainer: Trainer) -> None:
    """A validation function for loops without one (no early stopping, no best state)."""
    return None

"""The pieces a training loop is made of: its state, a step plan, a step's logs, callback hooks
and the checkpoint-layout interface. :class:`benchmark.trainer.Trainer` runs them."""

from __future__ import annotations

import math
from collections.abc import Iterator, MutableMapping
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
        running_loss: exponential moving average (0.95) of the step losses in this process
            (an epoch-based loop folds an epoch's steps in at the epoch's end, when it reads
            their losses from the device).
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


class StepLogs(MutableMapping):
    """What a training step logs: name -> number.

    A value may be held as a 0-d tensor still on the training device (objectives log
    ``loss.detach()``, not ``float(loss)``), so that a step makes no host sync. Reading a value
    (``logs["loss"]``, ``.items()``, ...) gives a Python float: for a held tensor that read is a
    host sync, paid only by whoever reads (a callback, a test); the value read is the one
    ``float(tensor)`` gives. The trainer reads :meth:`raw` values and converts a whole epoch's
    at once (:func:`materialize`).
    """

    def __init__(self, values: dict | None = None) -> None:
        self._values: dict = dict(values or {})

    def __getitem__(self, key: str) -> float:
        v = self._values[key]
        if isinstance(v, torch.Tensor):
            v = self._values[key] = float(v)
        return v

    def __setitem__(self, key: str, value) -> None:
        self._values[key] = value

    def __delitem__(self, key: str) -> None:
        del self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def raw(self) -> dict:
        """The values as held (numbers or 0-d tensors), without a host sync."""
        return dict(self._values)

    def __repr__(self) -> str:
        return f"StepLogs({dict(self)!r})"


def step_logs(logs) -> StepLogs:
    """``logs`` (a dict or :class:`StepLogs`) as :class:`StepLogs`."""
    return logs if isinstance(logs, StepLogs) else StepLogs(logs)


def materialize(rows: list[dict]) -> list[dict[str, float]]:
    """Raw step logs (:meth:`StepLogs.raw`) with every tensor value as the Python float
    ``float(value)`` gives, read from the device in one transfer per (device, dtype) rather than
    one per value."""
    out = [dict(row) for row in rows]
    groups: dict[tuple, list[tuple[int, str]]] = {}
    for i, row in enumerate(out):
        for k, v in row.items():
            if isinstance(v, torch.Tensor):
                groups.setdefault((v.device, v.dtype), []).append((i, k))
    for places in groups.values():
        values = torch.stack([out[i][k].reshape(()) for i, k in places]).cpu().tolist()
        for (i, k), x in zip(places, values, strict=True):
            out[i][k] = float(x)
    return out


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

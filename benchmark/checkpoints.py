"""Checkpoint files of the forecasters' loop: ``last.pt`` / ``best.pt``, written atomically and
read without unpickling arbitrary objects."""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .atomic import atomic_write_bytes
from .loop import Checkpoint, LoopState

if TYPE_CHECKING:
    from .trainer import Trainer


class CheckpointError(RuntimeError):
    """A checkpoint file is unreadable or does not match the model."""


def load_checkpoint(path: Path) -> dict:
    """Load a checkpoint without unpickling arbitrary objects; name the file on failure."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - re-raised with the file name
        first = (str(e).strip().splitlines() or [""])[0]  # torch's messages run to pages
        raise CheckpointError(f"{path}: cannot read checkpoint "
                              f"({type(e).__name__}: {first})") from e


def atomic_torch_save(obj: dict, path: Path) -> None:
    """``torch.save`` through :func:`~benchmark.atomic.atomic_write_bytes` (a unique temporary
    name in the same directory, fsync, rename): readers see the old checkpoint or the new one,
    and two writers never share a temporary file."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


class TorchCheckpoint(Checkpoint):
    """The forecasters' layout in ``directory``: ``last.pt`` (model, optimiser, scheduler, loop
    state, the batch source's and torch's RNG states) after every epoch and ``best.pt``
    (``{"model", "epoch", "val_mae"}``) when the best changes; read without unpickling
    arbitrary objects."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.last_path = self.directory / "last.pt"
        self.best_path = self.directory / "best.pt"

    def load(self, trainer: Trainer) -> LoopState | None:
        if not self.last_path.exists():
            return None
        ck = load_checkpoint(self.last_path)
        try:
            trainer.model.load_state_dict(ck["model"])
            trainer.optimizer.load_state_dict(ck["optimizer"])
            if trainer.scheduler is not None:
                trainer.scheduler.load_state_dict(ck["scheduler"])
            state = LoopState(epoch=int(ck["epoch"]) + 1, best_val=float(ck["best_val"]),
                              best_at=int(ck["best_epoch"]),
                              bad_validations=int(ck["bad_epochs"]), history=list(ck["history"]),
                              train_seconds=float(ck["train_seconds"]))
            trainer.batches.load_state_dict(ck)
        except (KeyError, RuntimeError, ValueError) as e:
            raise CheckpointError(f"{self.last_path}: does not match this model/config "
                                  f"({e})") from e
        torch.set_rng_state(ck["torch_rng"])
        return state

    def on_fit_start(self, trainer: Trainer, state: LoopState) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)

    def save(self, trainer: Trainer, state: LoopState) -> None:
        if state.best_unsaved:
            atomic_torch_save({"model": state.best_state, "epoch": state.best_at,
                               "val_mae": state.best_val}, self.best_path)
        atomic_torch_save({
            "model": trainer.model.state_dict(), "optimizer": trainer.optimizer.state_dict(),
            "scheduler": None if trainer.scheduler is None else trainer.scheduler.state_dict(),
            "epoch": state.epoch - 1, "best_val": state.best_val, "best_epoch": state.best_at,
            "bad_epochs": state.bad_validations, "history": state.history,
            "train_seconds": state.train_seconds, **trainer.batches.state_dict(),
            "torch_rng": torch.get_rng_state()}, self.last_path)

    def load_best(self) -> dict[str, torch.Tensor] | None:
        return load_checkpoint(self.best_path)["model"] if self.best_path.exists() else None

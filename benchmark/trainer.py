"""The one training loop. Models never own a loop; objectives plug in.

The trainer owns the optimiser (Adam) and LR schedule, gradient clipping, early stopping on the
validation MAE, best-checkpoint restore, seeds and determinism flags, resumption from the last
checkpoint, progress bars, and evaluation of whole splits (never dropping the last batch).
"""

from __future__ import annotations

import io
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .atomic import atomic_write_bytes
from .data.windows import PreparedData
from .metrics import ProtocolMetrics
from .objectives import Objective, StepContext, SupervisedObjective


@dataclass
class TrainConfig:
    """Training hyperparameters shared by every gradient-trained model.

    Attributes:
        epochs: maximum number of epochs.
        batch_size: training batch size.
        eval_batch_size: batch size for validation/test (does not change metrics).
        optimizer: "adam" (default) or "rmsprop" (the STGCN paper's choice).
        lr: learning rate.
        weight_decay: L2 weight decay.
        lr_milestones: epochs at which the LR is multiplied by ``lr_gamma`` (MultiStepLR).
        lr_gamma: LR decay factor.
        grad_clip: max global gradient norm (None: no clipping).
        patience: epochs without validation-MAE improvement before stopping.
        schedule_epochs: the epoch count that epoch-based schedules of the loss (the IB-weight
            anneal) are defined over: the recipe's epochs (:mod:`benchmark.recipes`); None =
            ``epochs``. A run shorter than its schedule says so in its fit result.
        seed: seed for torch, numpy and Python.
        deterministic: ask torch for deterministic algorithms.
        max_train_batches: cap on training batches per epoch (smoke runs); None = all.
        time_budget_s: stop after the epoch during which the cumulative training time passes
            this many seconds (equal-time comparisons, bounded GPU sessions); None = no limit.
            The record says when a run was stopped by its budget.
        num_threads: torch intra-op threads (None: leave as is).
        device: "cpu", "cuda" or "auto".
        progress: show tqdm bars.
    """

    epochs: int = 100
    batch_size: int = 64
    eval_batch_size: int = 256
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    lr_milestones: tuple[int, ...] = ()
    lr_gamma: float = 0.5
    grad_clip: float | None = 5.0
    patience: int = 10
    schedule_epochs: int | None = None
    seed: int = 0
    deterministic: bool = True
    max_train_batches: int | None = None
    time_budget_s: float | None = None
    num_threads: int | None = None
    device: str = "cpu"
    progress: bool = True

    def to_dict(self) -> dict:
        d = asdict(self)
        d["lr_milestones"] = list(self.lr_milestones)
        return d


class CheckpointError(RuntimeError):
    """A checkpoint file is unreadable or does not match the model."""


def seed_everything(seed: int, deterministic: bool = True, device: torch.device | None = None,
                    ) -> None:
    """Seed Python, numpy and torch. With ``deterministic`` on CUDA, also ask torch for
    deterministic kernels (warning where none exists). On CPU the kernels used here are already
    deterministic for a fixed thread count, and the flag's import of torch's compiler stack
    costs several seconds per process, so it is not set there."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic and device is not None and device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


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


@dataclass
class FitResult:
    epochs_run: int
    best_epoch: int
    best_val_mae: float
    train_seconds: float
    seconds_per_epoch: float
    history: list[dict] = field(default_factory=list)
    resumed_from_epoch: int | None = None
    stopped_by: str = "max_epochs"
    regulariser_schedule: dict | None = None


class Trainer:
    """Train and evaluate one model on one prepared dataset.

    Args:
        model: a forecaster, ``forward(batch) -> [B, T_out, N, C_out]`` scaled.
        prepared: the dataset under a protocol.
        config: :class:`TrainConfig`.
        objective: defaults to :class:`SupervisedObjective` (masked MAE).
        checkpoint_dir: where ``last.pt`` and ``best.pt`` go (None: keep the best state in memory).
    """

    def __init__(self, model: nn.Module, prepared: PreparedData, config: TrainConfig | None = None,
                 objective: Objective | None = None, checkpoint_dir: Path | None = None) -> None:
        self.config = config or TrainConfig()
        self.device = resolve_device(self.config.device)
        self.model = model.to(self.device)
        self.prepared = prepared
        self.objective = objective or SupervisedObjective()
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        if self.config.num_threads:
            torch.set_num_threads(self.config.num_threads)

    # ------------------------------------------------------------------ training
    def fit(self) -> FitResult:
        cfg = self.config
        seed_everything(cfg.seed, cfg.deterministic, self.device)
        if getattr(self.model, "closed_form", False):
            t0 = time.perf_counter()
            self.model.fit_closed_form(self.prepared)
            dt = time.perf_counter() - t0
            val = self.evaluate("val")["overall"]["mae"]
            return FitResult(0, 0, val, dt, 0.0, [{"epoch": 0, "val_mae": val}])

        params = [p for p in self.model.parameters() if p.requires_grad]
        if cfg.optimizer == "adam":
            opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        elif cfg.optimizer == "rmsprop":
            opt = torch.optim.RMSprop(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        else:
            raise ValueError(f"unknown optimizer {cfg.optimizer!r}; use 'adam' or 'rmsprop'")
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, list(cfg.lr_milestones), cfg.lr_gamma)
        rng = np.random.default_rng(cfg.seed)
        start_epoch, best_val, best_epoch, bad_epochs = 0, float("inf"), -1, 0
        history: list[dict] = []
        best_state = None
        resumed = None
        train_seconds = 0.0

        last_path = self.checkpoint_dir / "last.pt" if self.checkpoint_dir else None
        best_path = self.checkpoint_dir / "best.pt" if self.checkpoint_dir else None
        if last_path is not None and last_path.exists():
            ck = load_checkpoint(last_path)
            try:
                self.model.load_state_dict(ck["model"])
                opt.load_state_dict(ck["optimizer"])
                sched.load_state_dict(ck["scheduler"])
            except (KeyError, RuntimeError, ValueError) as e:
                raise CheckpointError(f"{last_path}: does not match this model/config ({e})") from e
            start_epoch = int(ck["epoch"]) + 1
            best_val, best_epoch = float(ck["best_val"]), int(ck["best_epoch"])
            bad_epochs, history = int(ck["bad_epochs"]), list(ck["history"])
            train_seconds = float(ck["train_seconds"])
            rng.bit_generator.state = ck["numpy_rng"]
            torch.set_rng_state(ck["torch_rng"])
            resumed = start_epoch
        if self.checkpoint_dir is not None:
            self.checkpoint_dir.mkdir(parents=True, exist_ok=True)

        teacher = self.objective.teacher_labels()
        n_batches = self.prepared.num_batches("train", cfg.batch_size)
        if cfg.max_train_batches:
            n_batches = min(n_batches, cfg.max_train_batches)
        stopped_by = "max_epochs"
        schedule_epochs = cfg.schedule_epochs or cfg.epochs
        for epoch in range(start_epoch, cfg.epochs):
            if bad_epochs >= cfg.patience:
                stopped_by = "early_stopping"
                break
            if cfg.time_budget_s is not None and train_seconds >= cfg.time_budget_s:
                stopped_by = "time_budget"
                break
            t0 = time.perf_counter()
            self.model.train()
            ctx = StepContext(epoch, schedule_epochs, self.prepared)
            sums: dict[str, float] = {}
            applied_weight = None
            bar = tqdm(self.prepared.batches("train", cfg.batch_size, shuffle=True, generator=rng,
                                             teacher=teacher),
                       total=n_batches, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                       disable=not cfg.progress, leave=False)
            for i, batch in enumerate(bar):
                if cfg.max_train_batches and i >= cfg.max_train_batches:
                    break
                batch = batch.to(self.device)
                opt.zero_grad(set_to_none=True)
                y_hat = self.model(batch)
                loss, logs = self.objective.loss(self.model, batch, y_hat, ctx)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"non-finite training loss at epoch {epoch + 1}, "
                                             f"batch {i}: {logs}")
                loss.backward()
                if cfg.grad_clip:
                    nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                opt.step()
                logs["loss"] = float(loss.detach())
                applied_weight = logs.get("extra_weight", applied_weight)
                for k, v in logs.items():
                    sums[k] = sums.get(k, 0.0) + v
                bar.set_postfix(loss=f"{logs['loss']:.4f}")
            bar.close()
            sched.step()
            n_done = max(1, min(n_batches, i + 1))
            val_mae = self.evaluate("val")["overall"]["mae"]
            dt = time.perf_counter() - t0
            train_seconds += dt
            row = {"epoch": epoch, "val_mae": float(val_mae), "seconds": dt,
                   **{f"train_{k}": float(v / n_done) for k, v in sums.items()}}
            if applied_weight is not None:  # the regulariser weight used in this epoch's steps
                row["extra_weight"] = float(applied_weight)
            history.append(row)
            if val_mae < best_val:
                best_val, best_epoch, bad_epochs = val_mae, epoch, 0
                state = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
                if best_path is not None:
                    atomic_torch_save({"model": state, "epoch": epoch, "val_mae": val_mae},
                                      best_path)
                best_state = state
            else:
                bad_epochs += 1
            if cfg.progress:
                train_loss = row.get("train_loss", float("nan"))
                tqdm.write(f"epoch {epoch + 1}: train loss {train_loss:.4f}"
                           f"  val MAE {val_mae:.4f}  ({dt:.1f}s)")
            if last_path is not None:
                atomic_torch_save({
                    "model": self.model.state_dict(), "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(), "epoch": epoch, "best_val": best_val,
                    "best_epoch": best_epoch, "bad_epochs": bad_epochs, "history": history,
                    "train_seconds": train_seconds, "numpy_rng": rng.bit_generator.state,
                    "torch_rng": torch.get_rng_state()}, last_path)

        # restore the best weights (from disk when resumed and not seen in this process)
        if best_state is None and best_path is not None and best_path.exists():
            best_state = load_checkpoint(best_path)["model"]
        if best_state is not None:
            self.model.load_state_dict(best_state)
        epochs_run = len(history)
        return FitResult(epochs_run, best_epoch, best_val, train_seconds,
                         train_seconds / max(1, epochs_run), history, resumed, stopped_by,
                         self._schedule_note(history, schedule_epochs))

    def _schedule_note(self, history: list[dict], schedule_epochs: int) -> dict | None:
        """Whether the model's regulariser-weight schedule (``extra_loss_weight``) reached its
        end: ``{"schedule_epochs", "end_epoch", "last_epoch", "complete", "final_weight",
        "last_weight"}``; None when no epoch applied a regulariser weight."""
        weights = [r["extra_weight"] for r in history if "extra_weight" in r]
        if not weights:
            return None
        end_fn = getattr(self.model, "extra_loss_weight_end", None)
        end = int(end_fn(schedule_epochs)) if callable(end_fn) else 0
        last = int(history[-1]["epoch"])
        note = {"schedule_epochs": schedule_epochs, "end_epoch": end, "last_epoch": last,
                "complete": last >= end, "last_weight": float(weights[-1])}
        weight_fn = getattr(self.model, "extra_loss_weight", None)
        if callable(weight_fn):
            note["final_weight"] = float(weight_fn(max(end, 0), schedule_epochs))
        if not note["complete"]:
            note["note"] = (f"stopped at epoch {last} before the regulariser-weight schedule "
                            f"ended (epoch {end} of {schedule_epochs})")
        return note

    # ---------------------------------------------------------------- evaluation
    @torch.no_grad()
    def predict(self, split: str, batch_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Predictions and targets for a whole split, original units, ``[W, T_out, N, C_out]``,
        in the order of the split's window starts."""
        self.model.eval()
        preds, trues = [], []
        for batch in self.prepared.batches(split, batch_size or self.config.eval_batch_size):
            y_hat = self.model(batch.to(self.device))
            preds.append(self.prepared.inverse_targets(y_hat).cpu())
            trues.append(batch.y)
        return torch.cat(preds).numpy(), torch.cat(trues).numpy()

    @torch.no_grad()
    def evaluate(self, split: str) -> dict:
        """Masked MAE/RMSE/MAPE over the whole split (every window, no drop_last), under the
        protocol's mask and (``"all_targets"``) over every finite target."""
        p = self.prepared.protocol
        acc = ProtocolMetrics.for_protocol(p, self.prepared.out_channels)
        self.model.eval()
        for batch in self.prepared.batches(split, self.config.eval_batch_size):
            y_hat = self.model(batch.to(self.device))
            acc.update(self.prepared.inverse_targets(y_hat), batch.y.to(self.device))
        names = [self.prepared.data.channels[i] for i in self.prepared.target_channel_idx]
        return acc.summary(p.report_horizons, names)

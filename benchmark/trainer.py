"""The one training loop. Models never own a loop; objectives, batch sources and callbacks plug in.

The trainer owns the training step (zero the gradients, the objective's loss, a finiteness check,
backward, gradient clipping, the optimiser update), early stopping on a validation score, the
best state and its restore, seeds and determinism flags, atomic checkpoints and resumption, the
time budget, device placement, thread count and progress bars. What differs between loops plugs
in:

* an :class:`~benchmark.objectives.Objective`: how a batch becomes a loss;
* a batch source (:class:`WindowBatches` for forecasters): the training batches of an epoch;
* a validation function: the score that early stopping and the best state follow (by default
  the forecaster's validation MAE over every validation window);
* a :class:`~benchmark.loop.Checkpoint` layout (by default
  :class:`~benchmark.checkpoints.TorchCheckpoint`: ``last.pt`` and ``best.pt``);
* :class:`~benchmark.loop.Callback` hooks, after BasicTS 1.x's runner callbacks
  (learning-rate warm-up, token counts, ...);
* epochs (validation and checkpoint after each, the default) or a
  :class:`~benchmark.loop.StepPlan` (a number of optimiser steps, validation every ``k``).

Forecasters (:meth:`Trainer.fit` with the defaults), and the LLM teacher's ST-encoder
pre-training and instruction tuning (:mod:`flowdistill.teacher.finetune`) run through it.

On the device, an epoch makes no host round trip per step: the series, time indices and teacher
labels are uploaded once (:meth:`PreparedData.on_device`) and batches gathered there by index;
each step's logs stay on the device (:class:`~benchmark.loop.StepLogs`) and are read in one
transfer at the end of the epoch, where the finiteness check runs over every step (naming the
first non-finite one); evaluation scores on the device and reads its sums once. The step-based
loop (the teacher's) still reads each step's loss, which it shows and records per step.
``precision`` and ``compile`` (:mod:`benchmark.execution`) choose bf16 autocast and compiled
forwards.
"""

from __future__ import annotations

import itertools
import math
import os
import random
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .batch import Batch
from .checkpoints import TorchCheckpoint
from .data.windows import PreparedData, TeacherLabels
from .device import resolve_device
from .execution import DEFAULTS as EXECUTION_DEFAULTS
from .execution import check_execution, model_runner
from .loop import Callback, Checkpoint, LoopState, StepLogs, StepPlan, materialize, step_logs
from .metrics import ProtocolMetrics
from .objectives import Objective, StepContext, SupervisedObjective


@contextmanager
def deterministic_kernels() -> Iterator[None]:
    """Ask torch for deterministic kernels on every device inside the block, and restore the
    previous setting afterwards (so that runs later in the process are unaffected).

    The forecasters do not need it on CPU (:func:`seed_everything`), but the LLM teacher does:
    with two CPU threads, two identically seeded fine-tunes of the tiny Llama gave different
    weights in the last bits (a backward kernel accumulates in a thread-dependent order), and so
    different label stores and student run ids; with this flag they are bitwise equal.
    """
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)


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
        patience: epochs without validation-MAE improvement before stopping (None: never
            stop early).
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
        precision: "fp32" (default, the reference) or "bf16" (the forward pass under bfloat16
            autocast, the loss in float32; :mod:`benchmark.execution`). Measured on CPU: the
            best validation MAE of short seeded runs moved by at most 2.6e-3 relative to fp32's
            for mlp, STID and GWNet (held to 1e-2, ``benchmark.execution.VAL_MAE_RTOL``), by up
            to 0.11 for STGCN (leave it off there); GPU figures pending.
        compile: "none" (default), "torch.compile" (Inductor; on CPU it needs a C++ compiler)
            or "cudagraphs" (as ``torch.compile(mode="reduce-overhead")``: CUDA graphs on a GPU,
            as "torch.compile" on a CPU); :mod:`benchmark.execution`. Measured on CPU: at most
            9.4e-5 relative to the eager run's validation MAE (held to 1e-3); GPU figures
            pending.

    ``precision`` and ``compile`` are written into records and run identities only when they
    differ from their defaults (:data:`OMITTED_AT_DEFAULT`), so runs made before they existed
    keep their run ids and records.
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
    patience: int | None = 10
    schedule_epochs: int | None = None
    seed: int = 0
    deterministic: bool = True
    max_train_batches: int | None = None
    time_budget_s: float | None = None
    num_threads: int | None = None
    device: str = "cpu"
    progress: bool = True
    precision: str = "fp32"
    compile: str = "none"

    def __post_init__(self) -> None:
        check_execution(self.precision, self.compile)

    def to_dict(self) -> dict:
        """The settings as a JSON-able dict, without the :data:`OMITTED_AT_DEFAULT` settings
        that equal their defaults."""
        d = asdict(self)
        d["lr_milestones"] = list(self.lr_milestones)
        for k in OMITTED_AT_DEFAULT:
            if d[k] == EXECUTION_DEFAULTS[k]:
                del d[k]
        return d


# settings added after records existed: omitted from TrainConfig.to_dict (records, run ids)
# while they hold their defaults
OMITTED_AT_DEFAULT = ("precision", "compile")


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


class WindowBatches:
    """The forecasters' batch source: the training windows of ``prepared``, reshuffled every
    epoch by a generator seeded with ``seed`` (its state goes into checkpoints), at most
    ``max_batches`` per epoch, with the teacher's labels looked up by window start.

    The windows are gathered on ``device`` (:meth:`PreparedData.on_device`): each epoch's
    permutation is drawn on the host from the seeded numpy generator (the same draws as ever)
    and moved to the device as one index tensor; the teacher's labels for every training window
    are looked up once and kept on the device beside the series. No step of an epoch leaves
    the device.
    """

    def __init__(self, prepared: PreparedData, batch_size: int, seed: int,
                 teacher: TeacherLabels | None = None, max_batches: int | None = None,
                 device: torch.device | str = "cpu") -> None:
        self.prepared, self.batch_size = prepared, batch_size
        self.teacher, self.max_batches = teacher, max_batches
        self.device = torch.device(device)
        self.rng = np.random.default_rng(seed)
        # once per run, before the first epoch: every training window's label, on the device
        self._labels = (prepared.on_device(self.device).labels("train", teacher)
                        if teacher is not None else None)

    def __len__(self) -> int:
        n = self.prepared.num_batches("train", self.batch_size)
        return min(n, self.max_batches) if self.max_batches else n

    def epoch(self, state: LoopState) -> Iterator[Batch]:
        batches = self._shuffled()
        return itertools.islice(batches, self.max_batches) if self.max_batches else batches

    def _shuffled(self) -> Iterator[Batch]:
        # a generator, so that the permutation is drawn when the epoch starts (as before)
        windows = self.prepared.on_device(self.device)
        perm = self.rng.permutation(len(self.prepared.starts("train")))
        order = torch.from_numpy(perm).to(self.device)
        yield from windows.batches("train", self.batch_size, order, self._labels)

    def state_dict(self) -> dict:
        return {"numpy_rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["numpy_rng"]


def make_optimizer(config: TrainConfig, params: list[nn.Parameter],
                   ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.MultiStepLR]:
    """The config's optimiser ("adam" or "rmsprop") over ``params`` and its MultiStepLR
    schedule (stepped once per epoch)."""
    cfg = config
    if cfg.optimizer == "adam":
        opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    elif cfg.optimizer == "rmsprop":
        opt = torch.optim.RMSprop(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}; use 'adam' or 'rmsprop'")
    return opt, torch.optim.lr_scheduler.MultiStepLR(opt, list(cfg.lr_milestones), cfg.lr_gamma)


class Trainer:
    """Train one model; evaluate forecasters on whole splits.

    Args:
        model: the model (a forecaster, ``forward(batch) -> [B, T_out, N, C_out]`` scaled, with
            the defaults below).
        prepared: the dataset under a protocol.
        config: :class:`TrainConfig`.
        objective: turns a batch into a loss; default :class:`SupervisedObjective` (masked MAE).
        checkpoint_dir: where :class:`TorchCheckpoint` writes ``last.pt`` and ``best.pt`` (None:
            keep the best state in memory).
        batches: the batch source (``epoch(state)``, ``state_dict()``, ``load_state_dict()``,
            and ``len()`` for the progress bar); default :class:`WindowBatches`.
        validate: ``validate(trainer) -> score or None``; default the validation MAE
            (:meth:`evaluate`).
        optimizer: a ready optimiser (its schedule then is a callback's job); default the
            config's optimiser and MultiStepLR over the trainable parameters.
        checkpoint: a :class:`Checkpoint` layout instead of ``checkpoint_dir``'s.
        callbacks: further :class:`Callback` hooks.
        plan: a :class:`StepPlan` for a step-based loop; None: ``config.epochs`` epochs.
        restore_best: load the best state into the model when the loop ends.
        name: the progress bar's label.
    """

    def __init__(self, model: nn.Module, prepared: PreparedData, config: TrainConfig | None = None,
                 objective: Objective | None = None, checkpoint_dir: Path | None = None, *,
                 batches=None, validate: Callable[[Trainer], float | None] | None = None,
                 optimizer: torch.optim.Optimizer | None = None,
                 checkpoint: Checkpoint | None = None, callbacks: Iterable[Callback] = (),
                 plan: StepPlan | None = None, restore_best: bool = True, name: str = "",
                 ) -> None:
        self.config = config or TrainConfig()
        self.device = resolve_device(self.config.device)
        self.model = model.to(self.device)
        self._runner: tuple[nn.Module, object] | None = None
        self.prepared = prepared
        self.objective = objective or SupervisedObjective()
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        if checkpoint is None and self.checkpoint_dir is not None:
            checkpoint = TorchCheckpoint(self.checkpoint_dir)
        self.checkpoint = checkpoint
        self.callbacks = ([checkpoint] if checkpoint is not None else []) + list(callbacks)
        self.plan, self.restore_best, self.name = plan, restore_best, name
        self._batches_arg, self._optimizer_arg, self.validate_fn = batches, optimizer, validate
        self.batches = batches
        self.optimizer: torch.optim.Optimizer | None = optimizer
        self.scheduler = None
        if self.config.num_threads:
            torch.set_num_threads(self.config.num_threads)

    @property
    def runner(self):
        """What the loop calls for forward passes: the model itself under the defaults, else a
        :class:`~benchmark.execution.ModelRunner` around it (bf16 autocast, compiled; made once
        per model)."""
        if self._runner is None or self._runner[0] is not self.model:
            self._runner = (self.model, model_runner(self.model, self.config.precision,
                                                     self.config.compile, self.device))
        return self._runner[1]

    # ------------------------------------------------------------------ training
    def fit(self, initial: LoopState | None = None) -> FitResult:
        """Run the loop: resume from the checkpoint when there is one, else start from
        ``initial`` (default: a fresh :class:`LoopState`)."""
        cfg = self.config
        seed_everything(cfg.seed, cfg.deterministic, self.device)
        if getattr(self.model, "closed_form", False):
            t0 = time.perf_counter()
            self.model.fit_closed_form(self.prepared)
            dt = time.perf_counter() - t0
            val = self.evaluate("val")["overall"]["mae"]
            return FitResult(0, 0, val, dt, 0.0, [{"epoch": 0, "val_mae": val}])

        self.optimizer, self.scheduler = self._optimizer_arg, None
        if self.optimizer is None:
            params = [p for p in self.model.parameters() if p.requires_grad]
            self.optimizer, self.scheduler = make_optimizer(cfg, params)
        in_optimizer = {id(p) for g in self.optimizer.param_groups for p in g["params"]}
        self._clip_params = [p for p in self.model.parameters() if id(p) in in_optimizer]
        self.batches = self._batches_arg
        if self.batches is None:
            self.batches = WindowBatches(self.prepared, cfg.batch_size, cfg.seed,
                                         self.objective.teacher_labels(), cfg.max_train_batches,
                                         self.device)
        state = self.checkpoint.load(self) if self.checkpoint is not None else None
        if state is not None:
            state.resumed_from = state.step if self.plan is not None else state.epoch
        else:
            state = initial if initial is not None else LoopState()
        for cb in self.callbacks:
            cb.on_fit_start(self, state)
        if self.plan is None:
            self._run_epochs(state)
        else:
            self._run_steps(state)
        for cb in self.callbacks:
            cb.on_fit_end(self, state)
        if self.restore_best:  # from disk when resumed and not seen in this process
            best = state.best_state
            if best is None and self.checkpoint is not None:
                best = self.checkpoint.load_best()
            if best is not None:
                self.model.load_state_dict(best)
        schedule_epochs = cfg.schedule_epochs or cfg.epochs
        runs = len(state.history)
        return FitResult(runs, state.best_at, state.best_val, state.train_seconds,
                         state.train_seconds / max(1, runs), state.history, state.resumed_from,
                         state.stopped_by, self._schedule_note(state.history, schedule_epochs))

    def train_step(self, batch, state: LoopState | None = None, update: bool = True,
                   ) -> StepLogs:
        """One training step on ``batch``: zero the gradients, the objective's loss (forward
        pass included; epoch ``state.epoch``, 0 without a state), a finiteness check, backward,
        and with ``update`` gradient clipping and the optimiser update. Returns the objective's
        logs and ``loss`` (floats when read). ``update=False`` (the efficiency probe) leaves the
        weights as they are."""
        logs = self._train_step(batch, state, update)
        self._check_finite(logs["loss"], logs, state.epoch if state is not None else 0,
                           state.step if state is not None else None)
        return logs

    def _train_step(self, batch, state: LoopState | None, update: bool) -> StepLogs:
        """:meth:`train_step` without the finiteness check and without a host sync: the logs
        hold 0-d tensors on the device (the epoch loop checks and reads them once per
        epoch)."""
        batch = batch.to(self.device)
        if self.optimizer is not None:
            self.optimizer.zero_grad(set_to_none=True)
        else:
            self.model.zero_grad(set_to_none=True)
        cfg = self.config
        epoch = state.epoch if state is not None else 0
        ctx = StepContext(epoch, cfg.schedule_epochs or cfg.epochs, self.prepared)
        loss, logs = self.objective.step_loss(self.runner, batch, ctx)
        logs = step_logs(logs)
        loss.backward()
        if update:
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(self._clip_params, cfg.grad_clip)
            self.optimizer.step()
        logs["loss"] = loss.detach()
        return logs

    @staticmethod
    def _check_finite(loss: float, logs, epoch: int, step: int | None) -> None:
        """Raise FloatingPointError for a non-finite loss of step ``step`` (0-based; None: a
        step outside the loop)."""
        if not math.isfinite(loss):
            where = (f"epoch {epoch + 1}, step {step + 1}" if step is not None
                     else "a step outside the loop")
            shown = {k: v for k, v in dict(logs).items() if k != "loss"}
            raise FloatingPointError(f"non-finite training loss at {where}: {shown}")

    def _step(self, batch, state: LoopState) -> StepLogs:
        """A step of the step-based loop: checked and read at once (its running loss is shown
        and recorded per step; its steps are the teacher's, long enough that the read does not
        count)."""
        for cb in self.callbacks:
            cb.on_step_start(self, state)
        logs = self.train_step(batch, state)
        state.step += 1
        self._fold_running_loss(state, logs["loss"])
        for cb in self.callbacks:
            cb.on_step_end(self, state, batch, logs)
        return logs

    @staticmethod
    def _fold_running_loss(state: LoopState, loss: float) -> None:
        state.running_loss = loss if state.running_loss is None else (
            0.95 * state.running_loss + 0.05 * loss)

    def _stop_reason(self, state: LoopState) -> str | None:
        cfg = self.config
        if cfg.patience is not None and state.bad_validations >= cfg.patience:
            return "early_stopping"
        if cfg.time_budget_s is not None and state.train_seconds >= cfg.time_budget_s:
            return "time_budget"
        return None

    def _validate(self) -> float | None:
        if self.validate_fn is not None:
            return self.validate_fn(self)
        return self.evaluate("val")["overall"]["mae"]

    def _track_best(self, state: LoopState, score: float, at: int) -> None:
        if score < state.best_val:
            state.best_val, state.best_at, state.bad_validations = score, at, 0
            state.best_state = self._snapshot()
            state.best_unsaved = True
        else:
            state.bad_validations += 1

    def _snapshot(self) -> dict[str, torch.Tensor]:
        return (self.checkpoint or Checkpoint()).snapshot(self.model)

    def _save(self, state: LoopState) -> None:
        if self.checkpoint is not None:
            self.checkpoint.save(self, state)
            state.best_unsaved = False

    def _run_epochs(self, state: LoopState) -> None:
        cfg = self.config
        label = f"{self.name} " if self.name else ""
        state.stopped_by = "max_epochs"
        while state.epoch < cfg.epochs:
            reason = self._stop_reason(state)
            if reason is not None:
                state.stopped_by = reason
                break
            t0 = time.perf_counter()
            self.model.train()
            for cb in self.callbacks:
                cb.on_epoch_start(self, state)
            rows = self._train_epoch(state, label)
            sums: dict[str, float] = {}
            count, applied_weight = len(rows), None
            for row in rows:
                applied_weight = row.get("extra_weight", applied_weight)
                for k, v in row.items():
                    sums[k] = sums.get(k, 0.0) + v
            if self.scheduler is not None:
                self.scheduler.step()
            score = self._validate()
            dt = time.perf_counter() - t0
            state.train_seconds += dt
            row: dict = {"epoch": state.epoch}
            if score is not None:
                row["val_mae"] = float(score)
            row["seconds"] = dt
            row.update({f"train_{k}": float(v / max(1, count)) for k, v in sums.items()})
            if applied_weight is not None:  # the regulariser weight this epoch's steps used
                row["extra_weight"] = float(applied_weight)
            state.history.append(row)
            if score is not None:
                self._track_best(state, score, state.epoch)
                for cb in self.callbacks:
                    cb.on_validation_end(self, state, row)
            if cfg.progress:
                val = f"  val MAE {score:.4f}" if score is not None else ""
                tqdm.write(f"{label}epoch {state.epoch + 1}: "
                           f"train loss {row.get('train_loss', float('nan')):.4f}{val}"
                           f"  ({dt:.1f}s)")
            state.epoch += 1
            self._save(state)

    def _train_epoch(self, state: LoopState, label: str) -> list[dict[str, float]]:
        """One epoch's steps, without a host sync per step: each step's logs stay on the device
        (callbacks see :class:`StepLogs`, read only if they read them) and are read in one
        transfer at the end, where the finiteness check and the running loss see every step in
        order. Returns the steps' logs as floats."""
        cfg = self.config
        raw: list[dict] = []
        bar = tqdm(self.batches.epoch(state), total=len(self.batches),
                   desc=f"{label}epoch {state.epoch + 1}/{cfg.epochs}",
                   disable=not cfg.progress, leave=False)
        shown_at = time.perf_counter()
        for batch in bar:
            for cb in self.callbacks:
                cb.on_step_start(self, state)
            logs = self._train_step(batch, state, update=True)
            state.step += 1
            for cb in self.callbacks:
                cb.on_step_end(self, state, batch, logs)
            raw.append(logs.raw())
            if cfg.progress and time.perf_counter() - shown_at >= 1.0:  # one read a second
                bar.set_postfix(loss=f"{logs['loss']:.4f}")
                shown_at = time.perf_counter()
        bar.close()
        rows = materialize(raw)
        first = state.step - len(rows)
        for i, row in enumerate(rows):
            self._check_finite(row["loss"], row, state.epoch, first + i)
            self._fold_running_loss(state, row["loss"])
        return rows

    def _run_steps(self, state: LoopState) -> None:
        cfg, plan = self.config, self.plan
        state.stopped_by = "max_steps"
        scored_at = state.step
        self.model.train()
        for cb in self.callbacks:
            cb.on_epoch_start(self, state)
        bar = tqdm(total=plan.total, initial=state.step, desc=self.name or "train",
                   disable=not cfg.progress)
        batches = iter(self.batches.epoch(state))
        while state.step < plan.total:
            reason = self._stop_reason(state)
            if reason is not None:
                state.stopped_by = reason
                break
            t0 = time.perf_counter()
            self._step(next(batches), state)
            bar.update(1)
            bar.set_postfix(loss=f"{state.running_loss:.4f}")
            last = state.step == plan.total
            if state.step % plan.validate_every == 0 or last:
                self._validate_at_step(state, bar)
                scored_at = state.step
            state.train_seconds += time.perf_counter() - t0
            if state.step % plan.checkpoint_every == 0 or last:
                self._save(state)
        if state.step != scored_at:  # stopped early: score where it stopped
            t0 = time.perf_counter()
            self._validate_at_step(state, bar)
            state.train_seconds += time.perf_counter() - t0
        bar.close()
        self._save(state)

    def _validate_at_step(self, state: LoopState, bar) -> None:
        score = self._validate()
        if score is None:
            return
        row = {"step": state.step, "train_loss": state.running_loss, "val_mae": score}
        state.history.append(row)
        self._track_best(state, score, state.step)
        for cb in self.callbacks:
            cb.on_validation_end(self, state, row)
        bar.set_postfix(loss=f"{state.running_loss:.4f}", val_mae=f"{score:.3f}")

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
        windows = self.prepared.on_device(self.device)
        for batch in windows.batches(split, batch_size or self.config.eval_batch_size):
            y_hat = self.runner(batch)
            preds.append(self.prepared.inverse_targets(y_hat).cpu())
            trues.append(batch.y.cpu())
        return torch.cat(preds).numpy(), torch.cat(trues).numpy()

    @torch.no_grad()
    def evaluate(self, split: str) -> dict:
        """Masked MAE/RMSE/MAPE over the whole split (every window, no drop_last), under the
        protocol's mask and (``"all_targets"``) over every finite target. Batches of
        ``eval_batch_size`` are gathered and scored on the device; the sums are read once, at
        the end."""
        p = self.prepared.protocol
        acc = ProtocolMetrics.for_protocol(p, self.prepared.out_channels)
        self.model.eval()
        windows = self.prepared.on_device(self.device)
        for batch in windows.batches(split, self.config.eval_batch_size):
            y_hat = self.runner(batch)
            acc.update(self.prepared.inverse_targets(y_hat), batch.y)
        names = [self.prepared.data.channels[i] for i in self.prepared.target_channel_idx]
        return acc.summary(p.report_horizons, names)

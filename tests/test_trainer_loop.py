"""The one loop's pieces: step-based plans, callbacks, checkpoint layouts, resume, time budget,
the training step the efficiency probe measures, and devices."""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark.device import resolve_device
from benchmark.efficiency import EfficiencyConfig, measure_efficiency
from benchmark.loop import Callback, Checkpoint, LoopState, StepPlan, no_validation
from benchmark.losses import regression_loss
from benchmark.models import ModelContext
from benchmark.objectives import Objective
from benchmark.trainer import TrainConfig, Trainer
from tests.test_trainer import Linear

REPO = Path(__file__).resolve().parents[1]
W_TRUE = torch.tensor([[1.0], [-2.0], [0.5]])


@dataclass
class ToyBatch:
    x: torch.Tensor  # [B, 3]
    y: torch.Tensor  # [B, 1]

    def to(self, device):
        return ToyBatch(self.x.to(device), self.y.to(device))


class ToyBatches:
    """Step k draws its batch from the generator [0, k], so a resumed loop sees the same data."""

    def epoch(self, state: LoopState):
        while True:
            g = torch.Generator().manual_seed(1000 + state.step)
            x = torch.randn(8, 3, generator=g)
            yield ToyBatch(x, x @ W_TRUE)

    def state_dict(self) -> dict:
        return {}


class ToyObjective(Objective):
    def step_loss(self, model, batch, ctx):
        return regression_loss(model(batch.x), batch.y, "mse"), {}


X_VAL = torch.randn(32, 3, generator=torch.Generator().manual_seed(5))


def val_mse(trainer: Trainer) -> float:
    with torch.no_grad():
        return float(regression_loss(trainer.model(X_VAL), X_VAL @ W_TRUE, "mse"))


class MemoryCheckpoint(Checkpoint):
    """Keeps its checkpoints in memory; ``saves`` lists the steps it saved at."""

    def __init__(self) -> None:
        self.saved = None
        self.saves: list[int] = []

    def load(self, trainer):
        if self.saved is None:
            return None
        model, opt, state = copy.deepcopy(self.saved)
        trainer.model.load_state_dict(model)
        trainer.optimizer.load_state_dict(opt)
        return state

    def save(self, trainer, state):
        self.saves.append(state.step)
        keep = LoopState(step=state.step, best_val=state.best_val, best_at=state.best_at,
                         history=list(state.history), train_seconds=state.train_seconds)
        self.saved = copy.deepcopy((trainer.model.state_dict(), trainer.optimizer.state_dict(),
                                    keep))


class Recorder(Callback):
    def __init__(self) -> None:
        self.events: list[str] = []

    def on_fit_start(self, trainer, state):
        self.events.append("fit_start")

    def on_epoch_start(self, trainer, state):
        self.events.append("epoch_start")

    def on_step_start(self, trainer, state):
        self.events.append(f"step_start {state.step}")

    def on_step_end(self, trainer, state, batch, logs):
        self.events.append(f"step_end {state.step}")

    def on_validation_end(self, trainer, state, row):
        self.events.append(f"validation {row['step']}")

    def on_fit_end(self, trainer, state):
        self.events.append("fit_end")


def toy_trainer(plan: StepPlan, checkpoint=None, callbacks=(), **config) -> Trainer:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    cfg = TrainConfig(**{"lr": 0.05, "grad_clip": None, "patience": None, "progress": False,
                         **config})
    return Trainer(model, None, cfg, ToyObjective(), batches=ToyBatches(), validate=val_mse,
                   optimizer=torch.optim.SGD(model.parameters(), lr=0.05),
                   checkpoint=checkpoint, callbacks=callbacks, plan=plan, restore_best=False)


def test_step_plan_validates_and_saves_on_schedule():
    ck, rec = MemoryCheckpoint(), Recorder()
    res = toy_trainer(StepPlan(7, validate_every=3, checkpoint_every=2), ck, [rec]).fit()
    assert [r["step"] for r in res.history] == [3, 6, 7]
    assert ck.saves == [2, 4, 6, 7, 7]  # every 2 steps, the last step, and at the end
    assert res.stopped_by == "max_steps"
    assert rec.events[:4] == ["fit_start", "epoch_start", "step_start 0", "step_end 1"]
    assert rec.events[7:9] == ["step_end 3", "validation 3"]
    assert rec.events[-2:] == ["validation 7", "fit_end"]
    assert res.history[-1]["val_mae"] < res.history[0]["val_mae"]  # it learns


def test_step_loop_resumes_exactly():
    full = toy_trainer(StepPlan(7, 3, 2))
    full.fit()

    class Crash(Callback):
        def on_step_end(self, trainer, state, batch, logs):
            if state.step == 5:
                raise KeyboardInterrupt

    ck = MemoryCheckpoint()
    with pytest.raises(KeyboardInterrupt):
        toy_trainer(StepPlan(7, 3, 2), ck, [Crash()]).fit()
    assert ck.saved[2].step == 4
    resumed = toy_trainer(StepPlan(7, 3, 2), ck)
    res = resumed.fit()
    assert res.resumed_from_epoch == 4
    for a, b in zip(full.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert [r["step"] for r in res.history] == [3, 6, 7]


def test_time_budget_stops_a_step_loop_validated_and_saved():
    class SlowSecondStep(Callback):
        def on_step_end(self, trainer, state, batch, logs):
            if state.step == 2:
                state.train_seconds += 100.0

    ck = MemoryCheckpoint()
    res = toy_trainer(StepPlan(10, 4, 4), ck, [SlowSecondStep()], time_budget_s=50.0).fit()
    assert res.stopped_by == "time_budget"
    assert [r["step"] for r in res.history] == [2]  # scored where it stopped
    assert ck.saves == [2]


def test_epoch_loop_without_validation():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)

    class TwoBatches(ToyBatches):
        def __len__(self) -> int:
            return 2

        def epoch(self, state):
            it = super().epoch(state)
            return [next(it) for _ in range(2)]

    res = Trainer(model, None, TrainConfig(epochs=3, progress=False), ToyObjective(),
                  batches=TwoBatches(), validate=no_validation).fit()
    assert res.epochs_run == 3 and res.stopped_by == "max_epochs"
    assert res.best_val_mae == float("inf") and all("val_mae" not in r for r in res.history)
    assert all(r["train_loss"] > 0 for r in res.history)


def test_train_step_without_update_keeps_the_weights(synthetic_prepared):
    ctx = ModelContext.from_prepared(synthetic_prepared)
    torch.manual_seed(0)
    model = Linear(ctx.input_len, ctx.horizon, ctx.in_channels, ctx.out_channels)
    trainer = Trainer(model, synthetic_prepared, TrainConfig(epochs=1, progress=False))
    trainer.fit()
    before = copy.deepcopy(model.state_dict())
    batch = synthetic_prepared.make_batch(synthetic_prepared.starts("train")[:16])
    logs = trainer.train_step(batch, update=False)
    assert np.isfinite(logs["loss"]) and all(p.grad is not None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # the efficiency probe runs this step and frees the gradients it leaves
    out = measure_efficiency(model, lambda b: synthetic_prepared.make_batch(
        synthetic_prepared.starts("test")[:b]), trainer.device,
        EfficiencyConfig(batch_size=4, warmup=0, repeats=1),
        lambda b: trainer.train_step(b, update=False))
    assert "peak_memory_mb_train" in out and all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    trainer.train_step(batch)
    assert not all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_non_finite_loss_is_an_error():
    class NaNObjective(ToyObjective):
        def step_loss(self, model, batch, ctx):
            loss, logs = super().step_loss(model, batch, ctx)
            return loss * float("nan"), logs

    t = toy_trainer(StepPlan(3, 1, 1))
    t.objective = NaNObjective()
    with pytest.raises(FloatingPointError, match="epoch 1, step 1"):
        t.fit()


def test_device_names():
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="device must be"):
        resolve_device("gpu")
    with pytest.raises(ValueError, match="device must be"):
        Trainer(torch.nn.Linear(1, 1), None, TrainConfig(device="CPU"))


def test_backward_is_called_in_the_trainer_only():
    """One loop: library code runs backward passes only in benchmark/trainer.py."""
    calls = sorted(str(p.relative_to(REPO)) for pkg in ("benchmark", "baselines", "flowdistill")
                   for p in (REPO / pkg).rglob("*.py")
                   if re.search(r"\.backward\(", p.read_text()))
    assert calls == ["benchmark/trainer.py"]

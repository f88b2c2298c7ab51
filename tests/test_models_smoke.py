"""Every registered model: one short epoch through the real trainer on synthetic data."""

import numpy as np
import pytest
import torch

from benchmark.models import ModelContext, build_model, count_parameters, registry
from benchmark.objectives import SupervisedObjective
from benchmark.trainer import TrainConfig, Trainer

SMOKE_OVERRIDES: dict[str, dict] = {}  # hparams that keep a model small enough for CPU CI


class ConstantTeacher:
    """Labels equal to the ground truth plus one: enough to exercise distillation objectives."""

    def __init__(self, prepared):
        self.prepared = prepared
        self.metadata = {}

    def gather(self, starts):
        y = self.prepared.make_batch(starts).y.numpy() + 1.0
        return y, np.ones(len(starts), bool)


def objective_for(name, prepared):
    spec = registry()[name]
    if spec.objective_factory is None:
        return SupervisedObjective()
    obj = spec.objective_factory(None)
    if getattr(obj, "requires_teacher", False) or "distill" in spec.tags:
        obj.store = ConstantTeacher(prepared)
    return obj


@pytest.mark.parametrize("name", sorted(registry()))
def test_one_epoch(name, synthetic_prepared):
    torch.manual_seed(0)
    ctx = ModelContext.from_prepared(synthetic_prepared)
    model = build_model(name, ctx, SMOKE_OVERRIDES.get(name))
    cfg = TrainConfig(epochs=1, batch_size=8, max_train_batches=2, progress=False)
    trainer = Trainer(model, synthetic_prepared, cfg, objective_for(name, synthetic_prepared))
    trainer.fit()
    s = trainer.evaluate("test")
    assert np.isfinite(s["overall"]["mae"])
    pred, true = trainer.predict("test")
    assert pred.shape == true.shape
    assert count_parameters(model) >= 0

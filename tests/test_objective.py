"""DistillationObjective: pairing of teacher labels with shuffled windows, loss composition,
the registered variants' objectives, and a short training run through the harness's trainer."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from benchmark.models import ModelContext, build_model, get_spec
from benchmark.objectives import StepContext, SupervisedObjective
from benchmark.trainer import TrainConfig, Trainer
from flowdistill.distillation import DistillationConfig, DistillationObjective
from flowdistill.models import VARIANTS, objective_for
from flowdistill.teacher.label_store import SoftLabelStore
from flowdistill.teacher.model_labels import labels_from_model, model_label_metadata

SMALL = dict(embed_dim=8, node_dim=4, tod_dim=4, dow_dim=4, num_layers=1, num_samples=2)
META = {"teacher_id": "test:start-encoding", "protocol_hash": "p"}


def _start_encoding_store(tmp_path, prep) -> SoftLabelStore:
    """Every label of window s equals s; rows stored in a scrambled order."""
    starts = prep.starts("train").copy()
    np.random.default_rng(1).shuffle(starts)
    shape = (prep.protocol.horizon, prep.num_nodes, prep.out_channels)
    labels = np.broadcast_to(starts[:, None, None, None].astype(np.float32),
                             (len(starts), *shape)).copy()
    return SoftLabelStore.create(tmp_path, labels, starts, None, META)


class PositionalLabels:
    """The bug the pairing test must catch: labels handed out in stored order, by position
    within the epoch, whatever windows the batch holds (the authors' release pairs a shuffled
    window loader with an unshuffled label array)."""

    def __init__(self, store: SoftLabelStore) -> None:
        self.store, self.pos = store, 0

    def gather(self, starts):
        b = len(starts)
        rows = np.arange(self.pos, self.pos + b) % len(self.store.starts)
        self.pos += b
        return self.store.labels[rows], self.store.mask[rows]


def _mispaired_batches(prep, teacher, seed: int = 0) -> int:
    """Number of shuffled training batches whose teacher labels are not their own windows'."""
    rng = np.random.default_rng(seed)
    bad = 0
    for batch in prep.batches("train", 8, shuffle=True, generator=rng, teacher=teacher):
        encoded = batch.teacher[:, 0, 0, 0].long()
        bad += int(not (torch.equal(encoded, batch.start) and bool(batch.teacher_mask.all())))
    return bad


def test_teacher_labels_stay_paired_under_shuffling(tmp_path, synthetic_prepared):
    prep = synthetic_prepared
    store = _start_encoding_store(tmp_path, prep)
    objective = objective_for("flowdistill", store)
    # the batches really are shuffled
    rng = np.random.default_rng(0)
    first = next(prep.batches("train", 8, shuffle=True, generator=rng)).start.numpy()
    assert not np.array_equal(first, prep.starts("train")[:8])
    assert _mispaired_batches(prep, objective.teacher_labels()) == 0
    # ... and the same check fails for labels paired by position
    assert _mispaired_batches(prep, PositionalLabels(store)) > 0


class _PairingCheck(DistillationObjective):
    """Records, inside the trainer's own loop, whether each batch's labels encode its starts."""

    def __init__(self, store) -> None:
        super().__init__(store, DistillationConfig(kd_weight=1.0))
        self.checked, self.mismatched = 0, 0

    def loss(self, model, batch, y_hat, ctx):
        self.checked += 1
        self.mismatched += int(not torch.equal(batch.teacher[:, 0, 0, 0].long(), batch.start))
        return super().loss(model, batch, y_hat, ctx)


def test_pairing_through_the_trainer(tmp_path, synthetic_prepared):
    prep = synthetic_prepared
    objective = _PairingCheck(_start_encoding_store(tmp_path, prep))
    model = build_model("flowdistill", ModelContext.from_prepared(prep), SMALL)
    # (the first optimiser built in a process imports torch._dynamo: a one-off ~9 s here)
    cfg = TrainConfig(epochs=2, batch_size=16, progress=False, seed=0)
    Trainer(model, prep, cfg, objective).fit()
    assert objective.checked == 2 * prep.num_batches("train", 16)
    assert objective.mismatched == 0


class _Oracle(torch.nn.Module):
    """Predicts the ground truth exactly (scaled); has one dummy parameter."""

    def __init__(self, prep) -> None:
        super().__init__()
        self.prep = prep
        self.p = torch.nn.Parameter(torch.zeros(()))

    def forward(self, batch):
        return self.prep.scale_targets(batch.y) + 0.0 * self.p


def test_kd_term_vanishes_only_when_paired(tmp_path, synthetic_prepared):
    prep = synthetic_prepared
    starts = prep.starts("train")
    truth = np.stack([prep.raw_targets[s + 12:s + 24].numpy() for s in starts])
    store = SoftLabelStore.create(tmp_path, truth, starts, None, META)  # a perfect teacher
    objective = objective_for("flowdistill-kd", store)
    model, ctx = _Oracle(prep), StepContext(0, 10, prep)
    rng = np.random.default_rng(0)
    for batch in prep.batches("train", 8, shuffle=True, generator=rng, teacher=store):
        _, logs = objective.loss(model, batch, model(batch), ctx)
        assert logs["loss_kd"] == pytest.approx(0.0, abs=1e-3)
    batch = next(prep.batches("train", 8, shuffle=True, generator=np.random.default_rng(0),
                              teacher=PositionalLabels(store)))
    assert objective.loss(model, batch, model(batch), ctx)[1]["loss_kd"] > 0.1


def test_without_teacher_equals_supervised_huber(synthetic_prepared):
    prep = synthetic_prepared
    model = build_model("flowdistill-noteacher", ModelContext.from_prepared(prep), SMALL)
    batch = next(prep.batches("train", 8))
    ctx = StepContext(3, 8, prep)
    y_hat = model(batch)
    ours, logs = objective_for("flowdistill-noteacher").loss(model, batch, y_hat, ctx)
    ref, _ = SupervisedObjective(loss_name="huber", huber_delta=1.0).loss(model, batch, y_hat, ctx)
    torch.testing.assert_close(ours, ref)
    assert logs["extra_weight"] == model.extra_loss_weight(3, 8) and logs["extra"] > 0


def test_bound_composition_with_perfect_teacher(tmp_path, synthetic_prepared):
    prep = synthetic_prepared
    starts = prep.starts("train")
    truth = np.stack([prep.raw_targets[s + 12:s + 24].numpy() for s in starts])
    mask = np.arange(len(starts)) % 2 == 0  # half the windows labelled
    store = SoftLabelStore.create(tmp_path, truth, starts, mask, META)
    model = build_model("mlp", ModelContext.from_prepared(prep), SMALL)
    batch = prep.make_batch(starts[:8], store)
    ctx = StepContext(0, 10, prep)
    y_hat = model(batch)
    plain, _ = objective_for("mlp").loss(model, batch, y_hat, ctx)
    # a perfect teacher opens every labelled gate: labelled windows weigh (1 + lambda)
    obj = DistillationObjective(store, DistillationConfig(bound_weight=0.5, gate="window"))
    loss, logs = obj.loss(model, batch, y_hat, ctx)
    pred = prep.inverse_targets(y_hat)
    d = torch.nn.functional.huber_loss(pred, batch.y, reduction="none")
    w = torch.where(torch.as_tensor(mask[:8])[:, None, None, None], 1.5, 1.0)
    torch.testing.assert_close(loss, (w * d).mean())
    assert logs["loss_gt"] == pytest.approx(float(plain.detach()), rel=1e-5)
    assert logs["labelled"] == 0.5 and logs["gate_open"] == 1.0


def test_objective_errors(tmp_path, synthetic_prepared):
    prep = synthetic_prepared
    store = _start_encoding_store(tmp_path, prep)
    model = build_model("mlp", ModelContext.from_prepared(prep), SMALL)
    ctx = StepContext(0, 10, prep)
    obj = objective_for("flowdistill", store)
    batch = prep.make_batch(prep.starts("train")[:4])  # no teacher attached
    with pytest.raises(ValueError, match="carries no labels"):
        obj.loss(model, batch, model(batch), ctx)
    batch.teacher = torch.zeros(4, 3, prep.num_nodes, prep.out_channels)
    batch.teacher_mask = torch.ones(4, dtype=torch.bool)
    with pytest.raises(ValueError, match="wrong dataset or protocol"):
        obj.loss(model, batch, model(batch), ctx)


def test_variant_objectives(tmp_path, synthetic_prepared):
    store = _start_encoding_store(tmp_path, synthetic_prepared)
    for name, (uses_teacher, _) in VARIANTS.items():
        tags = get_spec(name).tags
        assert "flowdistill" in tags
        assert ("distill" in tags) == ("needs_teacher" in tags) == uses_teacher
        if uses_teacher:
            pending = objective_for(name, None)
            with pytest.raises(ValueError, match="needs teacher labels"):
                pending.teacher_labels()
            pending.store = store  # attached later, as a runner may do
            assert pending.teacher_labels() is store
            d = objective_for(name, store).describe()
            assert d["teacher"]["version_key"] == store.version_key
        else:
            with pytest.raises(ValueError, match="does not use a teacher"):
                objective_for(name, store)
            d = objective_for(name).describe()
            assert d["teacher"] is None and not d["teacher_bound"]
        assert d["gate"] == "window" and d["distance"] == "huber"
    assert objective_for("flowdistill", store).describe()["teacher_bound"]
    notb = objective_for("flowdistill-notb", store).describe()
    assert notb["bound_weight"] == 0.0 and notb["kd_weight"] > 0 and not notb["teacher_bound"]
    kd = objective_for("flowdistill-kd", store, gate="batch").describe()
    assert kd["bound_weight"] == 0.21 and kd["kd_weight"] > 0 and kd["gate"] == "batch"
    with pytest.raises(ValueError, match="unknown distillation settings"):
        objective_for("flowdistill", store, lam=0.3)
    with pytest.raises(KeyError):
        objective_for("stid", store)
    # the registry's objective factory opens the store from its path (benchmark.experiment)
    made = get_spec("flowdistill").objective_factory(str(store.path), bound_margin=0.5)
    assert made.teacher_labels().version_key == store.version_key
    assert made.config.bound_margin == 0.5


def test_short_distillation_run(tmp_path, synthetic_prepared):
    """Labels from a trained forecaster drive the student through the trainer."""
    prep = synthetic_prepared
    ctx = ModelContext.from_prepared(prep)
    teacher = Trainer(build_model("ha-slot", ctx), prep, TrainConfig(progress=False))
    teacher.fit()
    labels, starts = labels_from_model(teacher, prep)
    store = SoftLabelStore.create(tmp_path, labels, starts, None,
                                  model_label_metadata("ha-slot", teacher.model, prep))
    model = build_model("flowdistill", ctx, SMALL)
    # (the first optimiser built in a process imports torch._dynamo: a one-off ~9 s here)
    cfg = TrainConfig(epochs=2, batch_size=16, progress=False, seed=0)
    fit = Trainer(model, prep, cfg, objective_for("flowdistill", store)).fit()
    assert fit.epochs_run == 2 and math.isfinite(fit.best_val_mae)
    assert 0.0 <= fit.history[-1]["train_gate_open"] <= 1.0

"""The fast path on the device: batches gathered from device-resident windows equal the host
batches; a training epoch and an evaluation read the device a fixed number of times, however
many steps they take; step logs are read lazily; the time indices are checked once, when the
data are prepared."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark.batch import Batch
from benchmark.data.stdata import DataError
from benchmark.data.windows import check_time_indices
from benchmark.loop import Callback, StepLogs, materialize
from benchmark.metrics import ProtocolMetrics
from benchmark.trainer import TrainConfig, Trainer, WindowBatches
from flowdistill.distillation import DistillationConfig, DistillationObjective
from tests.test_trainer import make

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
FIELDS = ("x", "y", "x_tod", "x_dow", "y_tod", "y_dow", "start", "teacher", "teacher_mask")


class StartLabels:
    """A teacher whose label of window ``s`` is ``s`` everywhere; windows with ``s % 5 == 0``
    unlabelled."""

    def __init__(self, prep) -> None:
        self.shape = (prep.protocol.horizon, prep.num_nodes, prep.out_channels)

    def gather(self, starts: np.ndarray):
        labels = np.broadcast_to(starts[:, None, None, None].astype(np.float32),
                                 (len(starts), *self.shape)).copy()
        return labels, starts % 5 != 0


def assert_same_batch(a: Batch, b: Batch) -> None:
    for name in FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        if x is None or y is None:
            assert x is None and y is None, name
            continue
        assert x.dtype == y.dtype and x.shape == y.shape, name
        assert torch.equal(x.cpu(), y.cpu()), name


def host_epochs(prep, batch_size: int, seed: int, teacher, epochs: int) -> list[list[Batch]]:
    """The batches of the host loader that WindowBatches replaced (same generator draws)."""
    rng = np.random.default_rng(seed)
    return [list(prep.batches("train", batch_size, shuffle=True, generator=rng, teacher=teacher))
            for _ in range(epochs)]


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA)])
def test_device_batches_equal_the_host_batches(synthetic_prepared, device):
    prep = synthetic_prepared
    teacher = StartLabels(prep)
    src = WindowBatches(prep, 16, seed=3, teacher=teacher, device=device)
    want = host_epochs(prep, 16, 3, teacher, epochs=2)
    for epoch in want:
        got = list(src.epoch(None))
        assert len(got) == len(epoch) == len(src)
        for a, b in zip(got, epoch, strict=True):
            assert a.x.device.type == device
            assert_same_batch(a, b)
    windows = prep.on_device(device)
    assert prep.on_device(device) is windows  # uploaded once per device
    for split in ("val", "test"):
        got = list(windows.batches(split, 50))
        want = list(prep.batches(split, 50))
        assert len(got) == len(want)
        for a, b in zip(got, want, strict=True):
            assert_same_batch(a, b)


def test_cpu_windows_share_the_prepared_tensors(synthetic_prepared):
    w = synthetic_prepared.on_device("cpu")
    assert w.scaled.data_ptr() == synthetic_prepared.scaled.data_ptr()
    assert w.raw_targets.data_ptr() == synthetic_prepared.raw_targets.data_ptr()


def test_max_batches_and_the_rng_state_follow_the_host_loader(synthetic_prepared):
    prep = synthetic_prepared
    src = WindowBatches(prep, 8, seed=0, max_batches=2)
    rng = np.random.default_rng(0)
    for _ in range(3):
        got = list(src.epoch(None))
        want = list(prep.batches("train", 8, shuffle=True, generator=rng))[:2]
        assert len(got) == 2
        for a, b in zip(got, want, strict=True):
            assert_same_batch(a, b)
    assert src.state_dict()["numpy_rng"] == rng.bit_generator.state


# ----------------------------------------------------------------------------- host reads
READS = ("item", "tolist", "numpy", "cpu", "__float__", "__int__", "__bool__", "__index__")


TORCH_DIR = str(Path(torch.__file__).parent)


@pytest.fixture
def count_reads(monkeypatch):
    """Counts the calls of Tensor methods that read values to the host (on a GPU each is a
    sync) from code outside torch (torch's Adam reads its step count, a CPU tensor, by
    ``.item()``: no device sync)."""
    counts = {"n": 0}
    for name in READS:
        original = getattr(torch.Tensor, name)

        def counted(self, *a, _original=original, **k):
            if not sys._getframe(1).f_code.co_filename.startswith(TORCH_DIR):
                counts["n"] += 1
            return _original(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return counts


def _distill_trainer(prep, **cfg) -> Trainer:
    torch.manual_seed(0)
    objective = DistillationObjective(StartLabels(prep), DistillationConfig(kd_weight=0.5))
    return Trainer(make(prep), prep, TrainConfig(progress=False, seed=0, patience=None, **cfg),
                   objective)


@pytest.mark.parametrize("gate", ["window", "batch"])
def test_an_epoch_reads_the_device_a_fixed_number_of_times(synthetic_prepared, count_reads,
                                                           gate):
    """The host reads of a training epoch (the loop, the distillation objective with a
    teacher, the logs) do not grow with its number of steps: there are none per step."""
    reads = {}
    for steps in (2, 6):
        t = _distill_trainer(synthetic_prepared, epochs=1, batch_size=4,
                             max_train_batches=steps)
        t.objective.config.gate = gate
        t.validate_fn = lambda trainer: None
        count_reads["n"] = 0
        fit = t.fit()
        reads[steps] = count_reads["n"]
        assert len(fit.history) == 1 and np.isfinite(fit.history[0]["train_loss"])
    assert reads[2] == reads[6], reads


def test_evaluation_reads_the_device_a_fixed_number_of_times(synthetic_prepared, count_reads):
    t = _distill_trainer(synthetic_prepared, epochs=1)
    reads = {}
    for bs in (4, 1000):
        t.config.eval_batch_size = bs
        count_reads["n"] = 0
        t.evaluate("val")
        reads[bs] = count_reads["n"]
    assert reads[4] == reads[1000], reads


def test_history_is_the_per_step_mean_of_the_logs(synthetic_prepared):
    """The epoch's logs, read once at its end, are the floats each step logged."""
    seen = []

    class Spy(Callback):
        def on_step_end(self, trainer, state, batch, logs):
            seen.append(dict(logs))  # reading: floats

    t = _distill_trainer(synthetic_prepared, epochs=1, batch_size=8)
    t.callbacks.append(Spy())
    row = t.fit().history[0]
    assert seen and all(isinstance(v, float) for s in seen for v in s.values())
    for key in ("loss", "loss_gt", "gate_open", "labelled", "loss_kd"):
        total = 0.0
        for s in seen:
            total += s[key]
        assert row[f"train_{key}"] == total / len(seen), key


def test_step_logs_read_lazily():
    t = torch.tensor(1.25, dtype=torch.float32)
    logs = StepLogs({"a": t, "b": 0.5})
    assert logs.raw()["a"] is t  # held as is, no read
    assert logs["a"] == 1.25 and isinstance(logs["a"], float)
    assert dict(logs) == {"a": 1.25, "b": 0.5}
    third = torch.tensor(1 / 3, dtype=torch.float32)
    rows = [{"x": third, "y": torch.tensor(2.0, dtype=torch.float64), "z": 3.0},
            {"x": torch.tensor(True)}]
    got = materialize(rows)
    assert got == [{"x": float(third), "y": 2.0, "z": 3.0}, {"x": 1.0}]
    assert got[0]["x"] != 1 / 3  # the float32 value, as float(tensor) reads it


def test_a_non_finite_step_is_named_at_the_end_of_its_epoch(synthetic_prepared):
    class NaNAtThirdStep(DistillationObjective):
        steps = 0

        def step_loss(self, model, batch, ctx):
            loss, logs = super().step_loss(model, batch, ctx)
            self.steps += 1
            return (loss * float("nan") if self.steps == 3 else loss), logs

    t = _distill_trainer(synthetic_prepared, epochs=2, batch_size=4)
    t.objective = NaNAtThirdStep(StartLabels(synthetic_prepared))
    with pytest.raises(FloatingPointError, match=r"epoch 1, step 3: \{'loss_gt'"):
        t.fit()


# ---------------------------------------------------------------------------- time indices
def test_time_indices_are_checked_when_the_data_are_prepared():
    check_time_indices(np.array([0, 47]), np.array([0, 6]), 48, "x")
    with pytest.raises(DataError, match="x: time-of-day index outside \\[0, 24\\)"):
        check_time_indices(np.array([0, 47]), np.array([0, 6]), 24, "x")
    with pytest.raises(DataError, match="day-of-week"):
        check_time_indices(np.array([0]), np.array([7]), 24, "x")


# ------------------------------------------------------------------------------- on a GPU
@CUDA
def test_metric_sums_stay_on_the_device_and_equal_the_cpu_sums():
    g = torch.Generator().manual_seed(0)
    true = torch.randn(9, 3, 4, 2, generator=g) * 10
    true[true.abs() < 2] = 0.0
    pred = torch.randn(9, 3, 4, 2, generator=g) * 10
    cpu, gpu = (ProtocolMetrics(3, 2, None, 0.0, 0.0) for _ in range(2))
    for sl in (slice(0, 4), slice(4, 9)):
        cpu.update(pred[sl], true[sl])
        gpu.update(pred[sl].cuda(), true[sl].cuda())
    assert gpu.masked._sums.is_cuda
    np.testing.assert_allclose(gpu.masked.abs_sum, cpu.masked.abs_sum, rtol=1e-6)
    np.testing.assert_array_equal(gpu.masked.count, cpu.masked.count)


@CUDA
@pytest.mark.parametrize("model", ["flowdistill", "mlp", "stid", "stgcn", "gwnet", "dcrnn",
                                   "agcrn"])
def test_training_steps_make_no_host_sync_on_cuda(synthetic_prepared, model):
    """Every step of an epoch under ``torch.cuda.set_sync_debug_mode("error")``: a step that
    reads the device (``.item()``, a tensor in an ``if``, a pageable copy) raises."""
    from benchmark.models import ModelContext, build_model

    prep = synthetic_prepared
    torch.manual_seed(0)
    net = build_model(model, ModelContext.from_prepared(prep))
    teacher = StartLabels(prep) if model == "flowdistill" else None
    objective = DistillationObjective(teacher, DistillationConfig())
    t = Trainer(net, prep, TrainConfig(epochs=1, batch_size=8, device="cuda", progress=False,
                                       max_train_batches=4), objective)
    step = t._train_step

    def strict_step(*a, **k):
        torch.cuda.set_sync_debug_mode("error")
        try:
            return step(*a, **k)
        finally:
            torch.cuda.set_sync_debug_mode("default")

    t._train_step = strict_step
    t.validate_fn = lambda trainer: None
    t.fit()

"""bf16 autocast and compilation (``TrainConfig.precision`` / ``compile``): off by default with
run ids and records unchanged, named in the record when on, and within the measured tolerance of
the fp32 eager run (benchmark.execution.VAL_MAE_RTOL)."""

from __future__ import annotations

import shutil
from dataclasses import replace

import pytest
import torch

from benchmark.execution import VAL_MAE_RTOL, ModelRunner
from benchmark.experiment import RunSpec, run_experiment
from benchmark.models import ModelContext, build_model
from benchmark.trainer import TrainConfig, Trainer, seed_everything

SMALL = dict(embed_dim=16, node_dim=8, tod_dim=8, dow_dim=8, num_layers=2, num_samples=2)
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
CXX = pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                         reason="torch.compile on a CPU needs a C++ compiler (apt-get install g++)")


def test_defaults_are_left_out_of_records_and_run_ids():
    cfg = TrainConfig()
    assert (cfg.precision, cfg.compile) == ("fp32", "none")
    assert "precision" not in cfg.to_dict() and "compile" not in cfg.to_dict()
    spec = RunSpec("stid")
    assert "precision" not in spec.identity()["train"]
    bf16 = RunSpec("stid", train=replace(spec.train, precision="bf16"))
    compiled = RunSpec("stid", train=replace(spec.train, compile="torch.compile"))
    assert bf16.identity()["train"]["precision"] == "bf16"
    assert compiled.identity()["train"]["compile"] == "torch.compile"
    assert len({spec.run_id(), bf16.run_id(), compiled.run_id()}) == 3


@pytest.mark.parametrize("key, value", [("precision", "fp16"), ("compile", "inductor")])
def test_unknown_values_are_refused(key, value):
    with pytest.raises(ValueError, match=f"^{key}: expected one of"):
        TrainConfig(**{key: value})


def _fit(prep, seed: int = 0, **options) -> tuple[float, Trainer]:
    seed_everything(seed)
    model = build_model("mlp", ModelContext.from_prepared(prep), SMALL)
    cfg = TrainConfig(epochs=2, batch_size=16, lr=5e-3, patience=None, progress=False,
                      seed=seed, **options)
    trainer = Trainer(model, prep, cfg)
    return trainer.fit().best_val_mae, trainer


def test_bf16_stays_within_its_tolerance(synthetic_prepared):
    ref, _ = _fit(synthetic_prepared)
    got, trainer = _fit(synthetic_prepared, precision="bf16")
    assert isinstance(trainer.runner, ModelRunner)
    batch = synthetic_prepared.make_batch(synthetic_prepared.starts("val")[:4])
    with torch.no_grad():
        assert trainer.runner(batch).dtype == torch.float32  # the loss is computed in fp32
    assert got != ref  # autocast really ran in bfloat16
    assert abs(got - ref) / ref <= VAL_MAE_RTOL["bf16"]


def test_a_bf16_run_is_named_in_its_record(tmp_path):
    train = TrainConfig(epochs=1, batch_size=32, max_train_batches=2, progress=False,
                        precision="bf16")
    rec = run_experiment(RunSpec("stid", train=train, efficiency=None, hparams={"embed_dim": 8}),
                         records_dir=tmp_path / "rec", runs_dir=tmp_path / "runs")
    assert rec.train_config["precision"] == "bf16" and "compile" not in rec.train_config
    assert rec.metrics["val"]["overall"]["mae"] > 0


@pytest.mark.slow
@CXX
def test_torch_compile_stays_within_its_tolerance(synthetic_prepared):
    ref, _ = _fit(synthetic_prepared)
    got, trainer = _fit(synthetic_prepared, compile="torch.compile")
    # the model keeps its own parameters and state-dict keys (checkpoints are unchanged)
    assert not any(k.startswith("_orig_mod") for k in trainer.model.state_dict())
    assert abs(got - ref) / ref <= VAL_MAE_RTOL["torch.compile"]


@CUDA
@pytest.mark.parametrize("options", [{"precision": "bf16"}, {"compile": "cudagraphs"},
                                     {"precision": "bf16", "compile": "cudagraphs"}])
def test_cuda_options_stay_within_their_tolerance(synthetic_prepared, options):
    ref, _ = _fit(synthetic_prepared, device="cuda")
    got, _ = _fit(synthetic_prepared, device="cuda", **options)
    tol = max(VAL_MAE_RTOL["bf16"] if "precision" in options else 0.0,
              VAL_MAE_RTOL["cudagraphs"] if "compile" in options else 0.0)
    assert abs(got - ref) / ref <= tol

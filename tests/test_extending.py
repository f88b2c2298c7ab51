"""docs/extending.md: its model, dataset, objective and sweep examples are the code run here.

Every block headed ``<!-- file: PATH -->`` in the guide is written into a scratch directory: the
dataset module into a directory added to ``benchmark.data.datasets.__path__`` (as if dropped
into the package), the model module likewise for ``baselines``. Their registrations go into
copies of the catalogues that vanish with each test.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import math
import re
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark.data.stdata import DataError

DOC = Path(__file__).resolve().parents[1] / "docs" / "extending.md"
BLOCK = re.compile(r"<!-- file: (\S+) -->\n```\w*\n(.*?)```", re.S)
EXAMPLES = {"history_mlp.py", "make_toy_city.py", "toy_city.py",
            "run_history_mlp_on_toy_city.py", "pinball.py", "toy_city.toml"}
SCRATCH_MODULES = ("benchmark.data.datasets.toy_city", "baselines.history_mlp", "pinball")


def doc_examples() -> dict[str, str]:
    """File name -> code of every ``<!-- file: ... -->`` block of docs/extending.md."""
    return {Path(name).name: code for name, code in BLOCK.findall(DOC.read_text())}


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """The guide's dataset and model registered as if dropped into their packages; the raw
    files written by its script into FLOWDISTILL_DATA. Returns the scratch directory."""
    import baselines
    import benchmark.data.datasets as datasets_pkg
    from benchmark import models
    from benchmark.data import catalogue, files

    code = doc_examples()
    models.registry()  # the built-in models are imported before the catalogue is copied
    monkeypatch.setattr(models, "_REGISTRY", dict(models._REGISTRY))
    monkeypatch.setattr(catalogue, "REGISTERED", dict(catalogue.REGISTERED))
    for pkg, name in ((datasets_pkg, "toy_city.py"), (baselines, "history_mlp.py")):
        where = tmp_path / pkg.__name__
        where.mkdir()
        (where / name).write_text(code[name])
        monkeypatch.setattr(pkg, "__path__", [*pkg.__path__, str(where)])
    for name in ("make_toy_city.py", "run_history_mlp_on_toy_city.py", "pinball.py",
                 "toy_city.toml"):
        (tmp_path / name).write_text(code[name])

    monkeypatch.setenv("FLOWDISTILL_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("FLOWDISTILL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("FLOWDISTILL_OFFLINE", "1")
    monkeypatch.setattr(files, "mirror_dir", lambda: None)
    runpy.run_path(str(tmp_path / "make_toy_city.py"))["write_toy_city"](
        tmp_path / "data" / "toy_city")
    datasets_pkg.import_all()  # what importing the package does: toy_city.py is found
    importlib.import_module("baselines.history_mlp")  # likewise for baselines/
    yield tmp_path
    for name in SCRATCH_MODULES:
        sys.modules.pop(name, None)
        parent, _, child = name.rpartition(".")
        if parent and hasattr(sys.modules[parent], child):
            delattr(sys.modules[parent], child)


def _import_file(name: str, path: Path, monkeypatch) -> object:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    return module


def test_the_guide_has_the_four_examples():
    assert set(doc_examples()) == EXAMPLES
    text = DOC.read_text()
    for section in ("## Add a model", "## Add a dataset", "## Add an objective",
                    "## Add a sweep"):
        assert section in text


def test_dataset_example_is_one_file(toy):
    from benchmark.data.registry import (
        dataset_ids,
        default_protocol,
        get_dataset_spec,
        load_dataset,
        locate,
        verify,
    )
    from benchmark.data.windows import prepare
    from benchmark.models import registry
    from flowdistill.teacher.prompts import PromptBuilder

    assert "toy_city" in dataset_ids() and "history_mlp" in registry()
    assert locate("toy_city") == toy / "data" / "toy_city"
    checks = verify("toy_city")  # the guide's pinned sha256 are those of its script's files
    assert [c.file for c in checks] == ["pickups.csv", "docks.csv"]
    assert all(c.ok for c in checks), checks
    spec = get_dataset_spec("toy_city")
    sizes = [(toy / "data" / "toy_city" / f.name).stat().st_size for f in spec.files]
    assert sizes == [f.size for f in spec.files]

    data = load_dataset("toy_city")
    assert data.values.shape == (336, 4, 1) and data.channels == ["pickups"]
    assert data.timestamps[0] == np.datetime64("2024-03-04T00:00")
    assert data.timestamps[-1] == np.datetime64("2024-03-17T23:00") and data.regular
    # hand-worked: d(0, 1) = sqrt(0.8^2 + 0.3^2) km, w = exp(-0.73 / sigma^2) with sigma^2 = 1;
    # d(0, 2)^2 = 3.46 gives exp(-3.46) = 0.031 < epsilon = 0.1: no edge
    a = data.adjacency
    assert a[0, 1] == pytest.approx(math.exp(-0.73), rel=1e-6) and a[0, 2] == 0.0
    assert np.array_equal(a, a.T) and np.all(np.diag(a) == 0)
    assert load_dataset("toy_city", sigma2="2").adjacency[0, 1] == pytest.approx(
        math.exp(-0.365), rel=1e-6)  # an option, coerced from text like every loader option
    # Monday 08:00: dock 0's morning peak, 2 + 3 * 6 * 1 + (7 * 8 + 0) % 4
    assert data.values[8, 0, 0] == 20.0

    prepared = prepare(data, default_protocol("toy_city"), "toy_city")
    prompt = PromptBuilder.from_prepared(prepared).prompt(0, 3)
    assert prompt.startswith("Given the historical data for bike pick-ups over 12 time steps "
                             "in a specific region of Toy City, recorded at 1-hour intervals")
    assert "The recorded bike pickups values are [" in prompt
    assert "this region is region 3 of Toy City" in prompt

    target = toy / "data" / "toy_city" / "docks.csv"  # a changed byte is caught before parsing
    target.write_bytes(target.read_bytes().replace(b"0.8", b"0.9"))
    with pytest.raises(DataError, match="docks.csv.*expected sha256"):
        load_dataset("toy_city")


def test_model_example_trains_one_epoch_on_the_dataset_example(toy, monkeypatch):
    from benchmark.records import record_path

    work = toy / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    record = runpy.run_path(str(toy / "run_history_mlp_on_toy_city.py"))["record"]
    assert (record.model, record.dataset) == ("history_mlp", "toy_city")
    assert record.fit["epochs_run"] == 1
    assert record.hparams == {"hidden": 32, "node_dim": 8}
    assert record.recipe["source"].startswith("docs/extending.md example")
    assert record.params == 4 * 8 + (12 + 8) * 32 + 32 + 32 * 12 + 12
    test = record.metrics["test"]["overall"]
    assert math.isfinite(test["mae"]) and test["mae"] > 0
    assert record_path(work / "runs" / "records", record.run_id).is_file()
    assert (work / "runs" / "checkpoints" / record.run_id / "best.pt").is_file()


def test_objective_example(toy, monkeypatch):
    from benchmark.data.registry import default_protocol, load_dataset
    from benchmark.data.windows import prepare
    from benchmark.models import ModelContext, build_model
    from benchmark.trainer import TrainConfig, Trainer

    pinball = _import_file("pinball", toy / "pinball.py", monkeypatch)
    pred = torch.tensor([8.0, 25.0, 3.0])
    true = torch.tensor([10.0, 20.0, 0.0])
    mask = torch.tensor([True, True, False])
    # hand-worked: e = (2, -5); q = 0.9: (0.9 * 2 + 0.1 * 5) / 2 = 1.15; q = 0.5: MAE / 2
    assert float(pinball.pinball_loss(pred, true, 0.9, mask)) == pytest.approx(1.15)
    assert float(pinball.pinball_loss(pred, true, 0.5, mask)) == pytest.approx(3.5 / 2)

    objective = pinball.PinballObjective(quantile=0.9)
    assert objective.describe() == {"name": "pinball", "quantile": 0.9}
    prepared = prepare(load_dataset("toy_city"), default_protocol("toy_city"), "toy_city")
    model = build_model("history_mlp", ModelContext.from_prepared(prepared))
    fit = Trainer(model, prepared, TrainConfig(epochs=1, progress=False), objective).fit()
    row = fit.history[0]
    assert row["train_loss_pinball"] > 0 and row["train_loss"] == row["train_loss_pinball"]


def test_sweep_example(toy):
    from benchmark.sweep import SweepSpec, run_sweep

    spec = SweepSpec.from_toml(toy / "toy_city.toml")
    runs = spec.expand()
    assert len(runs) == 2 * 2 * 3 and len({r.run_id() for r in runs}) == len(runs)
    assert all(r.tag == "toy-city" and r.dataset_options == {"sigma2": 2.0} for r in runs)
    mlp = [r for r in runs if r.model == "history_mlp"]
    assert mlp and all(r.hparams == {"hidden": 64} and r.train.epochs == 20 for r in mlp)
    small = dataclasses.replace(spec, models=["history_mlp"], fractions=[0.1], seeds=[0],
                                train={"epochs": 1})
    result = run_sweep(small, records_dir=toy / "records", runs_dir=toy / "runs",
                       progress=False)
    assert len(result.finished) == 1 and not result.failed, result.failed

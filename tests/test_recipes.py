"""Per-model training recipes: registry, the shared recipe, overrides, records, tables, and the
IB-weight anneal over the recipe's epochs."""

from dataclasses import fields

import pandas as pd
import pytest
import torch

from benchmark.cli import build_parser, spec_from_args
from benchmark.experiment import RunSpec, make_objective, run_experiment
from benchmark.models import ModelContext, build_model, registry
from benchmark.recipes import (
    COMMON,
    TRAIN_FIELDS,
    Recipe,
    describe_recipe,
    get_recipe,
    recipe_deviations,
    train_config_for,
)
from benchmark.records import aggregate, load_records, records_frame
from benchmark.sweep import SweepSpec
from benchmark.trainer import TrainConfig, Trainer
from flowdistill.losses import BetaAnnealing

TINY = {"num_nodes": 4, "num_days": 7, "steps_per_day": 24}


def test_every_trained_model_has_a_cited_recipe():
    for name, spec in registry().items():
        if spec.closed_form:
            assert spec.recipe is None and get_recipe(name) is None, name
            continue
        assert isinstance(spec.recipe, Recipe), name
        assert spec.recipe.source.strip(), name
        assert spec.recipe.epochs >= 1 and spec.recipe.lr > 0, name


def test_a_model_without_a_recipe_falls_back_to_the_common_one():
    from benchmark.models import _REGISTRY, Forecaster, register_model

    class Recipeless(Forecaster):
        pass

    register_model("test-recipeless")(Recipeless)
    try:
        r = get_recipe("test-recipeless")
        assert r.train_settings() == COMMON.train_settings() and "no recipe" in r.source
    finally:
        _REGISTRY.pop("test-recipeless")


def test_common_recipe_is_the_same_for_every_model_and_the_trainer_default():
    want = COMMON.train_settings()
    for name, spec in registry().items():
        cfg = train_config_for(name, "common")
        if spec.closed_form:
            continue
        assert {k: getattr(cfg, k) for k in TRAIN_FIELDS} == want, name
        assert cfg.schedule_epochs == COMMON.epochs
    default = TrainConfig()
    assert {k: getattr(default, k) for k in TRAIN_FIELDS} == want


def test_flowdistill_variants_use_the_release_recipe():
    for name in ("flowdistill", "flowdistill-noteacher", "flowdistill-noib", "flowdistill-notb",
                 "flowdistill-kd", "mlp"):
        r = get_recipe(name)
        assert (r.optimizer, r.lr, r.lr_gamma, r.batch_size, r.epochs, r.patience,
                r.grad_clip) == ("adam", 0.0055, 0.62, 128, 200, 25, 15.0)
        assert r.lr_milestones == tuple(range(15, 151, 15))
        assert (r.loss, r.huber_delta) == ("huber", 1.0)
        assert "global_baselines.conf" in r.source and "KDMLP.conf" in r.source
    cfg = train_config_for("flowdistill")
    assert cfg.epochs == cfg.schedule_epochs == 200


def test_a_paper_recipe_and_overrides_on_top():
    cfg = train_config_for("stgcn", "paper", {"epochs": 3, "lr_milestones": [1]})
    assert (cfg.optimizer, cfg.batch_size, cfg.lr_gamma) == ("rmsprop", 50, 0.7)
    assert cfg.epochs == 3 and cfg.lr_milestones == (1,)
    assert cfg.schedule_epochs == 50  # the anneal stays defined over the recipe's epochs
    assert cfg.patience == 50  # no early stopping in the source: patience = its epochs
    with pytest.raises(ValueError, match="unknown trainer settings"):
        train_config_for("stgcn", "paper", {"epoch": 3})
    with pytest.raises(ValueError, match="unknown recipe"):
        train_config_for("stgcn", "fancy")


def test_recipe_sets_the_ground_truth_loss_unless_the_objective_overrides_it():
    assert make_objective(RunSpec("stgcn")).loss_name == "mse"
    assert make_objective(RunSpec("stgcn", recipe="common")).loss_name == "mae"
    assert make_objective(RunSpec("stgcn", objective={"loss_name": "huber"})).loss_name == "huber"
    stsgcn = make_objective(RunSpec("stsgcn"))
    assert (stsgcn.loss_name, stsgcn.huber_delta) == ("huber", 1.0)
    fd = make_objective(RunSpec("flowdistill-noteacher")).config
    assert (fd.distance, fd.huber_delta) == ("huber", 1.0)
    assert make_objective(RunSpec("flowdistill-noteacher", recipe="common")).config.distance \
        == "mae"


def test_runspec_resolves_its_recipe_and_keeps_explicit_train_configs():
    assert RunSpec("gwnet").train == train_config_for("gwnet")
    assert RunSpec("gwnet", recipe="common").train == train_config_for("gwnet", "common")
    explicit = TrainConfig(epochs=2)
    assert RunSpec("gwnet", train=explicit).train is explicit
    assert RunSpec("gwnet").run_id() != RunSpec("gwnet", recipe="common").run_id()
    with pytest.raises(ValueError, match="unknown recipe"):
        RunSpec("gwnet", recipe="fancy")


def test_sweep_recipe_and_train_overrides():
    sweep = SweepSpec(name="t", models=["gwnet", "stid", "ridge"], recipe="common",
                      train={"epochs": 7}, train_per_model={"stid": {"batch_size": 8}},
                      seeds=[3])
    runs = {r.model: r for r in sweep.expand()}
    assert all(r.recipe == "common" for r in runs.values())
    assert runs["gwnet"].train.epochs == 7 and runs["gwnet"].train.lr == COMMON.lr
    assert runs["stid"].train.batch_size == 8 and runs["stid"].train.seed == 3
    paper = {r.model: r for r in SweepSpec(name="t", models=["stid"]).expand()}
    assert paper["stid"].train.lr == 2e-3 and paper["stid"].train.lr_milestones == (1, 50, 80)


def test_sweep_toml_recipe(tmp_path):
    p = tmp_path / "s.toml"
    p.write_text('name = "s"\nmodels = ["agcrn"]\nrecipe = "common"\n[train]\npatience = 3\n')
    (run,) = SweepSpec.from_toml(p).expand()
    assert run.recipe == "common" and run.train.patience == 3 and run.train.lr == COMMON.lr


def test_cli_recipe_flag_and_overrides():
    parser = build_parser()
    spec = spec_from_args(parser.parse_args(["train", "agcrn", "--dataset", "synthetic",
                                             "--train", "epochs=2"]))
    assert spec.recipe == "paper" and spec.train.lr == 3e-3 and spec.train.epochs == 2
    spec = spec_from_args(parser.parse_args(["train", "agcrn", "--dataset", "synthetic",
                                             "--recipe", "common",
                                             "--seed", "4"]))
    assert spec.recipe == "common" and spec.train.lr == COMMON.lr and spec.train.seed == 4


def test_deviations_name_what_differs_from_the_recipe():
    recipe = get_recipe("gwnet")
    assert recipe_deviations(recipe, train_config_for("gwnet")) == {}
    dev = recipe_deviations(recipe, train_config_for("gwnet", "paper", {"epochs": 2,
                                                                        "seed": 5}),
                            {"loss_name": "mse"})
    assert dev == {"epochs": {"recipe": 100, "run": 2}, "loss": {"recipe": "mae", "run": "mse"}}
    closed = describe_recipe("ridge", "paper", TrainConfig())
    assert closed["settings"] is None and closed["deviations"] == {}


def _spec(model, recipe="paper", seed=0, **train):
    return RunSpec(model=model, dataset="synthetic", dataset_options=TINY, recipe=recipe,
                   train=train_config_for(model, recipe, {"epochs": 1, "max_train_batches": 2,
                                                          "progress": False, "seed": seed,
                                                          **train}),
                   efficiency=None)


def test_record_carries_the_recipe_and_tables_keep_recipes_apart(tmp_path):
    rec = run_experiment(_spec("mlp"), tmp_path / "rec", tmp_path / "runs")
    assert rec.recipe["name"] == "paper" and "global_baselines.conf" in rec.recipe["source"]
    assert rec.recipe["deviations"]["epochs"] == {"recipe": 200, "run": 1}
    assert rec.recipe["settings"]["lr"] == 0.0055
    assert rec.train_config["lr"] == 0.0055 and rec.objective["distance"] == "huber"
    for seed in (0, 1):
        run_experiment(_spec("mlp", "common", seed), tmp_path / "rec", tmp_path / "runs")
    frame = records_frame(load_records(tmp_path / "rec"))
    assert sorted(frame["recipe"]) == ["common", "common", "paper"]
    agg = aggregate(frame)
    assert sorted(zip(agg["recipe"], agg["seeds"], strict=True)) == [("common", 2), ("paper", 1)]
    # even when the caller leaves the recipe out of ``by``, two recipes are not pooled
    agg = aggregate(frame, by=("dataset", "model"))
    assert len(agg) == 2
    from paper.frame import records_to_frame
    from paper.tables import dataset_groups

    groups = list(dataset_groups(records_to_frame(load_records(tmp_path / "rec"))))
    assert len(groups) == 2
    assert {g["recipe"].nunique() for _, _, g, _ in groups} == {1}
    assert sorted(s for *_, s in groups) == [" [recipe common]", " [recipe paper]"]


def test_aggregate_without_a_recipe_column():
    frame = pd.DataFrame({"dataset": ["d", "d"], "model": ["m", "m"], "train_fraction": [1, 1],
                          "seed": [0, 1], "mae": [1.0, 2.0]})
    assert aggregate(frame)["seeds"].iloc[0] == 2


def test_beta_anneal_end_epoch():
    sched = BetaAnnealing(0.002, 0.001)
    for epochs in (1, 3, 4, 7, 8, 20, 200):
        end = sched.end_epoch(epochs)
        assert all(sched(e, epochs) == sched.beta_end for e in range(end, epochs + 5))
        if end > 0:
            assert sched(end - 1, epochs) > sched.beta_end
    assert sched.end_epoch(20) == 9 and sched.end_epoch(200) == 99


def _student(prepared):
    torch.manual_seed(0)
    return build_model("flowdistill-noteacher", ModelContext.from_prepared(prepared))


def _fit(prepared, **cfg):
    from flowdistill.models import objective_for

    config = TrainConfig(**{"batch_size": 16, "max_train_batches": 2, "progress": False, **cfg})
    return Trainer(_student(prepared), prepared, config,
                   objective_for("flowdistill-noteacher")).fit()


def test_history_has_the_applied_ib_weight_and_an_unfinished_anneal_says_so(
        synthetic_prepared):
    res = _fit(synthetic_prepared, epochs=3, schedule_epochs=200)
    sched = BetaAnnealing(0.002, 0.001)
    assert [row["extra_weight"] for row in res.history] == [sched(e, 200) for e in range(3)]
    note = res.regulariser_schedule
    assert note["complete"] is False and note["end_epoch"] == 99
    assert note["schedule_epochs"] == 200 and "before" in note["note"]
    # a run that outlives its anneal (here 8 epochs: end at epoch 3) says it completed
    done = _fit(synthetic_prepared, epochs=8, patience=100)
    assert done.regulariser_schedule["complete"] is True
    assert done.history[-1]["extra_weight"] == pytest.approx(0.001)
    assert done.regulariser_schedule["final_weight"] == pytest.approx(0.001)


def test_early_stopping_inside_the_anneal_is_reported(synthetic_prepared):
    res = _fit(synthetic_prepared, epochs=40, patience=1, lr=0.0)
    assert res.stopped_by == "early_stopping" and res.epochs_run < 40
    assert res.regulariser_schedule["complete"] is False


def test_no_regulariser_no_schedule_note(synthetic_prepared):
    from flowdistill.models import objective_for

    torch.manual_seed(0)
    model = build_model("flowdistill-noib", ModelContext.from_prepared(synthetic_prepared))
    res = Trainer(model, synthetic_prepared,
                  TrainConfig(epochs=1, batch_size=16, max_train_batches=1, progress=False),
                  objective_for("flowdistill-noteacher")).fit()
    assert res.regulariser_schedule is None and "extra_weight" not in res.history[0]


def test_schedule_epochs_is_a_trainer_setting():
    assert "schedule_epochs" in {f.name for f in fields(TrainConfig)}

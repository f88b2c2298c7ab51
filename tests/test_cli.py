"""The CLI refuses mistakes: unknown keys and mistyped values name the flag, the key, the
accepted keys and the closest match; user errors print one ``error:`` line (``--debug`` shows
the traceback); ad-hoc runs go to the user runs directory, never into ``results/records``."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmark.checkpoints import CheckpointError
from benchmark.cli import build_parser, main, spec_from_args
from benchmark.experiment import REPO_ROOT
from benchmark.settings import SettingError
from benchmark.sweep import SweepSpec

DATA = ["--dataset", "synthetic", "--data-option", "num_nodes=4", "--data-option", "num_days=7",
        "--data-option", "steps_per_day=24"]
TINY = [*DATA, "--set", "embed_dim=8", "--set", "node_dim=8", "--set", "tod_dim=8",
        "--set", "dow_dim=8", "--set", "num_layers=1", "--train", "epochs=1",
        "--train", "max_train_batches=2", "--train", "batch_size=16", "--train",
        "progress=false", "--no-efficiency"]


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch) -> Path:
    """Every CLI run of this module goes to a temporary user runs directory."""
    monkeypatch.setenv("FLOWDISTILL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FLOWDISTILL_LABELS", str(tmp_path / "labels"))
    monkeypatch.delenv("FLOWDISTILL_RECORDS", raising=False)
    monkeypatch.delenv("FLOWDISTILL_RUNS", raising=False)
    return tmp_path / "home" / "runs"


def error_of(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.mark.parametrize("model, flag, setting, key, close", [
    ("stid", "--set", "embed_dimm=16", "embed_dimm", "embed_dim"),
    ("last-value", "--protocol", "horizn=9", "horizn", "horizon"),
    ("last-value", "--train", "epoch=3", "epoch", "epochs"),
    ("last-value", "--objective", "loss_nam=huber", "loss_nam", "loss_name"),
    ("mlp", "--objective", "gates=batch", "gates", "gate"),
    ("last-value", "--data-option", "num_node=4", "num_node", "num_nodes"),
])
def test_unknown_key_names_flag_key_accepted_keys_and_closest_match(
        capsys, model, flag, setting, key, close):
    assert main(["train", model, "--dataset", "synthetic", flag, setting]) == 2
    line = error_of(capsys)
    assert line.startswith(f"error: {flag} {key}: unknown key")
    assert f"did you mean {close!r}?" in line
    assert "accepted: " in line and close in line.split("accepted: ")[1]


@pytest.mark.parametrize("flag, setting, expected", [
    ("--train", "epochs=ten", "expected int"),
    ("--train", "grad_clip=true", "expected float or null"),
    ("--set", "dropout=true", "expected float"),
    ("--protocol", "split_ratios=[0.5,0.5]", "expected list of 3"),
    ("--data-option", "num_nodes=4.5", "expected int"),
])
def test_wrong_type_names_key_and_expected_type(capsys, flag, setting, expected):
    assert main(["train", "stid", "--dataset", "synthetic", flag, setting]) == 2
    line = error_of(capsys)
    assert line.startswith(f"error: {flag} {setting.split('=')[0]}: {expected}")


def test_malformed_assignment_and_flags_with_their_own_option(capsys):
    assert main(["train", "stid", "--dataset", "synthetic", "--set", "dropout"]) == 2
    assert "expected KEY=VALUE" in error_of(capsys)
    assert main(["train", "stid", "--dataset", "synthetic", "--train", "seed=3"]) == 2
    assert "--seed" in error_of(capsys)
    assert main(["train", "stid", "--dataset", "synthetic", "--protocol",
                 "train_fraction=0.5"]) == 2
    assert "--fraction" in error_of(capsys)


def test_valid_settings_reach_the_spec():
    args = build_parser().parse_args(["train", "stgcn", *DATA, "--set", "blocks=[[8,4,8]]",
                                      "--protocol", "horizon=6", "--train", "grad_clip=null",
                                      "--train", "lr_milestones=[2,4]"])
    spec = spec_from_args(args)
    assert spec.hparams == {"blocks": [[8, 4, 8]]} and spec.protocol == {"horizon": 6}
    assert spec.train.grad_clip is None and spec.train.lr_milestones == (2, 4)


@pytest.mark.parametrize("argv", [
    ["train", "last-value"],
    ["predict", "last-value", "--export-submission", "out"],
    ["teacher", "label", "--from-model", "ridge"],
])
def test_dataset_is_required(capsys, argv):
    assert main(argv) == 2
    assert "--dataset is required" in error_of(capsys)


def test_adhoc_train_writes_to_the_user_runs_directory(home, capsys):
    records = REPO_ROOT / "results" / "records"
    before = sorted(records.rglob("*")) if records.exists() else []
    assert main(["train", "mlp", *TINY]) == 0
    out = capsys.readouterr().out
    run_id = out.split(":")[0]
    assert (home / "records" / f"{run_id}.json").is_file()
    assert (home / "checkpoints" / run_id / "best.pt").is_file()
    assert f"record: {home / 'records' / run_id}.json" in out
    assert (sorted(records.rglob("*")) if records.exists() else []) == before
    # --runs-dir overrides the default
    assert main(["train", "last-value", *DATA, "--runs-dir", str(home.parent / "elsewhere"),
                 "--no-efficiency", "--train", "progress=false"]) == 0
    assert len(list((home.parent / "elsewhere" / "records").glob("*.json"))) == 1


def test_corrupt_checkpoint_is_one_line_naming_the_file_and_force(home, capsys):
    args = build_parser().parse_args(["train", "mlp", *TINY])
    last = home / "checkpoints" / spec_from_args(args).run_id() / "last.pt"
    last.parent.mkdir(parents=True)
    last.write_bytes(b"not a checkpoint")
    assert main(["train", "mlp", *TINY]) == 2
    line = error_of(capsys)
    assert str(last) in line and "--force" in line
    with pytest.raises(CheckpointError):
        main(["train", "mlp", *TINY, "--debug"])
    with pytest.raises(CheckpointError):
        main(["--debug", "train", "mlp", *TINY])
    assert main(["train", "mlp", *TINY, "--force"]) == 0


def test_debug_shows_the_traceback_of_a_setting_error(capsys):
    with pytest.raises(SettingError, match="embed_dimm"):
        main(["train", "stid", "--dataset", "synthetic", "--set", "embed_dimm=1", "--debug"])


def test_wrong_paths_and_broken_records_are_one_line(tmp_path, capsys):
    assert main(["train", "flowdistill", *DATA, "--teacher", str(tmp_path / "nope")]) == 2
    assert str(tmp_path / "nope") in error_of(capsys)
    assert main(["sweep", str(tmp_path / "missing.toml")]) == 2
    assert "missing.toml" in error_of(capsys)
    rec = tmp_path / "rec"
    rec.mkdir()
    (rec / "r.json").write_text('{"run_id": "r", "metrics": {}}')
    assert main(["results", "--records", str(rec)]) == 2
    line = error_of(capsys)
    assert str(rec / "r.json") in line and "model" in line
    (rec / "r.json").write_text("{not json")
    assert main(["results", "--records", str(rec)]) == 2
    assert str(rec / "r.json") in error_of(capsys)
    assert main(["train", "no-such-model", "--dataset", "synthetic"]) == 2
    assert "unknown model" in error_of(capsys)


def test_sweep_toml_keys_are_checked(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('name = "s"\nmodels = ["stid"]\n[hparams.stid]\nembed_dimm = 8\n')
    with pytest.raises(SettingError, match=r"s\.toml \[hparams\.stid\] embed_dimm: unknown key "
                                           r".*did you mean 'embed_dim'"):
        SweepSpec.from_toml(path)
    path.write_text('name = "s"\nmodels = ["stid"]\n[train]\nepochs = "ten"\n')
    with pytest.raises(SettingError, match=r"\[train\] epochs: expected int"):
        SweepSpec.from_toml(path)
    with pytest.raises(SettingError, match=r"sweep t \[protocol\.synthetic\] horizn"):
        SweepSpec(name="t", models=["stid"], protocol={"synthetic": {"horizn": 3}}).expand()


def test_teacher_label_from_model_reuses_the_finished_run(home, tmp_path, monkeypatch, capsys):
    from flowdistill.teacher import model_labels as from_model

    calls = []
    real = from_model.run_experiment
    monkeypatch.setattr(from_model, "run_experiment",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    argv = ["teacher", "label", "--from-model", "mlp", *TINY, "--out", str(tmp_path / "lab")]
    assert main(argv) == 0
    first = capsys.readouterr().out.split("soft labels: ")[1].split()[0]
    assert main(argv) == 0
    assert first in capsys.readouterr().out
    assert len(calls) == 1  # the second call reused the finished run's best.pt
    assert len(list((home / "records").glob("teacher-*.json"))) == 1
    assert main([*argv, "--force"]) == 0
    assert len(calls) == 2


def test_sweep_by_name_or_missing_path(tmp_path, monkeypatch, capsys):
    from benchmark.cli import sweep_file

    monkeypatch.chdir(tmp_path)  # outside the checkout: paper/experiments/... is no file here
    assert sweep_file(Path("paper/experiments/main.toml")).read_text().startswith(
        Path(__file__).parents[1].joinpath("paper/experiments/main.toml").read_text()[:40])
    assert sweep_file(Path("foundation")).name == "foundation.toml"
    mine = tmp_path / "mine.toml"
    mine.write_text('name = "mine"\nmodels = ["mlp"]\ndatasets = ["synthetic"]\n')
    assert sweep_file(mine) == mine
    assert main(["sweep", "no_such_sweep", "--status"]) == 2
    assert "no_such_sweep: no such sweep file" in capsys.readouterr().err

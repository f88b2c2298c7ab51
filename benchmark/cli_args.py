"""Flag helpers shared by the harness CLI and its plugins (leaderboard, teacher, reproduce):
``KEY=VALUE`` parsing, the run flags and their :class:`~benchmark.experiment.RunSpec`, the ad-hoc
runs directory and ``--debug``. A module of its own so that command modules import it, never
:mod:`benchmark.cli` (which imports them)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from .paths import flowdistill_home
from .settings import SettingError
from .trainer import TrainConfig


def parse_assignments(items: list[str] | None, flag: str = "KEY=VALUE") -> dict:
    """``["a=1", "b=[1,2]", "c=gaussian"]`` -> ``{"a": 1, "b": [1, 2], "c": "gaussian"}``.

    Values are JSON where they parse as JSON (numbers, true/false, null, lists), else strings.
    """
    out = {}
    for item in items or []:
        k, sep, v = item.partition("=")
        if not sep or not k.strip():
            raise SettingError(f"{flag} {item!r}: expected KEY=VALUE (e.g. {flag} "
                               f"{_EXAMPLES.get(flag, 'key=1')})")
        try:
            out[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            out[k.strip()] = v
    return out


_EXAMPLES = {"--set": "dropout=0.3", "--protocol": "horizon=9", "--train": "epochs=50",
             "--objective": "gate=batch", "--data-option": "adjacency=gaussian"}


RUNS_HELP = ("user runs directory of ad-hoc runs: records go to DIR/records, checkpoints to "
             "DIR/checkpoints (default $FLOWDISTILL_HOME/runs, else the user data directory, "
             "e.g. ~/.local/share/flowdistill/runs; never the tracked results/records)")


def user_runs_dir() -> Path:
    """Where ad-hoc ``train``, ``predict`` and ``teacher label`` runs go:
    ``$FLOWDISTILL_HOME/runs``, else ``<platformdirs user data dir>/flowdistill/runs``."""
    return flowdistill_home() / "runs"


def adhoc_dirs(args: argparse.Namespace) -> tuple[Path, Path]:
    """(records, checkpoints) directories of an ad-hoc run, most explicit first: ``--records``
    / ``--runs``, then ``--runs-dir``, then ``$FLOWDISTILL_RECORDS`` / ``$FLOWDISTILL_RUNS``,
    then :func:`user_runs_dir`."""
    base = getattr(args, "runs_dir", None)
    out = []
    for flag, env, sub in (("records", "FLOWDISTILL_RECORDS", "records"),
                           ("runs", "FLOWDISTILL_RUNS", "checkpoints")):
        explicit = getattr(args, flag, None)
        if explicit is not None:
            out.append(Path(explicit))
        elif base is not None:
            out.append(Path(base) / sub)
        elif os.environ.get(env):
            out.append(Path(os.environ[env]))
        else:
            out.append(user_runs_dir() / sub)
    return out[0], out[1]


def add_run_arguments(p: argparse.ArgumentParser, model_argument: bool = True) -> None:
    if model_argument:
        p.add_argument("model", help="registered model name (see `flowdistill models`)")
    p.add_argument("--dataset", help="registered dataset id (required; see `flowdistill data "
                   "list`; `synthetic` is generated in-process)")
    p.add_argument("--data-option", action="append", metavar="KEY=VALUE",
                   help="dataset loader option, e.g. adjacency=gaussian")
    p.add_argument("--protocol", action="append", metavar="KEY=VALUE",
                   help="protocol override, e.g. horizon=9")
    p.add_argument("--fraction", type=float, default=1.0, help="training-data fraction")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="model hyperparameter (`flowdistill models -v` lists them)")
    p.add_argument("--recipe", default="paper", choices=["paper", "common"],
                   help="training recipe: the model's own (paper or official code; default) or "
                        "the shared one (see `flowdistill models -v`)")
    p.add_argument("--train", action="append", metavar="KEY=VALUE",
                   help="trainer setting on top of the recipe "
                        f"({', '.join(TrainConfig.__dataclass_fields__)})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--teacher", help="soft-label store directory (distillation models)")
    p.add_argument("--objective", action="append", metavar="KEY=VALUE",
                   help="objective setting, e.g. gate=batch (distillation) or loss_name=huber")
    p.add_argument("--tag", default="")
    p.add_argument("--runs-dir", type=Path, metavar="DIR", help=RUNS_HELP)
    p.add_argument("--records", type=Path, help="record directory (default <runs-dir>/records)")
    p.add_argument("--no-efficiency", action="store_true")
    p.add_argument("--force", action="store_true",
                   help="redo a finished run, discarding its record and checkpoints")


def spec_from_args(args: argparse.Namespace):
    """The :class:`~benchmark.experiment.RunSpec` of ``train``/``predict``/``teacher label``
    flags; unknown keys and mistyped values raise :class:`SettingError`."""
    from .efficiency import EfficiencyConfig
    from .experiment import RunSpec
    from .recipes import train_config_for
    from .settings import check_run_settings

    if not args.dataset:
        raise SettingError("--dataset is required: name a registered dataset "
                           "(`flowdistill data list`), or --dataset synthetic for generated data")
    flags = {"hparams": "--set", "protocol": "--protocol", "train": "--train",
             "objective": "--objective", "dataset_options": "--data-option"}
    given = {"hparams": args.set, "protocol": args.protocol, "train": args.train,
             "objective": args.objective, "dataset_options": args.data_option}
    groups = {g: parse_assignments(given[g], flags[g]) for g in flags}
    if "seed" in groups["train"]:
        raise SettingError("--train seed: set the seed with --seed")
    if "train_fraction" in groups["protocol"]:
        raise SettingError("--protocol train_fraction: set the training fraction with --fraction")
    check_run_settings(args.model, args.dataset, flags, train_skip=("seed",), **groups)
    recipe = getattr(args, "recipe", "paper")
    train = train_config_for(args.model, recipe, {**groups["train"], "seed": args.seed})
    return RunSpec(model=args.model, dataset=args.dataset,
                   dataset_options=groups["dataset_options"], protocol=groups["protocol"],
                   train_fraction=args.fraction, hparams=groups["hparams"], train=train,
                   teacher=args.teacher, objective=groups["objective"],
                   efficiency=None if args.no_efficiency else EfficiencyConfig(), tag=args.tag,
                   recipe=recipe)


def add_debug_flag(parser: argparse.ArgumentParser, top: bool = True) -> None:
    """``--debug`` on ``parser`` and every subcommand below it, so it may come anywhere."""
    parser.add_argument("--debug", action="store_true",
                        default=False if top else argparse.SUPPRESS,
                        help="show the Python traceback of an error")
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                add_debug_flag(sub, top=False)

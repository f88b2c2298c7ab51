"""Command line: ``flowdistill data|models|train|results|...``.

Each subcommand maps its flags onto the dataclass configs of the library; nothing here holds
logic of its own.
"""

from __future__ import annotations

import argparse
import importlib
import json
import shlex
import sys
from pathlib import Path

from .allocator import tune_malloc
from .atomic import atomic_write_text
from .campaign.cli import add_campaign_commands
from .cli_args import (
    add_debug_flag,
    add_run_arguments,
    adhoc_dirs,
    spec_from_args,
)
from .leaderboard import add_leaderboard_commands


# ----------------------------------------------------------------------------- data
def cmd_data(args: argparse.Namespace) -> int:
    from .data import registry

    if args.action == "list":
        for spec in registry.list_datasets():
            print(f"{spec.id:22s} {spec.description}")
        return 0
    ids = args.ids or [s.id for s in registry.list_datasets() if s.files]
    if args.action == "info":
        for i in ids:
            print(json.dumps(registry.dataset_info(i), indent=1, default=str))
        return 0
    if args.action == "verify":
        bad = 0
        for i in ids:
            for row in registry.verify(i):
                name, ok = row[0], row[1]
                print(f"{'OK ' if ok else 'BAD'} {i}/{name}" + ("" if ok else
                      f"  expected {row[2]}  got {row[3]}"))
                bad += not ok
        return 1 if bad else 0
    if args.action == "fetch":
        for i in ids:
            path = registry.fetch(i)
            print(f"{i}: {path}")
        return 0
    raise SystemExit(f"unknown data action {args.action}")


# --------------------------------------------------------------------------- models
def cmd_models(args: argparse.Namespace) -> int:
    from .models import registry

    for name, spec in registry().items():
        tags = f" [{', '.join(spec.tags)}]" if spec.tags else ""
        print(f"{name:24s} {spec.description}{tags}")
        if args.verbose:
            print(f"{'':24s} cite: {spec.citation}")
            print(f"{'':24s} defaults: {spec.defaults}")
            if spec.closed_form:
                print(f"{'':24s} recipe: closed-form fit (no training recipe)")
            elif spec.recipe is not None:
                print(f"{'':24s} recipe: {spec.recipe.summary()}")
                print(f"{'':24s} recipe source: {spec.recipe.source}")
                if spec.recipe.notes:
                    print(f"{'':24s} recipe differs: {spec.recipe.notes}")
    return 0


# ---------------------------------------------------------------------------- train
def cmd_train(args: argparse.Namespace) -> int:
    from .experiment import run_experiment
    from .records import record_path

    spec = spec_from_args(args)
    records, checkpoints = adhoc_dirs(args)
    rec = run_experiment(spec, records_dir=records, runs_dir=checkpoints, force=args.force,
                         command="flowdistill " + " ".join(shlex.quote(a) for a in sys.argv[1:]))
    t = rec.metrics["test"]["overall"]
    print(f"{rec.run_id}: test MAE {t['mae']:.4f}  RMSE {t['rmse']:.4f}  MAPE {t['mape']:.2f}%  "
          f"params {rec.params}")
    print(f"record: {record_path(records, rec.run_id)}")
    return 0


# -------------------------------------------------------------------------- results
def cmd_results(args: argparse.Namespace) -> int:
    from .experiment import default_records_dir
    from .records import aggregate, format_mean_std, load_records, record_sweep, records_frame

    records = load_records(args.records or default_records_dir())
    if args.tag:
        tags = set(args.tag.split(","))
        records = [r for r in records if record_sweep(r) in tags]
    frame = records_frame(records, args.split)
    if args.dataset:
        frame = frame[frame["dataset"] == args.dataset]
    if frame.empty:
        print("no records")
        return 0
    agg = aggregate(frame, metrics=("mae", "rmse", "mape", "mae_all"))
    table = format_mean_std(agg, ("mae", "rmse", "mape", "mae_all"))
    if args.csv:
        atomic_write_text(args.csv, agg.to_csv(index=False))
    md = table.to_markdown(index=False)
    if args.markdown:
        atomic_write_text(args.markdown, md + "\n")
    print(md)
    return 0


# ---------------------------------------------------------------------------- sweep
def sweep_file(spec: Path) -> Path:
    """``spec`` if it is a file; else the suite's own sweep of that name (``main`` or
    ``paper/experiments/main.toml`` from outside a checkout: the TOMLs ship in the wheel)."""
    spec = Path(spec)
    if spec.is_file():
        return spec
    from importlib.resources import as_file, files

    packaged = files("paper") / "experiments" / f"{spec.stem}.toml"
    if spec.suffix in ("", ".toml") and packaged.is_file():
        with as_file(packaged) as p:  # a plain file inside an installed package
            return Path(p)
    raise FileNotFoundError(f"{spec}: no such sweep file, and no sweep {spec.stem!r} ships "
                            "with the suite (see paper/experiments/)")


def cmd_sweep(args: argparse.Namespace) -> int:
    from .sweep import load_sweeps, run_sweep, sweep_status

    path = sweep_file(args.spec)
    specs = load_sweeps(path)  # a file of [[variant]]s: each in turn
    if args.variant:  # a variant's name, or its sweep's (<name>-<variant>)
        chosen = []
        for v in args.variant:
            hit = [s for s in specs if len(specs) > 1 and (s.name == v
                                                           or s.name.endswith(f"-{v}"))]
            if len(hit) != 1:
                have = ", ".join(s.name for s in specs) if len(specs) > 1 else "none"
                raise ValueError(f"{path}: no single variant {v!r}; it has {have}")
            chosen.append(hit[0])
        specs = chosen
    failed = False
    for spec in specs:
        if args.status:
            print(json.dumps(sweep_status(spec, args.records)))
            continue
        res = run_sweep(spec, executor=args.executor, workers=args.workers,
                        records_dir=args.records, runs_dir=args.runs,
                        ray_resources={"num_cpus": args.cpus_per_run,
                                       "num_gpus": args.gpus_per_run})
        print(f"sweep {spec.name}: {res.summary()}")
        failed |= bool(res.failed)
    return 1 if failed else 0


# -------------------------------------------------------------------------- figures
def cmd_figures(args: argparse.Namespace) -> int:
    """Run ``python -m paper.build`` in a child process (nothing imports ``paper/``) in the
    workspace: a checkout runs its own copy, an install the packaged one, and paper.build's
    relative defaults (``runs``) are the workspace's (:mod:`benchmark.paths`)."""
    import importlib.util
    import subprocess

    from .experiment import default_records_dir
    from .paths import source_checkout, workspace_root

    if source_checkout() is None and importlib.util.find_spec("paper") is None:
        raise FileNotFoundError("the paper package is not installed; reinstall flowdistill-bench "
                                "or run from a source checkout")
    root = workspace_root()
    cmd = [sys.executable, "-m", "paper.build",
           "--records", str(Path(args.records or default_records_dir()).resolve()),
           "--out", str(Path(args.out or root / "results").resolve())]
    for flag, value in (("--runs", args.runs), ("--scaling", args.scaling)):
        if value is not None:
            cmd += [flag, str(Path(value).resolve())]
    root.mkdir(parents=True, exist_ok=True)
    return subprocess.run(cmd, cwd=root, check=False).returncode


def add_figures_command(sub) -> None:
    f = sub.add_parser("figures", help="rebuild the paper's tables and figures from run records")
    f.add_argument("--records", type=Path, help="record directory (default $FLOWDISTILL_RECORDS, "
                   "else results/records of the workspace: the checkout, or the flowdistill "
                   "home when installed)")
    f.add_argument("--out", type=Path, help="output root of tables/, figures/ (default "
                   "results/ of the workspace)")
    f.add_argument("--runs", type=Path, help="run directory with test_predictions.npz files "
                   "(default $FLOWDISTILL_RUNS, else runs/ of the workspace)")
    f.add_argument("--scaling", type=Path, help="scaling rows (default <out>/scaling)")
    f.set_defaults(func=cmd_figures)


# Subcommands that live in the harness but outside this module, and modules outside the harness
# with an ``add_commands(subparsers)`` function (imported by name so that benchmark never imports
# a concrete method; a module that is not installed is skipped).
EXTRA_COMMANDS = (add_leaderboard_commands, add_figures_command, add_campaign_commands)
COMMAND_MODULES = ("flowdistill.cli",)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="flowdistill", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("data", help="list, describe, verify or fetch datasets")
    d.add_argument("action", choices=["list", "info", "verify", "fetch"])
    d.add_argument("ids", nargs="*")
    d.set_defaults(func=cmd_data)

    m = sub.add_parser("models", help="list registered models")
    m.add_argument("-v", "--verbose", action="store_true")
    m.set_defaults(func=cmd_models)

    t = sub.add_parser("train", help="train and evaluate one model; writes a run record "
                       "into the user runs directory (see --runs-dir)")
    add_run_arguments(t)
    t.set_defaults(func=cmd_train)

    r = sub.add_parser("results", help="aggregate run records into a table")
    r.add_argument("--records", type=Path)
    r.add_argument("--dataset")
    r.add_argument("--tag", help="only these sweeps (comma-separated sweep names)")
    r.add_argument("--split", default="test", choices=["val", "test"])
    r.add_argument("--csv", type=Path)
    r.add_argument("--markdown", type=Path)
    r.set_defaults(func=cmd_results)

    sw = sub.add_parser("sweep", help="run (or resume) a sweep spec (TOML)")
    sw.add_argument("spec", type=Path, help="sweep TOML file, or the name of one of the suite's "
                    "sweeps (e.g. main: paper/experiments/main.toml, also when installed)")
    sw.add_argument("--executor", default="local", choices=["local", "ray"])
    sw.add_argument("--workers", type=int, default=1, help="local process-pool size")
    sw.add_argument("--cpus-per-run", type=float, default=1)
    sw.add_argument("--gpus-per-run", type=float, default=0)
    sw.add_argument("--records", type=Path)
    sw.add_argument("--runs", type=Path, help="checkpoint directory (default ./runs)")
    sw.add_argument("--status", action="store_true", help="only report progress")
    sw.add_argument("--variant", action="append", help="of a file with [[variant]] sweeps, "
                    "run only this one (repeatable; default: every variant in turn)")
    sw.set_defaults(func=cmd_sweep)

    for extra in EXTRA_COMMANDS:
        extra(sub)
    for name in COMMAND_MODULES:  # plugins: the method's own commands (teacher, reproduce)
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:
                raise
            continue
        module.add_commands(sub)
    add_debug_flag(p)
    return p


def error_line(e: BaseException) -> str:
    """The one-line ``error:`` message of a user mistake (file or key, and the remedy)."""
    from .checkpoints import CheckpointError

    if isinstance(e, KeyError) and len(e.args) == 1 and isinstance(e.args[0], str):
        text = e.args[0]
        if " " not in text:  # a bare key from a mapping lookup
            text = f"missing key {text!r}"
    else:
        text = str(e) or type(e).__name__
    if isinstance(e, OSError) and e.filename is not None and str(e.filename) not in text:
        text = f"{e.filename}: {text}"
    if isinstance(e, CheckpointError):
        text += "; --force discards the run's checkpoints and restarts it"
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return "error: " + " ".join(lines)


SUITE_PACKAGES = ("benchmark", "baselines", "flowdistill")


def is_user_error(e: BaseException) -> bool:
    """A mistake in the command, its files or its data: a bad value or key, a missing or
    unreadable file, or one of the suite's own error classes (CheckpointError, DataError, ...)."""
    own = type(e).__module__.split(".")[0] in SUITE_PACKAGES
    return own or isinstance(e, ValueError | KeyError | OSError)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI. User mistakes print one ``error:`` line and return 2 (``--debug`` re-raises
    them with their traceback); other failures print one line too and return 1."""
    args = build_parser().parse_args(argv)
    tune_malloc()  # before any tensor is allocated; see benchmark.allocator
    try:
        return int(args.func(args) or 0)
    except Exception as e:  # noqa: BLE001 - one line, not a traceback (--debug shows it)
        if args.debug:
            raise
        if is_user_error(e):
            print(error_line(e), file=sys.stderr)
            return 2
        print(f"{error_line(e)} ({type(e).__name__}; --debug shows the traceback)",
              file=sys.stderr)
        return 1





if __name__ == "__main__":
    sys.exit(main())

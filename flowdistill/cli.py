"""``flowdistill teacher ...`` and ``flowdistill reproduce``: the method's own commands, plugged
into the harness CLI through ``benchmark.cli.COMMAND_MODULES``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def cmd_teacher_label(args: argparse.Namespace) -> int:
    from benchmark.cli_args import adhoc_dirs, parse_assignments, spec_from_args

    if args.from_model:
        from dataclasses import replace

        from .teacher.model_labels import label_from_model

        args.model = args.from_model
        spec = spec_from_args(args)
        if args.device is not None:
            if "device" in parse_assignments(args.train, "--train") \
                    and spec.train.device != args.device:
                raise ValueError(f"--device {args.device} contradicts --train "
                                 f"device={spec.train.device}")
            spec.train = replace(spec.train, device=args.device)
        records, checkpoints = adhoc_dirs(args)
        store = label_from_model(spec, label_root=args.out, records_dir=records,
                                 runs_dir=checkpoints, force=args.force)
    else:
        from .teacher.llm_labels import label

        if not args.checkpoint:
            raise ValueError("teacher label needs --from-model NAME or --checkpoint DIR")
        store = label(args.checkpoint, args.dataset, None, backend=args.backend,
                      store_root=args.out, device=args.device or "cpu", overwrite=args.force)
    print(f"soft labels: {store.path}  ({len(store.starts)} windows, "
          f"coverage {store.coverage:.3f})")
    return 0


def cmd_teacher_info(args: argparse.Namespace) -> int:
    from .teacher.label_store import SoftLabelStore

    path = Path(args.path)
    if (path / "meta.json").exists() and (path / "labels.npy").exists():
        print(json.dumps(SoftLabelStore.open(path).describe(), indent=1, default=str))
        return 0
    from .teacher.finetune import info

    print(json.dumps(info(path), indent=1, default=str))
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from .pipeline import reproduce

    reproduce(args.profile, args.out, args.workers, args.only)
    return 0


def add_commands(sub) -> None:
    from benchmark.cli_args import add_run_arguments

    t = sub.add_parser("teacher", help="teacher fine-tuning, soft labels, provenance")
    tsub = t.add_subparsers(dest="teacher_command", required=True)

    lab = tsub.add_parser("label", help="produce soft labels into a versioned store")
    lab.add_argument("--from-model", help="a registered forecaster to train and use as teacher")
    lab.add_argument("--checkpoint", type=Path, help="a fine-tuned LLM teacher checkpoint")
    lab.add_argument("--backend", default="hf", choices=["hf", "vllm"])
    lab.add_argument("--out", type=Path, help="label store root (default cache/labels)")
    lab.add_argument("--device", help="where the teacher runs: cpu (default), cuda, cuda:N or "
                     "auto (cuda when available); hf backend for --checkpoint, the training "
                     "device for --from-model")
    # the forecaster teacher's run options (same flags as `flowdistill train`); its run is
    # reused when an identical one finished in the runs directory. With --checkpoint,
    # --dataset defaults to the teacher's own dataset.
    add_run_arguments(lab, model_argument=False)
    lab.set_defaults(func=cmd_teacher_label)

    inf = tsub.add_parser("info", help="describe a label store or teacher checkpoint")
    inf.add_argument("path")
    inf.set_defaults(func=cmd_teacher_info)

    rep = sub.add_parser("reproduce", help="the whole pipeline: data, teachers, students, "
                         "baselines, tables, figures")
    rep.add_argument("--profile", default="cpu", metavar="NAME|PATH.toml",
                     help="smoke, cpu (default) or paper (paper/experiments/profiles/NAME.toml), "
                     "or a profile file of your own (see docs/reproduce.md)")
    rep.add_argument("--out", type=Path, help="output directory (default: the profile's out "
                     "under the workspace: results/, or runs/reproduce-smoke for smoke, in the "
                     "checkout; installed, under $FLOWDISTILL_HOME, else the user data "
                     "directory)")
    rep.add_argument("--workers", type=int, help="parallel runs in each sweep")
    rep.add_argument("--only", nargs="*", help="run only these steps (e.g. figures sweep)")
    rep.set_defaults(func=cmd_reproduce)

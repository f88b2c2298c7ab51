"""``flowdistill teacher ...`` and ``flowdistill reproduce``: the method's own commands, plugged
into the harness CLI through ``benchmark.cli.COMMAND_MODULES``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def cmd_teacher_label(args: argparse.Namespace) -> int:
    from benchmark.cli_args import adhoc_dirs, parse_assignments, spec_from_args

    llm_only = [flag for flag, value in _llm_label_flags(args).items() if value is not None]
    if args.from_model:
        from dataclasses import replace

        from .teacher.model_labels import label_from_model

        if llm_only:
            raise ValueError(f"{', '.join(llm_only)}: options of an LLM teacher's labelling "
                             f"(--checkpoint DIR); --from-model labels with the trained "
                             f"forecaster's own evaluation batches")
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
        forecaster_only = [f"--{k}" for k in ("set", "train", "objective", "teacher")
                           if getattr(args, k)]
        if forecaster_only:
            raise ValueError(f"{', '.join(forecaster_only)}: options of a forecaster teacher "
                             f"(--from-model NAME); an LLM teacher's labelling takes --dtype, "
                             f"--batch-size, --chunk-windows, --chunk-pairs, --splits, "
                             f"--max-windows, --input-scaler, --protocol and --fraction")
        # --protocol / --fraction: overrides on the labelled dataset's default protocol (a
        # student's protocol); without them the teacher's own protocol on its own dataset
        overrides = parse_assignments(args.protocol, "--protocol")
        if args.fraction != 1.0:
            if overrides.get("train_fraction", args.fraction) != args.fraction:
                raise ValueError(f"--fraction {args.fraction} contradicts --protocol "
                                 f"train_fraction={overrides['train_fraction']}")
            overrides["train_fraction"] = args.fraction
        options = {k: v for k, v in _llm_label_flags(args, names=True).items() if v is not None}
        if "splits" in options:
            options["splits"] = tuple(options["splits"])
        store = label(args.checkpoint, args.dataset, overrides or None, backend=args.backend,
                      store_root=args.out, device=args.device or "cpu", overwrite=args.force,
                      dataset_options=parse_assignments(args.data_option, "--data-option")
                      or None, **options)
    print(f"soft labels: {store.path}  ({len(store.starts)} windows, "
          f"coverage {store.coverage:.3f})")
    return 0


# `teacher label` flags that only an LLM teacher (--checkpoint) takes -> llm_labels.label()
LLM_LABEL_FLAGS = {"--dtype": "dtype", "--batch-size": "batch_size",
                   "--chunk-windows": "chunk_windows", "--chunk-pairs": "chunk_pairs",
                   "--splits": "splits", "--max-windows": "max_windows",
                   "--input-scaler": "input_scaler"}


def _llm_label_flags(args: argparse.Namespace, names: bool = False) -> dict:
    """The LLM-only flags' values (None where not given), keyed by flag or (``names``) by
    label()'s argument."""
    return {(dest if names else flag): getattr(args, dest)
            for flag, dest in LLM_LABEL_FLAGS.items()}


def cmd_teacher_info(args: argparse.Namespace) -> int:
    from .teacher.label_store import SoftLabelStore

    path = Path(args.path)
    if (path / "meta.json").exists() and (path / "labels.npy").exists():
        print(json.dumps(SoftLabelStore.open(path).describe(), indent=1, default=str))
        return 0
    from .teacher.finetune import info

    print(json.dumps(info(path), indent=1, default=str))
    return 0


def _setting(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` of ``--set``: the value as JSON when it parses (numbers, true/false,
    lists, objects), else the string."""
    if "=" not in text:
        raise ValueError(f"--set {text!r}: expected KEY=VALUE (a TeacherFinetuneConfig field)")
    key, value = text.split("=", 1)
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


def cmd_teacher_finetune(args: argparse.Namespace) -> int:
    from benchmark.device import resolve_device

    from .teacher.finetune import (
        TeacherFinetuneConfig,
        announce_resources,
        finetune,
        load_prepared,
    )

    settings = dict(_setting(x) for x in args.set or [])
    for key in ("dataset", "backbone", "init", "tuning", "precision", "steps", "batch_size",
                "device"):
        value = getattr(args, key)
        if value is not None:
            if key in settings and settings[key] != value:
                raise ValueError(f"--{key.replace('_', '-')} {value} contradicts --set "
                                 f"{key}={settings[key]}")
            settings[key] = value
    if args.no_memory_check:
        settings["memory_check"] = False
    settings["output_dir"] = str(args.out)
    cfg = TeacherFinetuneConfig.from_dict(settings)
    if args.estimate_only:
        prepared = load_prepared(cfg.dataset, cfg.protocol, cfg.dataset_options)
        announce_resources(cfg, prepared, resolve_device(cfg.device))
        return 0
    ckpt = finetune(cfg)
    print(f"teacher checkpoint: {ckpt}")
    return 0


def cmd_teacher_evaluate(args: argparse.Namespace) -> int:
    from .teacher.evaluation import evaluate_checkpoint

    for ckpt in args.checkpoints:
        ev = evaluate_checkpoint(ckpt, tuple(args.splits), device=args.device,
                                 batch_size=args.batch_size, progress=not args.quiet,
                                 force=args.force)
        for split in args.splits:
            m = ev["splits"][split]["metrics"]["overall"]
            print(f"{ckpt}: {split}: MAE {m['mae']:.4f}  RMSE {m['rmse']:.4f}  "
                  f"MAPE {m['mape']:.2f} %  ({ev['splits'][split]['pairs']} pairs)")
    return 0


def cmd_teacher_report(args: argparse.Namespace) -> int:
    from benchmark.paths import default_label_root

    from .teacher.report import write_report

    if args.evaluate:
        from .teacher.evaluation import evaluate_checkpoint

        for ckpt in args.checkpoints:
            evaluate_checkpoint(ckpt, ("val", "test"), device=args.device,
                                batch_size=args.batch_size, progress=True)
    roots = args.labels if args.labels is not None else [default_label_root()]
    md, js = write_report(args.checkpoints, args.out, args.name, roots, args.title)
    print(f"teacher report: {md} and {js}")
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
    # an LLM teacher's labelling (--checkpoint only; llm_labels.label() arguments)
    lab.add_argument("--dtype", choices=["float32", "bfloat16"],
                     help="forward passes in float32 (default) or under bf16 (part of the "
                     "store's key when bfloat16)")
    lab.add_argument("--batch-size", type=int, help="prompts per forward pass (hf) or per "
                     "engine request batch (vllm); default the backend's")
    lab.add_argument("--chunk-windows", type=int, help="windows per resumable chunk "
                     "(default 256): an interrupted run resumes after its last whole chunk")
    lab.add_argument("--chunk-pairs", type=int, help="prompts per backend call (default 8192)")
    lab.add_argument("--splits", nargs="+", choices=["train", "train_all", "val", "test"],
                     help="splits whose windows are labelled (default train val test)")
    lab.add_argument("--max-windows", type=int, help="label only the first this many windows "
                     "(smoke runs)")
    lab.add_argument("--input-scaler", choices=["teacher", "target"],
                     help="scale prompts with the teacher's own scaler (default) or the "
                     "labelled dataset's (transfer)")
    # the forecaster teacher's run options (same flags as `flowdistill train`); its run is
    # reused when an identical one finished in the runs directory. With --checkpoint,
    # --dataset defaults to the teacher's own dataset, --protocol / --fraction override the
    # labelled dataset's default protocol (without them: the teacher's own protocol) and
    # --data-option sets its loader options.
    add_run_arguments(lab, model_argument=False)
    lab.set_defaults(func=cmd_teacher_label)

    ft = tsub.add_parser("finetune", help="fine-tune an LLM teacher into a checkpoint "
                         "directory (resumes when it holds an unfinished run)")
    ft.add_argument("--out", type=Path, required=True, help="the checkpoint directory")
    ft.add_argument("--dataset", help="dataset id (default synthetic)")
    ft.add_argument("--backbone", help="tiny, tiny-10m, smollm2-135m, or PATH: a local Hugging "
                    "Face causal-LM directory (config.json, weights, tokenizer), e.g. a 7B "
                    "model; its parameters, memory and time per step are printed before it "
                    "is loaded")
    ft.add_argument("--init", choices=["pretrained", "scratch"],
                    help="the backbone's pretrained weights (default for non-tiny backbones) "
                    "or the same architecture from seeded random weights")
    ft.add_argument("--tuning", choices=["lora", "full"])
    ft.add_argument("--precision", choices=["fp32", "bf16"])
    ft.add_argument("--steps", type=int)
    ft.add_argument("--batch-size", type=int)
    ft.add_argument("--device", help="cpu (default), cuda, cuda:N or auto")
    ft.add_argument("--set", nargs="*", metavar="KEY=VALUE",
                    help="any other TeacherFinetuneConfig field (JSON values: st_encoder=true, "
                    "protocol='{\"train_fraction\": 0.1}')")
    ft.add_argument("--estimate-only", action="store_true",
                    help="print the resource estimate and stop (non-tiny backbones)")
    ft.add_argument("--no-memory-check", action="store_true",
                    help="start even when the memory estimate exceeds the device's")
    ft.set_defaults(func=cmd_teacher_finetune)

    ev = tsub.add_parser("evaluate", help="score checkpoints' kept weights on every (window, "
                         "node) pair of full splits (masked, as students); stored in "
                         "teacher.json")
    ev.add_argument("checkpoints", nargs="+", type=Path)
    ev.add_argument("--splits", nargs="+", default=["val", "test"],
                    choices=["val", "test", "train", "train_all"])
    ev.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    ev.add_argument("--batch-size", type=int, default=64, help="prompts per forward pass")
    ev.add_argument("--force", action="store_true", help="score again splits already stored")
    ev.add_argument("--quiet", action="store_true", help="no progress bars")
    ev.set_defaults(func=cmd_teacher_evaluate)

    rp = tsub.add_parser("report", help="the teacher report table (markdown + json) from "
                         "checkpoints and their label stores")
    rp.add_argument("checkpoints", nargs="+", type=Path)
    rp.add_argument("--out", type=Path, default=Path("results/teachers"),
                    help="output directory (default results/teachers)")
    rp.add_argument("--name", default="teachers", help="file stem (default teachers)")
    rp.add_argument("--title", default="LLM teachers")
    rp.add_argument("--labels", nargs="*", type=Path, help="label store roots searched for "
                    "labelling throughput (default: $FLOWDISTILL_LABELS or cache/labels)")
    rp.add_argument("--evaluate", action="store_true",
                    help="evaluate checkpoints that lack a full-split evaluation first")
    rp.add_argument("--device", default="cpu", help="device of --evaluate")
    rp.add_argument("--batch-size", type=int, default=64, help="batch of --evaluate")
    rp.set_defaults(func=cmd_teacher_report)

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

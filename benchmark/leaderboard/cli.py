"""``flowdistill leaderboard validate|submit|render`` and ``flowdistill predict``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .npzsafe import DEFAULT_MAX_BYTES


def cmd_validate(args: argparse.Namespace) -> int:
    from .validate import validate_submission

    res = validate_submission(args.file, max_bytes=args.max_bytes)
    if args.json:
        print(json.dumps({"ok": True, "dataset": res.target.dataset,
                          "board": res.target.board, "protocol_hash": res.target.protocol_hash,
                          "metrics": res.metrics, "predictions_sha256": res.predictions_sha256,
                          "ignored": sorted(res.ignored), "warnings": res.warnings},
                         indent=1, sort_keys=True))
    else:
        print(f"OK {res.summary_line()}")
        for k in sorted(res.ignored):
            print(f"ignored: claimed field {k!r} (every metric is recomputed)")
        for w in res.warnings:
            print(f"warning: {w}")
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    from .store import submit

    entry, path = submit(args.file, args.root, args.records, max_bytes=args.max_bytes)
    o = entry["metrics"]["test"]["overall"]
    print(f"added {entry['entry_id']} ({path}): MAE {o['mae']:.4f}  RMSE {o['rmse']:.4f}  "
          f"MAPE {o['mape']:.2f}%")
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    from .store import default_root, render

    root = Path(args.root or default_root())
    pages = render(root, args.records)
    print(f"rendered {root / 'README.md'} and the site {root / 'index.html'} "
          f"({len(pages) - 1} pages)")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from ..cli_args import adhoc_dirs, spec_from_args
    from .predict import SubmissionInfo, export_submission

    spec = spec_from_args(args)
    info = SubmissionInfo(contact=args.contact, paper_url=args.paper_url,
                          code_url=args.code_url, hardware=args.hardware)
    records, checkpoints = adhoc_dirs(args)
    res, how = export_submission(spec, args.export_submission, info, checkpoints, records,
                                 force=args.force)
    print(f"{how}; wrote {res.json_path} + {res.npz_path}")
    print(f"valid: {res.summary_line()}")
    return 0


def add_leaderboard_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``leaderboard`` (validate, submit, render) and ``predict`` on the CLI."""
    lb = sub.add_parser("leaderboard", help="validate, submit and render leaderboard entries")
    lsub = lb.add_subparsers(dest="action", required=True)
    for name, func, text in (
            ("validate", cmd_validate, "check a submission and recompute its metrics"),
            ("submit", cmd_submit, "validate and add a submission, then re-render")):
        p = lsub.add_parser(name, help=text)
        p.add_argument("file", type=Path, help="the submission's .json or .npz (siblings)")
        p.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES,
                       help="size limit of the predictions array (default 512 MiB)")
        if name == "validate":
            p.add_argument("--json", action="store_true", help="print the result as JSON")
        else:
            _add_store_args(p)
        p.set_defaults(func=func)
    r = lsub.add_parser("render", help="write results/leaderboard/README.md and the static site "
                                          "(index.html, boards/, pages/)")
    _add_store_args(r)
    r.set_defaults(func=cmd_render)

    from ..cli_args import add_run_arguments

    pr = sub.add_parser("predict", help="train (or reuse) a model and export a leaderboard "
                                        "submission of its test predictions (ad-hoc runs live "
                                        "in the user runs directory, see --runs-dir)")
    add_run_arguments(pr)
    pr.add_argument("--export-submission", type=Path, required=True, metavar="OUT",
                    help="writes OUT.npz and OUT.json")
    pr.add_argument("--runs", type=Path, help="checkpoint directory (default "
                                              "<runs-dir>/checkpoints)")
    pr.add_argument("--contact", help="name or e-mail of the submitter (default: none)")
    pr.add_argument("--paper-url")
    pr.add_argument("--code-url")
    pr.add_argument("--hardware", help="hardware description (default: detected)")
    pr.set_defaults(func=cmd_predict)


def _add_store_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", type=Path, help="leaderboard directory (default "
                                             "results/leaderboard or $FLOWDISTILL_LEADERBOARD)")
    p.add_argument("--records", type=Path, help="run records to include (default "
                                                "results/records)")

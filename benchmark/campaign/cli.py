"""``flowdistill campaign run|status|collect``: the campaign's command line."""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from datetime import datetime
from pathlib import Path

DEFAULT_SPEC = Path("paper") / "experiments" / "campaigns" / "gpu.toml"


def process_start() -> float:
    """When this process started (``time.time()`` scale): a relative deadline counts from
    there, so the interpreter's start and imports are inside it. Now, where unknown."""
    try:
        return min(time.time(), Path(f"/proc/{os.getpid()}").stat().st_ctime)
    except OSError:
        return time.time()


def parse_deadline(text: str, now: float | None = None) -> float:
    """Seconds from ``now`` (``time.time()``) until ``text``: seconds (``540``, ``9m``,
    ``2h``, ``30s``) or an ISO time (``2025-06-01T12:00:00``, local unless it names a zone)."""
    now = time.time() if now is None else now
    t = text.strip()
    units = {"s": 1, "m": 60, "h": 3600}
    error = ValueError(f"--deadline {text!r}: expected seconds from now (540, 9m, 2h) or an ISO "
                       "time (2025-06-01T12:00:00)")
    try:
        seconds = float(t[:-1]) * units[t[-1]] if t and t[-1] in units else float(t)
    except ValueError:
        try:
            return datetime.fromisoformat(t).timestamp() - now
        except ValueError:
            raise error from None
    if not math.isfinite(seconds):
        raise error
    return seconds


def _spec_path(arg: Path | None) -> Path:
    from ..experiment import REPO_ROOT

    return Path(arg) if arg is not None else REPO_ROOT / DEFAULT_SPEC


def _dirs(args: argparse.Namespace) -> tuple[Path, Path]:
    from ..experiment import default_records_dir, default_runs_dir

    return Path(args.records or default_records_dir()), Path(args.runs or default_runs_dir())


def cmd_run(args: argparse.Namespace) -> int:
    start = process_start()  # a relative deadline counts from the command's start
    deadline = None if args.deadline is None else start + parse_deadline(args.deadline, start)
    from .plan import CampaignSpec
    from .runner import CampaignConfig, run_campaign
    from .snapshot import SnapshotConfig

    campaign = CampaignSpec.from_toml(_spec_path(args.spec))
    records, runs = _dirs(args)
    for flag, value in (("--workers", args.workers), ("--threads", args.threads)):
        if value is not None and value < 1:
            raise ValueError(f"{flag} {value}: must be at least 1")
    if args.interval <= 0:
        raise ValueError(f"--interval {args.interval}: must be positive (seconds)")
    cfg = CampaignConfig(
        records_dir=records, runs_dir=runs,
        deadline=deadline,
        margin_s=args.margin, grace_s=args.grace, workers=args.workers, threads=args.threads,
        snapshot_dir=args.snapshot, resume_from=args.resume_from, min_start_s=args.min_start,
        snapshot=SnapshotConfig(interval_s=args.interval,
                                checkpoints=not args.no_snapshot_checkpoints,
                                part_mb=args.snapshot_part_mb, max_mb=args.snapshot_max_mb))
    result = run_campaign(campaign, cfg)
    print(f"campaign {campaign.name}: {result.summary()}")
    for key, err in result.failed.items():
        last = (err.strip().splitlines() or [""])[-1]
        print(f"  failed {key}: {last}")
    return result.exit_code()


def cmd_status(args: argparse.Namespace) -> int:
    from ..locks import lock_held
    from .plan import CampaignSpec, build_queue, campaign_dirs, format_counts, step_counts
    from .report import format_model_rows, model_rows
    from .runner import LOG_DIR
    from .snapshot import read_status

    if args.snapshot is not None:  # what a window saw at its last snapshot
        st = read_status(args.snapshot)
        print(f"snapshot {args.snapshot} (campaign {st.get('campaign')}, window "
              f"{st.get('window')}, {st.get('state')}, updated {st.get('updated')})")
        print(format_counts(st.get("queue") or []))
        for r in st.get("running") or []:
            print(f"  running: {r['key']} ({r['model']}, {r.get('epochs_done') or 0} epochs)")
        return 0
    campaign = CampaignSpec.from_toml(_spec_path(args.spec))
    records, runs = _dirs(args)
    with campaign_dirs(records, runs):
        queue = build_queue(campaign, records)
    running = {j.key for j in queue.jobs
               if j.spec is not None and not j.finished and lock_held(runs, j.key)}
    if args.json:
        print(json.dumps(step_counts(queue, campaign, running), indent=1))
    else:
        print(f"campaign {campaign.name} ({campaign.path}); records {records}")
        print(format_counts(step_counts(queue, campaign, running)))
    if args.models:
        log = runs / LOG_DIR / f"{campaign.name}.jsonl"
        lines = log.read_text().splitlines() if log.exists() else []
        print()
        print(format_model_rows(model_rows(campaign, queue, records, lines)))
    return 0


def cmd_collect(args: argparse.Namespace) -> int:
    from ..paths import default_label_root
    from .snapshot import seed_from_snapshot

    records, runs = _dirs(args)
    got = seed_from_snapshot(args.snapshot, records, runs, default_label_root())
    print(f"{args.snapshot}: {got['records']} new finished record(s) into {records}, "
          f"checkpoints of {len(got['checkpoints'])} run(s) into {runs}, "
          f"{len(got['llm'])} LLM teacher or label folder(s)")
    for p in got["problems"]:
        print(f"  note: {p}")
    return 0


def add_campaign_commands(sub) -> None:
    c = sub.add_parser("campaign", help="work a priority list of sweeps within a deadline "
                       "(resumable across machines), or show its queue")
    actions = c.add_subparsers(dest="action", required=True)
    spec_help = f"campaign TOML (default {DEFAULT_SPEC})"

    r = actions.add_parser("run", help="run the next unfinished runs of the campaign")
    r.add_argument("spec", type=Path, nargs="?", help=spec_help)
    r.add_argument("--deadline", help="stop before this: seconds from now (540, 9m, 2h) or an "
                   "ISO time; running runs are parked at a checkpoint, resumable")
    r.add_argument("--margin", type=float, default=15.0,
                   help="seconds kept free before the deadline (default 15)")
    r.add_argument("--grace", type=float, default=10.0,
                   help="seconds a stopped run gets to exit before SIGKILL (default 10)")
    r.add_argument("--snapshot", type=Path, metavar="DIR",
                   help="write records, checkpoints and status.json here every --interval s")
    r.add_argument("--interval", type=float, default=20.0, help="seconds between snapshots")
    r.add_argument("--resume-from", type=Path, metavar="DIR",
                   help="seed records and checkpoints from an earlier window's snapshot")
    r.add_argument("--no-snapshot-checkpoints", action="store_true",
                   help="snapshot records and status only, not checkpoints (nor LLM "
                   "teachers and their label chunks)")
    r.add_argument("--snapshot-part-mb", type=float, default=15.0,
                   help="largest checkpoint archive (default 15)")
    r.add_argument("--snapshot-max-mb", type=float, default=30.0,
                   help="checkpoint bytes in all (default 30)")
    r.add_argument("--workers", type=int, help="runs at once (default: from the device)")
    r.add_argument("--threads", type=int, help="torch threads per worker")
    r.add_argument("--min-start", type=float, default=30.0,
                   help="seconds a job needs left to start before its model has a timing")
    r.add_argument("--records", type=Path, help="record directory (default results/records)")
    r.add_argument("--runs", type=Path, help="checkpoint directory (default ./runs)")
    r.set_defaults(func=cmd_run)

    s = actions.add_parser("status", help="per step: runs done, running, left")
    s.add_argument("spec", type=Path, nargs="?", help=spec_help)
    s.add_argument("--records", type=Path)
    s.add_argument("--runs", type=Path)
    s.add_argument("--snapshot", type=Path, metavar="DIR",
                   help="show a snapshot's status.json instead")
    s.add_argument("--models", action="store_true",
                   help="also per model: converged, why runs stopped, seconds per run")
    s.add_argument("--json", action="store_true", help="the per-step counts as JSON")
    s.set_defaults(func=cmd_status)

    g = actions.add_parser("collect", help="bring a snapshot's records (and checkpoints) home")
    g.add_argument("snapshot", type=Path, metavar="DIR")
    g.add_argument("--records", type=Path)
    g.add_argument("--runs", type=Path)
    g.set_defaults(func=cmd_collect)

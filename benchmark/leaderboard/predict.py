"""``flowdistill predict MODEL --export-submission OUT``: a valid submission from any registered
model.

The run is described by the same :class:`~benchmark.experiment.RunSpec` as ``flowdistill
train`` (same flags, same run id). If that run finished (its record exists) and its best
checkpoint ``runs/<run_id>/best.pt`` is there, the weights are reused; otherwise the model is
trained with the run's checkpoint directory (an interrupted run resumes) and closed-form models
are fitted. Test predictions come from ``Trainer.predict("test")``, which follows
``prepared.splits.test``, the order the leaderboard expects.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import __version__
from ..atomic import atomic_write_bytes
from ..data.protocol import protocol_hash
from ..device import resolve_device
from ..experiment import (
    RunSpec,
    check_teacher_matches,
    default_records_dir,
    default_runs_dir,
    load_prepared,
    load_trained_model,
    make_objective,
)
from ..models import ModelContext, build_model, count_parameters
from ..records import hardware_info, is_finished
from ..trainer import Trainer
from . import npzsafe
from .schema import check_name
from .validate import ValidationResult, validate_submission


@dataclass
class SubmissionInfo:
    """Free-text metadata the suite cannot know (None: left out of the submission)."""

    contact: str | None = None
    authors: str | None = None
    description: str | None = None
    paper_url: str | None = None
    code_url: str | None = None
    hardware: str | None = None


def _hardware_text(device: str) -> str:
    hw = hardware_info(device)
    chip = hw.get("gpu") or hw.get("processor") or hw.get("machine") or "unknown"
    return f"{device}: {chip}, {hw.get('cpus')} cpus"[:200]


def train_or_reuse(spec: RunSpec, runs_dir: Path | None = None,
                   records_dir: Path | None = None, force: bool = False) -> tuple[Trainer, str]:
    """A trainer whose model holds the run's best weights, and how they were obtained
    (``force``: discard the run's checkpoints and train afresh)."""
    runs_dir = Path(runs_dir or default_runs_dir())
    records_dir = Path(records_dir or default_records_dir())
    prepared = load_prepared(spec)
    objective = make_objective(spec)
    check_teacher_matches(objective.teacher_labels(), spec.dataset, prepared.protocol)
    run_id = spec.run_id()
    ckpt_dir = runs_dir / run_id
    best = ckpt_dir / "best.pt"
    if force:
        for f in ("last.pt", "best.pt"):
            (ckpt_dir / f).unlink(missing_ok=True)
    if best.exists() and is_finished(records_dir, run_id):
        model = load_trained_model(spec, prepared, runs_dir)
        return Trainer(model, prepared, spec.train, objective, ckpt_dir), f"reused {best}"
    model = build_model(spec.model, ModelContext.from_prepared(prepared), spec.hparams)
    trainer = Trainer(model, prepared, spec.train, objective, ckpt_dir)
    trainer.fit()
    return trainer, "fitted" if getattr(model, "closed_form", False) else f"trained ({ckpt_dir})"


def submission_metadata(spec: RunSpec, params: int, info: SubmissionInfo) -> dict:
    """Metadata for a submission of ``spec``'s test predictions."""
    protocol = spec.resolved_protocol()
    device = str(resolve_device(spec.train.device))
    meta = {
        "submission_format": 1, "model": spec.model, "dataset": spec.dataset,
        "dataset_options": dict(spec.dataset_options),
        "protocol": protocol.evaluation_dict(),
        "protocol_hash": protocol_hash(spec.dataset, protocol),
        "suite_version": __version__,
        "parameter_count": int(params), "train_fraction": float(spec.train_fraction),
        "hardware": info.hardware or _hardware_text(device),
        "extra_data": False, "teacher_used": spec.teacher is not None,
    }
    if spec.teacher is not None:
        meta["teacher"] = str(spec.teacher_id())[:200]
    for k in ("contact", "authors", "description", "paper_url", "code_url"):
        if getattr(info, k):
            meta[k] = getattr(info, k)
    return meta


def write_submission(out: str | Path, predictions: np.ndarray, metadata: dict) -> Path:
    """Write ``<out>.npz`` and ``<out>.json`` atomically; returns the json path."""
    import json

    out = Path(out)
    if out.suffix in (".json", ".npz"):
        out = out.with_suffix("")
    check_name(out.name, "export-submission name", out)
    atomic_write_bytes(out.with_suffix(".npz"),
                               npzsafe.predictions_npz_bytes(predictions))
    json_path = out.with_suffix(".json")
    atomic_write_bytes(json_path, (json.dumps(metadata, indent=1, sort_keys=True)
                                           + "\n").encode())
    return json_path


def export_submission(spec: RunSpec, out: str | Path, info: SubmissionInfo | None = None,
                      runs_dir: Path | None = None,
                      records_dir: Path | None = None,
                      force: bool = False) -> tuple[ValidationResult, str]:
    """Train (or reuse) ``spec``'s model, write its test predictions as a submission and
    validate it. Returns (validation result, how the weights were obtained)."""
    trainer, how = train_or_reuse(spec, runs_dir, records_dir, force)
    preds, _ = trainer.predict("test")
    meta = submission_metadata(spec, count_parameters(trainer.model), info or SubmissionInfo())
    json_path = write_submission(out, preds.astype(np.float32, copy=False), meta)
    return validate_submission(json_path), how

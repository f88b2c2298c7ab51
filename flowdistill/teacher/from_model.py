"""Soft labels from any registered forecaster (the "is an LLM needed?" teacher).

The teacher run is an ordinary recorded run (tag ``teacher``) on all of the training data;
its best weights then label every training, validation and test window, and the labels go into a
:class:`~flowdistill.teacher.labels.SoftLabelStore` keyed by the teacher's weights and the
protocol.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

from benchmark.experiment import (
    REPO_ROOT,
    RunSpec,
    default_runs_dir,
    execute,
    load_prepared,
    load_trained_model,
)
from benchmark.records import is_finished

from .labels import SoftLabelStore, labels_from_model, model_label_metadata, version_key

LABEL_SPLITS = ("train_all", "val", "test")


def default_label_root() -> Path:
    """``FLOWDISTILL_LABELS``, else ``<repo>/cache/labels`` (ignored by git)."""
    return Path(os.environ.get("FLOWDISTILL_LABELS", REPO_ROOT / "cache" / "labels"))


def label_from_model(spec: RunSpec, label_root: Path | None = None,
                     records_dir: Path | None = None, runs_dir: Path | None = None,
                     splits: tuple[str, ...] = LABEL_SPLITS,
                     force: bool = False) -> SoftLabelStore:
    """Train (or reuse) the teacher run ``spec`` and store its predictions as soft labels.

    The teacher always sees all of the training data (``spec.train_fraction`` must be 1), so
    one store serves students at every training fraction. A finished identical run (its record
    in ``records_dir``, its best weights in ``runs_dir``) is reused rather than retrained;
    ``force`` retrains it. An existing store for the same teacher weights and protocol is
    reused.
    """
    if spec.train_fraction != 1.0:
        raise ValueError("a teacher is trained on all of the training data (train_fraction=1)")
    spec = replace(spec, tag=spec.tag or "teacher")
    records_dir = Path(records_dir or _records())
    runs_dir = Path(runs_dir or default_runs_dir())
    prepared = load_prepared(spec)
    if is_finished(records_dir, spec.run_id()) and not force:
        try:
            model = load_trained_model(spec, prepared, runs_dir)
        except FileNotFoundError as e:
            raise FileNotFoundError(f"{e} (its record is in {records_dir}); --force retrains "
                                    "the teacher") from e
    else:
        _, trainer = execute(spec, records_dir, runs_dir, prepared=prepared, force=force,
                             command=f"teacher label --from-model {spec.model}")
        model = trainer.model
    labels, starts = labels_from_model(model, prepared, splits)
    meta = model_label_metadata(spec.model, model, prepared, teacher_run_id=spec.run_id(),
                                labelled_splits=list(splits))
    root = Path(label_root or default_label_root())
    existing = root / version_key(meta)
    if existing.exists():
        return SoftLabelStore.open(existing)
    return SoftLabelStore.create(root, labels, starts, None, meta)


def _records() -> Path:
    from benchmark.experiment import default_records_dir

    return default_records_dir()


def resolve_model_teacher(model_name: str, dataset: str, sweep, create: bool = True) -> str | None:
    """Sweep teacher reference ``model:<name>``: a ``<name>`` teacher on ``dataset`` trained with
    the sweep's data options, protocol, recipe and train settings (plus
    ``train_per_model[<name>]``), seed 0, all of the training data."""
    spec = RunSpec(model=model_name, dataset=dataset,
                   dataset_options=sweep.dataset_options.get(dataset, {}),
                   protocol=sweep.protocol.get(dataset, {}), train_fraction=1.0,
                   hparams=sweep.hparams.get(model_name, {}),
                   train=sweep.train_config(model_name, seed=0), tag="teacher",
                   recipe=sweep.recipe)
    if not create:
        if not is_finished(_records(), spec.run_id()):
            return None
        # the store key depends on the trained weights; find the store made from this run
        for meta in sorted(default_label_root().glob("*/meta.json")):
            try:
                md = json.loads(meta.read_text()).get("metadata", {})
                if md.get("teacher_run_id") == spec.run_id():
                    return str(meta.parent)
            except json.JSONDecodeError:
                continue
        return None
    return str(label_from_model(spec).path)


def _register() -> None:
    from benchmark.sweep import register_teacher_resolver

    register_teacher_resolver("model", resolve_model_teacher)


_register()

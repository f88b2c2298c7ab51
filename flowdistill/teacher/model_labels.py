"""Soft labels from any registered forecaster (the "is an LLM needed?" teacher).

The teacher run is an ordinary recorded run (tag ``teacher``) on all of the training data, or on
the most recent fraction of it (``train_fraction``: the data-scarce setting); its best weights
then label every training, validation and test window, and the labels go into a
:class:`~flowdistill.teacher.label_store.SoftLabelStore` keyed by the teacher's weights and the
protocol. A teacher trained on one dataset can label another with the same nodes, channels and
window lengths (transfer): that dataset is then scaled with its own scaler (see
:mod:`flowdistill.teacher.reference`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from benchmark.data.protocol import protocol_hash
from benchmark.experiment import (
    RunSpec,
    default_runs_dir,
    load_prepared,
    load_trained_model,
    run_experiment,
)
from benchmark.paths import default_label_root
from benchmark.records import is_finished

from .label_store import SoftLabelStore, version_key
from .reference import parse_reference, student_fraction

LABEL_SPLITS = ("train_all", "val", "test")


def label_from_model(spec: RunSpec, label_root: Path | None = None,
                     records_dir: Path | None = None, runs_dir: Path | None = None,
                     splits: tuple[str, ...] = LABEL_SPLITS,
                     force: bool = False, target: RunSpec | None = None) -> SoftLabelStore:
    """Train (or reuse) the teacher run ``spec`` and store its predictions as soft labels.

    The teacher sees the most recent ``spec.train_fraction`` of the training data (1: all of it,
    and then one store serves students at every training fraction). A finished identical run
    (its record in ``records_dir``, its best weights in ``runs_dir``) is reused rather than
    retrained; ``force`` retrains it. An existing store for the same teacher weights and
    protocol is reused.

    ``target``: label another dataset instead (transfer): its ``dataset``,
    ``dataset_options``, ``protocol`` and ``train_fraction`` say which windows, and its scaler
    (fitted on the windows that fraction makes visible) scales the teacher's inputs and inverts
    its forecasts. The nodes, channels and window lengths must match the teacher's.
    """
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
        run_experiment(spec, records_dir, runs_dir, prepared=prepared, force=force,
                       command=f"teacher label --from-model {spec.model}")
        model = load_trained_model(spec, prepared, runs_dir)
    extra = {}
    if target is not None:
        labelled = load_prepared(target)
        _check_transfer(prepared, labelled, spec.model)
        extra = {"teacher_dataset_id": spec.dataset,
                 "label_options": _transfer_options(labelled.protocol)}
    else:
        labelled = prepared
    labels, starts = labels_from_model(model, labelled, splits)
    meta = model_label_metadata(spec.model, model, labelled, teacher_run_id=spec.run_id(),
                                labelled_splits=list(splits),
                                teacher_train_fraction=spec.train_fraction, **extra)
    root = Path(label_root or default_label_root())
    existing = root / version_key(meta)
    if existing.exists():
        return SoftLabelStore.open(existing)
    return SoftLabelStore.create(root, labels, starts, None, meta)


def _transfer_options(protocol) -> dict:
    """The store's ``label_options`` for labels of another dataset than the teacher's (the
    labelled data's own scaler, fitted under this training fraction)."""
    return {"input_scaler": "target", "scaler_train_fraction": protocol.train_fraction,
            "scaler_fraction_mode": protocol.fraction_mode}


def _check_transfer(source, target, model_name: str) -> None:
    """A forecaster trained on ``source`` can forecast ``target`` only with the same nodes,
    channels, window lengths and time slots."""
    ps, pt = source.protocol, target.protocol
    checks = {"nodes": (source.num_nodes, target.num_nodes),
              "channels": (list(source.data.channels), list(target.data.channels)),
              "target channels": (list(source.target_channel_idx),
                                  list(target.target_channel_idx)),
              "input_len/horizon": ((ps.input_len, ps.horizon), (pt.input_len, pt.horizon)),
              "steps_per_day": (source.data.steps_per_day, target.data.steps_per_day)}
    bad = [f"{k} {a} vs {b}" for k, (a, b) in checks.items() if a != b]
    if bad:
        raise ValueError(f"a {model_name} teacher trained on {source.dataset_id} cannot label "
                         f"{target.dataset_id}: {'; '.join(bad)}")


def _records() -> Path:
    from benchmark.experiment import default_records_dir

    return default_records_dir()


def resolve_model_teacher(model_name: str, dataset: str, sweep, create: bool = True, *,
                          records_dir: Path | None = None, runs_dir: Path | None = None,
                          label_root: Path | None = None) -> str | None:
    """Sweep teacher reference ``model:<name>[,train_fraction=F][,dataset=ID]``
    (:mod:`flowdistill.teacher.reference`): a ``<name>`` teacher trained with the sweep's data
    options, protocol, recipe and train settings (plus ``train_per_model[<name>]``), seed 0, on
    the most recent ``F`` (default all) of the training data of ``ID`` (default ``dataset``),
    labelling ``dataset``; its record in ``records_dir``, checkpoints in ``runs_dir``, labels in
    ``label_root`` (None: the defaults)."""
    ref = parse_reference(model_name, "model")
    source = ref.source_dataset(dataset)
    spec = RunSpec(model=ref.name, dataset=source,
                   dataset_options=sweep.dataset_options.get(source, {}),
                   protocol=sweep.protocol.get(source, {}), train_fraction=ref.train_fraction,
                   hparams=sweep.hparams.get(ref.name, {}),
                   train=sweep.train_config(ref.name, seed=0), tag="teacher",
                   recipe=sweep.recipe)
    target = None
    if ref.is_transfer(dataset):
        target = replace(spec, dataset=dataset,
                         dataset_options=sweep.dataset_options.get(dataset, {}),
                         protocol=sweep.protocol.get(dataset, {}),
                         train_fraction=student_fraction(sweep, f"teacher model:{model_name}"))
    if not create:
        if not is_finished(Path(records_dir or _records()), spec.run_id()):
            return None
        want = None if target is None else _transfer_options(load_prepared(target).protocol)
        # the store key depends on the trained weights; find the store made from this run
        for meta in sorted(Path(label_root or default_label_root()).glob("*/meta.json")):
            try:
                md = json.loads(meta.read_text()).get("metadata", {})
            except json.JSONDecodeError:
                continue
            if md.get("teacher_run_id") == spec.run_id() \
                    and md.get("dataset", dataset) == dataset \
                    and md.get("label_options") == want:
                return str(meta.parent)
        return None
    return str(label_from_model(spec, label_root=label_root, records_dir=records_dir,
                                runs_dir=runs_dir, target=target).path)


def _register() -> None:
    from benchmark.sweep import register_teacher_resolver

    register_teacher_resolver("model", resolve_model_teacher)


_register()


@torch.no_grad()
def labels_from_model(trainer_or_model, prepared, splits: tuple[str, ...] = ("train",),
                      batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Predictions of a trained forecaster as soft labels (the "is an LLM needed?" teacher).

    Args:
        trainer_or_model: a :class:`~benchmark.trainer.Trainer` (its ``.model`` is used) or a
            forecaster module, already trained.
        prepared: the :class:`~benchmark.data.windows.PreparedData` of the protocol.
        splits: which windows to label (``"train"`` = the visible training windows,
            ``"train_all"`` = every training window, ``"val"``, ``"test"``).

    Returns:
        ``(labels [W, T_out, N, C_out] float32 original units, starts [W] int64)`` in the order
        of the splits' window starts (duplicates across splits removed).
    """
    model = getattr(trainer_or_model, "model", trainer_or_model)
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"expected a Trainer or nn.Module, got {type(trainer_or_model).__name__}")
    starts = np.concatenate([prepared.starts(s) for s in splits]).astype(np.int64)
    _, first = np.unique(starts, return_index=True)
    starts = starts[np.sort(first)]
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    was_training = model.training
    model.eval()
    out = []
    try:
        for i in range(0, len(starts), batch_size):
            batch = prepared.make_batch(starts[i:i + batch_size]).to(device)
            out.append(prepared.inverse_targets(model(batch)).float().cpu().numpy())
    finally:
        model.train(was_training)
    t_out, n, c = prepared.protocol.horizon, prepared.num_nodes, prepared.out_channels
    labels = np.concatenate(out) if out else np.zeros((0, t_out, n, c), np.float32)
    return labels.astype(np.float32, copy=False), starts


def state_dict_hash(model: torch.nn.Module) -> str:
    """sha256 (first 16 hex) of a module's parameters and buffers, in state-dict order."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def model_label_metadata(model_name: str, model: torch.nn.Module, prepared, **extra) -> dict:
    """Store metadata for labels made by :func:`labels_from_model` from a registered model."""
    p = prepared.protocol
    md = {
        "teacher_id": f"forecaster:{model_name}",
        "adapter_hash": state_dict_hash(model),
        "template_hash": None,
        "protocol_hash": protocol_hash(prepared.dataset_id, p),
        "backend": "torch",
        "backend_version": torch.__version__,
        "dataset": prepared.dataset_id,
        "protocol": p.to_dict(),
        "teacher_train_fraction": p.train_fraction,
        "producer": f"{__name__}.labels_from_model",
    }
    md.update(extra)
    return md

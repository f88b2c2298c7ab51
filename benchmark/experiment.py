"""One run, end to end: data -> protocol -> model -> training -> evaluation -> efficiency ->
record."""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from .atomic import atomic_write_bytes
from .data.protocol import Protocol, protocol_hash
from .data.windows import PreparedData, prepare
from .device import resolve_device
from .efficiency import EfficiencyConfig, measure_efficiency
from .locks import run_lock
from .loop import Callback
from .models import ModelContext, build_model, count_parameters, get_spec, resolve_hparams
from .objectives import SupervisedObjective
from .paths import PACKAGE_PARENT, workspace_root
from .recipes import describe_recipe, get_recipe, train_config_for
from .records import (
    RecordExistsError,
    RunRecord,
    git_sha,
    hardware_info,
    is_finished,
    now_iso,
    package_versions,
    record_path,
    write_record,
)
from .trainer import TrainConfig, Trainer, seed_everything

REPO_ROOT = PACKAGE_PARENT  # the source checkout (site-packages when installed; see .paths)


def default_records_dir() -> Path:
    """``$FLOWDISTILL_RECORDS``, else ``<workspace>/results/records`` (:mod:`benchmark.paths`)."""
    return Path(os.environ.get("FLOWDISTILL_RECORDS", workspace_root() / "results" / "records"))


def default_runs_dir() -> Path:
    """``$FLOWDISTILL_RUNS``, else ``<workspace>/runs`` (:mod:`benchmark.paths`)."""
    return Path(os.environ.get("FLOWDISTILL_RUNS", workspace_root() / "runs"))


@dataclass
class RunSpec:
    """A single experiment.

    Attributes:
        model: registered model name.
        dataset: registered dataset id.
        dataset_options: loader options (e.g. ``{"adjacency": "gaussian"}``).
        protocol: overrides of the dataset's default protocol fields.
        train_fraction: share of the training windows the model may see.
        hparams: model hyperparameter overrides (filtered to what the model accepts).
        recipe: "paper" (the model's own training recipe, default) or "common" (one shared
            recipe); see :mod:`benchmark.recipes`. It also sets the ground-truth loss unless
            ``objective`` overrides it.
        train: trainer settings (seed lives here); None: the recipe's
            (:func:`benchmark.recipes.train_config_for`). Given explicitly, it is used as is and
            the record lists where it deviates from the recipe.
        teacher: path of a soft-label store (distillation models only).
        objective: overrides for the model's objective (e.g. ``{"gate": "batch"}``).
        efficiency: efficiency-measurement settings; None skips the measurement.
        tag: free text that becomes part of the run id (e.g. a sweep name).
    """

    model: str
    dataset: str = "synthetic"
    dataset_options: dict = field(default_factory=dict)
    protocol: dict = field(default_factory=dict)
    train_fraction: float = 1.0
    hparams: dict = field(default_factory=dict)
    train: TrainConfig | None = None
    teacher: str | None = None
    objective: dict = field(default_factory=dict)
    efficiency: EfficiencyConfig | None = field(default_factory=EfficiencyConfig)
    tag: str = ""
    recipe: str = "paper"

    def __post_init__(self) -> None:
        if self.train is None:
            self.train = train_config_for(self.model, self.recipe)

    def resolved_protocol(self) -> Protocol:
        from .data.registry import get_dataset_spec

        base = get_dataset_spec(self.dataset).default_protocol
        changes = {k: tuple(v) if isinstance(v, list) else v for k, v in self.protocol.items()}
        return replace(base, train_fraction=self.train_fraction, **changes)

    def identity(self) -> dict:
        """Everything that defines the result (not progress bars or thread counts). User-supplied
        data (``custom``) adds ``dataset_content``: the sha256 of its manifest and files."""
        from .data.registry import dataset_content_hash

        train = self.train.to_dict()
        for k in ("progress", "num_threads", "eval_batch_size"):
            train.pop(k, None)
        ident = {"model": self.model, "dataset": self.dataset,
                 "dataset_options": self.dataset_options,
                 "protocol": self.resolved_protocol().to_dict(),
                 "hparams": resolve_hparams(self.model, self.hparams), "train": train,
                 "teacher": self.teacher_id(), "objective": self.objective,
                 "recipe": self.recipe}
        content = dataset_content_hash(self.dataset, **self.dataset_options)
        if content is not None:  # absent for pinned/generated data: their run ids are unchanged
            ident["dataset_content"] = content
        return ident

    def teacher_id(self) -> str | None:
        """``<version_key>-<first 12 hex of the sha256 over the store's array files>``: the key
        names what made the labels, the digest what they are (editing an array changes it)."""
        if self.teacher is None:
            return None
        store = Path(self.teacher)
        key = store.name
        meta = store / "meta.json"
        if meta.exists():
            try:
                key = json.loads(meta.read_text()).get("version_key", str(self.teacher))
            except json.JSONDecodeError:
                pass
        content = _array_files_hash(store)
        return f"{key}-{content}" if content else key

    def run_id(self) -> str:
        blob = json.dumps(self.identity(), sort_keys=True, default=str)
        h = hashlib.sha256(blob.encode()).hexdigest()[:10]
        frac = f"{self.train_fraction:g}".replace(".", "p")
        parts = [self.dataset, self.model, f"f{frac}", f"s{self.train.seed}", h]
        if self.tag:
            parts.insert(0, self.tag)
        return "-".join(parts)


def _array_files_hash(store: Path) -> str | None:
    """First 12 hex of sha256 over (name, sha256) of every ``*.npy`` file in ``store`` (file
    digests cached in-process by path, size and mtime); None when there are none."""
    from .data.files import sha256_file

    files = sorted(store.glob("*.npy")) if store.is_dir() else []
    if not files:
        return None
    blob = json.dumps([[f.name, sha256_file(f)] for f in files])
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def load_prepared(spec: RunSpec) -> PreparedData:
    from .data.registry import load_dataset

    data = load_dataset(spec.dataset, **spec.dataset_options)
    return prepare(data, spec.resolved_protocol(), dataset_id=spec.dataset)


def make_objective(spec: RunSpec):
    """The model's objective with its recipe's ground-truth loss (``spec.objective`` on top)."""
    mspec = get_spec(spec.model)
    recipe = get_recipe(spec.model, spec.recipe)
    loss = recipe.loss_settings() if recipe is not None else None
    if mspec.objective_factory is not None:
        return mspec.objective_factory(spec.teacher, loss=loss, **spec.objective)
    if spec.teacher is not None:
        raise ValueError(f"model {spec.model!r} does not use a teacher, but one was given")
    base = {} if loss is None else {"loss_name": loss["loss"],
                                    "huber_delta": loss.get("huber_delta", 1.0)}
    return SupervisedObjective(**{**base, **spec.objective})


def check_teacher_matches(teacher, dataset_id: str, protocol: Protocol) -> None:
    """Refuse soft labels made for another dataset or protocol (windows would not line up)."""
    meta = getattr(teacher, "metadata", None)
    if not meta:
        return
    want = protocol_hash(dataset_id, protocol)
    have = meta.get("protocol_hash")
    if have is not None and have != want:
        raise ValueError(f"{getattr(teacher, 'path', 'teacher store')}: soft labels were made for "
                         f"protocol {have} of {meta.get('dataset')!r}, this run uses {want} "
                         f"of {dataset_id!r}")


def run_experiment(spec: RunSpec, records_dir: Path | None = None, runs_dir: Path | None = None,
                   force: bool = False, command: str = "",
                   prepared: PreparedData | None = None,
                   callbacks: Iterable[Callback] = ()) -> RunRecord:
    """Train, evaluate and record one run; resume an interrupted run from its last checkpoint.
    A finished run (its record exists) raises :class:`RecordExistsError` unless ``force``;
    :func:`load_trained_model` rebuilds its model with the best weights.

    ``callbacks`` go to the trainer's loop (:class:`~benchmark.loop.Callback`), after its
    checkpoint layout. An exception a callback raises ends the run where it is: no record is
    written, and the last checkpoint stays for a later resumption (the campaign parks runs so,
    :mod:`benchmark.campaign.worker`).

    The run holds its exclusive lock (:func:`~benchmark.locks.run_lock`) from the check that it
    is unfinished to the creation of its record, so two processes never train one run: the
    second waits, then finds the record and raises :class:`RecordExistsError`.
    """
    records_dir = Path(records_dir or default_records_dir())
    runs_dir = Path(runs_dir or default_runs_dir())
    run_id = spec.run_id()
    with run_lock(runs_dir, run_id):
        if is_finished(records_dir, run_id) and not force:
            raise RecordExistsError(f"{record_path(records_dir, run_id)}: run already finished "
                                    "(use --force to redo it)")
        return _execute_locked(spec, run_id, records_dir, runs_dir, force, command, prepared,
                               callbacks)


def load_trained_model(spec: RunSpec, prepared: PreparedData | None = None,
                       runs_dir: Path | None = None) -> torch.nn.Module:
    """Rebuild a finished run's model with its best weights (closed-form models are refitted)."""
    from .checkpoints import load_checkpoint

    prepared = prepared or load_prepared(spec)
    seed_everything(spec.train.seed, deterministic=False)
    model = build_model(spec.model, ModelContext.from_prepared(prepared), spec.hparams)
    if getattr(model, "closed_form", False):
        model.fit_closed_form(prepared)
        return model
    path = Path(runs_dir or default_runs_dir()) / spec.run_id() / "best.pt"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no best checkpoint for run {spec.run_id()}")
    model.load_state_dict(load_checkpoint(path)["model"])
    return model


def _execute_locked(spec: RunSpec, run_id: str, records_dir: Path, runs_dir: Path, force: bool,
                    command: str, prepared: PreparedData | None,
                    callbacks: Iterable[Callback] = ()) -> RunRecord:
    prepared = prepared or load_prepared(spec)
    protocol = prepared.protocol
    ctx = ModelContext.from_prepared(prepared)
    device = resolve_device(spec.train.device)
    if spec.train.num_threads:
        torch.set_num_threads(spec.train.num_threads)
    # every random operation of the run (model construction included) follows its seed, so a
    # run gives the same result in a fresh process and after other runs in a sweep worker
    seed_everything(spec.train.seed, spec.train.deterministic, device)
    model = build_model(spec.model, ctx, spec.hparams)
    objective = make_objective(spec)
    check_teacher_matches(objective.teacher_labels(), spec.dataset, protocol)
    ckpt_dir = runs_dir / run_id
    if force and ckpt_dir.exists():
        for f in ("last.pt", "best.pt"):
            (ckpt_dir / f).unlink(missing_ok=True)
    trainer = Trainer(model, prepared, spec.train, objective, ckpt_dir, callbacks=callbacks)
    t0 = time.perf_counter()
    fit = trainer.fit()
    wall = time.perf_counter() - t0
    metrics = {"val": trainer.evaluate("val"), "test": trainer.evaluate("test")}

    efficiency: dict = {}
    if spec.efficiency is not None:
        test_starts = prepared.starts("test")
        teacher = objective.teacher_labels()

        def make_batch(b: int):
            return prepared.make_batch(test_starts[:b])

        train_step = None
        if not getattr(model, "closed_form", False):
            train_starts = prepared.starts("train")

            def train_step(batch):  # the trainer's own step on training windows, no update
                b = prepared.make_batch(train_starts[:batch.size], teacher)
                return trainer.train_step(b, update=False)

        efficiency = measure_efficiency(model, make_batch, device, spec.efficiency, train_step)

    fit_info = asdict(fit)
    fit_info["wall_seconds"] = wall
    content = spec.identity().get("dataset_content")
    record = RunRecord(
        run_id=run_id, model=spec.model, dataset=spec.dataset,
        protocol={**protocol.to_dict(), "dataset_options": spec.dataset_options,
                  **({"dataset_content": content} if content else {})},
        protocol_hash=protocol_hash(spec.dataset, protocol),
        seed=spec.train.seed, train_fraction=spec.train_fraction,
        hparams=resolve_hparams(spec.model, spec.hparams), train_config=spec.train.to_dict(),
        objective=objective.describe(),
        recipe=describe_recipe(spec.model, spec.recipe, spec.train, spec.objective),
        metrics=metrics, params=count_parameters(model),
        efficiency=efficiency, fit=fit_info,
        teacher=({"id": spec.teacher_id(), "path": str(spec.teacher)} if spec.teacher else None),
        sweep=spec.tag, command=command, git_sha=git_sha(), packages=package_versions(),
        hardware=hardware_info(str(device)), created=now_iso(),
        status="finished",
    )
    write_record(record, records_dir, force=force)
    return record


def save_test_predictions(spec: RunSpec, runs_dir: Path | None = None,
                          prepared: PreparedData | None = None, dtype: str = "float32") -> Path:
    """Write ``runs/<run_id>/test_predictions.npz`` (``pred``, ``true`` ``[W, T_out, N, C]`` in
    original units, ``starts [W]``) from a finished run's best weights, for figures and
    leaderboard exports. Written atomically."""
    import numpy as np

    prepared = prepared or load_prepared(spec)
    runs_dir = Path(runs_dir or default_runs_dir())
    model = load_trained_model(spec, prepared, runs_dir)
    trainer = Trainer(model, prepared, replace(spec.train, device="cpu", progress=False))
    pred, true = trainer.predict("test")
    out = runs_dir / spec.run_id() / "test_predictions.npz"
    out.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.savez_compressed(buf, pred=pred.astype(dtype), true=true.astype(dtype),
                        starts=prepared.starts("test"))
    atomic_write_bytes(out, buf.getvalue())
    return out

"""Sweep teacher reference ``llm:<name>[,train_fraction=F][,dataset=ID]``: fine-tune the LLM
teacher that a teacher spec file describes, label the sweep's training windows with it, and hand
the store to the students.

``<name>`` is ``paper/experiments/teachers/<name>.toml`` (package data of ``paper``, read with
importlib.resources like the sweeps; a path ending in ``.toml`` names any file)::

    description = "SmolLM2-135M-Instruct, language-pretrained, LoRA"
    [finetune]      # TeacherFinetuneConfig fields, except dataset, output_dir and protocol
    backbone = "smollm2-135m"
    init = "pretrained"
    tuning = "lora"
    steps = 2000
    [label]         # llm_labels.label() keywords: backend, dtype, batch_size, device, ...
    backend = "hf"
    dtype = "bfloat16"

The options (:mod:`flowdistill.teacher.reference`) give the data setting: the teacher is
fine-tuned on the most recent ``F`` of the training period of ``ID`` (default: all of it, of the
sweep's dataset) under the sweep's protocol and loader options for ``ID``. It then labels the
training windows that the sweep's students see (the visible windows of the sweep's largest
training fraction), with its own scaler, or, when ``ID`` is another dataset (transfer), with the
labelled dataset's scaler (one training fraction per sweep).

The checkpoint goes to ``<runs>/llm-teacher/<name>-<ID>-f<F>-<hash of the fine-tuning
config>``: a finished one is reused (so setting C's teacher is setting A's), an unfinished one
resumes, and an edited spec file makes a new one. The labels are resumable chunks
(:mod:`flowdistill.teacher.llm_labels`).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import tomllib
from dataclasses import dataclass, field, fields
from importlib.resources import files
from pathlib import Path

from benchmark.paths import LLM_TEACHER_DIR

from .reference import label_fraction, parse_reference

SPEC_KEYS = {"description", "finetune", "label"}
# the resolver sets these: the teacher's data, its checkpoint and the windows it labels
FINETUNE_SET_HERE = {"dataset", "output_dir", "protocol", "dataset_options"}
LABEL_SET_HERE = {"checkpoint_dir", "dataset_id", "protocol", "splits", "store_root",
                  "dataset_options", "input_scaler", "max_windows", "overwrite"}
# the folder of the runs directory that holds the LLM teachers' checkpoints (campaign snapshots
# carry it: :mod:`benchmark.campaign.llm_carry`)
CHECKPOINT_ROOT = LLM_TEACHER_DIR
# TeacherFinetuneConfig fields that do not change the teacher's weights (not hashed into the
# checkpoint's directory name)
RUN_CONTROL = {"progress", "resume", "num_threads", "device", "eval_every", "save_every",
               "time_budget_s"}


def teachers_dir():
    """``paper/experiments/teachers`` (a Traversable)."""
    return files("paper") / "experiments" / "teachers"


def teacher_names() -> list[str]:
    d = teachers_dir()
    if not d.is_dir():
        return []
    return sorted(p.name.removesuffix(".toml") for p in d.iterdir() if p.name.endswith(".toml"))


@dataclass
class TeacherSpec:
    """A teacher spec file (see the module docstring)."""

    name: str
    source: str
    finetune: dict = field(default_factory=dict)
    label: dict = field(default_factory=dict)
    description: str = ""

    @classmethod
    def load(cls, name: str) -> TeacherSpec:
        if name.endswith(".toml"):
            path, source = Path(name), name
            if not path.is_file():
                raise FileNotFoundError(f"{name}: no such teacher spec file")
            text, stem = path.read_text(), path.stem
        else:
            trav = teachers_dir() / f"{name}.toml"
            source = f"paper/experiments/teachers/{name}.toml"
            if not trav.is_file():
                raise ValueError(f"llm:{name}: no teacher spec {source}; shipped: "
                                 f"{', '.join(teacher_names()) or 'none'}")
            text, stem = trav.read_text(), name
        try:
            d = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"{source}: cannot read teacher spec ({e})") from e
        return cls.from_dict(d, stem, source)

    @classmethod
    def from_dict(cls, d: dict, name: str, source: str) -> TeacherSpec:
        from .finetune import TeacherFinetuneConfig
        from .llm_labels import label

        for key in d:
            if key not in SPEC_KEYS:
                raise ValueError(f"{source} {key}: unknown key; accepted: "
                                 f"{', '.join(sorted(SPEC_KEYS))}")
        ft, lab = d.get("finetune", {}), d.get("label", {})
        for where, table in (("finetune", ft), ("label", lab)):
            if not isinstance(table, dict):
                raise ValueError(f"{source} [{where}]: expected a table")
        allowed = {f.name for f in fields(TeacherFinetuneConfig)} - FINETUNE_SET_HERE
        for key in ft:
            if key not in allowed:
                raise ValueError(f"{source} [finetune].{key}: not a TeacherFinetuneConfig field "
                                 f"a teacher spec sets; accepted: {', '.join(sorted(allowed))}")
        try:
            TeacherFinetuneConfig(**ft)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{source} [finetune]: {e}") from e
        allowed = set(inspect.signature(label).parameters) - LABEL_SET_HERE
        for key in lab:
            if key not in allowed:
                raise ValueError(f"{source} [label].{key}: not a label() argument a teacher spec "
                                 f"sets; accepted: {', '.join(sorted(allowed))}")
        return cls(name=name, source=source, finetune=dict(ft), label=dict(lab),
                   description=str(d.get("description", "")))


def finetune_config(spec: TeacherSpec, dataset: str, train_fraction: float, sweep,
                    runs_dir: Path):
    """The :class:`~flowdistill.teacher.finetune.TeacherFinetuneConfig` of ``spec`` fine-tuned on
    the most recent ``train_fraction`` of ``dataset``'s training data under ``sweep``'s protocol
    and loader options for it; its checkpoint under ``runs_dir/llm-teacher``."""
    from .finetune import TeacherFinetuneConfig

    protocol = dict(sweep.protocol.get(dataset, {}))
    if train_fraction != 1.0:
        protocol["train_fraction"] = train_fraction
    cfg = TeacherFinetuneConfig(dataset=dataset, protocol=protocol,
                                dataset_options=dict(sweep.dataset_options.get(dataset, {})),
                                **spec.finetune)
    ident = {k: v for k, v in cfg.to_dict().items() if k not in RUN_CONTROL | {"output_dir"}}
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()
    cfg.output_dir = str(Path(runs_dir) / CHECKPOINT_ROOT /
                         f"{spec.name}-{dataset}-f{train_fraction:g}-{digest[:10]}")
    return cfg


def _finished(checkpoint: Path, steps: int) -> bool:
    from .finetune import TeacherCheckpointError, read_config

    try:
        meta = read_config(checkpoint)
    except (TeacherCheckpointError, json.JSONDecodeError):
        return False
    return (checkpoint / "weights.safetensors").is_file() and \
        int((meta.get("training") or {}).get("steps") or 0) >= steps


@dataclass
class LLMTeacherPlan:
    """What ``llm:<arg>`` means for one dataset of one sweep: the fine-tuning config and the
    keywords of :func:`~flowdistill.teacher.llm_labels.label`."""

    spec: TeacherSpec
    finetune: object  # TeacherFinetuneConfig
    label: dict


def plan(arg: str, dataset: str, sweep, runs_dir: Path | None = None,
         label_root: Path | None = None) -> LLMTeacherPlan:
    """Read ``llm:<arg>`` for ``dataset`` of ``sweep`` (nothing is trained or loaded)."""
    from benchmark.experiment import default_runs_dir
    from benchmark.paths import default_label_root

    ref = parse_reference(arg, "llm")
    spec = TeacherSpec.load(ref.name)
    source = ref.source_dataset(dataset)
    transfer = ref.is_transfer(dataset)
    cfg = finetune_config(spec, source, ref.train_fraction, sweep,
                          Path(runs_dir or default_runs_dir()))
    fraction = label_fraction(sweep, transfer, f"teacher llm:{arg}")
    protocol = dict(sweep.protocol.get(dataset, {}))
    protocol["train_fraction"] = fraction
    kw = {"backend": "hf", "progress": False, **spec.label,
          "dataset_id": dataset, "protocol": protocol, "splits": ("train",),
          "store_root": Path(label_root or default_label_root()),
          "dataset_options": dict(sweep.dataset_options.get(dataset, {})),
          "input_scaler": "target" if transfer else "teacher"}
    return LLMTeacherPlan(spec, cfg, kw)


def find_store(p: LLMTeacherPlan) -> str | None:
    """The store ``p`` makes, when it exists already (the checkpoint finished and its labels of
    these windows written); None otherwise. Reads metadata only."""
    from .finetune import read_config

    ck = Path(p.finetune.output_dir)
    if not _finished(ck, p.finetune.steps):
        return None
    adapter = read_config(ck)["adapter_hash"]
    kw = p.label
    want = {"teacher_checkpoint": str(ck.resolve()), "adapter_hash": adapter,
            "dataset": kw["dataset_id"], "backend": kw.get("backend", "hf"),
            "dtype": kw.get("dtype", "float32"), "input_scaler": kw["input_scaler"],
            "splits": list(kw["splits"])}
    for meta in sorted(Path(kw["store_root"]).glob("*/meta.json")):
        try:
            md = json.loads(meta.read_text()).get("metadata", {})
        except (OSError, json.JSONDecodeError):
            continue
        if all(md.get(k) == v for k, v in want.items()) and \
                (md.get("protocol") or {}).get("train_fraction") == \
                kw["protocol"]["train_fraction"]:
            return str(meta.parent)
    return None


def make_store(p: LLMTeacherPlan):
    """Fine-tune (or reuse, or resume) the teacher of ``p`` and label its windows (or reuse its
    store); returns the store."""
    from .finetune import finetune
    from .llm_labels import label

    ck = Path(p.finetune.output_dir)
    if not _finished(ck, p.finetune.steps):
        print(f"LLM teacher {p.spec.name}: fine-tuning into {ck}", flush=True)
        finetune(p.finetune)
    kw = dict(p.label)
    return label(ck, **kw)


def resolve_llm_teacher(arg: str, dataset: str, sweep, create: bool = True, *,
                        records_dir: Path | None = None, runs_dir: Path | None = None,
                        label_root: Path | None = None) -> str | None:
    """The ``llm`` teacher resolver of :data:`benchmark.sweep.TEACHER_RESOLVERS` (see the module
    docstring); ``records_dir`` is unused (the teacher's summary is in its checkpoint)."""
    p = plan(arg, dataset, sweep, runs_dir=runs_dir, label_root=label_root)
    if not create:
        return find_store(p)
    return str(make_store(p).path)


def _register() -> None:
    from benchmark.sweep import register_teacher_resolver

    register_teacher_resolver("llm", resolve_llm_teacher)


_register()

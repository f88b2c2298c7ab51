"""Instruction tuning of the LLM teacher and its checkpoints.

Training samples random (window, node) pairs from the visible training windows of a
:class:`~benchmark.data.windows.PreparedData`, builds their prompts
(:mod:`flowdistill.teacher.prompts`) and minimises a regression loss between the head's output
and the scaled targets ``[B, T_out, C_out]`` (Huber, Huber 1964 eq. 7 with threshold ``delta``,
or MAE: :func:`benchmark.losses.regression_loss`), optionally plus ``lm_loss_weight`` times the
next-token cross-entropy on the suffix text, as UrbanGPT adds the LM loss to its regression loss
(Li et al., KDD 2024, Sec. 3.3). The steps run through :class:`benchmark.trainer.Trainer`.

Checkpoint directory (no pickles; tensors in safetensors, ``torch.load(weights_only=True)`` for
the optimiser state):

    teacher.json          config, backbone, template hash, dataset + protocol (+ hash), scaler,
                          shapes, training summary, adapter hash
    tokenizer/            the tokenizer (with the ST tokens)
    base/                 the from-scratch backbone's initial weights and config (tiny only)
    weights.safetensors   the fine-tuned tensors (LoRA, ST embeddings, encoder, head; all LM
                          weights under full tuning), best validation MAE
    resume/               latest weights, optimizer.pt and state.json, for resuming
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from benchmark.atomic import atomic_file, atomic_write_text
from benchmark.checkpoints import atomic_torch_save
from benchmark.data.protocol import Protocol, protocol_hash
from benchmark.data.scaler import Scaler
from benchmark.data.windows import PreparedData
from benchmark.device import check_device_name, device_description, resolve_device, to_cpu
from benchmark.loop import Callback, Checkpoint, LoopState, StepPlan, no_validation
from benchmark.losses import regression_loss
from benchmark.objectives import Objective, StepContext
from benchmark.trainer import TrainConfig, Trainer, deterministic_kernels, seed_everything

from .backends import PromptBatch, PromptSource
from .model import (
    LORA_TARGETS,
    STTeacher,
    backbone_name,
    build_scratch,
    build_tiny,
    is_tiny,
    load_backbone_config,
    load_pretrained,
    prepare_pretrained,
    resolve_init,
)
from .prompts import TEMPLATE_VERSION, PromptBuilder, template_hash
from .tokenizer import add_st_tokens, train_word_tokenizer

FORMAT = "flowdistill-teacher"
FORMAT_VERSION = 1
CONFIG_FILE = "teacher.json"
WEIGHTS_FILE = "weights.safetensors"
PRECISIONS = ("fp32", "bf16")


class TeacherCheckpointError(RuntimeError):
    """A teacher checkpoint is missing a file or does not match the code."""


@dataclass
class TeacherFinetuneConfig:
    """Fine-tuning settings.

    Attributes:
        dataset: dataset id (loaded through ``benchmark.data.registry``) unless a PreparedData
            is handed to :func:`finetune`.
        protocol: protocol overrides (dict of Protocol fields) on the dataset's default.
        dataset_options: loader options.
        backbone: "tiny", "tiny-10m", "smollm2-135m", or a local Hugging Face causal-LM
            directory (config.json + weights) / hub id.
        init: "pretrained" (the backbone's language-pretrained weights) or "scratch" (the same
            architecture, config and tokenizer with random weights seeded by ``seed``); None
            means "scratch" for the tiny backbones (they have no pretrained weights;
            "pretrained" is an error for them) and "pretrained" for the others.
        tuning: "lora" or "full"; None means "full" for the from-scratch backbones (there are no
            pretrained weights to preserve) and "lora" for pretrained ones. LoRA on a scratch
            backbone is refused (it would freeze random weights), except on the tiny backbones,
            which exist to exercise the code paths cheaply.
        precision: "fp32" or "bf16". bf16 runs the LM's forward and backward under
            ``torch.autocast(dtype=bfloat16)``, keeps the ST embeddings, the ST encoder's and
            the head's parameters, the LoRA adapters and (full tuning) the LM's master weights
            in float32, stores a frozen LM (LoRA) in bfloat16, and computes the head in
            float32. Meant for CUDA; runs on the CPU too (slowly).
        st_encoder: replace the ``<ST_HIS>`` embeddings with the ST encoder's outputs.
        encoder_node_embedding: give the ST encoder a learned embedding per node (the teacher
            then only serves datasets with the same nodes).
        encoder_pretrain_epochs, encoder_pretrain_lr: pre-train the ST encoder (with the
            regression head) as a forecaster on all training pairs before instruction tuning,
            as UrbanGPT pre-trains its ST encoder (see :func:`pretrain_encoder`); 0 = off.
        pretrained_lr_scale: learning-rate factor for the pre-trained encoder and head during
            instruction tuning (they start good; the LM around them starts from scratch).
        zero_init_residual: zero-initialise the residual branches' output projections of a
            from-scratch backbone (see :func:`~flowdistill.teacher.model.build_tiny`).
        lora_r, lora_alpha, lora_dropout, lora_targets: peft LoRA settings.
        head_hidden, encoder_hidden: widths of the regression head and the ST encoder.
        steps: optimiser steps; batch_size: prompts per step.
        lr, weight_decay, warmup_steps: AdamW with linear warm-up then cosine decay to 10%.
        loss: "huber" or "mae" on scaled targets; huber_delta: Huber threshold.
        lm_loss_weight: weight of the next-token loss on the suffix text (0 = off).
        grad_clip: max global gradient norm.
        eval_every, eval_pairs: validation MAE (original units) on a fixed random subset of
            ``eval_pairs`` validation (window, node) pairs every ``eval_every`` steps.
        save_every: write the resume checkpoint every this many steps.
        time_budget_s: stop (validated and saved) once the training time passes this many
            seconds; None = no limit. A run-control setting, like ``steps``.
        tokenizer_windows: training windows (all nodes each) whose prompts train the tiny
            tokenizer.
        device: where the teacher trains: "cpu", "cuda", "cuda:N", or "auto" (cuda when
            available). Not part of the run's identity: a run may resume on another device, and
            checkpoints are written device-independent (CPU tensors).
        reuse_prefix: run the shared prefix once per batch (same numbers, fewer FLOPs).
        seed: seeds initialisation and the pair sampling (step k uses ``[seed, k]``).
        num_threads: torch threads (None: leave as is).
        output_dir: the checkpoint directory.
        resume: continue from ``output_dir/resume`` when present.
        progress: tqdm bars.
    """

    dataset: str = "synthetic"
    protocol: dict = field(default_factory=dict)
    dataset_options: dict = field(default_factory=dict)
    backbone: str = "tiny"
    init: str | None = None
    tuning: str | None = None
    precision: str = "fp32"
    st_encoder: bool = False
    encoder_node_embedding: bool = False
    encoder_pretrain_epochs: int = 0
    encoder_pretrain_lr: float = 1e-3
    pretrained_lr_scale: float = 0.1
    zero_init_residual: bool = True
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    lora_targets: tuple[str, ...] = LORA_TARGETS
    head_hidden: int = 128
    encoder_hidden: int = 64
    steps: int = 1000
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 50
    loss: str = "huber"
    huber_delta: float = 1.0
    lm_loss_weight: float = 0.0
    grad_clip: float = 1.0
    eval_every: int = 200
    eval_pairs: int = 1024
    save_every: int = 200
    time_budget_s: float | None = None
    tokenizer_windows: int = 200
    reuse_prefix: bool = True
    seed: int = 0
    num_threads: int | None = None
    device: str = "cpu"
    output_dir: str = "runs/teacher/default"
    resume: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        if self.tuning not in (None, "lora", "full"):
            raise ValueError(f"tuning must be 'lora', 'full' or None, got {self.tuning!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        init = resolve_init(self.backbone, self.init)
        if init == "scratch" and self.tuning == "lora" and not is_tiny(self.backbone):
            raise ValueError(f"init='scratch' with tuning='lora' on {self.backbone!r}: LoRA "
                             f"would freeze random weights; use tuning='full' (the scratch "
                             f"default)")
        if self.loss not in ("huber", "mae"):
            raise ValueError(f"loss must be 'huber' or 'mae', got {self.loss!r}")
        if self.steps < 0 or self.batch_size < 1:
            raise ValueError(f"steps >= 0 and batch_size >= 1 required, got {self.steps}, "
                             f"{self.batch_size}")
        self.lora_targets = tuple(self.lora_targets)
        check_device_name(self.device)

    @property
    def resolved_init(self) -> str:
        return resolve_init(self.backbone, self.init)

    @property
    def resolved_tuning(self) -> str:
        return self.tuning or ("full" if self.resolved_init == "scratch" else "lora")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["lora_targets"] = list(self.lora_targets)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TeacherFinetuneConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown teacher config fields {unknown}")
        return cls(**d)


# ---------------------------------------------------------------- data
def load_prepared(dataset: str, protocol: Protocol | dict | None = None,
                  dataset_options: dict | None = None) -> PreparedData:
    """Load a registered dataset and cut it by ``protocol`` (a Protocol, or overrides on the
    dataset's default protocol)."""
    from benchmark.data.registry import default_protocol, load_dataset
    from benchmark.data.windows import prepare

    data = load_dataset(dataset, **(dataset_options or {}))
    if not isinstance(protocol, Protocol):
        base = default_protocol(dataset, data)
        protocol = base.with_(**{k: tuple(v) if isinstance(v, list) else v
                                 for k, v in (protocol or {}).items()})
    return prepare(data, protocol, dataset)


def sample_pairs(starts: np.ndarray, num_nodes: int, size: int,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``size`` (window start, node) pairs drawn uniformly with replacement."""
    s = starts[rng.integers(0, len(starts), size)]
    n = rng.integers(0, num_nodes, size)
    return s.astype(np.int64), n.astype(np.int64)


def targets_for(prepared_scaled: torch.Tensor, starts: np.ndarray, nodes: np.ndarray,
                input_len: int, horizon: int, target_idx: list[int]) -> torch.Tensor:
    """Scaled targets ``[P, T_out, C_out]`` of the pairs."""
    s = torch.as_tensor(starts)
    iy = s[:, None] + input_len + torch.arange(horizon)[None, :]
    y = prepared_scaled[iy, torch.as_tensor(nodes)[:, None]]  # [P, T_out, C]
    return y[..., target_idx]


# ---------------------------------------------------------------- build / save / load
def build_teacher(cfg: TeacherFinetuneConfig, prepared: PreparedData,
                  builder: PromptBuilder) -> tuple[STTeacher, dict]:
    """A fresh teacher for ``prepared`` (tokenizer, backbone, LoRA) and its backbone info."""
    if is_tiny(cfg.backbone):
        starts = prepared.train_starts
        k = max(1, len(starts) // max(1, cfg.tokenizer_windows))
        tok = train_word_tokenizer(builder.corpus(starts[::k][:cfg.tokenizer_windows]))
        lm = build_tiny(cfg.backbone, len(tok), seed=cfg.seed,
                        zero_residual=cfg.zero_init_residual)
        info = {"kind": "tiny", "name": cfg.backbone, "pretrained": False}
    elif cfg.resolved_init == "scratch":
        config, tok, info = load_backbone_config(cfg.backbone)
        add_st_tokens(tok)
        lm = build_scratch(config, tok, seed=cfg.seed, zero_residual=cfg.zero_init_residual)
        info["pretrained"] = False
    else:
        lm, tok, info = load_pretrained(cfg.backbone)
        prepare_pretrained(lm, tok)
        info["pretrained"] = True
    info["init"] = cfg.resolved_init
    teacher = _wrap(lm, tok, cfg, prepared.in_channels, prepared.target_channel_idx,
                    prepared.protocol, prepared.data.steps_per_day, prepared.num_nodes)
    return teacher, info


def _wrap(lm, tok, cfg: TeacherFinetuneConfig, in_channels: int, target_idx: list[int],
          protocol: Protocol, steps_per_day: int, num_nodes: int) -> STTeacher:
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed + 1)
        teacher = STTeacher(lm, tok, in_channels, target_idx, protocol.input_len,
                            protocol.horizon, steps_per_day, st_encoder=cfg.st_encoder,
                            head_hidden=cfg.head_hidden, encoder_hidden=cfg.encoder_hidden,
                            encoder_nodes=num_nodes if cfg.encoder_node_embedding else 0)
    if cfg.resolved_tuning == "lora":
        teacher.apply_lora(cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_targets)
    else:
        teacher.set_full_tuning()
    return teacher


def tensors_hash(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 (first 16 hex) over names and bytes, in sorted name order."""
    h = hashlib.sha256()
    for k in sorted(tensors):
        h.update(k.encode())
        h.update(tensors[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    with atomic_file(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))


def _load_tensors(path: Path, map_location: str | torch.device = "cpu",
                  ) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, placed on ``map_location`` (default: the CPU)."""
    from safetensors.torch import load_file

    if not path.is_file():
        raise TeacherCheckpointError(f"{path}: missing")
    return load_file(str(path), device=str(map_location))


def _write_json(obj: dict, path: Path) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str))


def _load_state(teacher: STTeacher, tensors: dict[str, torch.Tensor], where: Path) -> None:
    own = teacher.state_dict()
    unknown = sorted(set(tensors) - set(own))
    if unknown:
        raise TeacherCheckpointError(f"{where}: tensors {unknown[:5]} do not belong to the model")
    bad = [k for k, v in tensors.items() if own[k].shape != v.shape]
    if bad:
        raise TeacherCheckpointError(f"{where}: shape mismatch for {bad[:5]}")
    teacher.load_state_dict(tensors, strict=False)


def load_teacher(checkpoint_dir: str | Path, which: str = "best",
                 device: str | torch.device = "cpu") -> tuple[STTeacher, dict]:
    """Rebuild a teacher from a checkpoint directory.

    Args:
        which: "best" (``weights.safetensors``) or "latest" (``resume/weights.safetensors``).
        device: where the teacher is placed ("cpu", "cuda", "cuda:N", "auto" or a
            torch.device); the weights are read on the CPU whatever device trained them.

    Returns:
        ``(teacher in eval mode, the teacher.json dict)``.
    """
    from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM

    d = Path(checkpoint_dir)
    meta = read_config(d)
    cfg = TeacherFinetuneConfig.from_dict(meta["config"])
    tok = AutoTokenizer.from_pretrained(d / "tokenizer")
    if meta["backbone"]["kind"] == "tiny":
        lm = LlamaForCausalLM.from_pretrained(d / "base", dtype=torch.float32)
    elif cfg.resolved_init == "scratch":
        # the architecture (embeddings already grown) from base/; every LM weight was
        # fine-tuned and is in the weights file (checked below)
        lm = build_scratch(AutoConfig.from_pretrained(d / "base"), tok, seed=cfg.seed)
    else:
        lm, _, _ = load_pretrained(cfg.backbone)
        if lm.get_input_embeddings().weight.shape[0] < len(tok):
            lm.resize_token_embeddings(len(tok), mean_resizing=False)
    protocol = Protocol.from_dict(meta["protocol"])
    teacher = _wrap(lm.float(), tok, cfg, meta["in_channels"], meta["target_channel_idx"],
                    protocol, meta["steps_per_day"], meta["num_nodes"])
    path = d / WEIGHTS_FILE if which == "best" else d / "resume" / WEIGHTS_FILE
    tensors = _load_tensors(path, map_location="cpu")
    _load_state(teacher, tensors, path)
    if meta["backbone"]["kind"] != "tiny" and cfg.resolved_init == "scratch":
        missing = sorted(n for n, _ in teacher.named_parameters() if n not in tensors)
        if missing:
            raise TeacherCheckpointError(f"{path}: a scratch teacher's file lacks {missing[:3]} "
                                         f"(its random initial weights are not stored)")
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    return teacher.to(dev).eval(), meta


def read_config(checkpoint_dir: str | Path) -> dict:
    path = Path(checkpoint_dir) / CONFIG_FILE
    if not path.is_file():
        raise TeacherCheckpointError(f"{path}: not a teacher checkpoint (no {CONFIG_FILE})")
    meta = json.loads(path.read_text())
    if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise TeacherCheckpointError(f"{path}: format {meta.get('format')!r} v"
                                     f"{meta.get('format_version')}, expected {FORMAT} v"
                                     f"{FORMAT_VERSION}")
    return meta


def info(checkpoint_dir: str | Path) -> dict:
    """A summary of a checkpoint: backbone, template, dataset, training result, files."""
    d = Path(checkpoint_dir)
    meta = read_config(d)
    files = {str(p.relative_to(d)): p.stat().st_size for p in sorted(d.rglob("*")) if p.is_file()}
    return {
        "checkpoint": str(d),
        "teacher_id": meta["teacher_id"],
        "backbone": meta["backbone"],
        "init": meta.get("init", TeacherFinetuneConfig.from_dict(meta["config"]).resolved_init),
        "tuning": meta["tuning"],
        "precision": meta["config"].get("precision", "fp32"),
        "st_encoder": meta["config"]["st_encoder"],
        "parameters": meta["parameters"],
        "adapter_hash": meta["adapter_hash"],
        "template": {"version": meta["template_version"], "hash": meta["template_hash"]},
        "dataset": meta["dataset_id"],
        "protocol_hash": meta["protocol_hash"],
        "training": meta.get("training", {}),
        "files": files,
    }


def teacher_id(meta_or_cfg: dict) -> str:
    """``llm:<backbone name>@<init>[+stenc]``, e.g. ``llm:smollm2-135m@pretrained+stenc``,
    ``llm:smollm2-135m@scratch+stenc``, ``llm:Llama-2-7b-hf@pretrained`` (a local directory:
    its last path component, :func:`~flowdistill.teacher.model.backbone_name`); ``+stenc``
    when the teacher has the ST encoder.

    The tiny backbones keep the id they had before ``init`` existed (``llm:tiny``,
    ``llm:tiny+stenc``, ``llm:tiny-10m``): they are always scratch, and the id is part of the
    key of every soft-label store made from them and so of the run ids of the students trained
    on those labels."""
    cfg = meta_or_cfg.get("config", meta_or_cfg)
    enc = "+stenc" if cfg.get("st_encoder") else ""
    backbone = cfg["backbone"]
    if is_tiny(backbone):
        return f"llm:{backbone}{enc}"
    return f"llm:{backbone_name(backbone)}@{resolve_init(backbone, cfg.get('init'))}{enc}"


# ---------------------------------------------------------------- training
def _lr_factor(step: int, cfg: TeacherFinetuneConfig) -> float:
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    span = max(1, cfg.steps - cfg.warmup_steps)
    prog = min(1.0, (step - cfg.warmup_steps) / span)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * prog))


def lm_loss(teacher: STTeacher, ids: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy over the suffix text (padding and ST tokens excluded)."""
    logits = teacher.lm_logits(hidden[:, :-1])
    target = ids[:, 1:].clone()
    pad = teacher.tokenizer.pad_token_id
    ignore = torch.isin(target, teacher.st_ids)
    if pad is not None:
        ignore |= target == pad
    target[ignore] = -100
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                           ignore_index=-100)


@torch.no_grad()
def evaluate_mae(teacher: STTeacher, source: PromptSource, starts: np.ndarray,
                 nodes: np.ndarray, prepared: PreparedData, batch_size: int = 64,
                 reuse_prefix: bool = True) -> float:
    """MAE in original units of the teacher's forecasts for the given pairs."""
    from .backends.hf import HFBackend

    was = teacher.training
    y_hat = HFBackend(teacher, batch_size, reuse_prefix).predict(source.batch(starts, nodes))
    teacher.train(was)
    y = targets_for(prepared.raw_targets, starts, nodes, prepared.protocol.input_len,
                    prepared.protocol.horizon, list(range(prepared.out_channels)))
    y_hat = prepared.inverse_targets(torch.from_numpy(y_hat))
    return float((y_hat - y).abs().mean())


def _meta(cfg: TeacherFinetuneConfig, prepared: PreparedData, backbone: dict,
          teacher: STTeacher, weights: dict[str, torch.Tensor], training: dict) -> dict:
    p = prepared.protocol
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "teacher_id": teacher_id(cfg.to_dict()),
        "config": cfg.to_dict(),
        "backbone": backbone,
        "init": cfg.resolved_init,
        "tuning": cfg.resolved_tuning,
        "precision": cfg.precision,
        "template_version": TEMPLATE_VERSION,
        "template_hash": template_hash(),
        "dataset_id": prepared.dataset_id,
        "protocol": p.to_dict(),
        "protocol_hash": protocol_hash(prepared.dataset_id, p),
        "protocol_hash_full": protocol_hash(prepared.dataset_id, p, evaluation_only=False),
        "scaler": prepared.scaler.to_dict(),
        "channels": list(prepared.data.channels),
        "in_channels": prepared.in_channels,
        "target_channel_idx": list(prepared.target_channel_idx),
        "steps_per_day": prepared.data.steps_per_day,
        "num_nodes": prepared.num_nodes,
        "parameters": {"total": teacher.num_parameters(),
                       "trainable": teacher.num_parameters(trainable_only=True)},
        "adapter_hash": tensors_hash(weights),
        "training": training,
    }


def scaler_from_meta(meta: dict) -> Scaler:
    s = meta["scaler"]
    return Scaler(s["kind"], np.asarray(s["shift"], np.float32), np.asarray(s["scale"], np.float32))


def _encoder_forecast(teacher: STTeacher, x: torch.Tensor, tod: torch.Tensor, dow: torch.Tensor,
                      node: torch.Tensor) -> torch.Tensor:
    """The head applied to what the LM returns when its residual branches are zero (exactly the
    tiny backbone at initialisation with ``zero_init_residual``): the final norm of the encoder
    output at ``<ST_HIS>`` and of the ``<ST_PRE>`` embedding at ``<ST_PRE>``."""
    h = teacher.final_norm(teacher.st_encoder(x, tod, dow, node))  # [B, C_in, H]
    h_his = h[:, teacher.target_channel_idx]
    pre = teacher.final_norm(teacher.st_token_embeds[3].detach())
    return teacher.head(h_his, pre.expand_as(h_his))


def _encoder_inputs(prepared: PreparedData, starts: np.ndarray, nodes: np.ndarray,
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ST encoder's inputs for (window start, node) pairs: the scaled history
    ``[P, T_in, C_in]`` and the time of day, day of week and node ``[P]``."""
    p = prepared.protocol
    s, n = torch.as_tensor(starts), torch.as_tensor(nodes)
    x = prepared.scaled[s[:, None] + torch.arange(p.input_len)[None, :], n[:, None]]
    last = s + p.input_len - 1
    return x, prepared.tod[last], prepared.dow[last], n


@torch.no_grad()
def _encoder_mae(teacher: STTeacher, prepared: PreparedData, starts: np.ndarray,
                 nodes: np.ndarray) -> float:
    """MAE (original units) of the pre-trained encoder + head alone, without the LM."""
    p = prepared.protocol
    dev = _device_of(teacher)
    y_hat = _encoder_forecast(teacher, *(t.to(dev) for t in
                                         _encoder_inputs(prepared, starts, nodes))).cpu()
    y = targets_for(prepared.raw_targets, starts, nodes, p.input_len, p.horizon,
                    list(range(prepared.out_channels)))
    return float((prepared.inverse_targets(y_hat) - y).abs().mean())


def _device_of(teacher: STTeacher) -> torch.device:
    return next(teacher.parameters()).device


# ------------------------------------------------- the trainer's pieces for the teacher
@dataclass
class EncoderBatch:
    """(window, node) pairs for the ST encoder: ``x [P, T_in, C_in]``, ``tod, dow, nodes
    [P]``, scaled targets ``y [P, T_out, C_out]``."""

    x: torch.Tensor
    tod: torch.Tensor
    dow: torch.Tensor
    nodes: torch.Tensor
    y: torch.Tensor

    def to(self, device: torch.device) -> EncoderBatch:
        return EncoderBatch(*(t.to(device) for t in (self.x, self.tod, self.dow, self.nodes,
                                                     self.y)))

    def __len__(self) -> int:
        return len(self.nodes)


class EncoderPairs:
    """Pre-training batches: every visible training (window, node) pair once per epoch, in an
    order drawn from the generator ``[seed, 7]``."""

    def __init__(self, prepared: PreparedData, batch_size: int, seed: int) -> None:
        starts, nodes = np.meshgrid(prepared.train_starts, np.arange(prepared.num_nodes),
                                    indexing="ij")
        self.starts, self.nodes = starts.reshape(-1), nodes.reshape(-1)
        self.prepared, self.batch_size = prepared, batch_size
        self.rng = np.random.default_rng([seed, 7])

    def __len__(self) -> int:
        return -(-len(self.starts) // self.batch_size)

    def epoch(self, state: LoopState) -> Iterator[EncoderBatch]:
        p = self.prepared.protocol
        order = self.rng.permutation(len(self.starts))
        for i in range(0, len(order), self.batch_size):
            idx = order[i:i + self.batch_size]
            y = targets_for(self.prepared.scaled, self.starts[idx], self.nodes[idx], p.input_len,
                            p.horizon, self.prepared.target_channel_idx)
            yield EncoderBatch(*_encoder_inputs(self.prepared, self.starts[idx],
                                                self.nodes[idx]), y)

    def state_dict(self) -> dict:
        return {}


class EncoderRegression(Objective):
    """The pre-training loss: the fine-tuning loss (``regression_loss``) of the head reading the
    encoder output (:func:`_encoder_forecast`)."""

    name = "teacher-encoder-pretrain"

    def __init__(self, cfg: TeacherFinetuneConfig) -> None:
        self.cfg = cfg

    def step_loss(self, model: STTeacher, batch: EncoderBatch, ctx: StepContext,
                  ) -> tuple[torch.Tensor, dict[str, float]]:
        y_hat = _encoder_forecast(model, batch.x, batch.tod, batch.dow, batch.nodes)
        return regression_loss(y_hat, batch.y, self.cfg.loss, self.cfg.huber_delta), {}


class EpochLoss(Callback):
    """The mean training loss over the pairs of the last epoch (weighted by batch size)."""

    def __init__(self) -> None:
        self.loss_sum, self.count = 0.0, 0

    def on_epoch_start(self, trainer: Trainer, state: LoopState) -> None:
        self.loss_sum, self.count = 0.0, 0

    def on_step_end(self, trainer: Trainer, state: LoopState, batch, logs: dict) -> None:
        self.loss_sum += logs["loss"] * len(batch)
        self.count += len(batch)

    @property
    def mean(self) -> float:
        return self.loss_sum / max(self.count, 1)


@dataclass
class PairBatch:
    """Prompts of (window, node) pairs: the prompt batch, its padded suffix ids ``[P, L]`` and
    the scaled targets ``y [P, T_out, C_out]``."""

    prompts: PromptBatch
    ids: torch.Tensor
    y: torch.Tensor

    def to(self, device: torch.device) -> PairBatch:
        return PairBatch(self.prompts.to(device), self.ids.to(device), self.y.to(device))

    @property
    def tokens(self) -> int:
        pb = self.prompts
        return sum(len(x) for x in pb.suffix_ids) + len(pb) * len(pb.prefix_ids)


class PromptPairs:
    """Fine-tuning batches without end: step ``k`` prompts ``batch_size`` (window, node) pairs
    drawn from the visible training windows with the generator ``[seed, k]``, so a resumed run
    sees the pairs an uninterrupted one would."""

    def __init__(self, prepared: PreparedData, source: PromptSource, batch_size: int, seed: int,
                 pad_id: int) -> None:
        self.prepared, self.source, self.batch_size = prepared, source, batch_size
        self.seed, self.pad_id = seed, pad_id

    def epoch(self, state: LoopState) -> Iterator[PairBatch]:
        prep, p = self.prepared, self.prepared.protocol
        while True:
            rng = np.random.default_rng([self.seed, state.step])
            s, n = sample_pairs(prep.train_starts, prep.num_nodes, self.batch_size, rng)
            pb = self.source.batch(s, n)
            yield PairBatch(pb, pb.padded(self.pad_id),
                            targets_for(prep.scaled, s, n, p.input_len, p.horizon,
                                        prep.target_channel_idx))

    def state_dict(self) -> dict:
        return {}


class PromptRegression(Objective):
    """The instruction-tuning loss: ``regression_loss`` (Huber or MAE) between the head's
    forecast and the scaled targets, plus ``lm_loss_weight`` times :func:`lm_loss`."""

    name = "teacher-finetune"

    def __init__(self, cfg: TeacherFinetuneConfig, prefix: torch.Tensor) -> None:
        self.cfg, self.prefix = cfg, prefix

    def step_loss(self, model: STTeacher, batch: PairBatch, ctx: StepContext,
                  ) -> tuple[torch.Tensor, dict[str, float]]:
        cfg, pb = self.cfg, batch.prompts
        y_hat, h = model(self.prefix, batch.ids, pb.st_x, pb.tod, pb.dow, pb.nodes,
                         reuse_prefix=cfg.reuse_prefix, return_hidden=True)
        loss = regression_loss(y_hat, batch.y, cfg.loss, cfg.huber_delta)
        if cfg.lm_loss_weight > 0:
            loss = loss + cfg.lm_loss_weight * lm_loss(model, batch.ids, h)
        return loss, {}


class WarmupCosineLR(Callback):
    """Step ``k``'s learning rate: ``lr * lr_scale`` of the group times :func:`_lr_factor`
    (linear warm-up, then cosine decay to 10%); counts the prompt tokens trained on."""

    def __init__(self, cfg: TeacherFinetuneConfig) -> None:
        self.cfg = cfg

    def on_step_start(self, trainer: Trainer, state: LoopState) -> None:
        for g in trainer.optimizer.param_groups:
            g["lr"] = self.cfg.lr * g["lr_scale"] * _lr_factor(state.step, self.cfg)

    def on_step_end(self, trainer: Trainer, state: LoopState, batch: PairBatch,
                    logs: dict) -> None:
        state.extra["tokens"] = state.extra.get("tokens", 0) + batch.tokens


class TeacherCheckpoint(Checkpoint):
    """The teacher's checkpoint layout (module docstring): ``resume/`` (the latest trainable
    tensors, ``optimizer.pt``, ``state.json``), ``weights.safetensors`` (the best validation
    MAE; the latest weights when there is no validation) and ``teacher.json``. The loop state
    is stored under state.json's keys (``step``, ``best_val_mae``, ``best_step``, ``history``,
    ``train_seconds``, and the extras ``tokens``, ``devices``, ``encoder_pretrain``), so
    earlier checkpoints resume as before.

    Args:
        resume: read ``resume/`` (the weights are already in the model: :func:`load_teacher`).
        validated: the run has a validation subset.
    """

    def __init__(self, out: Path, cfg: TeacherFinetuneConfig, prepared: PreparedData,
                 backbone: dict, resume: bool, validated: bool) -> None:
        self.out, self.resume_dir = out, out / "resume"
        self.cfg, self.prepared, self.backbone = cfg, prepared, backbone
        self.resume, self.validated = resume, validated

    def snapshot(self, model: STTeacher) -> dict[str, torch.Tensor]:
        return model.trainable_state_dict()

    def load(self, trainer: Trainer) -> LoopState | None:
        if not self.resume:
            return None
        # saved on the CPU; load_state_dict moves the state to the parameters' device
        trainer.optimizer.load_state_dict(torch.load(self.resume_dir / "optimizer.pt",
                                                     weights_only=True, map_location="cpu"))
        s = json.loads((self.resume_dir / "state.json").read_text())
        return LoopState(
            step=s["step"], history=s["history"], train_seconds=s["train_seconds"],
            best_val=math.inf if s["best_val_mae"] is None else s["best_val_mae"],
            best_at=-1 if s["best_step"] is None else s["best_step"],
            extra={k: s[k] for k in ("tokens", "devices", "encoder_pretrain") if k in s})

    def on_fit_start(self, trainer: Trainer, state: LoopState) -> None:
        used = {**device_description(trainer.device), "from_step": state.step}
        devices = state.extra.setdefault("devices", [])
        if not devices or devices[-1]["device"] != used["device"] \
                or devices[-1]["name"] != used["name"]:
            devices.append(used)
        if state.best_val == math.inf:  # nothing validated yet: the weights so far count
            state.best_state, state.best_unsaved = self.snapshot(trainer.model), True
        if not self.resume:
            self.save(trainer, state)
            state.best_unsaved = False

    def state_json(self, state: LoopState) -> dict:
        return {"step": state.step,
                "best_val_mae": None if state.best_val == math.inf else state.best_val,
                "best_step": None if state.best_at < 0 else state.best_at,
                "history": state.history, "train_seconds": state.train_seconds, **state.extra}

    def save(self, trainer: Trainer, state: LoopState) -> None:
        self.resume_dir.mkdir(parents=True, exist_ok=True)
        latest = self.snapshot(trainer.model)
        _save_tensors(latest, self.resume_dir / WEIGHTS_FILE)
        atomic_torch_save(to_cpu(trainer.optimizer.state_dict()), self.resume_dir / "optimizer.pt")
        summary = self.state_json(state)
        _write_json(summary, self.resume_dir / "state.json")
        best = self.out / WEIGHTS_FILE
        if not self.validated:
            _save_tensors(latest, best)
        elif state.best_unsaved or not best.is_file():
            _save_tensors(latest if state.best_state is None else state.best_state, best)
        _write_json(_meta(self.cfg, self.prepared, self.backbone, trainer.model,
                          _load_tensors(best), _training_summary(summary)),
                    self.out / CONFIG_FILE)


def _loop_config(cfg: TeacherFinetuneConfig, **changes) -> TrainConfig:
    """The trainer settings of a teacher loop (no early stopping; the teacher keeps torch's
    default kernels on CUDA, as it always has)."""
    return TrainConfig(**{"epochs": 1, "batch_size": cfg.batch_size, "lr": cfg.lr,
                          "weight_decay": cfg.weight_decay, "grad_clip": cfg.grad_clip or None,
                          "patience": None, "seed": cfg.seed, "deterministic": False,
                          "time_budget_s": cfg.time_budget_s, "num_threads": cfg.num_threads,
                          "device": cfg.device, "progress": cfg.progress, **changes})


def pretrain_encoder(teacher: STTeacher, prepared: PreparedData, cfg: TeacherFinetuneConfig,
                     batch_size: int = 512) -> dict:
    """Pre-train the ST encoder and the regression head as a plain forecaster.

    UrbanGPT pre-trains its spatio-temporal encoder on the forecasting task and then plugs it
    into the LLM (Li et al., KDD 2024, Sec. 3.2; the released ``pretrain_stencoder.pth``). Here
    the encoder and the teacher's head are trained (Adam, no clipping, through
    :class:`benchmark.trainer.Trainer`) on every visible training (window, node) pair for
    ``cfg.encoder_pretrain_epochs`` epochs with the fine-tuning loss, the head reading the final
    norm of the encoder output (see :func:`_encoder_forecast`); instruction tuning then starts
    from those weights, and with a zero-initialised tiny backbone its first forecasts are
    exactly the pre-trained encoder's. Returns ``{"epochs", "train_loss"}`` (the last epoch's
    mean loss).
    """
    params = list(teacher.st_encoder.parameters()) + list(teacher.head.parameters())
    epoch_loss = EpochLoss()
    config = _loop_config(cfg, epochs=cfg.encoder_pretrain_epochs, batch_size=batch_size,
                          lr=cfg.encoder_pretrain_lr, grad_clip=None, weight_decay=0.0,
                          time_budget_s=None)
    Trainer(teacher, prepared, config, EncoderRegression(cfg),
            batches=EncoderPairs(prepared, batch_size, cfg.seed), validate=no_validation,
            optimizer=torch.optim.Adam(params, lr=cfg.encoder_pretrain_lr),
            callbacks=[epoch_loss], restore_best=False, name="ST encoder pretrain").fit()
    return {"epochs": cfg.encoder_pretrain_epochs, "train_loss": epoch_loss.mean}


def finetune(config: TeacherFinetuneConfig, prepared: PreparedData | None = None) -> Path:
    """Fine-tune a teacher; returns the checkpoint directory (``config.output_dir``).

    The steps run through :class:`benchmark.trainer.Trainer` (a step-based loop: ``steps``
    optimiser steps, validation every ``eval_every``, a checkpoint every ``save_every``).
    Resumes from ``output_dir/resume`` when ``config.resume`` and it exists (same config
    required, except the run-control settings and ``device``). The teacher trains on
    ``config.device``; checkpoints hold CPU tensors only. The final ``weights.safetensors``
    holds the weights with the best validation MAE on the evaluation subset (the last ones when
    there is no validation split).
    Deterministic kernels are on throughout (:func:`benchmark.trainer.deterministic_kernels`),
    so the same config gives the same weights bitwise on the same machine kind.
    """
    with deterministic_kernels():
        return _finetune(config, prepared)


def _finetune(config: TeacherFinetuneConfig, prepared: PreparedData | None) -> Path:
    cfg = config
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    dev = resolve_device(cfg.device)
    if prepared is None:
        prepared = load_prepared(cfg.dataset, cfg.protocol, cfg.dataset_options)
    else:
        cfg.dataset = prepared.dataset_id
    out = Path(cfg.output_dir)
    builder = PromptBuilder.from_prepared(prepared)

    resuming = cfg.resume and (out / "resume" / "state.json").is_file()
    initial = None
    if resuming:
        meta = read_config(out)
        # through the config class: settings added since the checkpoint take their defaults
        saved = TeacherFinetuneConfig.from_dict(meta["config"]).to_dict()
        now = cfg.to_dict()
        diff = sorted(k for k in now if k not in ("steps", "progress", "resume", "num_threads",
                                                  "output_dir", "eval_every", "save_every",
                                                  "device", "time_budget_s")
                      and saved.get(k) != now[k])
        if diff:
            raise TeacherCheckpointError(f"{out}: cannot resume with changed settings {diff}")
        teacher, _ = load_teacher(out, which="latest", device=dev)
        backbone = meta["backbone"]
    else:
        seed_everything(cfg.seed, deterministic=False)
        teacher, backbone = build_teacher(cfg, prepared, builder)
        out.mkdir(parents=True, exist_ok=True)
        teacher.tokenizer.save_pretrained(out / "tokenizer")
        if backbone["kind"] == "tiny":
            base = teacher.base_lm
            if teacher.tuning == "lora":
                base = teacher.merged_lm()  # identical weights: LoRA B starts at zero
            base.save_pretrained(out / "base", safe_serialization=True)
        elif cfg.resolved_init == "scratch":  # the architecture only: all weights are tuned
            teacher.base_lm.config.save_pretrained(out / "base")
        initial = LoopState(extra={"tokens": 0})
        teacher.to(dev)
        if cfg.encoder_pretrain_epochs > 0:
            if teacher.st_encoder is None:
                raise ValueError("encoder_pretrain_epochs > 0 needs st_encoder=True")
            t_pre = time.time()
            initial.extra["encoder_pretrain"] = pretrain_encoder(teacher, prepared, cfg)
            initial.extra["encoder_pretrain"]["seconds"] = round(time.time() - t_pre, 1)
    teacher.train()
    source = PromptSource(builder, teacher.tokenizer, prepared.scaled, prepared.tod,
                          prepared.dow, with_series=teacher.st_encoder is not None)
    params = [q for q in teacher.parameters() if q.requires_grad]
    pre_ids = set()
    if cfg.encoder_pretrain_epochs > 0 and teacher.st_encoder is not None:
        pre_ids = {id(q) for m in (teacher.st_encoder, teacher.head) for q in m.parameters()}
    groups = [{"params": [q for q in params if id(q) not in pre_ids], "lr_scale": 1.0}]
    if pre_ids:
        groups.append({"params": [q for q in params if id(q) in pre_ids],
                       "lr_scale": cfg.pretrained_lr_scale})
    opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)

    val_starts = prepared.starts("val")
    eval_rng = np.random.default_rng([cfg.seed, 10**6])
    ev = (sample_pairs(val_starts, prepared.num_nodes, cfg.eval_pairs, eval_rng)
          if len(val_starts) and cfg.eval_pairs > 0 else None)

    def validate(trainer: Trainer) -> float | None:
        return None if ev is None else evaluate_mae(teacher, source, ev[0], ev[1], prepared,
                                                    reuse_prefix=cfg.reuse_prefix)

    if initial is not None and ev is not None and cfg.encoder_pretrain_epochs > 0:
        # the pre-trained encoder inside the untrained LM is the run's first validated state
        pre = initial.extra["encoder_pretrain"]
        pre["val_mae_encoder_only"] = _encoder_mae(teacher, prepared, ev[0], ev[1])
        pre["val_mae_teacher"] = mae = validate(None)
        initial.history.append({"step": 0, "train_loss": None, "val_mae": mae})
        initial.best_val, initial.best_at = mae, 0
        initial.best_state, initial.best_unsaved = teacher.trainable_state_dict(), True
    prefix = torch.as_tensor(source.prefix_ids, dtype=torch.long, device=dev)
    Trainer(teacher, prepared, _loop_config(cfg), PromptRegression(cfg, prefix),
            batches=PromptPairs(prepared, source, cfg.batch_size, cfg.seed,
                                teacher.tokenizer.pad_token_id or 0),
            validate=validate, optimizer=opt,
            checkpoint=TeacherCheckpoint(out, cfg, prepared, backbone, resuming, ev is not None),
            callbacks=[WarmupCosineLR(cfg)], plan=StepPlan(cfg.steps, cfg.eval_every,
                                                           cfg.save_every),
            restore_best=False, name="teacher finetune").fit(initial)
    return out


def _training_summary(state: dict) -> dict:
    secs = state.get("train_seconds", 0.0)
    devices = state.get("devices") or []
    return {"steps": state["step"], "best_val_mae": state["best_val_mae"],
            "device": devices[-1]["device"] if devices else None,
            "device_name": devices[-1]["name"] if devices else None,
            "devices": devices,
            "best_step": state["best_step"], "train_seconds": round(secs, 1),
            "encoder_pretrain": state.get("encoder_pretrain"),
            "tokens_per_second": round(state["tokens"] / secs, 1) if secs > 0 else None,
            "history": state["history"][-50:]}


def remove_resume_state(checkpoint_dir: str | Path) -> None:
    """Drop ``resume/`` (optimizer state) once a run is final."""
    shutil.rmtree(Path(checkpoint_dir) / "resume", ignore_errors=True)

"""The teacher's checkpoint directory: build a fresh teacher, write and read its files.

Layout (no pickles; tensors in safetensors, ``torch.load(weights_only=True)`` for the optimiser
state):

    teacher.json          config, backbone, init, tuning, precision, template hash, dataset +
                          protocol (+ hash), scaler, shapes, parameter counts, adapter hash,
                          training summary, and (after training) ``evaluation``: the selected
                          weights' masked metrics on the full validation and test splits
                          (:mod:`flowdistill.teacher.evaluation`)
    tokenizer/            the tokenizer (with the ST tokens)
    base/                 tiny backbones: the initial weights and config; other scratch
                          backbones: the config only (every LM weight is fine-tuned)
    weights.safetensors   the fine-tuned tensors (LoRA, ST embeddings, encoder, head; all LM
                          weights under full tuning), best validation MAE
    resume/               latest weights, optimizer.pt and state.json, for resuming
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import torch

from benchmark.atomic import atomic_file, atomic_write_text
from benchmark.data.protocol import Protocol, protocol_hash
from benchmark.data.scaler import Scaler
from benchmark.data.windows import PreparedData
from benchmark.device import resolve_device

from .config import TeacherFinetuneConfig, teacher_id
from .model import (
    STTeacher,
    build_scratch,
    build_tiny,
    is_tiny,
    load_backbone_config,
    load_pretrained,
    prepare_pretrained,
)
from .prompts import TEMPLATE_VERSION, PromptBuilder, template_hash
from .tokenizer import add_st_tokens, train_word_tokenizer

FORMAT = "flowdistill-teacher"
FORMAT_VERSION = 1
CONFIG_FILE = "teacher.json"
WEIGHTS_FILE = "weights.safetensors"


class TeacherCheckpointError(RuntimeError):
    """A teacher checkpoint is missing a file or does not match the code."""


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


def save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    with atomic_file(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))


def load_tensors(path: Path, map_location: str | torch.device = "cpu",
                  ) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, placed on ``map_location`` (default: the CPU)."""
    from safetensors.torch import load_file

    if not path.is_file():
        raise TeacherCheckpointError(f"{path}: missing")
    return load_file(str(path), device=str(map_location))


def write_json(obj: dict, path: Path) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str))


def load_state(teacher: STTeacher, tensors: dict[str, torch.Tensor], where: Path) -> None:
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
    tensors = load_tensors(path, map_location="cpu")
    load_state(teacher, tensors, path)
    teacher.set_precision(cfg.precision)
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


def _evaluation_tag(meta: dict) -> dict:
    """What an evaluation is about: the kept weights and the data they were scored on."""
    return {"adapter_hash": meta["adapter_hash"], "dataset_id": meta["dataset_id"],
            "protocol_hash": meta["protocol_hash_full"]}


def stored_evaluation(checkpoint_dir: str | Path, meta: dict) -> dict | None:
    """teacher.json's ``evaluation`` when it scored the weights and data ``meta`` (a
    teacher.json dict) describes; None when there is none, or it is about other weights or
    data (an earlier state of the run)."""
    path = Path(checkpoint_dir) / CONFIG_FILE
    if not path.is_file():
        return None
    ev = json.loads(path.read_text()).get("evaluation")
    if not ev or any(ev.get(k) != v for k, v in _evaluation_tag(meta).items()):
        return None
    return ev


def record_evaluation(checkpoint_dir: str | Path, result: dict) -> dict:
    """Store a full-split evaluation of the kept weights
    (:func:`~flowdistill.teacher.evaluation.evaluate_splits`) in teacher.json as
    ``evaluation``, tagged with the weights' adapter hash, the dataset and the protocol hash, and
    merged with an earlier evaluation of the same (other splits). Returns what was stored."""
    d = Path(checkpoint_dir)
    meta = read_config(d)
    kept = stored_evaluation(d, meta) or {"splits": {}}
    ev = {**result, "splits": {**kept["splits"], **result["splits"]}, **_evaluation_tag(meta),
          "weights": WEIGHTS_FILE}
    meta["evaluation"] = ev
    write_json(meta, d / CONFIG_FILE)
    return ev


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
        "evaluation": meta.get("evaluation"),
        "files": files,
    }


def checkpoint_meta(cfg: TeacherFinetuneConfig, prepared: PreparedData, backbone: dict,
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


def remove_resume_state(checkpoint_dir: str | Path) -> None:
    """Drop ``resume/`` (optimizer state) once a run is final."""
    shutil.rmtree(Path(checkpoint_dir) / "resume", ignore_errors=True)

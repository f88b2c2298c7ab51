"""Instruction tuning of the LLM teacher.

Training samples random (window, node) pairs from the visible training windows of a
:class:`~benchmark.data.windows.PreparedData`, builds their prompts
(:mod:`flowdistill.teacher.prompts`) and minimises a regression loss between the head's output
and the scaled targets ``[B, T_out, C_out]`` (Huber, Huber 1964 eq. 7 with threshold ``delta``,
or MAE: :func:`benchmark.losses.regression_loss`), optionally plus ``lm_loss_weight`` times the
next-token cross-entropy on the suffix text, as UrbanGPT adds the LM loss to its regression loss
(Li et al., KDD 2024, Sec. 3.3). The steps run through :class:`benchmark.trainer.Trainer`; the
checkpoint directory is described in :mod:`flowdistill.teacher.checkpoint`. The weights are
selected on a fixed random subset of validation pairs (cheap, every ``eval_every`` steps); the
selected weights are then scored on the full validation and test splits with the students'
masked metrics (:mod:`flowdistill.teacher.evaluation`).

The settings live in :mod:`flowdistill.teacher.config`; this module re-exports the names other
modules and scripts import from it (``TeacherFinetuneConfig``, ``load_teacher``,
``load_prepared``, ...).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from benchmark.checkpoints import atomic_torch_save
from benchmark.data.windows import PreparedData
from benchmark.device import device_description, resolve_device, to_cpu
from benchmark.loop import Callback, Checkpoint, LoopState, StepPlan, no_validation
from benchmark.losses import regression_loss
from benchmark.objectives import Objective, StepContext
from benchmark.trainer import TrainConfig, Trainer, deterministic_kernels, seed_everything

from .backends import PromptBatch, PromptSource
from .checkpoint import (  # noqa: F401  (re-exported)
    CONFIG_FILE,
    FORMAT,
    FORMAT_VERSION,
    WEIGHTS_FILE,
    TeacherCheckpointError,
    build_teacher,
    checkpoint_meta,
    info,
    load_state,
    load_teacher,
    load_tensors,
    read_config,
    record_evaluation,
    remove_resume_state,
    save_tensors,
    scaler_from_meta,
    stored_evaluation,
    tensors_hash,
    write_json,
)
from .config import PRECISIONS, RUN_CONTROL, TeacherFinetuneConfig, teacher_id  # noqa: F401
from .evaluation import evaluate_mae, evaluate_splits
from .model import STTeacher, is_tiny, load_backbone_config
from .pairs import load_prepared, sample_pairs, targets_for
from .prompts import PromptBuilder
from .resources import ResourceEstimate, TeacherResourceError, estimate_resources  # noqa: F401
from .tokenizer import add_st_tokens

_load_tensors = load_tensors  # the name earlier code and tests use


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
        save_tensors(latest, self.resume_dir / WEIGHTS_FILE)
        atomic_torch_save(to_cpu(trainer.optimizer.state_dict()), self.resume_dir / "optimizer.pt")
        summary = self.state_json(state)
        write_json(summary, self.resume_dir / "state.json")
        best = self.out / WEIGHTS_FILE
        if not self.validated:
            save_tensors(latest, best)
        elif state.best_unsaved or not best.is_file():
            save_tensors(latest if state.best_state is None else state.best_state, best)
        meta = checkpoint_meta(self.cfg, self.prepared, self.backbone, trainer.model,
                               load_tensors(best), _training_summary(summary))
        kept = stored_evaluation(self.out, meta)  # still about these weights
        if kept is not None:
            meta["evaluation"] = kept
        write_json(meta, self.out / CONFIG_FILE)


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
    if not is_tiny(cfg.backbone):
        announce_resources(cfg, prepared, dev)
    initial = None
    if resuming:
        meta = read_config(out)
        # through the config class: settings added since the checkpoint take their defaults
        saved = TeacherFinetuneConfig.from_dict(meta["config"]).to_dict()
        now = cfg.to_dict()
        diff = sorted(k for k in now if k not in RUN_CONTROL and saved.get(k) != now[k])
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
        teacher.set_precision(cfg.precision)
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
    del opt
    teacher.zero_grad(set_to_none=True)
    meta = read_config(out)
    if cfg.final_eval_splits and meta["training"]["steps"] >= cfg.steps:
        final_evaluation(teacher, prepared, cfg, out, meta)
    return out


def final_evaluation(teacher: STTeacher, prepared: PreparedData, cfg: TeacherFinetuneConfig,
                     out: Path, meta: dict) -> None:
    """Score the kept weights (``weights.safetensors``, loaded into ``teacher``) on every pair
    of ``cfg.final_eval_splits`` and store the result in teacher.json, unless teacher.json
    already holds that evaluation of these weights."""
    kept = stored_evaluation(out, meta)
    if kept is not None and set(cfg.final_eval_splits) <= set(kept["splits"]):
        return
    best = out / WEIGHTS_FILE
    load_state(teacher, load_tensors(best), best)
    result = evaluate_splits(teacher, prepared, cfg.final_eval_splits,
                             batch_size=cfg.eval_batch_size, reuse_prefix=cfg.reuse_prefix,
                             progress=cfg.progress)
    record_evaluation(out, result)


def announce_resources(cfg: TeacherFinetuneConfig, prepared: PreparedData,
                       dev: torch.device) -> ResourceEstimate:
    """Print what fine-tuning ``cfg`` on ``dev`` needs (parameters, memory, time per step) from
    the backbone's config and tokenizer alone, before its weights are loaded; raise
    :class:`~flowdistill.teacher.resources.TeacherResourceError` when it would not fit and
    ``cfg.memory_check``."""
    config, tok, _ = load_backbone_config(cfg.backbone)
    add_st_tokens(tok)
    est = estimate_resources(cfg, config, tok, prepared, dev)
    for line in est.lines():
        print(line, flush=True)
    if cfg.memory_check:
        est.check()
    return est


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

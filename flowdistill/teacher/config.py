"""The teacher's fine-tuning settings (:class:`TeacherFinetuneConfig`) and its id
(:func:`teacher_id`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from benchmark.device import check_device_name

from .model import LORA_TARGETS, backbone_name, is_tiny, resolve_init

PRECISIONS = ("fp32", "bf16")
EVAL_SPLITS = ("train", "train_all", "val", "test")
# settings that control a run without changing what it computes: a run may resume with other
# values (everything else must match the checkpoint's)
RUN_CONTROL = ("steps", "progress", "resume", "num_threads", "output_dir", "eval_every",
               "save_every", "device", "time_budget_s", "final_eval_splits", "eval_batch_size",
               "memory_check")


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
            as UrbanGPT pre-trains its ST encoder (see
            :func:`~flowdistill.teacher.finetune.pretrain_encoder`); 0 = off.
        pretrained_lr_scale: learning-rate factor for the pre-trained encoder and head during
            instruction tuning (they start good; the LM around them starts from scratch).
        zero_init_residual: zero-initialise the residual branches' output projections of a
            from-scratch backbone (tiny or ``init="scratch"``; see
            :func:`~flowdistill.teacher.model.zero_residual_branches`).
        lora_r, lora_alpha, lora_dropout, lora_targets: peft LoRA settings.
        head_hidden, encoder_hidden: widths of the regression head and the ST encoder.
        steps: optimiser steps; batch_size: prompts per step.
        lr, weight_decay, warmup_steps: AdamW with linear warm-up then cosine decay to 10%.
        loss: "huber" or "mae" on scaled targets; huber_delta: Huber threshold.
        lm_loss_weight: weight of the next-token loss on the suffix text (0 = off).
        grad_clip: max global gradient norm.
        eval_every, eval_pairs: checkpoint selection: the MAE (original units, every target)
            on a fixed random subset of ``eval_pairs`` validation (window, node) pairs every
            ``eval_every`` steps; the weights with the lowest one are kept.
        final_eval_splits: after the last step, the kept weights are scored on EVERY (window,
            node) pair of these splits with the students' masked metrics
            (:func:`~flowdistill.teacher.evaluation.evaluate_splits`) and the result is stored
            in teacher.json's ``evaluation``; () skips it (``flowdistill teacher evaluate`` can
            do it later). A run-control setting.
        eval_batch_size: prompts per forward pass of that evaluation (run control).
        memory_check: refuse to start when the estimated memory of a non-tiny backbone
            (:mod:`flowdistill.teacher.resources`, printed before it is loaded) exceeds the
            device's (run control; the estimate is deliberately generous).
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
    final_eval_splits: tuple[str, ...] = ("val", "test")
    eval_batch_size: int = 64
    memory_check: bool = True
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
        self.final_eval_splits = tuple(self.final_eval_splits)
        bad = [x for x in self.final_eval_splits if x not in EVAL_SPLITS]
        if bad:
            raise ValueError(f"final_eval_splits: unknown splits {bad}; choose from {EVAL_SPLITS}")
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
        d["final_eval_splits"] = list(self.final_eval_splits)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TeacherFinetuneConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown teacher config fields {unknown}")
        return cls(**d)


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

"""What a teacher run needs before its backbone is loaded: parameters, memory, time per step.

:func:`estimate_resources` reads only the backbone's ``config.json`` and tokenizer: the model
is instantiated on PyTorch's ``meta`` device (shapes, no storage), so the parameter counts are
exact for any architecture ``transformers`` knows, LoRA adapters and the teacher's own parts
(ST embeddings, ST encoder, head) included. Memory, in bytes:

* weights: frozen parameters at 2 bytes under ``precision="bf16"`` with LoRA (they are stored
  in bfloat16), else 4; trainable parameters at 4;
* gradients 4 and AdamW's two moments 8 per trainable parameter (Loshchilov & Hutter, ICLR
  2019; ``torch.optim.AdamW`` keeps ``exp_avg`` and ``exp_avg_sq``);
* activations kept for the backward pass, counted per token and layer as Korthikanti et al.
  ("Reducing Activation Recomputation in Large Transformer Models", MLSys 2023, Sec. 4.1) count
  them for a transformer block, here for a pre-norm SwiGLU block without dropout: the inputs of
  the two norms (2h), of the QKV projection (h), Q and K (2h), V (h), the softmax output
  (``a * s_ctx``: attention scores stored, as without fused attention kernels, so an upper
  estimate there), the input of the output projection (h), and of the MLP (h) with its gate,
  up, activation and product (4i): ``8h + 4i + a * s_ctx`` elements, at 2 bytes under bf16
  autocast and 4 under fp32. With ``reuse_prefix`` the shared prefix runs once per step and its
  K/V cache is repeated over the batch (``2 * L * B * s_prefix * kv_dim`` more elements);
  with ``lm_loss_weight > 0`` the suffix logits (and their gradient) add ``2 * B * s * V``
  float32 values.

Time per step: training FLOPs ``~ k * 2 * N * tokens + attention`` (Kaplan et al. 2020, Sec. 2.1:
a forward pass costs ``2N`` FLOPs per token plus ``2 * L * s_ctx * d_attn`` for attention;
``k = 3`` with full tuning, whose backward pass costs twice the forward, and ``k = 2`` under LoRA,
whose backward pass skips the frozen weights' gradients), divided by the matmul rate measured on
the device in the compute dtype. Real steps are slower (memory traffic, small kernels), so it is
printed as a lower bound; without a measurement it is "unknown".
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np
import torch

GIB = 1024 ** 3


class TeacherResourceError(RuntimeError):
    """The run would not fit the device (one line: what it needs, what is there, remedies)."""


@dataclass
class ResourceEstimate:
    """A teacher run's needs (see the module docstring). Bytes unless named otherwise."""

    backbone: str
    parameters: int
    trainable: int
    lm_parameters: int
    precision: str
    tuning: str
    batch_size: int
    prefix_tokens: int
    suffix_tokens: int
    weight_bytes: int
    grad_bytes: int
    optimizer_bytes: int
    activation_bytes: int
    flops_per_step: float
    device: str
    device_memory: int | None = None
    memory_kind: str = ""
    matmul_flops_per_s: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return self.weight_bytes + self.grad_bytes + self.optimizer_bytes + self.activation_bytes

    @property
    def seconds_per_step(self) -> float | None:
        """A lower bound (measured matmul rate), or None when there is no measurement."""
        if not self.matmul_flops_per_s:
            return None
        return self.flops_per_step / self.matmul_flops_per_s

    def lines(self) -> list[str]:
        g = lambda b: f"{b / GIB:.2f} GiB"  # noqa: E731
        out = [f"teacher resources: {self.backbone}: {self.parameters:,} parameters "
               f"({self.lm_parameters:,} in the LM), {self.trainable:,} trainable "
               f"({self.tuning}, {self.precision})",
               f"teacher resources: memory about {g(self.total_bytes)} = weights "
               f"{g(self.weight_bytes)} + gradients {g(self.grad_bytes)} + AdamW state "
               f"{g(self.optimizer_bytes)} + activations {g(self.activation_bytes)} (batch "
               f"{self.batch_size}, prompts of {self.prefix_tokens} shared + "
               f"~{self.suffix_tokens} own tokens)"]
        if self.device_memory is not None:
            out.append(f"teacher resources: {self.device} has {g(self.device_memory)} "
                       f"{self.memory_kind}")
        sps = self.seconds_per_step
        if sps is None:
            out.append(f"teacher resources: time per step unknown "
                       f"({self.flops_per_step:.3g} FLOPs per step; no matmul measurement)")
        else:
            out.append(f"teacher resources: time per step >= {sps:.3g} s "
                       f"({self.flops_per_step:.3g} FLOPs at the "
                       f"{self.matmul_flops_per_s / 1e9:.3g} GFLOP/s a "
                       f"{'bf16' if self.precision == 'bf16' else 'fp32'} matmul reached on "
                       f"{self.device}; real steps are slower)")
        out += [f"teacher resources: note: {n}" for n in self.notes]
        return out

    def check(self) -> None:
        """Raise :class:`TeacherResourceError` when the estimate exceeds the device's memory."""
        if self.device_memory is None or self.total_bytes <= self.device_memory:
            return
        g = lambda b: f"{b / GIB:.1f} GiB"  # noqa: E731
        remedy = "lower batch_size (activations scale with it)"
        if self.tuning == "full":
            remedy += ", use tuning='lora'"
        if self.precision == "fp32":
            remedy += ", use precision='bf16'"
        state = self.grad_bytes + self.optimizer_bytes
        raise TeacherResourceError(
            f"{self.backbone}: needs about {g(self.total_bytes)} (weights "
            f"{g(self.weight_bytes)}, gradients + AdamW {g(state)}, activations "
            f"{g(self.activation_bytes)} at batch {self.batch_size}) but "
            f"{self.device} has {g(self.device_memory)} {self.memory_kind}; {remedy}, or set "
            f"memory_check=False to try anyway")


def device_memory(device: torch.device) -> tuple[int | None, str]:
    """``(bytes, what)``: free CUDA memory, or the RAM available on the CPU (``/proc/meminfo``
    ``MemAvailable``, else physical memory); ``(None, "")`` when unknown."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free), "free"
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "available RAM"
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "RAM"
    except (ValueError, OSError, AttributeError):
        return None, ""


def matmul_rate(device: torch.device, dtype: torch.dtype, repeats: int = 3) -> float | None:
    """FLOP/s of a square matmul (n = 1024 on the CPU, 4096 on CUDA) on ``device`` in
    ``dtype``: the best of ``repeats`` after one warm-up; None if it fails."""
    n = 4096 if device.type == "cuda" else 1024
    try:
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)
        best = float("inf")
        for i in range(repeats + 1):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            a @ b
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i:
                best = min(best, time.perf_counter() - t0)
        return 2 * n ** 3 / best
    except RuntimeError:
        return None


def _meta_lm(config):
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def lora_parameters(lm: torch.nn.Module, r: int, targets: tuple[str, ...]) -> int:
    """Parameters peft's LoRA adds: ``r * (in + out)`` per targeted linear layer (Hu et al.,
    ICLR 2022, Sec. 4.1: ``W + B A`` with ``B: [out, r]``, ``A: [r, in]``)."""
    return sum(r * (m.in_features + m.out_features) for name, m in lm.named_modules()
               if isinstance(m, torch.nn.Linear) and name.rsplit(".", 1)[-1] in targets)


def teacher_part_parameters(hidden: int, cfg, in_channels: int, horizon: int, input_len: int,
                            steps_per_day: int, num_nodes: int) -> int:
    """Parameters of the ST embeddings, the ST encoder and the head (built on ``meta``)."""
    from .model import RegressionHead, STEncoder
    from .prompts import SPECIAL_TOKENS

    with torch.device("meta"):
        parts = [RegressionHead(hidden, cfg.head_hidden, horizon)]
        if cfg.st_encoder:
            parts.append(STEncoder(input_len, in_channels, cfg.encoder_hidden, hidden,
                                   steps_per_day, num_nodes if cfg.encoder_node_embedding else 0))
    return len(SPECIAL_TOKENS) * hidden + sum(p.numel() for m in parts for p in m.parameters())


def estimate_resources(cfg, config, tokenizer, prepared, device: torch.device,
                       measure: bool = True) -> ResourceEstimate:
    """The needs of fine-tuning ``cfg`` (a TeacherFinetuneConfig) with the backbone whose HF
    ``config`` and ``tokenizer`` (holding the ST tokens) are given, on ``prepared``'s prompts.

    Prompt lengths come from tokenising the shared prefix and the suffixes of 64 training
    pairs; ``measure`` times a matmul on ``device`` for the time per step."""
    from .prompts import PromptBuilder
    from .tokenizer import encode_prefix, encode_suffixes

    lm = _meta_lm(config)
    vocab = max(len(tokenizer), lm.get_input_embeddings().weight.shape[0])
    hidden = lm.get_input_embeddings().weight.shape[1]
    lm_params = sum(p.numel() for p in lm.parameters())
    tied = lm.get_output_embeddings() is not None and \
        lm.get_output_embeddings().weight is lm.get_input_embeddings().weight
    grown = vocab - lm.get_input_embeddings().weight.shape[0]
    lm_params += grown * hidden * (1 if tied or lm.get_output_embeddings() is None else 2)
    p = prepared.protocol
    own = teacher_part_parameters(hidden, cfg, prepared.in_channels, p.horizon, p.input_len,
                                  prepared.data.steps_per_day, prepared.num_nodes)
    tuning = cfg.resolved_tuning
    if tuning == "lora":
        trainable = lora_parameters(lm, cfg.lora_r, cfg.lora_targets) + own
        total = lm_params + trainable
        frozen = lm_params
    else:
        trainable = total = lm_params + own
        frozen = 0
    bf16 = cfg.precision == "bf16"
    weight_bytes = frozen * (2 if bf16 else 4) + trainable * 4

    builder = PromptBuilder.from_prepared(prepared)
    rng = np.random.default_rng(0)
    starts = prepared.train_starts[rng.integers(0, len(prepared.train_starts), 64)]
    nodes = rng.integers(0, prepared.num_nodes, 64)
    prefix = len(encode_prefix(tokenizer, builder.prefix))
    suffix = int(np.ceil(np.mean([len(x) for x in encode_suffixes(
        tokenizer, builder.suffixes(starts, nodes))])))

    c = lm.config
    layers = int(c.num_hidden_layers)
    heads = int(c.num_attention_heads)
    head_dim = int(getattr(c, "head_dim", None) or hidden // heads)
    kv_dim = int(getattr(c, "num_key_value_heads", None) or heads) * head_dim
    inter = int(getattr(c, "intermediate_size", None) or 4 * hidden)
    b, ctx = cfg.batch_size, prefix + suffix
    act_size = 2 if bf16 else 4
    per_token = 8 * hidden + 4 * inter + heads * ctx  # elements per token and layer
    if cfg.reuse_prefix:
        tokens = prefix + b * suffix
        elements = layers * (tokens * per_token + 2 * b * prefix * kv_dim)
    else:
        tokens = b * ctx
        elements = layers * tokens * per_token
    activation_bytes = elements * act_size
    if cfg.lm_loss_weight > 0:
        activation_bytes += 2 * b * suffix * vocab * 4
    embed = vocab * hidden * (1 if tied else 2)
    forward = 2 * (lm_params - embed) * tokens + 4 * layers * heads * head_dim * ctx * b * suffix
    flops = (3 if tuning == "full" else 2) * forward
    mem, kind = device_memory(device)
    notes = []
    if not bf16 and device.type == "cuda":
        notes.append("precision='bf16' halves the activations (and the frozen weights)")
    rate = matmul_rate(device, torch.bfloat16 if bf16 else torch.float32) if measure else None
    return ResourceEstimate(
        backbone=cfg.backbone, parameters=int(total), trainable=int(trainable),
        lm_parameters=int(lm_params), precision=cfg.precision, tuning=tuning, batch_size=b,
        prefix_tokens=prefix, suffix_tokens=suffix, weight_bytes=int(weight_bytes),
        grad_bytes=int(4 * trainable), optimizer_bytes=int(8 * trainable),
        activation_bytes=int(activation_bytes), flops_per_step=float(flops), device=str(device),
        device_memory=mem, memory_kind=kind, matmul_flops_per_s=rate, notes=notes)

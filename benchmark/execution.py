"""How the trainer runs a model's forward pass: numeric precision and compilation.

Two :class:`~benchmark.trainer.TrainConfig` settings, both off by default (fp32 eager is the
reference every record so far was made with); a run that sets either names it in its record and
gets its own run id:

``precision``
    ``"fp32"`` (default) or ``"bf16"``: the forward pass runs under
    ``torch.autocast(device_type, dtype=torch.bfloat16)`` (matrix products and convolutions in
    bfloat16, reductions and pointwise transcendental ops in float32, as autocast's op lists
    say), and its output is cast back to float32 before the loss, which is computed in original
    units where bfloat16's 8-bit mantissa would cost whole vehicles per zone. The backward pass
    follows autocast's casts. Validation and test forwards run the same way, so the metrics are
    those of the model as it would be served.
``compile``
    ``"none"`` (default), ``"torch.compile"`` (``torch.compile(model)``: TorchDynamo capture,
    Inductor kernels; on a CPU Inductor writes C++ and needs a C++ compiler, ``g++``) or
    ``"cudagraphs"`` (as ``torch.compile(model, mode="reduce-overhead")``: Inductor kernels
    replayed as CUDA graphs, which removes the per-kernel launch cost that dominates small
    recurrent and many-layer models at batch 64; on a CPU device there are no CUDA graphs and it
    compiles as ``"torch.compile"`` does). Random ops keep torch's generator
    (:func:`compile_module`), so a compiled run differs from the eager run of its seed by
    rounding, not by other dropout masks. The forward (and through AOTAutograd the backward) is
    compiled; the loss, the optimiser and the harness stay eager. The model object keeps its
    parameters and state-dict keys (checkpoints are unchanged); only the trainer calls the
    compiled module. The first epoch pays the compilation (minutes for the larger models on a
    CPU), and each new batch shape (the last partial batch, evaluation) compiles again.

Measured on CPU (``python -m perf.speed_tolerance``, results/speed_tolerance/cpu*.md): the
best validation MAE of seeded short runs under each option against the fp32 eager run moved by
at most 9.4e-5 under torch.compile (mlp, STID, STGCN, GWNet) and by at most 2.6e-3 under bf16 for
mlp, STID and GWNet, relative; the tests hold the options to :data:`VAL_MAE_RTOL` (1e-3 and
1e-2). bf16 is outside that for STGCN (2.6e-2 to 1.1e-1 over 3 seeds): leave it off there
(:data:`WITHIN_TOLERANCE`). GPU figures are pending a GPU window.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import nn

PRECISIONS = ("fp32", "bf16")
COMPILE_MODES = ("none", "torch.compile", "cudagraphs")
DEFAULTS = {"precision": "fp32", "compile": "none"}

# The relative difference of the best validation MAE of a bf16 / compiled run from the fp32
# eager run of the same seeded spec that an option is held to (tests/test_execution.py).
# Measured on the 2-core CPU (results/speed_tolerance/cpu*.md: 3 short epochs on synthetic data,
# where two fp32 seeds of one model differ by 15-27 %): torch.compile at most 9.4e-5 (mlp, STID,
# STGCN, GWNet); bf16 at most 2.6e-3 for mlp and STID, 4.2e-4 for GWNet, but 2.6e-2 to 1.1e-1 for
# STGCN (3 seeds). "cudagraphs" compiles as torch.compile on a CPU; its GPU figure, and bf16's on
# a GPU, are pending a GPU window.
VAL_MAE_RTOL = {"bf16": 1e-2, "torch.compile": 1e-3, "cudagraphs": 1e-3}

# The models each option was measured within VAL_MAE_RTOL for (CPU, the runs above): turn an
# option on for these only; the others are unmeasured, or (bf16: STGCN) outside it.
WITHIN_TOLERANCE = {"bf16": ("mlp", "stid", "gwnet"),
                    "torch.compile": ("mlp", "stid", "stgcn", "gwnet")}


def check_execution(precision: str, compile: str) -> None:
    """Raise ValueError (one line naming the setting and the accepted values) for an unknown
    ``precision`` or ``compile``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {', '.join(PRECISIONS)}, got {precision!r}")
    if compile not in COMPILE_MODES:
        raise ValueError(f"compile: expected one of {', '.join(COMPILE_MODES)}, got {compile!r}")


def autocast_context(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The autocast context of ``precision`` on ``device`` (a null context for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def compile_module(model: nn.Module, compile: str) -> Callable:
    """``model`` compiled as ``compile`` says (``model`` itself for ``"none"``).

    Inductor's options: ``fallback_random`` (random ops, dropout and the student's VIB noise,
    draw from torch's generator as in eager mode, instead of Inductor's own fused generator: a
    compiled run sees the masks the fp32 eager run of its seed sees, so it differs from it by
    rounding only); ``"cudagraphs"`` adds ``triton.cudagraphs``, which is what
    ``mode="reduce-overhead"`` sets (``torch._inductor.list_mode_options``).
    """
    if compile == "none":
        return model
    options = {"fallback_random": True}
    if compile == "cudagraphs":
        options["triton.cudagraphs"] = True
    return torch.compile(model, options=options)


class ModelRunner:
    """The model as the trainer calls it: ``runner(batch)`` is the forward pass under the
    configured precision and compilation, returning float32; every other attribute (the
    regulariser ``extra_loss()``, ``training``, submodules) is the model's own, so an objective
    handed a runner in place of the model computes the same loss.

    Args:
        model: the model (its parameters are the ones trained and saved).
        precision, compile: see the module docstring.
        device: the training device (autocast's device type).
    """

    def __init__(self, model: nn.Module, precision: str, compile: str,
                 device: torch.device) -> None:
        check_execution(precision, compile)
        self.model, self.precision, self.compile = model, precision, compile
        self.device = device
        self._forward = compile_module(model, compile)
        self._graphs = compile == "cudagraphs" and device.type == "cuda"

    def __call__(self, batch) -> torch.Tensor:
        if self._graphs:  # a new step: outputs of the previous replay may be overwritten
            torch.compiler.cudagraph_mark_step_begin()
        with autocast_context(self.precision, self.device):
            out = self._forward(batch)
        return out.float()

    def __getattr__(self, name: str):
        return getattr(self.__dict__["model"], name)


def model_runner(model: nn.Module, precision: str, compile: str,
                 device: torch.device) -> nn.Module | ModelRunner:
    """``model`` itself under the defaults (fp32, no compilation: nothing in between), else a
    :class:`ModelRunner`."""
    check_execution(precision, compile)
    if precision == DEFAULTS["precision"] and compile == DEFAULTS["compile"]:
        return model
    return ModelRunner(model, precision, compile, device)

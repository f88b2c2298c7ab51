"""Model registry: ``@register_model("name")`` maps a name to a factory, defaults and a citation.

A registered factory is a class (or function) whose keyword arguments are the model's
hyperparameters plus any of the :class:`ModelContext` fields it wants (``num_nodes``,
``adjacency``, ...). :func:`build_model` fills context fields by name and filters a config down to
the arguments the factory accepts (tsl's ``filter_model_args_`` idea), so one config drives many
models without per-model glue.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from .recipes import Recipe


@dataclass(frozen=True)
class ModelContext:
    """What the harness tells a model about the data it will see.

    Attributes:
        num_nodes: N.
        input_len: T_in.
        horizon: T_out.
        in_channels: C.
        out_channels: C_out.
        steps_per_day: time-of-day slots (48 at 30 min, 288 at 5 min).
        adjacency: float32 ``[N, N]`` raw (unnormalised) adjacency or None; for large N also
            a torch sparse ``[N, N]`` tensor (the graph models' sparse path,
            :mod:`baselines.sparse_graph`; a dense-only model densifies it).
        series: scaled float32 ``[T, N, C]`` series. A model may read only the steps before
            ``batch.start + input_len`` of each window (observable history); closed-form models
            fit on ``train_starts`` alone.
        train_starts: window starts the model may train on.
        target_channel_idx: indices of the target channels within the C inputs.
        timestamps: ``datetime64[ns]`` ``[T]`` real time of each step of ``series`` (may skip
            whole days, see :class:`~benchmark.data.stdata.STData`), or None (then a model may
            assume a regular axis).
    """

    num_nodes: int
    input_len: int
    horizon: int
    in_channels: int
    out_channels: int
    steps_per_day: int
    adjacency: np.ndarray | None = None
    series: torch.Tensor | None = field(default=None, repr=False)
    train_starts: np.ndarray | None = field(default=None, repr=False)
    target_channel_idx: tuple[int, ...] = ()
    timestamps: np.ndarray | None = field(default=None, repr=False)

    @classmethod
    def from_prepared(cls, prepared) -> ModelContext:
        return cls(
            num_nodes=prepared.num_nodes,
            input_len=prepared.protocol.input_len,
            horizon=prepared.protocol.horizon,
            in_channels=prepared.in_channels,
            out_channels=prepared.out_channels,
            steps_per_day=prepared.data.steps_per_day,
            adjacency=prepared.data.adjacency,
            series=prepared.scaled,
            train_starts=prepared.train_starts,
            target_channel_idx=tuple(prepared.target_channel_idx),
            timestamps=prepared.data.timestamps,
        )


class Forecaster(nn.Module):
    """Base class (optional) for registered models.

    ``forward(batch) -> y_hat [B, T_out, N, C_out]`` in scaled units. Models may override
    :meth:`extra_loss` (a scalar added to the training loss, e.g. the VIB KL) and set
    ``closed_form = True`` with a :meth:`fit_closed_form` method when they are fitted without
    gradient steps (historical average, ridge).
    """

    closed_form: bool = False

    def extra_loss(self) -> torch.Tensor | None:
        return None

    def fit_closed_form(self, prepared) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


@dataclass(frozen=True)
class ModelSpec:
    name: str
    factory: Callable[..., nn.Module]
    defaults: dict
    citation: str
    description: str
    needs_adjacency: bool = False
    tags: tuple[str, ...] = ()
    objective_factory: Callable | None = None
    recipe: Recipe | None = None

    @property
    def closed_form(self) -> bool:
        """Fitted without gradient steps (no training recipe)."""
        return bool(getattr(self.factory, "closed_form", False))

    def accepted_args(self) -> set[str] | None:
        """Names the factory accepts, or None when it takes ``**kwargs``."""
        sig = inspect.signature(self.factory)
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()):
            return None
        return set(sig.parameters)


_REGISTRY: dict[str, ModelSpec] = {}

# Modules whose import registers models. Imported lazily by :func:`registry`.
MODEL_MODULES = ["benchmark.simple_models", "baselines", "flowdistill"]


def register_model(name: str, *, citation: str = "", description: str = "",
                   needs_adjacency: bool = False, tags: tuple[str, ...] = (),
                   objective_factory: Callable | None = None, recipe: Recipe | None = None,
                   **defaults) -> Callable:
    """Decorator registering a model factory under ``name`` with default hyperparameters.

    ``objective_factory(teacher_path: str | None, loss: dict | None = None, **overrides) ->
    Objective`` names the training objective the model needs (e.g. distillation); ``loss`` is
    the recipe's ground-truth loss (:meth:`benchmark.recipes.Recipe.loss_settings`); None means
    the plain supervised objective. ``recipe`` is the model's training recipe from its paper or
    official code (:class:`benchmark.recipes.Recipe`); closed-form models have none.
    """

    def deco(factory: Callable) -> Callable:
        if name in _REGISTRY and _REGISTRY[name].factory is not factory:
            raise ValueError(f"model {name!r} is already registered")
        doc = description or (inspect.getdoc(factory) or "").split("\n")[0]
        _REGISTRY[name] = ModelSpec(name, factory, dict(defaults), citation, doc,
                                    needs_adjacency, tags, objective_factory, recipe)
        return factory

    return deco


def registry() -> dict[str, ModelSpec]:
    """All registered models (imports the model packages on first call)."""
    for mod in MODEL_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name != mod:
                raise
    return dict(sorted(_REGISTRY.items()))


def get_spec(name: str) -> ModelSpec:
    reg = registry()
    if name not in reg:
        raise KeyError(f"unknown model {name!r}; registered: {', '.join(reg)}")
    return reg[name]


def resolve_hparams(name: str, overrides: dict | None = None) -> dict:
    """Defaults of ``name`` updated with ``overrides`` filtered to what the factory accepts."""
    spec = get_spec(name)
    hp = dict(spec.defaults)
    accepted = spec.accepted_args()
    for k, v in (overrides or {}).items():
        if accepted is None or k in accepted:
            hp[k] = v
    return hp


def build_model(name: str, context: ModelContext, overrides: dict | None = None) -> nn.Module:
    """Instantiate ``name`` with its defaults, ``overrides`` and the context fields it asks for."""
    spec = get_spec(name)
    hp = resolve_hparams(name, overrides)
    accepted = spec.accepted_args()
    kwargs = {}
    for f in fields(context):
        if accepted is None or f.name in accepted:
            kwargs[f.name] = getattr(context, f.name)
    if spec.needs_adjacency and context.adjacency is None:
        raise ValueError(f"model {name!r} needs an adjacency matrix and the dataset has none")
    kwargs.update(hp)
    return spec.factory(**kwargs)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)

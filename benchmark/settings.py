"""Check ``KEY=VALUE`` settings (CLI flags, sweep sections) against what they configure.

One job: refuse a key nobody reads and a value of the wrong type before anything runs, with a
one-line message naming the flag (or sweep section), the key, the accepted keys and the closest
match::

    --set embed_dimm: unknown key for model 'stid'; accepted: dropout, embed_dim, ...;
    did you mean 'embed_dim'?

What each group accepts:

==================  =========================================================================
group               accepted keys and their types
==================  =========================================================================
``hparams``         the model's registered defaults and its factory's arguments, minus the
                    :class:`~benchmark.models.ModelContext` fields the harness fills in
``protocol``        :class:`~benchmark.data.protocol.Protocol` fields (``train_fraction`` has
                    its own flag)
``train``           :class:`~benchmark.trainer.TrainConfig` fields (``seed`` has its own flag
                    on the command line)
``objective``       the model's objective settings: ``objective_factory.settings`` (a
                    dataclass) when the model declares one, else
                    :class:`~benchmark.objectives.SupervisedObjective`'s fields
``dataset_options`` the dataset loader's keyword arguments
==================  =========================================================================

Types come from annotations (dataclass fields, factory signatures) or, lacking one, from the
default value: an ``int`` accepts integers, a ``float`` integers and floats, a ``bool`` only
true/false, a tuple or sequence a list, ``X | None`` also null. Values are checked, never
converted, so a run's identity does not change.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import inspect
import types
import typing
from collections.abc import Callable, Mapping

ANY = object()  # accepted type of a key whose values are not checked


class SettingError(ValueError):
    """An unknown setting or a value of the wrong type; the message is one line."""


# ------------------------------------------------------------------------------ types
def _is_optional_none(annotation) -> bool:
    return annotation is None or annotation is type(None)


def _union_args(annotation) -> tuple | None:
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return typing.get_args(annotation)
    return None


def matches(value, annotation) -> bool:
    """Whether ``value`` (as parsed from JSON or TOML) fits ``annotation``.

    Annotations this module cannot interpret accept every value (the consumer checks further).
    """
    if annotation is ANY or annotation is typing.Any or annotation is inspect.Parameter.empty:
        return True
    if _is_optional_none(annotation):
        return value is None
    union = _union_args(annotation)
    if union is not None:
        return any(matches(value, a) for a in union)
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    origin = typing.get_origin(annotation) or annotation
    args = typing.get_args(annotation)
    if origin in (tuple, list, collections.abc.Sequence):
        if not isinstance(value, list | tuple):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(
                matches(v, a) for v, a in zip(value, args, strict=True))
        return not args or all(matches(v, args[0]) for v in value)
    if origin in (dict, collections.abc.Mapping):
        return isinstance(value, dict)
    return True


def type_name(annotation) -> str:
    """Human wording of ``annotation``: ``int``, ``float or null``, ``list of int``."""
    if annotation is ANY or annotation is inspect.Parameter.empty:
        return "any value"
    if _is_optional_none(annotation):
        return "null"
    union = _union_args(annotation)
    if union is not None:
        named = [type_name(a) for a in union if not _is_optional_none(a)]
        return " or ".join(named + (["null"] if len(named) < len(union) else []))
    origin = typing.get_origin(annotation) or annotation
    args = typing.get_args(annotation)
    if origin in (tuple, list, collections.abc.Sequence):
        if origin is tuple and args and args[-1] is not Ellipsis:
            return f"list of {len(args)} ({', '.join(type_name(a) for a in args)})"
        return f"list of {type_name(args[0])}" if args else "list"
    if origin in (dict, collections.abc.Mapping):
        return "table (dict)"
    return getattr(annotation, "__name__", str(annotation))


def _value_type(value) -> str:
    if value is None:
        return "null"
    return {bool: "bool", int: "int", float: "float", str: "str", list: "list",
            tuple: "list", dict: "dict"}.get(type(value), type(value).__name__)


# ------------------------------------------------------------------------ accepted
def from_dataclass(cls, skip: tuple[str, ...] = ()) -> dict[str, object]:
    """Field name -> annotation of the dataclass ``cls`` (minus ``skip``)."""
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 - unresolvable annotations: check keys only
        hints = {}
    return {f.name: hints.get(f.name, ANY) for f in dataclasses.fields(cls)
            if f.name not in skip and f.init}


def from_signature(fn: Callable, skip: tuple[str, ...] = (),
                   defaults: Mapping | None = None) -> dict[str, object] | None:
    """Argument name -> annotation (else the type of its default, else any) of ``fn``; None when
    it takes ``**kwargs`` (any key). ``defaults`` (e.g. registered hyperparameters) supply types
    for arguments without annotation or default."""
    try:
        sig = inspect.signature(fn, eval_str=True)
    except Exception:  # noqa: BLE001 - unresolvable annotations
        sig = inspect.signature(fn)
    out: dict[str, object] = {}
    for name, p in sig.parameters.items():
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            return None
        if name in skip or p.kind is inspect.Parameter.VAR_POSITIONAL:
            continue
        if p.annotation is not inspect.Parameter.empty:
            out[name] = p.annotation
            continue
        default = (defaults or {}).get(name, p.default)
        out[name] = _type_of_default(default)
    return out


def _type_of_default(default) -> object:
    if default is inspect.Parameter.empty or default is None:
        return ANY
    if isinstance(default, list | tuple):
        return list
    return type(default) if isinstance(default, bool | int | float | str | dict) else ANY


def model_hparams(model: str) -> dict[str, object]:
    """Hyperparameters ``model`` accepts: its registered defaults and its factory's arguments,
    minus the :class:`~benchmark.models.ModelContext` fields."""
    from .models import ModelContext, get_spec

    spec = get_spec(model)
    context = tuple(f.name for f in dataclasses.fields(ModelContext))
    accepted = from_signature(spec.factory, context, spec.defaults)
    if accepted is None:  # the factory takes **kwargs: its defaults are what is known
        return {k: _type_of_default(v) for k, v in spec.defaults.items()}
    for k, v in spec.defaults.items():
        accepted.setdefault(k, _type_of_default(v))
    return accepted


def protocol_fields() -> dict[str, object]:
    from .data.protocol import Protocol

    return from_dataclass(Protocol, skip=("train_fraction", "notes"))


def train_fields(skip: tuple[str, ...] = ()) -> dict[str, object]:
    from .trainer import TrainConfig

    return from_dataclass(TrainConfig, skip=skip)


def objective_fields(model: str) -> dict[str, object] | None:
    """The objective settings of ``model``; None when its objective factory declares none."""
    from .models import get_spec
    from .objectives import SupervisedObjective

    factory = get_spec(model).objective_factory
    if factory is None:
        return from_dataclass(SupervisedObjective)
    settings = getattr(factory, "settings", None)
    return from_dataclass(settings) if dataclasses.is_dataclass(settings) else None


def dataset_options(dataset: str) -> dict[str, object] | None:
    from .data.registry import get_dataset_spec

    return from_signature(get_dataset_spec(dataset).loader, skip=("root",))


# ---------------------------------------------------------------------------- check
def check(given: Mapping, accepted: Mapping[str, object] | None, *, where: str,
          what: str) -> None:
    """Raise :class:`SettingError` for the first unknown key or mistyped value of ``given``.

    Args:
        given: the settings (key -> parsed value).
        accepted: key -> annotation (:data:`ANY` for unchecked values); None accepts every key.
        where: where the settings came from (``--set``, ``sweep.toml [hparams.stgcn]``).
        what: what they configure (``model 'stgcn'``, ``the trainer``).
    """
    if accepted is None:
        return
    for key, value in given.items():
        if key not in accepted:
            close = difflib.get_close_matches(str(key), list(accepted), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise SettingError(f"{where} {key}: unknown key for {what}; accepted: "
                               f"{', '.join(sorted(accepted)) or '(none)'}{hint}")
        if not matches(value, accepted[key]):
            raise SettingError(f"{where} {key}: expected {type_name(accepted[key])} for {what}, "
                               f"got {_value_type(value)} {value!r}")


def check_run_settings(model: str, dataset: str, where: Mapping[str, str],
                       train_skip: tuple[str, ...] = (), **groups: Mapping) -> None:
    """Check the settings of one run (see the module docstring for the groups).

    Args:
        model, dataset: registered names.
        where: group -> where its settings came from (e.g. ``{"hparams": "--set"}``).
        train_skip: trainer fields set elsewhere (the CLI's ``--seed``).
        **groups: ``hparams``, ``protocol``, ``train``, ``objective``, ``dataset_options``.
    """
    accepted: dict[str, tuple[Callable[[], Mapping | None], str]] = {
        "hparams": (lambda: model_hparams(model), f"model {model!r}"),
        "protocol": (protocol_fields, f"the protocol of {dataset!r}"),
        "train": (lambda: train_fields(train_skip), "the trainer"),
        "objective": (lambda: objective_fields(model), f"the objective of {model!r}"),
        "dataset_options": (lambda: dataset_options(dataset), f"dataset {dataset!r}"),
    }
    for group, given in groups.items():
        if not given:
            continue
        make, what = accepted[group]
        check(given, make(), where=where.get(group, group), what=what)

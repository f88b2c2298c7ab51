"""The catalogue of datasets: what a dataset module declares, and :func:`register_dataset`.

A dataset module (``benchmark/data/datasets/<id>.py``, or any module of yours) builds one
:class:`DatasetSpec` (its :class:`FileSpec` list, default protocol, loader, options, licence and
:class:`PromptText`) and calls :func:`register_dataset` when imported. Queries over the
catalogue (``get_dataset_spec``, ``list_datasets``, ``load_dataset`` ...) are in
:mod:`benchmark.data.registry`, which imports the built-in dataset modules first; this module
imports none of them, so they import it without an import cycle.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .files import FileSpec
from .protocol import Protocol
from .stdata import STData

__all__ = ["DatasetSpec", "FileSpec", "PromptText", "REGISTERED", "register_dataset"]


@dataclass(frozen=True)
class PromptText:
    """How the LLM teacher's instruction describes a dataset
    (:mod:`flowdistill.teacher.prompts`).

    Attributes:
        subject: what is measured, e.g. "taxi flow".
        place: where, e.g. "Manhattan, New York City"; also ends each node's region text.
        channel_noun: a channel's noun, ``{channel}`` standing for its name: "taxi {channel}"
            makes "taxi inflow" of channel "inflow".
        pattern: the word for its patterns ("traffic patterns").
        decimals: decimals of the numbers in the value lists (0: rounded integers).
    """

    subject: str = "flow"
    place: str = "a city"
    channel_noun: str = "{channel}"
    pattern: str = "traffic"
    decimals: int = 0

    def noun(self, channel: str) -> str:
        return self.channel_noun.format(channel=channel)


@dataclass(frozen=True)
class DatasetSpec:
    """Everything the suite knows about a dataset id.

    Attributes:
        id: dataset id (the directory name under FLOWDISTILL_DATA).
        description: one line.
        files: raw files (empty for generated or user-supplied datasets).
        loader: ``loader(root: Path | None, **options) -> STData``; its keyword arguments are
            the dataset's options.
        default_protocol: the protocol results are reported under unless overridden.
        options: loader option name -> help text (with the default).
        license, citation: of the data (and its packaging).
        steps_per_day: of the native time axis (None: depends on options).
        homepage: source repository.
        content_hash: ``content_hash(**options) -> str`` for data whose files are not pinned by
            ``files`` (user-supplied): a hash of the actual bytes, made part of a run's identity.
        prompt: how the LLM teacher's prompt describes the dataset.
    """

    id: str
    description: str
    files: tuple[FileSpec, ...]
    loader: Callable[..., STData]
    default_protocol: Protocol
    options: dict[str, str] = field(default_factory=dict)
    license: str = ""
    citation: str = ""
    steps_per_day: int | None = None
    homepage: str = ""
    content_hash: Callable[..., str] | None = None
    prompt: PromptText = PromptText()


# dataset id -> spec, in registration order
REGISTERED: dict[str, DatasetSpec] = {}


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    """Add ``spec`` to the catalogue. Ids are unique; the module that registered an id may
    register it again when it is imported again (a reload replaces its own entry)."""
    old = REGISTERED.get(spec.id)
    if old is not None and not _same_origin(old, spec):
        where = getattr(old.loader, "__module__", None) or "another module"
        raise ValueError(f"dataset {spec.id!r} is already registered (by {where}); "
                         "choose another id")
    REGISTERED[spec.id] = spec
    return spec


def _same_origin(a: DatasetSpec, b: DatasetSpec) -> bool:
    """Both loaders are the same named function of the same module."""
    names = [(getattr(s.loader, "__module__", None), getattr(s.loader, "__qualname__", None))
             for s in (a, b)]
    return None not in names[0] and names[0] == names[1]

"""Dataset registry: the public API over the catalogue of datasets.

Each dataset is one module under :mod:`benchmark.data.datasets` (its files with pinned URLs and
sha256, licence, default protocol, loader, and the text the LLM teacher's prompt uses for it)
that registers a :class:`DatasetSpec` in :mod:`benchmark.data.catalogue` on import; importing
this module imports that package, so the catalogue is complete. A module outside the package
registers its datasets the same way once it is imported (docs/extending.md).

Where files are found, how they are downloaded and verified: :mod:`benchmark.data.files`.
Loading verifies every file's sha256 first (cached in-process by path, size and mtime).
"""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np

from . import catalogue
from . import datasets as _builtin  # noqa: F401  (importing it registers the built-in datasets)
from . import files as _files
from .catalogue import DatasetSpec, PromptText, register_dataset
from .files import (
    ENV_CACHE,
    ENV_DATA,
    ENV_OFFLINE,
    FileCheck,
    FileSpec,
    cache_dir,
    mirror_dir,
    search_roots,
)
from .protocol import Protocol
from .stdata import DataError, STData

__all__ = ["DatasetSpec", "FileSpec", "PromptText", "FileCheck", "register_dataset",
           "list_datasets", "dataset_ids", "get_dataset_spec", "prompt_text", "default_protocol",
           "locate", "verify", "fetch", "load_dataset", "dataset_content_hash", "dataset_info",
           "cache_dir", "mirror_dir", "search_roots", "ENV_DATA", "ENV_CACHE", "ENV_OFFLINE"]


def list_datasets() -> list[DatasetSpec]:
    """Registered dataset specs, in registration order (``spec.id``, ``spec.description``...)."""
    return list(catalogue.REGISTERED.values())


def dataset_ids() -> list[str]:
    """Registered dataset ids, in registration order."""
    return list(catalogue.REGISTERED)


def get_dataset_spec(dataset_id: str) -> DatasetSpec:
    try:
        return catalogue.REGISTERED[dataset_id]
    except KeyError:
        raise DataError(f"unknown dataset {dataset_id!r}; known: {dataset_ids()}") from None


def prompt_text(dataset_id: str) -> PromptText:
    """The registered dataset's prompt description; the generic one for unknown ids."""
    spec = catalogue.REGISTERED.get(dataset_id)
    return spec.prompt if spec is not None else PromptText()


def default_protocol(dataset_id: str, data: STData | None = None) -> Protocol:
    """The dataset's default protocol; for ``custom`` data the manifest's null_value is used."""
    p = get_dataset_spec(dataset_id).default_protocol
    if data is not None and data.extra.get("null_value") is not None:
        p = p.with_(null_value=float(data.extra["null_value"]))
    return p


# --- files, by dataset id (the work is done in benchmark.data.files) ----------------------------
def locate(dataset_id: str, download: bool = True) -> Path:
    """Directory holding all of ``dataset_id``'s files (search order: :mod:`.files`).

    Missing files are downloaded into the user cache when ``download`` and not offline.
    Raises :class:`DataError` naming the files, the places searched and FLOWDISTILL_DATA.
    """
    spec = get_dataset_spec(dataset_id)
    return _files.locate_files(spec.id, spec.files, download=download)


def verify(dataset_id: str) -> list[FileCheck]:
    """sha256 of each of the dataset's files where :func:`locate` finds them (no download).

    Returns:
        one ``(file, ok, expected_sha, actual_sha)`` per file; empty for generated datasets.
    """
    spec = get_dataset_spec(dataset_id)
    return _files.verify_files(spec.id, spec.files)


def fetch(dataset_id: str, progress: bool = True) -> Path:
    """Make the dataset available and verified; returns its directory (``Path()`` for
    datasets without files). A corrupt file in the cache is re-downloaded, one in
    FLOWDISTILL_DATA or the mirror is reported (never overwritten)."""
    spec = get_dataset_spec(dataset_id)
    if not spec.files:
        return Path()
    return _files.fetch_files(spec.id, spec.files, progress=progress)


def _coerce_options(spec: DatasetSpec, options: dict) -> dict:
    params = {k: p for k, p in inspect.signature(spec.loader).parameters.items() if k != "root"}
    unknown = sorted(set(options) - set(params))
    if unknown:
        raise DataError(f"dataset {spec.id!r}: unknown option(s) {unknown}; "
                        f"valid: {sorted(params)}")
    out = {}
    for k, v in options.items():
        default = params[k].default
        if isinstance(v, str) and isinstance(default, bool):
            v = v.strip().lower() in ("1", "true", "yes")
        elif isinstance(v, str) and isinstance(default, int | float):
            try:
                v = type(default)(v)
            except ValueError:
                raise DataError(f"dataset {spec.id!r}: option {k}={v!r} must be a "
                                f"{type(default).__name__}") from None
        out[k] = v
    return out


def load_dataset(dataset_id: str, verify: bool = True, **options) -> STData:
    """Load a registered dataset as :class:`STData` (original units).

    Args:
        dataset_id: see :func:`list_datasets`.
        verify: check every file's sha256 first (cached in-process by path, size, mtime).
        **options: loader options, see ``get_dataset_spec(id).options``.
    """
    spec = get_dataset_spec(dataset_id)
    options = _coerce_options(spec, options)
    if not spec.files:
        return spec.loader(None, **options)
    d = locate(dataset_id)
    if verify:
        _files.raise_if_bad(spec.id, d, _files.check_files(d, spec.files))
    return spec.loader(d, **options)


def dataset_content_hash(dataset_id: str, **options) -> str | None:
    """sha256 over the bytes of a user-supplied dataset (``custom``: the manifest and every file
    it names); None for datasets whose files the registry pins by sha256 or that are generated
    from their options."""
    spec = get_dataset_spec(dataset_id)
    if spec.content_hash is None:
        return None
    return spec.content_hash(**_coerce_options(spec, options))


def dataset_info(dataset_id: str, **options) -> dict:
    """Loads the dataset and describes it: shapes, time span, channels, nodes, graph, protocol."""
    spec = get_dataset_spec(dataset_id)
    data = load_dataset(dataset_id, **options)
    ts = data.timestamps
    step_s = 86400 // data.steps_per_day if len(ts) > 1 else None
    adj = data.adjacency
    info = {
        "id": spec.id,
        "description": spec.description,
        "shape": [data.num_steps, data.num_nodes, data.num_channels],
        "num_steps": data.num_steps,
        "num_nodes": data.num_nodes,
        "num_channels": data.num_channels,
        "channels": list(data.channels),
        "start": str(ts[0].astype("datetime64[s]")),
        "end": str(ts[-1].astype("datetime64[s]")),
        "step_minutes": step_s / 60 if step_s else None,
        "steps_per_day": data.steps_per_day,
        "days": data.num_steps / data.steps_per_day,
        "regular": data.regular,
        "node_columns": list(data.nodes.columns),
        "first_nodes": data.nodes["name"].head(3).tolist(),
        "adjacency": data.extra.get("adjacency_kind", "none" if adj is None else "given"),
        "adjacency_nonzeros": None if adj is None else int(np.count_nonzero(adj)),
        "value_range": [float(np.min(data.values)), float(np.max(data.values))],
        "default_protocol": default_protocol(dataset_id, data).to_dict(),
        "files": [f.name for f in spec.files],
        "location": data.source,
        "options": dict(spec.options),
        "license": spec.license,
        "citation": spec.citation,
    }
    if "calendar_note" in data.extra:
        info["calendar_note"] = data.extra["calendar_note"]
    return info

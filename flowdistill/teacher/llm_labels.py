"""Soft labels from a fine-tuned LLM teacher: run a backend over every (window, node) prompt of
the windows asked for and write a :class:`~flowdistill.teacher.label_store.SoftLabelStore`.

The teacher's own scaler (saved in its checkpoint) scales the ST-encoder inputs and inverts the
head's outputs, so the labels are in original units whatever the labelling protocol's training
fraction (which changes the student's scaler, not the teacher's).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from benchmark.data.protocol import Protocol, protocol_hash
from benchmark.data.stdata import DataError
from benchmark.data.windows import PreparedData
from benchmark.device import device_description, resolve_device

from .backends import PromptSource, backend_version, get_backend
from .finetune import load_prepared, load_teacher, read_config, scaler_from_meta
from .prompts import TEMPLATE_VERSION, PromptBuilder, pairs, template_hash


def unique_starts(prepared: PreparedData, splits: tuple[str, ...]) -> np.ndarray:
    """Window starts of ``splits`` in order, duplicates removed."""
    starts = np.concatenate([prepared.starts(s) for s in splits]).astype(np.int64)
    _, first = np.unique(starts, return_index=True)
    return starts[np.sort(first)]


def check_compatible(meta: dict, prepared: PreparedData) -> None:
    """The teacher must see the same window lengths and channels it was trained on."""
    p, where = prepared.protocol, f"teacher {meta['teacher_id']}"
    tp = meta["protocol"]
    if (p.input_len, p.horizon) != (tp["input_len"], tp["horizon"]):
        raise DataError(f"{where} was trained with input_len={tp['input_len']}, horizon="
                        f"{tp['horizon']}; the labelling protocol has {p.input_len}, {p.horizon}")
    if list(prepared.data.channels) != list(meta["channels"]):
        raise DataError(f"{where} was trained on channels {meta['channels']}, the data has "
                        f"{prepared.data.channels}")
    if meta["config"].get("encoder_node_embedding") and prepared.num_nodes != meta["num_nodes"]:
        raise DataError(f"{where} has a node embedding for {meta['num_nodes']} nodes, the data "
                        f"has {prepared.num_nodes}")
    if list(prepared.target_channel_idx) != list(meta["target_channel_idx"]):
        raise DataError(f"{where} forecasts channels {meta['target_channel_idx']}, the protocol "
                        f"asks for {prepared.target_channel_idx}")


def predict_windows(backend, source: PromptSource, starts: np.ndarray, num_nodes: int,
                    inverse, chunk_pairs: int = 8192, progress: bool = True) -> np.ndarray:
    """Labels ``[W, T_out, N, C_out]`` in original units for windows ``starts``.

    Args:
        backend: an object with ``predict(PromptBatch) -> [P, T_out, C_out]`` (scaled).
        inverse: maps a scaled tensor ``[..., C_out]`` to original units.
        chunk_pairs: prompts encoded and sent to the backend at a time (bounded memory).
    """
    w_chunk = max(1, chunk_pairs // max(1, num_nodes))
    out = []
    bar = tqdm(total=len(starts), desc=f"{backend.name} labels", unit="window",
               disable=not progress)
    for i in range(0, len(starts), w_chunk):
        ws = starts[i:i + w_chunk]
        s, n = pairs(ws, num_nodes)
        y = backend.predict(source.batch(s, n))  # [w*N, T_out, C_out]
        y = y.reshape(len(ws), num_nodes, *y.shape[1:]).transpose(0, 2, 1, 3)
        out.append(inverse(torch.from_numpy(np.ascontiguousarray(y))).numpy())
        bar.update(len(ws))
    bar.close()
    if not out:
        raise ValueError("no windows to label")
    return np.concatenate(out).astype(np.float32, copy=False)


def label(checkpoint_dir: str | Path, dataset_id: str | None = None,
          protocol: Protocol | dict | None = None, backend: str = "hf",
          splits: tuple[str, ...] = ("train", "val", "test"),
          store_root: str | Path = "results/soft_labels", *, max_windows: int | None = None,
          chunk_pairs: int = 8192, overwrite: bool = False, progress: bool = True,
          backend_options: dict | None = None, dataset_options: dict | None = None,
          device: str = "cpu"):
    """Label the windows of ``splits`` with a fine-tuned teacher and store them.

    Args:
        checkpoint_dir: a directory written by :func:`flowdistill.teacher.finetune.finetune`.
        dataset_id: defaults to the teacher's training dataset.
        protocol: a Protocol, or overrides on the dataset's default protocol (dict); None uses
            the teacher's protocol for its own dataset, else the dataset's default.
        backend: "hf" or "vllm".
        splits: "train" (visible training windows), "train_all", "val", "test".
        store_root: where the SoftLabelStore artifact directory is created.
        max_windows: label only the first this many windows (smoke runs); the rest are absent.
        chunk_pairs: prompts per backend call.
        overwrite: replace an existing artifact with the same version key.
        backend_options: passed to the backend (e.g. ``batch_size``).
        dataset_options: loader options; default: the teacher's own for its own dataset.
        device: where the hf backend runs the teacher: "cpu", "cuda", "cuda:N" or "auto" (cuda
            when available); recorded in the store's metadata (not in its version key). The
            vllm backend places its model itself and takes "cpu" only here.

    Returns:
        The opened :class:`~flowdistill.teacher.label_store.SoftLabelStore`.
    """
    from .label_store import SoftLabelStore

    if backend != "hf" and device != "cpu":
        raise ValueError(f"device={device!r} applies to the hf backend; the {backend} backend "
                         f"places its model itself (pass its options in backend_options)")
    dev = resolve_device(device)
    meta = read_config(checkpoint_dir)
    dataset_id = dataset_id or meta["dataset_id"]
    if dataset_id == meta["dataset_id"]:
        if protocol is None:
            protocol = Protocol.from_dict(meta["protocol"])
        if dataset_options is None:
            dataset_options = meta["config"].get("dataset_options") or {}
    prepared = load_prepared(dataset_id, protocol, dataset_options)
    check_compatible(meta, prepared)
    starts = unique_starts(prepared, tuple(splits))
    if max_windows is not None:
        starts = starts[:max_windows]
    # the store's version key; a store already there that holds every window is reused before
    # the teacher is loaded or the backend started
    key = {"teacher_id": meta["teacher_id"], "adapter_hash": meta["adapter_hash"],
           "template_hash": template_hash(),
           "protocol_hash": protocol_hash(dataset_id, prepared.protocol),
           "backend": backend, "backend_version": backend_version(backend)}
    existing = None if overwrite else _existing_store(store_root, key, starts)
    if existing is not None:
        print(f"soft labels: reusing {existing.path} (it holds every window asked for)")
        return existing
    teacher, meta = load_teacher(checkpoint_dir, device=dev)
    scaler = scaler_from_meta(meta)
    scaled = torch.from_numpy(scaler.transform(prepared.data.values))
    source = PromptSource(PromptBuilder.from_prepared(prepared), teacher.tokenizer, scaled,
                          prepared.tod, prepared.dow, with_series=teacher.st_encoder is not None)
    tc = list(prepared.target_channel_idx)
    be = get_backend(backend, teacher, **(backend_options or {}))
    try:
        t0 = time.time()
        labels = predict_windows(be, source, starts, prepared.num_nodes,
                                 lambda y: scaler.inverse(y, tc), chunk_pairs, progress)
        seconds = time.time() - t0
    finally:
        be.close()
    finite = np.isfinite(labels)
    mask = finite.reshape(len(labels), -1).all(axis=1)
    nan_prompts = int((~finite.all(axis=(1, 3))).sum())
    metadata = {
        **key,
        "device": str(dev) if backend == "hf" else None,
        "device_name": device_description(dev)["name"] if backend == "hf" else None,
        "parse_failures": 0,
        "nan_failures": nan_prompts,
        "producer": __name__,
        "dataset": dataset_id,
        "protocol": prepared.protocol.to_dict(),
        "splits": list(splits),
        "template_version": TEMPLATE_VERSION,
        "teacher_checkpoint": str(Path(checkpoint_dir).resolve()),
        "teacher_dataset_id": meta["dataset_id"],
        "teacher_protocol_hash": meta["protocol_hash"],
        "backbone": meta["backbone"],
        "prompts": int(len(starts) * prepared.num_nodes),
        "seconds": round(seconds, 2),
        "prompts_per_second": round(len(starts) * prepared.num_nodes / max(seconds, 1e-9), 2),
    }
    return SoftLabelStore.create(store_root, labels, starts, mask, metadata, overwrite=overwrite)


def _existing_store(store_root: str | Path, key_fields: dict, starts: np.ndarray):
    """The store already at this version key when it holds every window of ``starts`` (so a
    rerun reuses it instead of labelling again); None when there is none. A store with the same
    key that lacks some of the windows is an error: relabel with ``overwrite`` or use another
    ``store_root``."""
    from .label_store import SoftLabelStore, version_key

    path = Path(store_root) / version_key(key_fields)
    if not path.exists():
        return None
    store = SoftLabelStore.open(path)
    missing = int((~np.isin(starts, store.starts)).sum())
    if missing:
        raise FileExistsError(
            f"{path}: a soft-label store of this teacher and protocol exists but lacks "
            f"{missing} of the {len(starts)} windows asked for; pass overwrite=True to relabel "
            f"them all, or another store_root")
    return store


def info(checkpoint_dir: str | Path) -> dict:
    """Same as :func:`flowdistill.teacher.finetune.info`."""
    from .finetune import info as _info

    return _info(checkpoint_dir)

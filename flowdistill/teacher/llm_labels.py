"""Soft labels from a fine-tuned LLM teacher: run a backend over every (window, node) prompt of
the windows asked for and write a :class:`~flowdistill.teacher.label_store.SoftLabelStore`.

The teacher's own scaler (saved in its checkpoint) scales the ST-encoder inputs and inverts the
head's outputs, so the labels are in original units whatever the labelling protocol's training
fraction (which changes the student's scaler, not the teacher's). For transfer (a teacher
labelling another dataset) ``input_scaler="target"`` uses instead the labelled dataset's scaler,
fitted on the training windows its protocol makes visible: each city standardised by its own
statistics, as UrbanGPT normalises each dataset separately.

Labelling at scale is resumable. The windows are labelled in chunks of ``chunk_windows``
(rounded up to whole backend calls of ``chunk_pairs`` prompts, so a chunk's numbers never depend
on where a run started); each chunk is written to ``<store_root>/<version_key>.partial/`` with a
``manifest.json`` naming the store's key fields, the windows, the settings and the sha256 of
every finished chunk. A run killed mid-way (a GPU window ends) starts again after the last
complete chunk; the final store is published atomically (:func:`benchmark.atomic.atomic_dir`)
and its array files are byte-identical to an uninterrupted run's on the same machine. The store's
metadata records ``backend``, the backend options (``dtype``, ``batch_size``, ...) and
``labels_per_s`` (prompts, i.e. (window, node) labels, per second of labelling, summed over the
runs that made it; start-up excluded).
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from benchmark.atomic import atomic_file, atomic_write_json
from benchmark.data.protocol import Protocol, protocol_hash
from benchmark.data.stdata import DataError
from benchmark.data.windows import PreparedData
from benchmark.device import device_description, resolve_device
from benchmark.locks import run_lock
from benchmark.paths import (
    LABELS_PARTIAL_FORMAT,
    LABELS_PARTIAL_MANIFEST,
    LABELS_PARTIAL_SUFFIX,
)

from .backends import PromptSource, backend_version, get_backend
from .finetune import load_prepared, load_teacher, read_config, scaler_from_meta
from .prompts import TEMPLATE_VERSION, PromptBuilder, pairs, template_hash

DTYPES = ("float32", "bfloat16")
INPUT_SCALERS = ("teacher", "target")
PARTIAL_SUFFIX = LABELS_PARTIAL_SUFFIX
MANIFEST = LABELS_PARTIAL_MANIFEST
MANIFEST_FORMAT = LABELS_PARTIAL_FORMAT


def unique_starts(prepared: PreparedData, splits: tuple[str, ...]) -> np.ndarray:
    """Window starts of ``splits`` in order, duplicates removed."""
    starts = np.concatenate([prepared.starts(s) for s in splits]).astype(np.int64)
    _, first = np.unique(starts, return_index=True)
    return starts[np.sort(first)]


def check_compatible(meta: dict, prepared: PreparedData) -> None:
    """The teacher must see the same window lengths and channels it was trained on; a teacher
    with a per-node embedding labels only its own dataset (its embedding rows are that dataset's
    nodes: even where another dataset has as many nodes, reading them as the same places would
    carry the source's per-node levels into the transfer)."""
    p, where = prepared.protocol, f"teacher {meta['teacher_id']}"
    tp = meta["protocol"]
    if (p.input_len, p.horizon) != (tp["input_len"], tp["horizon"]):
        raise DataError(f"{where} was trained with input_len={tp['input_len']}, horizon="
                        f"{tp['horizon']}; the labelling protocol has {p.input_len}, {p.horizon}")
    if list(prepared.data.channels) != list(meta["channels"]):
        raise DataError(f"{where} was trained on channels {meta['channels']}, the data has "
                        f"{prepared.data.channels}")
    if meta["config"].get("encoder_node_embedding"):
        if prepared.num_nodes != meta["num_nodes"]:
            raise DataError(f"{where} has a node embedding for {meta['num_nodes']} nodes, the "
                            f"data has {prepared.num_nodes}")
        if prepared.dataset_id != meta["dataset_id"]:
            raise DataError(f"{where} has a node embedding learned on {meta['dataset_id']}; it "
                            f"cannot label {prepared.dataset_id} (transfer needs a teacher "
                            f"fine-tuned with encoder_node_embedding = false)")
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
          chunk_pairs: int = 8192, chunk_windows: int = 256, dtype: str = "float32",
          batch_size: int | None = None, input_scaler: str = "teacher",
          overwrite: bool = False, progress: bool = True,
          backend_options: dict | None = None, dataset_options: dict | None = None,
          device: str = "cpu"):
    """Label the windows of ``splits`` with a fine-tuned teacher and store them (resumable:
    see the module docstring).

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
        chunk_windows: windows per resumable chunk, rounded up to whole backend calls
            (``chunk_pairs // N`` windows each).
        dtype: "float32", or "bfloat16" (the hf backend runs its forward passes under bf16
            autocast; vLLM loads the model in bf16). Part of the store's key when not float32.
        batch_size: prompts per forward pass (hf) or per engine request batch (vllm); None: the
            backend's default. Recorded in the metadata, not part of the key.
        input_scaler: "teacher" (the teacher's own scaler) or "target" (the labelled dataset's,
            fitted on the windows the labelling protocol makes visible; for transfer). Part of
            the store's key when not "teacher".
        overwrite: replace an existing artifact with the same version key (and start the
            labelling over).
        backend_options: further backend options (e.g. ``reuse_prefix``).
        dataset_options: loader options; default: the teacher's own for its own dataset.
        device: where the hf backend runs the teacher: "cpu", "cuda", "cuda:N" or "auto" (cuda
            when available); recorded in the store's metadata (not in its version key). The
            vllm backend places its model itself and takes "cpu" only here.

    Returns:
        The opened :class:`~flowdistill.teacher.label_store.SoftLabelStore`.
    """
    from .label_store import SoftLabelStore, version_key

    if backend != "hf" and device != "cpu":
        raise ValueError(f"device={device!r} applies to the hf backend; the {backend} backend "
                         f"places its model itself (pass its options in backend_options)")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if input_scaler not in INPUT_SCALERS:
        raise ValueError(f"input_scaler must be one of {INPUT_SCALERS}, got {input_scaler!r}")
    if chunk_windows < 1 or chunk_pairs < 1:
        raise ValueError(f"chunk_windows and chunk_pairs must be >= 1, got {chunk_windows}, "
                         f"{chunk_pairs}")
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
    options = _backend_options(backend, dtype, batch_size, backend_options)
    # the store's version key; a store already there that holds every window is reused before
    # the teacher is loaded or the backend started
    key = {"teacher_id": meta["teacher_id"], "adapter_hash": meta["adapter_hash"],
           "template_hash": template_hash(),
           "protocol_hash": protocol_hash(dataset_id, prepared.protocol),
           "backend": backend, "backend_version": backend_version(backend)}
    label_options = {}
    if dtype != "float32":
        label_options["dtype"] = dtype
    if input_scaler != "teacher":
        label_options.update(input_scaler=input_scaler,
                             scaler_train_fraction=prepared.protocol.train_fraction,
                             scaler_fraction_mode=prepared.protocol.fraction_mode)
    if label_options:  # absent when default: the keys of earlier stores stay as they were
        key["label_options"] = label_options
    existing = None if overwrite else _existing_store(store_root, key, starts)
    if existing is not None:
        print(f"soft labels: reusing {existing.path} (it holds every window asked for)")
        return existing
    n = prepared.num_nodes
    call_windows = max(1, chunk_pairs // max(1, n))
    chunk = math.ceil(chunk_windows / call_windows) * call_windows
    identity = {**key, "version_key": version_key(key), "dataset": dataset_id,
                "num_windows": int(len(starts)), "starts_sha256": _sha256_array(starts),
                "num_nodes": int(n), "chunk_windows": int(chunk),
                "chunk_pairs": int(chunk_pairs), "backend_options": options}
    root = Path(store_root)
    with run_lock(root, f"label-{identity['version_key']}",
                  on_wait=lambda p: print(f"soft labels: waiting for {p} (another process is "
                                          f"labelling this store)", flush=True)):
        if not overwrite:  # another process may have published it while we waited
            existing = _existing_store(store_root, key, starts)
            if existing is not None:
                print(f"soft labels: reusing {existing.path} (made by another process)")
                return existing
        partial = PartialLabels.open(root / (identity["version_key"] + PARTIAL_SUFFIX),
                                     identity, restart=overwrite)
        todo = [i for i in range(partial.num_chunks) if i not in partial.done]
        startup = 0.0
        if todo:
            if partial.done:
                print(f"soft labels: resuming {partial.path} at chunk {todo[0] + 1} of "
                      f"{partial.num_chunks} ({len(partial.done)} chunks done)", flush=True)
            t_start = time.time()
            teacher, meta = load_teacher(checkpoint_dir, device=dev)
            if input_scaler == "target":
                scaler = prepared.scaler
            else:
                scaler = scaler_from_meta(meta)
            scaled = torch.from_numpy(scaler.transform(prepared.data.values))
            source = PromptSource(PromptBuilder.from_prepared(prepared), teacher.tokenizer,
                                  scaled, prepared.tod, prepared.dow,
                                  with_series=teacher.st_encoder is not None)
            tc = list(prepared.target_channel_idx)
            be = get_backend(backend, teacher, **options)
            startup = time.time() - t_start
            bar = tqdm(total=len(starts), initial=sum(
                min(chunk, len(starts) - i * chunk) for i in partial.done),
                desc=f"{backend} labels", unit="window", disable=not progress)
            try:
                for i in todo:
                    ws = starts[i * chunk:(i + 1) * chunk]
                    t0 = time.time()
                    y = predict_windows(be, source, ws, n, lambda v: scaler.inverse(v, tc),
                                        chunk_pairs, progress=False)
                    partial.add(i, y, time.time() - t0)
                    bar.update(len(ws))
            finally:
                bar.close()
                be.close()
        labels = partial.assemble()
        finite = np.isfinite(labels)
        mask = finite.reshape(len(labels), -1).all(axis=1)
        nan_prompts = int((~finite.all(axis=(1, 3))).sum())
        seconds = partial.seconds
        prompts = int(len(starts) * n)
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
            "teacher_train_fraction": meta["protocol"].get("train_fraction", 1.0),
            "backbone": meta["backbone"],
            "dtype": dtype,
            "batch_size": options.get("batch_size", options.get("request_batch")),
            "backend_options": options,
            "input_scaler": input_scaler,
            "chunk_windows": int(chunk),
            "chunks": partial.num_chunks,
            "labelling_runs": partial.runs,
            "prompts": prompts,
            "seconds": round(seconds, 2),
            "startup_seconds": round(startup, 2),
            "labels_per_s": round(prompts / max(seconds, 1e-9), 2),
            "prompts_per_second": round(prompts / max(seconds, 1e-9), 2),
        }
        store = SoftLabelStore.create(store_root, labels, starts, mask, metadata,
                                      overwrite=overwrite)
        partial.remove()
    return store


def _backend_options(backend: str, dtype: str, batch_size: int | None,
                     extra: dict | None) -> dict:
    """The options the backend is built with: ``extra`` plus ``dtype`` and the batch size
    (``batch_size`` for hf, ``request_batch`` for vllm)."""
    opts = dict(extra or {})
    for k in ("dtype", "batch_size", "request_batch"):
        if k in opts:
            raise ValueError(f"backend_options: pass {k!r} as label()'s own argument "
                             f"(dtype, batch_size)")
    opts["dtype"] = dtype
    if batch_size is not None:
        opts["request_batch" if backend == "vllm" else "batch_size"] = int(batch_size)
    return opts


def _sha256_array(a: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


class PartialLabels:
    """The chunks of an unfinished labelling run (see the module docstring).

    ``<dir>/manifest.json`` holds the run's ``identity`` (store key fields, windows, chunking,
    backend options) and, per finished chunk, its file, window range, sha256 and seconds;
    ``<dir>/chunk-<i>.npy`` holds chunk ``i``'s labels ``[w, T_out, N, C_out]`` float32. Every
    file is written atomically, the chunk before the manifest that names it.
    """

    def __init__(self, path: Path, identity: dict, chunks: dict[int, dict], runs: int) -> None:
        self.path, self.identity, self.chunks, self.runs = path, identity, chunks, runs
        w, c = identity["num_windows"], identity["chunk_windows"]
        self.num_chunks = max(1, math.ceil(w / c)) if w else 0

    @classmethod
    def open(cls, path: Path, identity: dict, restart: bool = False) -> PartialLabels:
        """The partial run at ``path`` when its identity matches (chunks whose file is missing
        or fails its sha256 are dropped and labelled again); otherwise a fresh one (an old
        manifest of other settings is discarded, with a message)."""
        path = Path(path)
        manifest = path / MANIFEST
        if manifest.is_file() and not restart:
            try:
                old = json.loads(manifest.read_text())
            except (OSError, json.JSONDecodeError):
                old = None
            if old is not None and old.get("identity") == json.loads(json.dumps(identity)):
                chunks = {}
                for k, info in (old.get("chunks") or {}).items():
                    f = path / info["file"]
                    if f.is_file() and _file_sha256(f) == info["sha256"]:
                        chunks[int(k)] = info
                    else:
                        print(f"soft labels: {f} missing or corrupt; labelling it again")
                part = cls(path, identity, chunks, int(old.get("runs", 0)) + 1)
                part._write_manifest()
                return part
            print(f"soft labels: {path} was started with other settings; starting over")
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)
        part = cls(path, identity, {}, 1)
        part._write_manifest()
        return part

    @property
    def done(self) -> set[int]:
        return set(self.chunks)

    @property
    def seconds(self) -> float:
        """Labelling seconds summed over the finished chunks (every run)."""
        return float(sum(c["seconds"] for c in self.chunks.values()))

    def add(self, index: int, labels: np.ndarray, seconds: float) -> None:
        """Write chunk ``index`` (float32 ``[w, T_out, N, C_out]``), then the manifest."""
        name = f"chunk-{index:05d}.npy"
        labels = np.ascontiguousarray(labels, dtype=np.float32)
        with atomic_file(self.path / name) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, labels, allow_pickle=False)
        c = self.identity["chunk_windows"]
        self.chunks[index] = {"file": name, "windows": [index * c, index * c + len(labels)],
                              "sha256": _file_sha256(self.path / name),
                              "seconds": round(seconds, 3)}
        self._write_manifest()

    def assemble(self) -> np.ndarray:
        """Every chunk's labels in window order ``[W, T_out, N, C_out]``; each file's sha256 is
        checked against the manifest."""
        missing = [i for i in range(self.num_chunks) if i not in self.chunks]
        if missing:
            raise RuntimeError(f"{self.path}: chunks {missing[:5]} are not labelled")
        out = []
        for i in range(self.num_chunks):
            f = self.path / self.chunks[i]["file"]
            if _file_sha256(f) != self.chunks[i]["sha256"]:
                raise RuntimeError(f"{f}: sha256 does not match {self.path / MANIFEST}")
            out.append(np.load(f, allow_pickle=False))
        if not out:
            raise ValueError("no windows to label")
        return np.concatenate(out)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    def _write_manifest(self) -> None:
        atomic_write_json(self.path / MANIFEST, {
            "format": MANIFEST_FORMAT, "identity": self.identity, "runs": self.runs,
            "num_chunks": self.num_chunks,
            "chunks": {str(k): v for k, v in sorted(self.chunks.items())}}, sort_keys=True)


def _file_sha256(path: Path) -> str:
    from .label_store import _sha256

    return _sha256(path)


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

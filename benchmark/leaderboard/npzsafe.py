"""Reading and writing the predictions file safely.

The predictions file is a zip archive (``.npz``) holding exactly one member ``predictions.npy``.
Everything is checked from the archive's directory and the ``.npy`` header *before* any array
data is read:

1. the file's own size, then the zip directory (a truncated or corrupt file fails here);
2. member names: no path separators, no ``..``, exactly ``predictions.npy``; no encryption;
   stored or deflated only;
3. the member's declared uncompressed size (``ZipInfo.file_size``) against the size limit, and
   its compression ratio against deflate's ceiling (about 1032:1; a higher ratio means forged
   sizes), so a zip bomb is refused before it is inflated;
4. the ``.npy`` header, parsed with ``numpy.lib.format`` (``read_magic`` and
   ``read_array_header_1_0/2_0``, which evaluate literals only): the dtype must be float32 or
   float64 (object dtypes, whose data would be a pickle, are refused here, unloaded), and
   ``prod(shape) * itemsize`` must be within the limit and equal the member's size minus the
   header.

Only then is the array loaded, with ``np.load(..., allow_pickle=False)``, from the bytes read
once into memory (so the file cannot change between the checks and the load).
"""

from __future__ import annotations

import io
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.lib import format as npy_format

from .schema import SubmissionError

MEMBER = "predictions.npy"
ARRAY_KEY = "predictions"
DEFAULT_MAX_BYTES = 512 * 2**20
MAX_COMPRESSION_RATIO = 1100  # deflate cannot exceed ~1032:1
_HEADER_READ = 70_000  # numpy refuses headers over 10,000 bytes by default
_ZIP_OVERHEAD = 1 * 2**20
_NAMES_SHOWN = 5  # member names shown in an error
ALLOWED_DTYPES = (np.dtype("<f4"), np.dtype(">f4"), np.dtype("<f8"), np.dtype(">f8"))


@dataclass(frozen=True)
class ArrayHeader:
    """What the ``.npy`` header declares: shape, dtype, header length and data length (bytes)."""

    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool
    header_len: int
    data_len: int


def read_checked_bytes(path: Path, max_bytes: int) -> bytes:
    """The file's bytes, refusing files larger than any valid submission could be."""
    try:
        size = path.stat().st_size
    except OSError as e:
        raise SubmissionError(path, "predictions", f"cannot read ({e.strerror})") from None
    if size > max_bytes + _ZIP_OVERHEAD:
        raise SubmissionError(path, "predictions", f"file is {size} bytes, above the size limit "
                                                   f"of {max_bytes} bytes")
    return path.read_bytes()


def inspect_npz(blob: bytes, path: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> ArrayHeader:
    """Check the archive and the array header without reading the array data (see module doc)."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(blob))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, OSError) as e:
        raise SubmissionError(path, "predictions", f"not a readable zip archive (truncated or "
                                                   f"corrupt npz): {e}") from None
    with zf:
        infos = zf.infolist()
        for info in infos:
            name = info.filename
            if "/" in name or "\\" in name or ".." in name or ":" in name or "\x00" in name:
                raise SubmissionError(path, "predictions", f"archive member name {name!r} "
                                                           "contains a path separator or '..'")
        names = [i.filename for i in infos]
        if names != [MEMBER]:
            shown = names if len(names) <= _NAMES_SHOWN else \
                f"{len(names)} members: {names[:_NAMES_SHOWN]} and {len(names) - _NAMES_SHOWN} more"
            raise SubmissionError(path, "predictions", f"archive must hold exactly one member "
                                                       f"{MEMBER!r}, found {shown}")
        info = infos[0]
        if info.flag_bits & 0x1:
            raise SubmissionError(path, MEMBER, "encrypted members are not allowed")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise SubmissionError(path, MEMBER, f"compression method {info.compress_type} not "
                                                "allowed (stored or deflated only)")
        if info.file_size > max_bytes:
            raise SubmissionError(path, MEMBER, f"declared uncompressed size {info.file_size} "
                                                f"bytes exceeds the size limit of {max_bytes} "
                                                "bytes (zip bomb?)")
        ratio = info.file_size / max(1, info.compress_size)
        if ratio > MAX_COMPRESSION_RATIO:
            raise SubmissionError(path, MEMBER, f"compression ratio {ratio:.0f}:1 exceeds "
                                                f"{MAX_COMPRESSION_RATIO}:1 (forged sizes or zip "
                                                "bomb)")
        try:
            with zf.open(info) as f:
                head = f.read(min(info.file_size, _HEADER_READ))
        except (zipfile.BadZipFile, EOFError, OSError, ValueError, NotImplementedError) as e:
            raise SubmissionError(path, MEMBER, f"cannot read the member (truncated or corrupt): "
                                                f"{e}") from None
    header = _parse_header(head, path)
    check_declared_size(header, path, max_bytes)
    if header.header_len + header.data_len != info.file_size:
        raise SubmissionError(path, MEMBER, f"declared data size {header.data_len} bytes (shape "
                                            f"{header.shape}, {header.dtype}) does not match the "
                                            f"member's {info.file_size - header.header_len} "
                                            "bytes of data: truncated or padded")
    return header


def _parse_header(head: bytes, path: Path) -> ArrayHeader:
    bio = io.BytesIO(head)
    try:
        version = npy_format.read_magic(bio)
        if version == (1, 0):
            shape, fortran, dtype = npy_format.read_array_header_1_0(bio)
        elif version == (2, 0):
            shape, fortran, dtype = npy_format.read_array_header_2_0(bio)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
    except (ValueError, EOFError, SyntaxError, TypeError) as e:
        raise SubmissionError(path, MEMBER, f"malformed .npy header: {e}") from None
    if dtype.hasobject:
        raise SubmissionError(path, MEMBER, f"dtype {dtype} holds Python objects (a pickle); "
                                            "object arrays are rejected without being loaded; "
                                            "expected float32 or float64")
    if dtype not in ALLOWED_DTYPES or dtype.names is not None or dtype.subdtype is not None:
        raise SubmissionError(path, MEMBER, f"dtype {dtype} not allowed; expected float32 or "
                                            "float64")
    data_len = math.prod(shape) * dtype.itemsize
    return ArrayHeader(tuple(int(s) for s in shape), dtype, bool(fortran), bio.tell(), data_len)


def check_declared_size(header: ArrayHeader, path: Path, max_bytes: int) -> None:
    """Refuse arrays whose declared shape is over the limit (before any data is read)."""
    if header.data_len > max_bytes:
        raise SubmissionError(path, MEMBER, f"declared shape {header.shape} ({header.dtype}) is "
                                            f"{header.data_len} bytes, above the size limit of "
                                            f"{max_bytes} bytes")


def load_predictions(blob: bytes, path: Path, header: ArrayHeader) -> np.ndarray:
    """Load the array checked by :func:`inspect_npz` (``allow_pickle=False``)."""
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
            arr = npz[ARRAY_KEY]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise SubmissionError(path, MEMBER, f"cannot load the array (corrupt data): {e}") from None
    if arr.shape != header.shape or arr.dtype != header.dtype:
        raise SubmissionError(path, MEMBER, "array does not match its header")  # pragma: no cover
    return arr


def npy_bytes(arr: np.ndarray) -> bytes:
    """``arr`` as ``.npy`` bytes (format 1.0, no pickles)."""
    buf = io.BytesIO()
    npy_format.write_array(buf, np.ascontiguousarray(arr), version=(1, 0), allow_pickle=False)
    return buf.getvalue()


def zip_members(members: list[tuple[str, bytes]], compress: bool = True) -> bytes:
    """A deterministic zip (fixed timestamps and permissions) of ``(name, data)`` pairs."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)
    return buf.getvalue()


def predictions_npz_bytes(predictions: np.ndarray) -> bytes:
    """A valid submission npz for ``predictions: [W, T_out, N, C]`` (float32/float64)."""
    arr = np.asarray(predictions)
    if arr.dtype not in (np.float32, np.float64):
        raise ValueError(f"predictions must be float32 or float64, got {arr.dtype}")
    return zip_members([(MEMBER, npy_bytes(arr))])


def predictions_sha256(arr: np.ndarray) -> str:
    """Content hash of the predictions: sha256 over the shape and the values as little-endian
    float64 in C order, so the same numbers hash alike whatever dtype or byte order was sent."""
    import hashlib

    h = hashlib.sha256(repr(tuple(arr.shape)).encode())
    h.update(np.ascontiguousarray(arr, dtype="<f8").tobytes())
    return h.hexdigest()

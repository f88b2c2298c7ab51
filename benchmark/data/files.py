"""File integrity and download helpers for the dataset registry.

One job: turn "a file with this sha256 and size should exist" into either a verified path or a
:class:`DataError` that names the file and both checksums. Downloads go to a temporary file in
the target directory, are hashed while streaming, and are renamed into place only when size and
sha256 match; a failed or mismatching download leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.request
from pathlib import Path

from .stdata import DataError

_CHUNK = 1 << 20
# (resolved path, size, mtime_ns) -> sha256 hex: repeated loads in one process hash once.
_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def sha256_file(path: Path) -> str:
    """sha256 hex digest of a file, cached in-process by (path, size, mtime)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    cached = _SHA_CACHE.get(key)
    if cached is not None:
        return cached
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    digest = h.hexdigest()
    _SHA_CACHE[key] = digest
    return digest


def clear_sha_cache() -> None:
    """Forget cached checksums (tests; files changed behind our back with the same mtime)."""
    _SHA_CACHE.clear()


def download(url: str, dest: Path, sha256: str, size: int, desc: str | None = None,
             timeout: float = 60.0, progress: bool = True) -> Path:
    """Download ``url`` to ``dest`` atomically, verifying ``size`` and ``sha256``.

    The bytes go to a temporary file beside ``dest`` and are renamed onto ``dest`` only after
    both checks pass. On any failure the temporary file is removed and :class:`DataError`
    (checksum/size mismatch) or :class:`OSError` (network, HTTP) is raised.
    """
    from tqdm.auto import tqdm

    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    h = hashlib.sha256()
    n = 0
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            with tqdm(total=size, unit="B", unit_scale=True, desc=desc or dest.name,
                      disable=not progress, leave=False) as bar:
                while chunk := resp.read(_CHUNK):
                    out.write(chunk)
                    h.update(chunk)
                    n += len(chunk)
                    bar.update(len(chunk))
            out.flush()
            os.fsync(out.fileno())
        actual = h.hexdigest()
        if n != size or actual != sha256:
            raise DataError(
                f"download of {dest.name} from {url} failed verification: "
                f"expected sha256 {sha256} ({size} bytes), got sha256 {actual} ({n} bytes); "
                "the file was discarded")
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    st = dest.stat()
    _SHA_CACHE[(str(dest.resolve()), st.st_size, st.st_mtime_ns)] = sha256
    return dest

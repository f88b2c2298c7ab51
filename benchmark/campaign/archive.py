"""What snapshot archives share: the status file's name, the sha256 of a part, and adding bytes
to a tar archive as a file member (:mod:`~benchmark.campaign.snapshot`,
:mod:`~benchmark.campaign.llm_carry`)."""

from __future__ import annotations

import hashlib
import io
import tarfile
import time

STATUS_FILE = "status.json"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    """Add ``data`` to ``tar`` as the regular file ``name`` (mode 0644, mtime now)."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(time.time())
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))

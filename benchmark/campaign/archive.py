"""What snapshot archives share (:mod:`~benchmark.campaign.snapshot`,
:mod:`~benchmark.campaign.llm_carry`): the status file's name, the sha256 of a part, adding bytes
to a tar archive as a file member, splitting what is carried into parts of bounded size, and
writing one part."""

from __future__ import annotations

import hashlib
import io
import tarfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TypeVar

from ..atomic import atomic_write_bytes

STATUS_FILE = "status.json"
T = TypeVar("T")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    """Add ``data`` to ``tar`` as the regular file ``name`` (mode 0644, mtime now)."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(time.time())
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def split_into_parts(sized: Iterable[tuple[T, int]], part_limit: float) -> list[list[T]]:
    """``(item, bytes)`` pairs, in order, into consecutive parts: the next item starts a new
    part when it would take the current one past ``part_limit``. No part is empty."""
    parts: list[list[T]] = []
    used = 0
    for item, size in sized:
        if not parts or used + size > part_limit:
            parts.append([])
            used = 0
        parts[-1].append(item)
        used += size
    return parts


def write_part(path: Path, members: Iterable[tuple[str, bytes]]) -> dict:
    """Write the tar archive of ``members`` (member name, bytes), in order, to ``path``
    atomically; returns its manifest entry ``{"file", "sha256", "bytes"}``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members:
            add_bytes(tar, name, data)
    data = buf.getvalue()
    atomic_write_bytes(path, data)
    return {"file": path.name, "sha256": sha256_bytes(data), "bytes": len(data)}

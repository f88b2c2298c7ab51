"""The suite's one way to write a file: a temporary file beside the target, fsync, rename.

Readers see the old file or the new one, never a torn one; two writers never share a temporary
name; a crash leaves at most a hidden ``.<name>.*.tmp`` file, never a half-written target.
Records, checkpoints, tables, figures, the leaderboard and caches all write through
:func:`atomic_file` (or the ``atomic_write_*`` shorthands built on it); artifacts that are a
directory of files (soft-label stores, converted model caches) through :func:`atomic_dir`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_file", "atomic_dir", "atomic_write_bytes", "atomic_write_text",
           "atomic_write_json", "fsync_dir", "file_mode", "dir_mode"]


def file_mode() -> int:
    """0o666 minus the process umask (``mkstemp`` creates files 0o600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def dir_mode() -> int:
    """0o777 minus the process umask (``mkdtemp`` creates directories 0o700)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o777 & ~mask


def fsync_dir(path: Path) -> None:
    """fsync a directory so a rename inside it survives a crash (no-op where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_file(path: str | Path, exclusive: bool = False, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends without an exception the
    file written there is fsync'd and renamed onto ``path`` (the directory is fsync'd too).

    The caller writes the temporary path however it likes (``torch.save``, ``np.save`` to an
    open file, ``fig.savefig`` with an explicit format, a streamed download). On an exception the
    temporary file is removed and ``path`` is untouched. ``exclusive``: create ``path`` only if
    it does not exist (a hard link instead of the rename; :class:`FileExistsError` otherwise),
    so of two writers exactly one wins.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        _fsync_file(tmp)
        os.chmod(tmp, file_mode())
        if exclusive:
            os.link(tmp, path)
        else:
            os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_bytes(path: str | Path, data: bytes, exclusive: bool = False) -> None:
    """Write ``data`` to ``path`` through :func:`atomic_file`."""
    with atomic_file(path, exclusive=exclusive) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str, exclusive: bool = False) -> None:
    """:func:`atomic_write_bytes` of UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"), exclusive=exclusive)


def atomic_write_json(path: str | Path, obj: object, exclusive: bool = False,
                      indent: int | None = 2, sort_keys: bool = False) -> None:
    """:func:`atomic_write_text` of ``json.dumps(obj)`` with a trailing newline."""
    atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=sort_keys) + "\n",
                      exclusive=exclusive)


@contextmanager
def atomic_dir(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory beside ``path``; when the block ends without an exception
    every file in it is fsync'd and the directory is renamed onto ``path``.

    Readers see the whole old artifact or the whole new one. ``path`` existing raises
    :class:`FileExistsError` (before the block runs and again at the rename, if another writer
    won the race) unless ``overwrite``: then the old directory is moved aside, the new one
    renamed in, and the old one removed. On an exception the temporary directory is removed.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: already exists")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield tmp
        for f in sorted(tmp.rglob("*")):
            if f.is_file():
                _fsync_file(str(f))
        os.chmod(tmp, dir_mode())
        if path.exists() and overwrite:
            old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
            os.rename(path, old)
            os.rename(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            try:
                os.rename(tmp, path)
            except OSError as e:  # another writer created ``path`` meanwhile
                if path.exists():
                    raise FileExistsError(f"{path}: already exists") from e
                raise
        fsync_dir(path.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)

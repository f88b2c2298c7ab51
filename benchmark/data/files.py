"""Dataset files: where they are, how they are downloaded, and whether they are intact.

One job: turn "these files, with these sha256 and sizes, make up dataset X" into either a
verified directory or a :class:`DataError` that names the files, the checksums, the places
searched and the remedy. The catalogue of datasets is :mod:`benchmark.data.registry`; this
module knows only :class:`FileSpec` lists.

Where files come from, in order (the first directory holding *all* of a dataset's files wins):

1. ``$FLOWDISTILL_DATA/<dataset_id>/`` when the variable is set;
2. a ``shared/data`` mirror beside the checkout: ``<repo root>/../shared/data/<dataset_id>/``
   (found from this package's location, or else from the working directory), only if it exists;
3. the user cache ``<cache>/data/<dataset_id>/``, where ``<cache>`` is ``$FLOWDISTILL_CACHE`` or
   ``platformdirs.user_cache_dir("flowdistill")``;
4. otherwise the missing files are downloaded from their pinned URLs into the cache (progress bar,
   size + sha256 checked before an atomic rename). ``FLOWDISTILL_OFFLINE=1`` disables downloads.

Nothing is ever written into ``FLOWDISTILL_DATA`` or the mirror. When files cannot be found or
fetched, the error names the dataset, the files, the places searched and ``FLOWDISTILL_DATA``;
synthetic data are never substituted. Checksums are cached in-process by path, size and mtime,
so verifying before every load is cheap.
"""

from __future__ import annotations

import hashlib
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from ..atomic import atomic_file
from .stdata import DataError

ENV_DATA = "FLOWDISTILL_DATA"
ENV_CACHE = "FLOWDISTILL_CACHE"
ENV_OFFLINE = "FLOWDISTILL_OFFLINE"

_CHUNK = 1 << 20
# (resolved path, size, mtime_ns) -> sha256 hex: repeated loads in one process hash once.
_SHA_CACHE: dict[tuple[str, int, int], str] = {}


@dataclass(frozen=True)
class FileSpec:
    """One raw file: its name in the dataset directory, canonical URL, sha256 and size (bytes).
    ``mirrors`` are further URLs for the same bytes, tried in order after ``url``."""

    name: str
    url: str
    sha256: str
    size: int
    mirrors: tuple[str, ...] = ()


class FileCheck(NamedTuple):
    file: str
    ok: bool
    expected_sha: str
    actual_sha: str


# --- checksums ----------------------------------------------------------------------------------
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


def check_files(directory: Path, files: tuple[FileSpec, ...]) -> list[FileCheck]:
    """One ``(file, ok, expected_sha, actual_sha)`` per file of ``directory``."""
    checks = []
    for f in files:
        actual = sha256_file(directory / f.name)
        checks.append(FileCheck(f.name, actual == f.sha256, f.sha256, actual))
    return checks


def raise_if_bad(dataset_id: str, directory: Path, checks: list[FileCheck]) -> None:
    """:class:`DataError` naming every file whose checksum differs, with both digests."""
    bad = [c for c in checks if not c.ok]
    if bad:
        lines = "; ".join(f"{directory / c.file}: expected sha256 {c.expected_sha}, "
                          f"got {c.actual_sha}" for c in bad)
        raise DataError(f"dataset {dataset_id!r} failed checksum verification (truncated or "
                        f"altered file): {lines}")


# --- downloads ----------------------------------------------------------------------------------
def download(url: str, dest: Path, sha256: str, size: int, desc: str | None = None,
             timeout: float = 60.0, progress: bool = True) -> Path:
    """Download ``url`` to ``dest`` atomically, verifying ``size`` and ``sha256``.

    The bytes stream into :func:`~benchmark.atomic.atomic_file`'s temporary file beside
    ``dest``, hashed on the way, and are renamed onto ``dest`` only after both checks pass. On
    any failure nothing is left behind and :class:`DataError` (checksum/size mismatch) or
    :class:`OSError` (network, HTTP) is raised.
    """
    from tqdm.auto import tqdm

    h = hashlib.sha256()
    n = 0
    with atomic_file(dest, suffix=".part") as tmp:
        with open(tmp, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            with tqdm(total=size, unit="B", unit_scale=True, desc=desc or dest.name,
                      disable=not progress, leave=False) as bar:
                while chunk := resp.read(_CHUNK):
                    out.write(chunk)
                    h.update(chunk)
                    n += len(chunk)
                    bar.update(len(chunk))
        actual = h.hexdigest()
        if n != size or actual != sha256:
            raise DataError(
                f"download of {dest.name} from {url} failed verification: "
                f"expected sha256 {sha256} ({size} bytes), got sha256 {actual} ({n} bytes); "
                "the file was discarded")
    st = dest.stat()
    _SHA_CACHE[(str(dest.resolve()), st.st_size, st.st_mtime_ns)] = sha256
    return dest


def download_file(f: FileSpec, dest: Path, progress: bool = True) -> None:
    """Download ``f`` from its URL, else from each mirror in turn; :class:`DataError` listing
    every URL's failure when none gives the pinned bytes."""
    errors = []
    for url in (f.url, *f.mirrors):
        try:
            download(url, dest, f.sha256, f.size, desc=f.name, progress=progress)
            return
        except DataError as e:  # checksum mismatch: try the next URL, report all
            errors.append(str(e))
        except OSError as e:  # network or HTTP error
            errors.append(f"{url}: {e}")
    raise DataError(f"could not download {f.name}: " + " | ".join(errors))


# --- where files are ----------------------------------------------------------------------------
def cache_dir() -> Path:
    """``<cache>/data``: ``$FLOWDISTILL_CACHE/data`` or platformdirs' user cache."""
    root = os.environ.get(ENV_CACHE)
    if not root:
        from platformdirs import user_cache_dir

        root = user_cache_dir("flowdistill")
    return Path(root).expanduser() / "data"


def mirror_dir() -> Path | None:
    """A ``shared/data`` directory beside the checkout, if one exists.

    Looked up from this package's location (``<repo root>/../shared/data``) and, for
    non-editable installs run from the checkout (tox), from the working directory."""
    here = Path(__file__).resolve().parents[2]
    for base in (here, Path.cwd()):
        cand = (base / ".." / "shared" / "data").resolve()
        if cand.is_dir():
            return cand
    return None


def search_roots() -> list[tuple[str, Path]]:
    """(label, root) pairs searched in order; a dataset lives in ``root / dataset_id``."""
    roots: list[tuple[str, Path]] = []
    env = os.environ.get(ENV_DATA)
    if env:
        roots.append((f"${ENV_DATA}", Path(env).expanduser()))
    mirror = mirror_dir()
    if mirror is not None:
        roots.append(("shared/data mirror", mirror))
    roots.append(("user cache", cache_dir()))
    return roots


def offline() -> bool:
    """``FLOWDISTILL_OFFLINE`` is set to something other than empty/0/false/no."""
    return os.environ.get(ENV_OFFLINE, "").strip().lower() not in ("", "0", "false", "no")


def _not_found(dataset_id: str, missing: list[str], roots: list[tuple[str, Path]],
               reason: str) -> DataError:
    places = "; ".join(f"{label}: {root / dataset_id}" for label, root in roots)
    env = os.environ.get(ENV_DATA)
    env_state = f"currently {env!r}" if env else "currently unset"
    return DataError(
        f"dataset {dataset_id!r}: file(s) {missing} not found. Searched {places}. {reason} "
        f"Set {ENV_DATA} to a directory laid out as <dataset_id>/<files> ({env_state}), or run "
        f"`flowdistill data fetch {dataset_id}` with network access. Synthetic data are never "
        "substituted.")


def locate_files(dataset_id: str, files: tuple[FileSpec, ...], download: bool = True) -> Path:
    """Directory holding all of ``files`` for ``dataset_id`` (see the module docstring for the
    order). Missing files are downloaded into the user cache when ``download`` and not
    offline; otherwise :class:`DataError` names the files, the places searched and
    FLOWDISTILL_DATA."""
    if not files:
        raise DataError(f"dataset {dataset_id!r} has no files (it is generated or user-supplied)")
    roots = search_roots()
    for _, root in roots:
        d = root / dataset_id
        if all((d / f.name).is_file() for f in files):
            return d
    cache = cache_dir() / dataset_id
    missing = [f for f in files if not (cache / f.name).is_file()]
    if not download or offline():
        why = ("Downloads are disabled." if not download
               else f"Downloads are disabled by {ENV_OFFLINE}.")
        raise _not_found(dataset_id, [f.name for f in missing], roots, why)
    for f in missing:
        try:
            download_file(f, cache / f.name)
        except DataError as e:
            raise _not_found(dataset_id, [f.name], roots, f"Download failed: {e}.") from e
    return cache


def verify_files(dataset_id: str, files: tuple[FileSpec, ...]) -> list[FileCheck]:
    """sha256 of each file where :func:`locate_files` finds them (no download); empty when
    ``files`` is."""
    if not files:
        return []
    return check_files(locate_files(dataset_id, files, download=False), files)


def fetch_files(dataset_id: str, files: tuple[FileSpec, ...], progress: bool = True) -> Path:
    """Make ``files`` available and verified; returns their directory.

    Downloads missing files into the cache; a corrupt file *in the cache* is re-downloaded,
    a corrupt file in FLOWDISTILL_DATA or the mirror is reported (never overwritten).
    """
    d = locate_files(dataset_id, files, download=True)
    checks = check_files(d, files)
    if d.resolve() == (cache_dir() / dataset_id).resolve() and not offline():
        by_name = {f.name: f for f in files}
        for c in checks:
            if not c.ok:
                download_file(by_name[c.file], d / c.file, progress=progress)
        checks = check_files(d, files)
    raise_if_bad(dataset_id, d, checks)
    return d

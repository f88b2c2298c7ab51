"""The leaderboard directory: append-only entries, duplicate detection, atomic updates.

Layout under the root (default ``results/leaderboard``, or ``$FLOWDISTILL_LEADERBOARD``)::

    entries/<dataset>/<board>/<entry_id>.json   one file per accepted submission, never edited
    README.md                                   markdown tables (rendered)
    index.html, boards/*.html, pages/*.html     the static site (rendered, :mod:`.site`)

``<board>`` is the protocol hash (plus ``-o<hash>`` for non-default dataset options) and
``<entry_id>`` is ``<model>-<first 12 hex of the predictions' sha256>``. A submission is fully
validated, then, holding an exclusive lock on the root directory, checked for duplicates and
near-duplicates (:func:`find_duplicate`), the pages are rendered in memory, and only then
is anything written: the entry (created exclusively through a hard link from a temporary file)
and the pages (each atomically replaced; pages of the site that no longer exist are removed).
A failure while writing restores the previous state, so a rejected submission leaves the
directory byte-for-byte unchanged.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path

from ..atomic import atomic_write_bytes, atomic_write_text
from ..records import RunRecord, load_records, now_iso
from . import npzsafe
from .boards import entry_row, record_rows, render_markdown
from .schema import SubmissionError
from .site import render_site
from .validate import ValidationResult, validate_submission

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no advisory lock
    fcntl = None

ENTRY_VERSION = 1
ENV_ROOT = "FLOWDISTILL_LEADERBOARD"
PAGES = ("README.md", "index.html")  # top-level pages; the site adds SITE_DIRS/*.html
SITE_DIRS = ("boards", "pages")
NEAR_DUPLICATE_REL = 1e-6  # tolerance, relative to max(1, largest |test target|)
SAME_MODEL_METRICS_REL = 1e-9  # same model name + every overall metric equal to this: duplicate


def default_root() -> Path:
    from ..paths import workspace_root

    return Path(os.environ.get(ENV_ROOT, workspace_root() / "results" / "leaderboard"))


def default_records_dir() -> Path:
    from ..experiment import default_records_dir as records

    return records()


def load_entries(root: Path) -> list[dict]:
    """Every entry under ``root/entries`` (sorted by path); an unreadable one raises naming it."""
    out = []
    base = Path(root) / "entries"
    if not base.is_dir():
        return out
    for p in sorted(base.glob("*/*/*.json")):
        try:
            entry = json.loads(p.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{p}: unreadable leaderboard entry ({e})") from e
        if not isinstance(entry, dict) or "predictions_sha256" not in entry:
            raise ValueError(f"{p}: not a leaderboard entry (no predictions_sha256)")
        out.append(entry)
    return out


def make_entry(result: ValidationResult, created: str | None = None) -> dict:
    """The stored form of an accepted submission: metadata + recomputed metrics + hash."""
    t = result.target
    meta = result.metadata
    return {
        "entry_version": ENTRY_VERSION,
        "entry_id": f"{meta['model']}-{result.predictions_sha256[:12]}",
        "dataset": t.dataset,
        "dataset_options": t.dataset_options,
        "protocol": t.protocol.evaluation_dict(),
        "protocol_hash": t.protocol_hash,
        "board": t.board,
        "metadata": meta,
        "metrics": {"test": result.metrics},
        "ignored_claims": sorted(result.ignored),
        "predictions_sha256": result.predictions_sha256,
        "fingerprint": {"block_means": list(result.fingerprint),
                        "target_scale": result.target_scale},
        "num_test_windows": result.num_windows,
        "submitted": created or now_iso(),
        "validated_with": _suite_version(),
    }


def _close(a: float, b: float, tol: float) -> bool:
    return abs(a - b) <= tol


def find_duplicate(entry: dict, existing: list[dict]) -> tuple[dict, str] | None:
    """The accepted entry that ``entry`` (a new one, from :func:`make_entry`) duplicates, and
    why; None if it is new.

    * exact: the same predictions sha256 anywhere on the leaderboard (any dataset, any model);
    * near: on the same dataset and board (protocol + options), every block mean of the
      predictions (``fingerprint.block_means``) and the recomputed overall MAE and RMSE are
      within ``tol = NEAR_DUPLICATE_REL * max(1, largest |test target|)`` of the entry's. When
      two prediction arrays differ by at most ``tol`` anywhere, each of these numbers differs
      by at most ``tol``, so copies with tiny noise, rounding or a dtype change are caught;
      unrelated models do not agree on all 66 numbers to a millionth of the data's range;
    * same model: the same model name on the same board with every overall metric (MAE, RMSE,
      MAPE) equal to ``SAME_MODEL_METRICS_REL`` relative (covers entries stored without a
      fingerprint).
    """
    new_fp = entry.get("fingerprint") or {}
    new_o = entry["metrics"]["test"]["overall"]
    tol = NEAR_DUPLICATE_REL * max(1.0, float(new_fp.get("target_scale") or 0.0))
    for e in existing:
        if e.get("predictions_sha256") == entry["predictions_sha256"]:
            return e, "identical predictions (sha256)"
        if e.get("dataset") != entry["dataset"] or e.get("board") != entry["board"]:
            continue
        o = ((e.get("metrics") or {}).get("test") or {}).get("overall") or {}
        fp = (e.get("fingerprint") or {}).get("block_means")
        if fp and len(fp) == len(new_fp.get("block_means", ())) and o \
                and all(_close(a, b, tol) for a, b in zip(fp, new_fp["block_means"],
                                                          strict=True)) \
                and all(_close(o.get(k, math.nan), new_o[k], tol) for k in ("mae", "rmse")):
            return e, f"predictions within {tol:.3g} of it (near-duplicate)"
        same_model = (e.get("metadata") or {}).get("model") == entry["metadata"]["model"]
        if same_model and o and all(
                math.isclose(o.get(k, math.nan), new_o[k], rel_tol=SAME_MODEL_METRICS_REL,
                             abs_tol=1e-12) for k in ("mae", "rmse", "mape")):
            return e, "the same model with identical metrics"
    return None


def _suite_version() -> str:
    from .. import __version__

    return __version__


def entry_path(root: Path, entry: dict) -> Path:
    return Path(root) / "entries" / entry["dataset"] / entry["board"] / f"{entry['entry_id']}.json"


@contextlib.contextmanager
def locked(root: Path) -> Iterator[None]:
    """Exclusive advisory lock on the root directory itself (no lock file is left behind)."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    fd = os.open(root, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _create_exclusive(path: Path, text: str) -> None:
    """Write a new file atomically; fail if ``path`` exists."""
    atomic_write_text(path, text, exclusive=True)


def render_pages(entries: list[dict], records: list[RunRecord]) -> dict[str, str]:
    """``{relative path: text}``: ``README.md`` and every page of the static site
    (:mod:`.site`: ``index.html``, ``boards/*.html``, ``pages/*.html``)."""
    rows = [entry_row(e) for e in entries] + record_rows(records)
    n_rec = sum(1 for r in records if r.status == "finished")
    return {"README.md": render_markdown(rows, len(entries), n_rec),
            **render_site(rows, len(entries), n_rec)}


def rendered_files(root: Path) -> dict[str, bytes]:
    """The rendered pages now under ``root`` (relative path -> bytes)."""
    root = Path(root)
    paths = [root / n for n in PAGES] + [p for d in SITE_DIRS
                                         for p in sorted((root / d).glob("*.html"))]
    return {str(p.relative_to(root)): p.read_bytes() for p in paths if p.is_file()}


def write_pages(root: Path, pages: dict[str, str]) -> None:
    """Replace the rendered pages atomically (only those whose content changed) and remove
    site pages that are no longer rendered."""
    root = Path(root)
    for name in rendered_files(root):
        if name not in pages and name not in PAGES:
            (root / name).unlink()
    for name, text in pages.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        if not p.exists() or p.read_text() != text:
            atomic_write_bytes(p, text.encode())


def _restore_pages(root: Path, old: dict[str, bytes]) -> None:
    root = Path(root)
    for name in rendered_files(root):
        if name not in old:
            (root / name).unlink(missing_ok=True)
    for name, data in old.items():
        atomic_write_bytes(root / name, data)
    for d in SITE_DIRS:
        if not any(n.startswith(f"{d}/") for n in old):
            with contextlib.suppress(OSError):
                (root / d).rmdir()


def render(root: Path | None = None, records_dir: Path | None = None) -> dict[str, str]:
    """Re-render README.md and the site from the entries and the run records."""
    root = Path(root or default_root())
    records_dir = Path(records_dir or default_records_dir())
    records = load_records(records_dir) if records_dir.is_dir() else []
    root.mkdir(parents=True, exist_ok=True)
    with locked(root):
        pages = render_pages(load_entries(root), records)
        write_pages(root, pages)
    return pages


def submit(file: str | Path, root: Path | None = None, records_dir: Path | None = None,
           max_bytes: int = npzsafe.DEFAULT_MAX_BYTES) -> tuple[dict, Path]:
    """Validate ``file`` and add it as a new entry, then re-render (see the module docstring).

    Returns:
        (entry, path of the entry file).
    """
    root = Path(root or default_root())
    records_dir = Path(records_dir or default_records_dir())
    result = validate_submission(file, max_bytes=max_bytes)
    records = load_records(records_dir) if records_dir.is_dir() else []
    entry = make_entry(result)
    root_created = not root.exists()
    root.mkdir(parents=True, exist_ok=True)
    with locked(root):
        existing = load_entries(root)
        dup = find_duplicate(entry, existing)
        if dup is not None:
            e, why = dup
            raise SubmissionError(result.npz_path, "predictions",
                                  f"duplicate submission: {why} of entry "
                                  f"{e.get('entry_id')!r} already on the leaderboard; submit "
                                  "new predictions")
        path = entry_path(root, entry)
        if path.exists():  # pragma: no cover - same id implies same hash, caught above
            raise SubmissionError(result.npz_path, "entry_id", f"{path} exists")
        pages = render_pages([*existing, entry], records)
        old = rendered_files(root)
        created_dirs = [d for d in (path.parent.parent.parent, path.parent.parent, path.parent)
                        if not d.exists()]
        if root_created:
            created_dirs.insert(0, root)
        try:
            _create_exclusive(path, json.dumps(entry, indent=1, sort_keys=True) + "\n")
            write_pages(root, pages)
        except BaseException:
            path.unlink(missing_ok=True)
            _restore_pages(root, old)
            for d in reversed(created_dirs):
                with contextlib.suppress(OSError):
                    d.rmdir()
            raise
    return entry, path

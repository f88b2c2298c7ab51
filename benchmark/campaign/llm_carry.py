"""LLM teachers in campaign snapshots: their checkpoint directories and their unfinished label
chunks, so a window that ends inside an ``llm:`` teacher job goes on where it stopped.

Two kinds of directory are carried, each read as a whole that was on disk at one moment:

* ``teacher/<name>``: an LLM teacher's checkpoint directory ``<runs>/llm-teacher/<name>/``
  (:mod:`flowdistill.teacher.checkpoint`). Unfinished (fewer steps done than its config asks):
  every file, ``resume/`` included, so fine-tuning resumes; finished: every file but
  ``resume/`` (labels are made from ``weights.safetensors``). The teacher's ``save`` writes
  ``resume/`` and ``weights.safetensors`` first and ``teacher.json`` last, so a copy is taken
  only when none of those files is newer than ``teacher.json`` and ``resume/state.json``'s
  ``step`` is teacher.json's training ``steps``; and only when no file changed (inode, size,
  mtime) while it was read. (Seeding writes ``teacher.json`` last too.)
* ``labels/<version_key>.partial``: an unfinished labelling run under the label root
  (:class:`~flowdistill.teacher.llm_labels.PartialLabels`): its ``manifest.json`` and the chunks
  it names, each chunk's sha256 checked against it (a chunk written after the manifest is left
  for the next snapshot).

They go into ``llm-<generation>-<part>.tar`` archives, members ``<kind>/<name>/<relative
path>``, packed like the forecaster checkpoint parts (at most ``part_mb`` each, within what
those left of ``max_mb``); a directory that does not fit is named in ``left_out`` with its size
and the reason. :func:`seed` restores a teacher directory only where the local one is absent or
has done fewer steps, a label directory only where the local one is absent or has fewer chunks
(and the store is not published yet); every member name is checked (relative, no ``..``, no
hidden names, only under a directory the manifest lists). Nothing is unpickled here.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import stat
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..atomic import atomic_dir
from ..locks import RunLockTimeout, run_lock
from ..paths import (
    LABELS_PARTIAL_FORMAT,
    LABELS_PARTIAL_MANIFEST,
    LABELS_PARTIAL_SUFFIX,
    LLM_TEACHER_DIR,
)
from .archive import STATUS_FILE, sha256_bytes, split_into_parts, write_part

LLM_PART_PATTERN = re.compile(r"^llm-(\d+)-(\d+)\.tar$")
TEACHER_DIR, LABEL_DIR = "teacher", "labels"  # archive prefixes, also the manifest's kinds
SAFE_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
TEACHER_JSON, STATE_JSON = "teacher.json", "resume/state.json"
RESUME_DIR = "resume"
# what the teacher's save writes, in this order, before teacher.json
SAVED = ("resume/weights.safetensors", "resume/optimizer.pt", STATE_JSON, "weights.safetensors")


@dataclass
class DirCopy:
    """One directory read for a snapshot: ``key`` (``<kind>/<name>``), its files (relative
    POSIX path -> bytes) and what it holds (``steps`` and ``finished``, or ``chunks``)."""

    key: str
    kind: str
    files: dict[str, bytes]
    info: dict


def _teacher_root(runs_dir: Path) -> Path:
    return Path(runs_dir) / LLM_TEACHER_DIR


def candidates(runs_dir: Path, label_root: Path | None) -> list[tuple[str, str, Path]]:
    """``(key, kind, path)`` of every directory to carry: the LLM teacher checkpoints (name
    order), then the unfinished labelling runs under ``label_root`` (None: none)."""
    out = []
    root = _teacher_root(runs_dir)
    for d in sorted(root.iterdir()) if root.is_dir() else []:
        if SAFE_PART.match(d.name) and (d / TEACHER_JSON).is_file():
            out.append((f"{TEACHER_DIR}/{d.name}", TEACHER_DIR, d))
    if label_root is not None and Path(label_root).is_dir():
        for d in sorted(Path(label_root).glob(f"*{LABELS_PARTIAL_SUFFIX}")):
            if SAFE_PART.match(d.name) and (d / LABELS_PARTIAL_MANIFEST).is_file():
                out.append((f"{LABEL_DIR}/{d.name}", LABEL_DIR, d))
    return out


def stat_tree(d: Path, skip: frozenset[str] = frozenset()) -> dict[str, tuple] | None:
    """Relative path -> (inode, size, mtime_ns) of every regular file under ``d`` (hidden names,
    such as the temporary files of atomic writes, and top-level folders in ``skip`` left out);
    None when ``d`` went away meanwhile."""
    out = {}
    try:
        for p in sorted(d.rglob("*")):
            rel = p.relative_to(d)
            if any(part.startswith(".") for part in rel.parts) or rel.parts[0] in skip:
                continue
            try:
                st = p.lstat()
            except FileNotFoundError:
                continue
            if stat.S_ISREG(st.st_mode):
                out[rel.as_posix()] = (st.st_ino, st.st_size, st.st_mtime_ns)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return out


def _teacher_finished(meta: dict) -> bool:
    return int((meta.get("training") or {}).get("steps") or 0) >= \
        int((meta.get("config") or {}).get("steps") or 0)


def teacher_skip(d: Path) -> frozenset[str]:
    """What a snapshot leaves out of teacher checkpoint ``d``: ``resume/`` once it is finished."""
    try:
        meta = json.loads((d / TEACHER_JSON).read_bytes())
    except (OSError, json.JSONDecodeError):
        return frozenset()
    return frozenset({RESUME_DIR}) if _teacher_finished(meta) else frozenset()


def check_teacher(files: dict[str, bytes], stats: dict[str, tuple]) -> dict | None:
    """``{"steps", "finished"}`` when ``files`` (with their ``stats``) are a teacher checkpoint
    whose files belong together (see the module docstring); None otherwise."""
    try:
        meta = json.loads(files[TEACHER_JSON])
        steps = int(meta["training"]["steps"])
        if STATE_JSON in files and int(json.loads(files[STATE_JSON])["step"]) != steps:
            return None  # a save in progress: resume/ is ahead of teacher.json
    except (KeyError, TypeError, ValueError):
        return None
    newest = max((stats[rel][2] for rel in SAVED if rel in stats), default=0)
    if stats[TEACHER_JSON][2] < newest:
        return None  # a file of the save newer than teacher.json: a save in progress
    return {"steps": steps, "finished": _teacher_finished(meta)}


def check_labels(files: dict[str, bytes]) -> tuple[dict[str, bytes], dict] | None:
    """The manifest and the chunks it names (each matching its sha256), and ``{"chunks"}``;
    None when the manifest is unreadable or names a chunk not read or not matching."""
    try:
        manifest = json.loads(files[LABELS_PARTIAL_MANIFEST])
        if manifest.get("format") != LABELS_PARTIAL_FORMAT:
            return None
        chunks = manifest.get("chunks") or {}
        keep = {LABELS_PARTIAL_MANIFEST: files[LABELS_PARTIAL_MANIFEST]}
        for info in chunks.values():
            name = info["file"]
            if not SAFE_PART.match(name) or name not in files or \
                    hashlib.sha256(files[name]).hexdigest() != info["sha256"]:
                return None
            keep[name] = files[name]
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    return keep, {"chunks": len(chunks)}


def read_dir(key: str, kind: str, d: Path, tries: int = 5) -> DirCopy | None:
    """Directory ``d`` as a whole that was on disk at one moment (see the module docstring);
    None when absent, or when no such read succeeded in ``tries``."""
    for _ in range(tries):
        skip = teacher_skip(d) if kind == TEACHER_DIR else frozenset()
        before = stat_tree(d, skip)
        if not before:
            return None
        files = {}
        try:
            for rel in before:
                files[rel] = (d / rel).read_bytes()
        except FileNotFoundError:
            time.sleep(0.2)
            continue
        if stat_tree(d, skip) != before:
            time.sleep(0.2)
            continue
        if kind == TEACHER_DIR:
            info = check_teacher(files, before) if TEACHER_JSON in files else None
            if info is not None and (RESUME_DIR in skip) == info["finished"]:
                return DirCopy(key, kind, files, info)
        else:
            checked = check_labels(files)
            if checked is not None:
                return DirCopy(key, kind, checked[0], checked[1])
        time.sleep(0.2)
    return None


def signature(runs_dir: Path, label_root: Path | None) -> tuple:
    """What :func:`write_parts` depends on: the candidates and the state of their files."""
    return tuple((key, tuple(sorted((stat_tree(d) or {}).items())))
                 for key, _, d in candidates(runs_dir, label_root))


def write_parts(out_dir: Path, runs_dir: Path, label_root: Path | None, part_limit: float,
                total_limit: float, generation: int) -> dict:
    """Read every candidate directory and write the ``llm-<generation>-<i>.tar`` parts into
    ``out_dir``; returns their manifest ``{"parts": [...], "left_out": [...]}``."""
    taken: list[tuple[DirCopy, int]] = []
    total, left_out = 0, []
    for key, kind, d in candidates(runs_dir, label_root):
        listed = stat_tree(d, teacher_skip(d) if kind == TEACHER_DIR else frozenset()) or {}
        size = sum(s[1] for s in listed.values())
        reason = ("larger than part_mb" if size > part_limit else
                  "beyond max_mb" if total + size > total_limit else None)
        copy = None
        if reason is None:
            copy = read_dir(key, kind, d)
            if copy is None:
                reason = "changing while read"
        if copy is None:
            left_out.append({"dir": key, "bytes": size, "reason": reason})
            continue
        size = sum(len(b) for b in copy.files.values())
        taken.append((copy, size))
        total += size
    manifest: dict = {"parts": [], "left_out": left_out}
    for i, members in enumerate(split_into_parts(taken, part_limit)):
        dirs = {copy.key: {"kind": copy.kind, **copy.info,
                           "bytes": sum(len(b) for b in copy.files.values()),
                           "files": sorted(copy.files)} for copy in members}
        entry = write_part(Path(out_dir) / f"llm-{generation}-{i}.tar",
                           ((f"{copy.key}/{rel}", data) for copy in members
                            for rel, data in sorted(copy.files.items())))
        manifest["parts"].append({**entry, "dirs": dirs})
    return manifest


# -------------------------------------------------------------------- seeding
def local_teacher_steps(d: Path) -> int | None:
    """Steps done by the teacher checkpoint ``d`` (the larger of ``resume/state.json``'s step
    and teacher.json's training steps); None when absent or unreadable."""
    found = []
    for rel, get in ((STATE_JSON, lambda m: m["step"]),
                     (TEACHER_JSON, lambda m: m["training"]["steps"])):
        try:
            found.append(int(get(json.loads((d / rel).read_bytes()))))
        except (OSError, KeyError, TypeError, ValueError):
            pass
    return max(found) if found else None


def local_label_chunks(d: Path) -> int | None:
    """Chunks named by the manifest of the labelling run ``d``; None when absent or
    unreadable."""
    try:
        return len(json.loads((d / LABELS_PARTIAL_MANIFEST).read_bytes()).get("chunks") or {})
    except (OSError, ValueError, AttributeError):
        return None


def safe_relative(rel: str) -> bool:
    """A relative POSIX path of visible, ordinary names (no absolute path, no ``..``)."""
    parts = rel.split("/")
    return bool(rel) and all(SAFE_PART.match(p) for p in parts)


def seed(snapshot_dir: Path, manifest: dict, runs_dir: Path, label_root: Path | None,
         problems: list[str]) -> list[str]:
    """Restore the LLM directories of a snapshot's ``llm`` manifest (see the module docstring);
    returns the keys restored and appends one line per problem to ``problems``."""
    restored = []
    for part in manifest.get("parts", []):
        path = Path(snapshot_dir) / str(part.get("file", ""))
        if not LLM_PART_PATTERN.match(path.name) or not path.is_file():
            problems.append(f"{path}: LLM part missing")
            continue
        data = path.read_bytes()
        if sha256_bytes(data) != part.get("sha256"):
            problems.append(f"{path}: sha256 differs from {STATUS_FILE}; part skipped")
            continue
        try:
            with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
                members = {m.name: m for m in tar.getmembers()}
                dirs = part.get("dirs") or {}
                for key, info in dirs.items():
                    files = _dir_files(tar, members, key, info, path.name, problems)
                    if files is not None and _restore(key, files, runs_dir, label_root,
                                                      problems):
                        restored.append(key)
                for name in sorted(n for n in members
                                   if not any(n.startswith(f"{k}/") for k in dirs)):
                    problems.append(f"{path.name}: member {name!r} ignored (not under a "
                                    f"directory {STATUS_FILE} lists)")
        except (tarfile.TarError, OSError, EOFError) as e:
            problems.append(f"{path}: unreadable ({e})")
    return restored


def _dir_files(tar: tarfile.TarFile, members: dict, key: str, info: dict, part: str,
               problems: list[str]) -> dict[str, bytes] | None:
    """The files of directory ``key`` in a part, every name checked; None (and a problem line)
    when the key, a name or a member is not what it must be."""
    kind, _, name = str(key).partition("/")
    bad_label = kind == LABEL_DIR and not name.endswith(LABELS_PARTIAL_SUFFIX)
    if kind not in (TEACHER_DIR, LABEL_DIR) or info.get("kind") != kind or \
            not SAFE_PART.match(name) or bad_label:
        problems.append(f"{part}: directory {key!r} ignored (expected teacher/<name> or "
                        f"labels/<version key>{LABELS_PARTIAL_SUFFIX})")
        return None
    files = {}
    for rel in info.get("files") or []:
        member = members.get(f"{key}/{rel}")
        if not isinstance(rel, str) or not safe_relative(rel) or \
                (kind == LABEL_DIR and "/" in rel):
            problems.append(f"{part}: {key}: file name {rel!r} refused; directory skipped")
            return None
        if member is None or not member.isfile():
            problems.append(f"{part}: {key}/{rel} listed but not a file in the part; "
                            f"directory skipped")
            return None
        files[rel] = tar.extractfile(member).read()
    return files


def _restore(key: str, files: dict[str, bytes], runs_dir: Path, label_root: Path | None,
             problems: list[str]) -> bool:
    kind, _, name = key.partition("/")
    if kind == TEACHER_DIR:
        try:
            steps = int(json.loads(files[TEACHER_JSON])["training"]["steps"])
        except (KeyError, TypeError, ValueError):
            problems.append(f"{key}: no readable {TEACHER_JSON}; not restored")
            return False
        target = _teacher_root(runs_dir) / name
        local = local_teacher_steps(target)
        if local is not None and local >= steps:
            return False
        _write_dir(target, files)
        return True
    if label_root is None:
        problems.append(f"{key}: no label root to restore it into; not restored")
        return False
    checked = check_labels(files)
    if checked is None:
        problems.append(f"{key}: its manifest does not match its chunks; not restored")
        return False
    version = name[:-len(LABELS_PARTIAL_SUFFIX)]
    target = Path(label_root) / name
    if (Path(label_root) / version).exists():
        return False  # the store is published here already
    try:
        with run_lock(Path(label_root), f"label-{version}", timeout_s=0):
            local = local_label_chunks(target)
            if local is not None and local >= checked[1]["chunks"]:
                return False
            _write_dir(target, checked[0])
    except RunLockTimeout:
        problems.append(f"{key}: being labelled here; left alone")
        return False
    return True


def _write_dir(target: Path, files: dict[str, bytes]) -> None:
    """Replace ``target`` by a directory of ``files`` at once (:func:`atomic_dir`); a teacher's
    ``teacher.json`` last, as its save writes it (:func:`check_teacher` reads the order from
    the mtimes)."""
    with atomic_dir(target, overwrite=True) as tmp:
        for rel, data in sorted(files.items(), key=lambda kv: (kv[0] == TEACHER_JSON, kv[0])):
            p = tmp / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)

"""Snapshots of a campaign: what a later window, on this machine or another, needs to go on.

Every ``interval_s`` seconds (and once at the end) :class:`Snapshotter` writes into its folder,
each file through :mod:`benchmark.atomic`:

* ``records.tar.gz``: every finished run record of the records directory;
* ``checkpoints-<generation>-<part>.tar``: ``last.pt`` and ``best.pt`` of unfinished runs (so
  they resume where they were) and ``best.pt`` of finished teacher runs (their soft labels are
  remade from it), in the queue's priority order, split into parts of at most ``part_mb`` and
  ``max_mb`` in all (runs beyond that are listed as left out); a run's two files are taken only
  when they were on disk together (:func:`pair_belongs_together`);
* ``llm-<generation>-<part>.tar`` (:mod:`~benchmark.campaign.llm_carry`), in what the
  checkpoint parts leave of ``max_mb``: the LLM teachers' checkpoint directories under
  ``<runs>/llm-teacher/`` (unfinished: whole, ``resume/`` included; finished: without
  ``resume/``), then the unfinished labelling runs (``<version key>.partial/``) under the label
  root; a directory larger than ``part_mb``, beyond ``max_mb``, or changing whenever it was
  read is named with its size in ``left_out``;
* ``log.jsonl``: the campaign log of this and earlier windows;
* ``status.json``, written last: the queue, what is running and the manifest of the files above
  (sha256 of every checkpoint and LLM part). Checkpoint parts get a new generation number when they
  change and the old ones are deleted only after ``status.json`` names the new ones, so the
  folder always holds the parts its ``status.json`` names.

The defaults (two parts of 15 MiB, under 8 files) fit a lease that returns at most 8 files of
16 MiB when each kind of part packs into two. :func:`seed_from_snapshot` (``--resume-from``)
puts a snapshot's records, checkpoints and LLM directories back into a records, a runs and a
label directory without replacing anything newer.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..atomic import atomic_file, atomic_write_bytes, atomic_write_json, atomic_write_text
from ..locks import RunLockTimeout, run_lock
from ..records import is_finished, now_iso, record_path
from . import llm_carry
from .archive import STATUS_FILE, add_bytes, sha256_bytes, split_into_parts, write_part
from .llm_carry import LLM_PART_PATTERN

RECORDS_ARCHIVE = "records.tar.gz"
LOG_FILE = "log.jsonl"
PART_PATTERN = re.compile(r"^checkpoints-(\d+)-(\d+)\.tar$")
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
RESUME, TEACHER_WEIGHTS = "resume", "teacher"
MB = 1024 * 1024


@dataclass
class SnapshotConfig:
    """Attributes:
        interval_s: seconds between snapshots.
        checkpoints: carry checkpoints (unfinished runs, teacher weights, LLM teachers and
            their unfinished label chunks).
        part_mb: largest checkpoint archive (a run whose files are larger is left out).
        max_mb: checkpoint bytes in all; runs beyond it are left out (named in status.json).
    """

    interval_s: float = 20.0
    checkpoints: bool = True
    part_mb: float = 15.0
    max_mb: float = 30.0


def _checkpoint_fields(data: bytes, *keys: str) -> dict:
    """Small fields of a checkpoint held in memory (``epoch``, ``best_epoch``)."""
    import torch

    ck = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    return {k: ck.get(k) for k in keys}


def pair_belongs_together(last: dict, best: dict) -> bool:
    """Whether ``last.pt`` (its ``epoch``, ``best_epoch``) and ``best.pt`` (its ``epoch``) were on
    disk together at some moment. After an epoch that improved, the trainer replaces ``best.pt``
    and then ``last.pt``: so ``best.pt`` is the one ``last.pt`` names, or, between the two
    writes, the next epoch's (a resumed run repeats that epoch). A ``best.pt`` older than the
    one ``last.pt`` names was read before an update of both: read them again."""
    return best["epoch"] in (last["best_epoch"], last["epoch"] + 1)


def read_checkpoints(run_dir: Path, kind: str, tries: int = 5) -> dict[str, bytes] | None:
    """The bytes of a run's checkpoints that belong together (:func:`pair_belongs_together`):
    ``last.pt`` and ``best.pt`` (``kind == "resume"``), or ``best.pt`` alone (``"teacher"``);
    None when absent, or when no pair that belongs together was read in ``tries``."""
    names = ("best.pt",) if kind == TEACHER_WEIGHTS else ("best.pt", "last.pt")
    for _ in range(tries):
        files = {}
        for name in names:
            try:
                files[name] = (run_dir / name).read_bytes()
            except FileNotFoundError:
                pass
        if kind == TEACHER_WEIGHTS:
            return files or None
        if "last.pt" not in files:
            return None
        if "best.pt" not in files:
            return files
        try:
            last = _checkpoint_fields(files["last.pt"], "epoch", "best_epoch")
            best = _checkpoint_fields(files["best.pt"], "epoch")
        except Exception:  # noqa: BLE001 - unreadable now; read again
            time.sleep(0.2)
            continue
        if pair_belongs_together(last, best):
            return files
        time.sleep(0.2)
    return None


class Snapshotter:
    """Writes snapshots (see the module docstring) into ``out_dir``.

    ``state`` returns ``(status, carry, log_lines)``: the status dict, the runs whose
    checkpoints to carry as ``[(run_id, "resume" | "teacher"), ...]`` in priority order, and
    the campaign log's lines.
    """

    def __init__(self, out_dir: Path, records_dir: Path, runs_dir: Path,
                 state: Callable[[], tuple[dict, list[tuple[str, str]], list[str]]],
                 config: SnapshotConfig | None = None, label_root: Path | None = None) -> None:
        self.out_dir = Path(out_dir)
        self.records_dir = Path(records_dir)
        self.runs_dir = Path(runs_dir)
        self.label_root = None if label_root is None else Path(label_root)
        self.state = state
        self.config = config or SnapshotConfig()
        self.max_seconds = 0.0  # the longest snapshot so far (the campaign reserves time)
        self.count = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._records_sig: tuple | None = None
        self._finished_cache: dict[str, tuple[tuple, bool]] = {}
        self._ckpt_sig: tuple | None = None
        self._ckpt_manifest: dict = {"parts": [], "left_out": []}
        self._generation = 1 + max((int(m.group(1)) for p in self.out_dir.glob("checkpoints-*")
                                    if (m := PART_PATTERN.match(p.name))), default=0)
        self._llm_sig: tuple | None = None
        self._llm_manifest: dict = {"parts": [], "left_out": []}
        self._llm_generation = 1 + max((int(m.group(1)) for p in self.out_dir.glob("llm-*")
                                        if (m := LLM_PART_PATTERN.match(p.name))), default=0)
        self.errors: list[str] = []

    # ---------------------------------------------------------------- thread
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="campaign-snapshot", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self.config.interval_s):
            try:
                self.write()
            except Exception as e:  # noqa: BLE001 - a failed snapshot must not stop the campaign
                self.errors.append(f"{type(e).__name__}: {e}")

    # ----------------------------------------------------------------- write
    def write(self) -> dict:
        """Write one snapshot now; return the status it wrote."""
        with self._lock:
            t0 = time.monotonic()
            self.out_dir.mkdir(parents=True, exist_ok=True)
            status, carry, log_lines = self.state()
            records = self._write_records()
            ckpts = self._write_checkpoints(carry) if self.config.checkpoints else {
                "parts": [], "left_out": []}
            llm = self._write_llm(sum(p["bytes"] for p in ckpts["parts"])) \
                if self.config.checkpoints else {"parts": [], "left_out": []}
            atomic_write_text(self.out_dir / LOG_FILE, "".join(ln + "\n" for ln in log_lines))
            self.count += 1
            status = {**status, "snapshot": {"written": now_iso(), "count": self.count,
                                             "records": records, "checkpoints": ckpts,
                                             "llm": llm, "log": LOG_FILE}}
            atomic_write_json(self.out_dir / STATUS_FILE, status)
            keep = {p["file"] for p in ckpts["parts"] + llm["parts"]}
            for p in self.out_dir.glob("*.tar"):
                if (PART_PATTERN.match(p.name) or LLM_PART_PATTERN.match(p.name)) and \
                        p.name not in keep:
                    p.unlink(missing_ok=True)
            self.max_seconds = max(self.max_seconds, time.monotonic() - t0)
            return status

    def _finished_records(self) -> list[Path]:
        out = []
        for p in sorted(self.records_dir.glob("*.json")):
            try:
                st = p.stat()
            except FileNotFoundError:
                continue
            sig = (st.st_mtime_ns, st.st_size)
            cached = self._finished_cache.get(p.name)
            if cached is None or cached[0] != sig:
                cached = (sig, is_finished(self.records_dir, p.stem))
                self._finished_cache[p.name] = cached
            if cached[1]:
                out.append(p)
        return out

    def _write_records(self) -> dict:
        paths = self._finished_records()
        sig = tuple((p.name, self._finished_cache[p.name][0]) for p in paths)
        if sig != self._records_sig or not (self.out_dir / RECORDS_ARCHIVE).exists():
            with atomic_file(self.out_dir / RECORDS_ARCHIVE) as tmp:
                with tarfile.open(tmp, "w:gz") as tar:
                    for p in paths:
                        try:
                            data = p.read_bytes()
                        except FileNotFoundError:
                            continue
                        add_bytes(tar, p.name, data)
            self._records_sig = sig
        return {"file": RECORDS_ARCHIVE, "count": len(paths)}

    def _write_checkpoints(self, carry: list[tuple[str, str]]) -> dict:
        sig = []
        for run_id, kind in carry:
            d = self.runs_dir / run_id
            sig.append((run_id, kind) + tuple(_mtime(d / n) for n in ("best.pt", "last.pt")))
        sig_t = tuple(sig)
        if sig_t == self._ckpt_sig and all((self.out_dir / p["file"]).exists()
                                           for p in self._ckpt_manifest["parts"]):
            return self._ckpt_manifest
        part_limit, total_limit = self.config.part_mb * MB, self.config.max_mb * MB
        taken: list[tuple[tuple[str, str, dict[str, bytes]], int]] = []
        total, left_out = 0, []
        for run_id, kind in carry:
            files = read_checkpoints(self.runs_dir / run_id, kind)
            if not files:
                continue
            size = sum(len(b) for b in files.values())
            if total + size > total_limit or size > part_limit:
                left_out.append(run_id)
                continue
            taken.append(((run_id, kind, files), size))
            total += size
        manifest: dict = {"parts": [], "left_out": left_out}
        gen = self._generation
        self._generation += 1
        for i, members in enumerate(split_into_parts(taken, part_limit)):
            runs = {}
            for run_id, kind, files in members:
                epoch = (_checkpoint_fields(files["last.pt"], "epoch")["epoch"]
                         if "last.pt" in files else None)
                runs[run_id] = {"kind": kind, "epoch": epoch, "files": sorted(files)}
            entry = write_part(self.out_dir / f"checkpoints-{gen}-{i}.tar",
                               ((f"{run_id}/{fname}", data) for run_id, _, files in members
                                for fname, data in sorted(files.items())))
            manifest["parts"].append({**entry, "runs": runs})
        self._ckpt_sig, self._ckpt_manifest = sig_t, manifest
        return manifest

    def _write_llm(self, used: int) -> dict:
        """The LLM teacher parts (:mod:`~benchmark.campaign.llm_carry`) within what the
        forecaster parts (``used`` bytes) left of ``max_mb``."""
        left = max(0.0, self.config.max_mb * MB - used)
        sig = (left, llm_carry.signature(self.runs_dir, self.label_root))
        if sig == self._llm_sig and all((self.out_dir / p["file"]).exists()
                                        for p in self._llm_manifest["parts"]):
            return self._llm_manifest
        manifest = llm_carry.write_parts(self.out_dir, self.runs_dir, self.label_root,
                                         self.config.part_mb * MB, left, self._llm_generation)
        self._llm_generation += 1
        self._llm_sig, self._llm_manifest = sig, manifest
        return manifest


def _mtime(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return None


# -------------------------------------------------------------------- seeding
def read_status(snapshot_dir: Path) -> dict:
    """A snapshot's ``status.json``; one clear error when there is none."""
    path = Path(snapshot_dir) / STATUS_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no campaign snapshot here (expected the "
                                f"{STATUS_FILE} a campaign's --snapshot folder holds)") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: unreadable snapshot status ({e})") from e


def local_epoch(path: Path) -> int | None:
    """The ``epoch`` field of a checkpoint (memory-mapped), None when unreadable."""
    import torch

    try:
        return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["epoch"])
    except Exception:  # noqa: BLE001 - missing or unreadable: the snapshot's copy wins
        return None


def seed_from_snapshot(snapshot_dir: Path, records_dir: Path, runs_dir: Path,
                       label_root: Path | None = None) -> dict:
    """Put a snapshot's finished records into ``records_dir`` (never replacing a finished one)
    and its checkpoints into ``runs_dir`` (only for runs without a finished record, and only
    where the snapshot's ``last.pt`` is further on than the local one; a run whose lock is held
    is left alone), its LLM teacher checkpoints into ``runs_dir`` and its unfinished label
    chunks into ``label_root`` (:func:`benchmark.campaign.llm_carry.seed`). Returns
    ``{"records": n, "checkpoints": [run ids], "llm": [directories], "log": [lines],
    "problems": [...]}``."""
    snapshot_dir, records_dir, runs_dir = Path(snapshot_dir), Path(records_dir), Path(runs_dir)
    status = read_status(snapshot_dir)
    out: dict = {"records": 0, "checkpoints": [], "llm": [], "log": [], "problems": []}
    archive = snapshot_dir / RECORDS_ARCHIVE
    if archive.exists():
        try:
            with tarfile.open(archive, "r:gz") as tar:
                for m in tar.getmembers():
                    out["records"] += _seed_record(tar, m, records_dir, out["problems"])
        except (tarfile.TarError, OSError, EOFError) as e:
            out["problems"].append(f"{archive}: unreadable ({e})")
    manifest = (status.get("snapshot") or {}).get("checkpoints") or {}
    for part in manifest.get("parts", []):
        path = snapshot_dir / str(part.get("file", ""))
        if not PART_PATTERN.match(path.name) or not path.is_file():
            out["problems"].append(f"{path}: checkpoint part missing")
            continue
        data = path.read_bytes()
        if sha256_bytes(data) != part.get("sha256"):
            out["problems"].append(f"{path}: sha256 differs from {STATUS_FILE}; part skipped")
            continue
        with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
            for run_id, info in (part.get("runs") or {}).items():
                if _seed_run(tar, run_id, info, records_dir, runs_dir, out["problems"]):
                    out["checkpoints"].append(run_id)
    llm = (status.get("snapshot") or {}).get("llm") or {}
    out["llm"] = llm_carry.seed(snapshot_dir, llm, runs_dir, label_root, out["problems"])
    log = snapshot_dir / LOG_FILE
    if log.exists():
        out["log"] = [ln for ln in log.read_text().splitlines() if ln.strip()]
    return out


def _seed_record(tar: tarfile.TarFile, m: tarfile.TarInfo, records_dir: Path,
                 problems: list[str]) -> int:
    if not m.isfile() or not m.name.endswith(".json") or not SAFE_NAME.match(m.name):
        problems.append(f"{RECORDS_ARCHIVE}: member {m.name!r} ignored")
        return 0
    run_id = m.name[:-len(".json")]
    data = tar.extractfile(m).read()
    try:
        rec = json.loads(data)
    except json.JSONDecodeError:
        problems.append(f"{RECORDS_ARCHIVE}: {m.name} is not JSON; ignored")
        return 0
    if rec.get("status") != "finished" or rec.get("run_id") != run_id:
        return 0
    if is_finished(records_dir, run_id):
        return 0
    atomic_write_bytes(record_path(records_dir, run_id), data)
    return 1


def _seed_run(tar: tarfile.TarFile, run_id: str, info: dict, records_dir: Path, runs_dir: Path,
              problems: list[str]) -> bool:
    if not SAFE_NAME.match(run_id):
        problems.append(f"checkpoint run id {run_id!r} ignored")
        return False
    kind = info.get("kind")
    names = [n for n in ("best.pt", "last.pt") if n in (info.get("files") or [])]
    files = {}
    for n in names:
        try:
            member = tar.getmember(f"{run_id}/{n}")
        except KeyError:
            problems.append(f"{run_id}/{n}: listed but not in the part")
            return False
        if not member.isfile():
            return False
        files[n] = tar.extractfile(member).read()
    run_dir = runs_dir / run_id
    if kind == TEACHER_WEIGHTS:
        if "best.pt" not in files or (run_dir / "best.pt").exists():
            return False
        atomic_write_bytes(run_dir / "best.pt", files["best.pt"])
        return True
    if kind != RESUME or "last.pt" not in files or is_finished(records_dir, run_id):
        return False
    try:
        with run_lock(runs_dir, run_id, timeout_s=0):
            local = local_epoch(run_dir / "last.pt")
            if local is not None and info.get("epoch") is not None and local >= info["epoch"]:
                return False
            if "best.pt" in files:  # the trainer's order: best first, then last
                atomic_write_bytes(run_dir / "best.pt", files["best.pt"])
            atomic_write_bytes(run_dir / "last.pt", files["last.pt"])
    except RunLockTimeout:
        problems.append(f"{run_id}: being trained here; its checkpoints were left alone")
        return False
    return True

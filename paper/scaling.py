"""Scaling rows (latency and memory against the number of nodes N) and their table.

Rows come from ``results/scaling/*.json`` (written by ``perf/scaling.py``): each file holds
one row, a list of rows, or ``{"rows": [...]}``; a row is ``{model, num_nodes, status ("ok" |
"oom" | "error" | "skipped"), device, supports, latency_ms_median, latency_ms_p95,
peak_memory_mb_inference, ...}``. Run records whose efficiency carries ``num_nodes`` (or whose
sweep tag is ``scaling``) add rows too. Runs that ran out of memory or time, and models not
attempted because their graph is dense by design (``skipped``), stay in the table and figure;
they are not dropped.

A model run with sparse graph supports (``supports: "sparse"``) is its own series,
``"<model> (sparse)"``, beside the same model with dense supports (``"<model>"``): the column
``series``. :func:`stop_reason` says why a series has no value at some N.

Every row keeps its ``source``: the run id of its record, or the file it came from, with the
row's ``session`` when it has one (``perf/scaling.py`` appends to its ``--out`` file and tags
every row with the id of the invocation that measured it; the file's ``sessions`` list says
which command that was). A source is one *session*: one process's measurements under one
machine load. The table compares two models (their latency and memory ratio) only on rows of
one session: rows from different sessions were measured under different machine loads, and
their ratio would mix the two. Rows written before sessions existed (no ``session`` key) take
their whole file as their session, as the files of one command each were.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from .frame import model_sort_key
from .table_markup import Cell, Section, Table, write_tables

REQUIRED = ("model", "num_nodes")
STATUSES = ("ok", "oom", "error", "skipped")
SPARSE_SUFFIX = " (sparse)"
VALUE_COLUMNS = ("latency_ms_median", "latency_ms_p95", "peak_memory_mb_inference")
# a file's k-th session in a row's source: "<file>#session 2"
SESSION_MARK = "#session "


def _rows_of(path: Path) -> list[dict]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read scaling rows ({e})") from e
    rows = data.get("rows", [data]) if isinstance(data, dict) else data
    if not isinstance(rows, list):
        raise ValueError(f"{path}: expected a row, a list of rows or {{'rows': [...]}}")
    out = []
    ordinals: dict[str, int] = {}  # session id -> 1, 2, ... in the file's row order
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ValueError(f"{path}: row {i} is not an object")
        missing = [k for k in REQUIRED if k not in row]
        if missing:
            raise ValueError(f"{path}: row {i} lacks {missing}")
        status = str(row.get("status", "ok")).lower()
        if status not in STATUSES:
            raise ValueError(f"{path}: row {i} has status {status!r}, expected one of {STATUSES}")
        source = str(path)
        if row.get("session"):
            k = ordinals.setdefault(str(row["session"]), len(ordinals) + 1)
            source = f"{path}{SESSION_MARK}{k}"
        out.append({**row, "status": status, "num_nodes": int(row["num_nodes"]),
                    "device": str(row.get("device", "") or ""), "source": source,
                    "series": series_name(row)})
    return out


def series_name(row: dict) -> str:
    """``"<model> (sparse)"`` for a row run with sparse supports, else the model."""
    return str(row["model"]) + (SPARSE_SUFFIX if row.get("supports") == "sparse" else "")


def stop_reason(row: pd.Series | dict) -> str:
    """Why a row has no value, in a word or two: ``"out of memory"``, ``"timeout"``,
    ``"dense by design"`` (not attempted with sparse supports) or ``"error"``; ``""`` for ok."""
    status, error = row["status"], row.get("error", "")
    error = error if isinstance(error, str) else ""  # NaN in a frame without the column
    if status == "ok":
        return ""
    if status == "oom":
        return "out of memory"
    if status == "skipped":
        return "dense by design"
    if error.startswith(("timeout", "not run: out of time")):
        return "timeout"
    return "error"


def _rows_from_records(frame: pd.DataFrame) -> list[dict]:
    if frame.empty:
        return []
    has_n = frame["num_nodes"].notna() if "num_nodes" in frame else False
    pick = frame[has_n | (frame["tag"] == "scaling")]
    out = []
    for _, r in pick.iterrows():
        if "num_nodes" not in r or pd.isna(r["num_nodes"]):
            print(f"note: {r['run_id']}: tagged 'scaling' but its efficiency has no num_nodes; "
                  "left out of the scaling figure")
            continue
        row = {"model": r["model"], "num_nodes": int(r["num_nodes"]), "status": "ok",
               "device": str(r.get("gpu") or r.get("device") or ""), "source": r["run_id"],
               "series": r["model"]}
        for c in VALUE_COLUMNS:
            row[c] = r.get(c, float("nan"))
        out.append(row)
    return out


def load_scaling(scaling_dir: Path | None, frame: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every scaling row from ``scaling_dir`` (if it exists) and from the records ``frame``;
    per (series, num_nodes, device) the last measured row wins (files are read in name order),
    then a ``skipped`` one (not attempted), then one recorded as ``"not run: ..."`` after a
    smaller N ran out of memory or time: a skipped row never hides a measurement."""
    rows: list[dict] = []
    if scaling_dir is not None and Path(scaling_dir).is_dir():
        for p in sorted(Path(scaling_dir).rglob("*.json")):
            rows += _rows_of(p)
    if frame is not None:
        rows += _rows_from_records(frame)
    if not rows:
        return pd.DataFrame()
    df = pd.DataFrame(rows)
    for c in VALUE_COLUMNS:
        df[c] = pd.to_numeric(df[c], errors="coerce") if c in df else float("nan")
    error = df["error"].fillna("").astype(str) if "error" in df else pd.Series("", df.index)
    rank = np.where(df["status"] == "skipped", 1, np.where(error.str.startswith("not run:"), 0, 2))
    df = df.assign(_rank=rank).sort_values("_rank", kind="stable")
    return (df.drop_duplicates(["series", "num_nodes", "device"], keep="last")
            .drop(columns="_rank")
            .sort_values(["device", "num_nodes", "series"]).reset_index(drop=True))


def series_sort_key(series: str) -> tuple:
    """Model order, the dense series before the sparse one of the same model."""
    sparse = series.endswith(SPARSE_SUFFIX)
    model = series[:-len(SPARSE_SUFFIX)] if sparse else series
    return (model_sort_key(model), sparse)


def _cell(row: pd.Series | None, col: str, digits: int) -> Cell:
    if row is None:
        return Cell()
    if row["status"] != "ok":
        return Cell(text={"out of memory": "OOM", "dense by design": "dense"}.get(
            stop_reason(row), stop_reason(row)))
    v = row[col]
    return Cell(mean=None if pd.isna(v) else float(v), digits=digits)


def _sources(paths: pd.Series, most: int = 6) -> str:
    names = sorted({source_name(p) for p in paths})
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return ", ".join(names[:most]) + more + "."


def source_name(source: str) -> str:
    """A row's source as the table names it: the file name, or the record's run id."""
    return Path(source).name


def row_sources(at: pd.DataFrame, series: list[str]) -> str:
    """Where one table row's cells come from: the source when there is one; else each source
    with its series, the source of most series last as ``(the rest)``."""
    by_source: dict[str, list[str]] = {}
    for m in series:
        if m in at.index:
            by_source.setdefault(source_name(at.at[m, "source"]), []).append(m)
    if len(by_source) <= 1:
        return next(iter(by_source), "")
    order = sorted(by_source, key=lambda k: (len(by_source[k]), k))
    return "; ".join(f"{k} ({', '.join(by_source[k])})" for k in order[:-1]) + \
        f"; {order[-1]} (the rest)"


SESSIONS_DIFFER = "sessions differ"


def pair_ratio(a: pd.Series | None, b: pd.Series | None, col: str) -> Cell:
    """``b[col] / a[col]`` when both rows are ok and come from one session (source); a dash when
    either has no value; :data:`SESSIONS_DIFFER` when both have one but from two sessions."""
    if a is None or b is None or not a["status"] == b["status"] == "ok":
        return Cell()
    if a["source"] != b["source"]:
        return Cell(text=SESSIONS_DIFFER)
    ratio = b[col] / a[col] if a[col] and a[col] > 0 else float("nan")
    return Cell(mean=ratio if math.isfinite(ratio) else None, digits=1)


def scaling_table(rows: pd.DataFrame, out_dir: Path, pair: tuple[str, str] = ("flowdistill",
                  "gwnet"), stem: str = "scaling") -> list[Path]:
    """Rows = N, columns = latency (median, ms) and inference peak memory (MB) per series (a
    model, or a model with sparse supports), the ``pair[1] / pair[0]`` ratios (how many times
    slower / larger the graph model is; only between rows of one session, see the module
    docstring) and the row's sources."""
    if rows.empty:
        print(f"skip {stem}: no scaling rows (results/scaling/*.json or records with num_nodes)")
        return []
    models = sorted(rows["series"].unique(), key=series_sort_key)
    groups = [(m, ["ms", "MB"]) for m in models]
    with_ratio = pair[0] in models and pair[1] in models
    if with_ratio:
        groups.append((f"{pair[1]} / {pair[0]}", ["latency", "memory"]))
    groups.append(("", ["Source"]))
    sections = []
    for device, dg in rows.groupby("device", sort=True):
        sec = Section(f"device: {device}" if device else None)
        for n in sorted(dg["num_nodes"].unique()):
            at = dg[dg["num_nodes"] == n].set_index("series")
            cells = [Cell(text=f"{int(n):,}")]
            for m in models:
                r = at.loc[m] if m in at.index else None
                cells += [_cell(r, "latency_ms_median", 2), _cell(r, "peak_memory_mb_inference", 1)]
            if with_ratio:
                a = at.loc[pair[0]] if pair[0] in at.index else None
                b = at.loc[pair[1]] if pair[1] in at.index else None
                cells += [pair_ratio(a, b, c)
                          for c in ("latency_ms_median", "peak_memory_mb_inference")]
            sec.rows.append(cells + [Cell(text=row_sources(at, models) or "–")])
        sections.append(sec)
    table = Table(caption="Inference latency (median, ms) and peak inference memory (MB) vs the "
                          "number of nodes N", label=f"tab:{stem}", row_header=["N"],
                  column_groups=groups, sections=sections,
                  note="OOM: ran out of memory; timeout: ran out of time; dense: not attempted "
                       "with sparse supports, the model's graph is dense by design; error: "
                       "failed for another reason. (sparse): sparse graph supports. Ratios "
                       f"{pair[1]} / {pair[0]} only between rows of one session (one file of "
                       "perf/scaling.py rows, or one record): \"" + SESSIONS_DIFFER + "\" where "
                       "the two come from different sessions, measured under different machine "
                       "loads. Source: where the row's cells come from (per file, its series; "
                       "when two files measured a series at one N, the later file in name order "
                       "is shown). "
                       "Sources: " + _sources(rows["source"]))
    return write_tables([table], out_dir, stem, "Scaling with the number of nodes")

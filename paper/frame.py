"""Run records -> one flat pandas DataFrame for every table and figure of the paper.

One row per finished record (:class:`benchmark.records.RunRecord`). On top of the columns of
:func:`benchmark.records.records_frame` (``mae``, ``mae_moh``, ``mae@3``, ``mae[inflow]``,
efficiency and fit columns) it adds what the paper needs:

* ``tag``: the sweep name, i.e. the run-id prefix before ``<dataset>-<model>-``;
* ``teacher_kind``: the soft-label store id without its content hash (``forecaster_stid``);
* per-channel horizon metrics ``mae@3[inflow]`` and ``mae_moh[inflow]``;
* ``per_horizon_mae`` (a list over horizon steps), ``input_len``, ``horizon``, ``created``,
  ``gpu``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from benchmark.records import RunRecord, load_records, record_sweep, records_frame

METRICS = ("mae", "rmse", "mape")
METRIC_LABELS = {"mae": "MAE", "rmse": "RMSE", "mape": "MAPE (%)"}
AVG = "avg"  # key of the mean-of-horizons summary in tables and column helpers

# Publication order: simple references, graph baselines (by year), then the method's variants.
MODEL_ORDER = ("last-value", "ha-slot", "ha-week", "ridge", "dcrnn", "stgcn", "stgcn-gcn",
               "astgcn", "tgcn", "gwnet", "stsgcn", "agcrn", "mtgnn", "stwa", "stid", "mlp",
               "flowdistill-noteacher", "flowdistill-noib", "flowdistill-notb", "flowdistill-kd",
               "flowdistill")

# version-key hash, then (teacher ids since labels are content-hashed) the labels' content hash
_HASH_SUFFIX = re.compile(r"-[0-9a-f]{16}(-[0-9a-f]{12})?$")


def metric_column(metric: str, key: str = "overall", channel: str | None = None) -> str:
    """Column name of ``metric`` for a summary ``key`` (``"overall"``, ``"avg"`` or ``"@h"``)."""
    if key == "overall":
        name = metric
    elif key == AVG:
        name = f"{metric}_moh"
    elif key.startswith("@"):
        name = f"{metric}{key}"
    else:
        raise ValueError(f"unknown summary key {key!r} (overall, avg or @h)")
    return f"{name}[{channel}]" if channel else name


def teacher_kind(teacher_id: str | None) -> str:
    """``"forecaster_stid-0123456789abcdef"`` (optionally followed by ``-<12 hex>`` of label
    content) -> ``"forecaster_stid"``; ``None`` -> ``""``."""
    return _HASH_SUFFIX.sub("", teacher_id or "")


def _extras(r: RunRecord) -> dict:
    test = r.metrics.get("test", {}) or {}
    row: dict = {"tag": record_sweep(r), "created": r.created,
                 "teacher_kind": teacher_kind((r.teacher or {}).get("id")),
                 "input_len": r.protocol.get("input_len"), "horizon": r.protocol.get("horizon"),
                 "mask_threshold": r.protocol.get("mask_threshold"),
                 "null_value": r.protocol.get("null_value"),
                 "gpu": (r.hardware or {}).get("gpu", "")}
    channels = list(test.get("per_channel") or {})
    row["channels"] = ",".join(channels)
    for ch, summ in (test.get("per_channel") or {}).items():
        for key, val in summ.items():
            if key.startswith("@"):
                for k, v in val.items():
                    row[metric_column(k, key, ch)] = v
            elif key == "mean_of_horizons":
                for k, v in val.items():
                    row[metric_column(k, AVG, ch)] = v
    for k, arr in (test.get("per_horizon") or {}).items():
        row[f"per_horizon_{k}"] = [float(a) for a in arr]
    return row


def records_to_frame(records: list[RunRecord]) -> pd.DataFrame:
    """Flatten finished records (test split) into one row each; see the module docstring."""
    records = [r for r in records if r.status == "finished"]
    if not records:
        return pd.DataFrame()
    base = records_frame(records, "test").reset_index(drop=True)
    extra = pd.DataFrame([_extras(r) for r in records])
    extra = extra[[c for c in extra.columns if c not in base.columns]]
    return pd.concat([base, extra], axis=1)


def load_frame(records_dir: Path) -> pd.DataFrame:
    """All finished records under ``records_dir`` as a frame (empty when there are none)."""
    records_dir = Path(records_dir)
    if not records_dir.is_dir():
        print(f"note: {records_dir}: no record directory; nothing to tabulate")
        return pd.DataFrame()
    records = load_records(records_dir)
    unfinished = sum(r.status != "finished" for r in records)
    if unfinished:
        print(f"note: {records_dir}: ignoring {unfinished} unfinished record(s)")
    return records_to_frame(records)


# What one table row or figure line never pools over: the model, its teacher, and where its
# runs come from (sweep, machine kind).
UNPOOLED_KEYS = ("model", "teacher_kind", "sweep", "machine")


def with_unpooled_keys(g: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``g`` with every :data:`UNPOOLED_KEYS` column present as text (records without
    one get "")."""
    g = g.copy()
    for k in UNPOOLED_KEYS:
        g[k] = g[k].fillna("").astype(str) if k in g.columns else ""
    return g


def rows_of(g: pd.DataFrame, key: tuple[str, ...]) -> pd.DataFrame:
    """The rows of ``g`` (see :func:`with_unpooled_keys`) whose :data:`UNPOOLED_KEYS` are
    ``key``."""
    hit = pd.Series(True, index=g.index)
    for k, v in zip(UNPOOLED_KEYS, key, strict=True):
        hit &= g[k] == v
    return g[hit]


def select_tag(frame: pd.DataFrame, tag: str | None, purpose: str) -> pd.DataFrame:
    """Records of the sweep(s) ``tag`` (comma-separated names); none (with a printed note) when
    no record carries those tags: a table never borrows another sweep's records."""
    if frame.empty or not tag:
        return frame
    tags = [t.strip() for t in tag.split(",") if t.strip()]
    chosen = frame[frame["tag"].isin(tags)]
    if chosen.empty:
        print(f"note: {purpose}: no records of the sweeps {tag!r}")
    return chosen


def dedupe(frame: pd.DataFrame, keys: tuple[str, ...], purpose: str) -> pd.DataFrame:
    """Keep the newest record per ``keys`` (e.g. one per model and seed), saying how many went."""
    if frame.empty:
        return frame
    keys = tuple(k for k in keys if k in frame.columns)
    out = frame.sort_values(["created", "run_id"]).drop_duplicates(list(keys), keep="last")
    dropped = len(frame) - len(out)
    if dropped:
        print(f"note: {purpose}: {dropped} older duplicate record(s) for the same "
              f"{'/'.join(keys)} ignored")
    return out.sort_index()


def model_sort_key(model: str) -> tuple[float, str]:
    """Rows follow :data:`MODEL_ORDER`; unknown models go after the baselines, alphabetically."""
    if model in MODEL_ORDER:
        return (MODEL_ORDER.index(model), model)
    return (MODEL_ORDER.index("mlp") - 0.5, model)


def ordered_models(models) -> list[str]:
    return sorted(set(models), key=model_sort_key)


def report_horizons(frame: pd.DataFrame, metric: str = "mae") -> list[int]:
    """The ``@h`` horizons with at least one value in ``frame``, ascending."""
    out = []
    for c in frame.columns:
        m = re.fullmatch(rf"{metric}@(\d+)", c)
        if m and frame[c].notna().any():
            out.append(int(m.group(1)))
    return sorted(out)


def channels_of(frame: pd.DataFrame) -> list[str]:
    """Per-channel names present in ``frame`` (in record order), e.g. ``["inflow", "outflow"]``."""
    out: list[str] = []
    for s in frame.get("channels", pd.Series(dtype=object)).dropna():
        for ch in str(s).split(","):
            if ch and ch not in out:
                out.append(ch)
    return out

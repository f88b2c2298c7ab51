"""Rendering: rows of the leaderboard, one markdown table per (dataset, protocol board), and
(through :mod:`.site`) the static site.

Rows come from two places: submitted entries (``<root>/entries/<dataset>/<board>/*.json``) and
the suite's own run records (``results/records``; finished runs, averaged over seeds per model,
training fraction, teacher and configuration). Every piece of text from a submission is escaped
(HTML: ``html.escape``; markdown: ``& < > |`` and backticks), links are kept only when they are
http(s), and every HTML page carries a Content-Security-Policy that allows only its own inline
script.
Output is deterministic (no timestamps), so rendering twice changes nothing.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit

import numpy as np

from ..records import CONVERGED_STOPS, RunRecord, machine_kind, record_sweep
from ..records import stop_reason as fit_stop_reason
from .validate import board_key, normalise_options

DOCS_LINK = "../../docs/leaderboard.md"
_TRAINING_KEYS = ("train_fraction", "fraction_mode", "fraction_seed", "dataset_options", "notes")


@dataclass
class Row:
    """One line of a leaderboard table."""

    dataset: str
    board: str
    protocol: dict
    options: dict
    model: str
    source: str  # "submission" | "suite"
    train_fraction: float
    metrics: dict
    seeds: int | None = None
    params: float | None = None
    params_claimed: bool = False
    latency_ms: float | None = None
    latency_batch: int | None = None
    latency_claimed: bool = False
    peak_mb: float | None = None
    peak_claimed: bool = False
    hardware: str = ""
    extra_data: bool | None = None
    teacher: str = ""
    links: list[tuple[str, str]] = field(default_factory=list)
    contact: str = ""
    ident: str = ""
    # what the site's filters and entry pages show (empty where a source does not say)
    sweep: str = ""
    recipe: str = ""
    machine: str = ""  # machine kind (suite: benchmark.records.machine_kind); entries: hardware
    stopped: str = ""  # "converged" | "capped" | "epoch limit" | mixed counts | "not reported"
    converged: bool | None = None
    per_horizon: dict = field(default_factory=dict)  # {"mae": [...], ...} mean over seeds
    per_channel: dict = field(default_factory=dict)  # {channel: flat metrics}
    all_targets: dict = field(default_factory=dict)  # flat metrics over every finite target
    authors: str = ""
    description: str = ""
    records: list = field(default_factory=list)  # the RunRecords behind a suite row
    entry: dict | None = None  # the stored entry behind a submission row


def flat_metrics(summary: dict) -> dict[str, float]:
    """``{"mae", "rmse", "mape", "mae_moh", ..., "mae@3", ...}`` from a metric summary."""
    out: dict[str, float] = {}
    for k, v in (summary.get("overall") or {}).items():
        out[k] = v
    for k, v in (summary.get("mean_of_horizons") or {}).items():
        out[f"{k}_moh"] = v
    for key, val in summary.items():
        if key.startswith("@") and isinstance(val, dict):
            for k, v in val.items():
                out[f"{k}{key}"] = v
    return {k: float(v) for k, v in out.items() if isinstance(v, int | float)}


def _num(v) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _safe_url(url: object) -> str | None:
    if not isinstance(url, str):
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    return url


def entry_row(entry: dict) -> Row:
    """A submitted entry as a row (claimed efficiency numbers are marked as claimed)."""
    meta = entry.get("metadata", {})
    test = entry.get("metrics", {}).get("test", {})
    eff = meta.get("efficiency") or {}
    links = [(label, u) for label, key in (("paper", "paper_url"), ("code", "code_url"))
             if (u := _safe_url(meta.get(key)))]
    teacher = ""
    if meta.get("teacher_used"):
        teacher = str(meta.get("teacher") or "yes")
    return Row(
        dataset=str(entry.get("dataset", "")), board=str(entry.get("board", "")),
        protocol=entry.get("protocol", {}), options=entry.get("dataset_options", {}),
        model=str(meta.get("model", "")), source="submission",
        train_fraction=float(meta.get("train_fraction", math.nan)),
        metrics=flat_metrics(test),
        params=_num(meta.get("parameter_count")), params_claimed=True,
        latency_ms=_num(eff.get("latency_ms")), latency_batch=eff.get("latency_batch"),
        latency_claimed=True, peak_mb=_num(eff.get("peak_memory_mb")), peak_claimed=True,
        hardware=str(meta.get("hardware", "")), extra_data=meta.get("extra_data"),
        teacher=teacher, links=links, contact=str(meta.get("contact", "")),
        ident=str(entry.get("entry_id", "")), sweep="", recipe="",
        machine=str(meta.get("hardware", "")), stopped="not reported", converged=None,
        per_horizon=_per_horizon([test]), per_channel=_per_channel([test]),
        all_targets=flat_metrics(test.get("all_targets") or {}),
        authors=str(meta.get("authors", "")), description=str(meta.get("description", "")),
        entry=entry)


def _record_board(r: RunRecord) -> tuple[str, dict]:
    opts = dict((r.protocol or {}).get("dataset_options") or {})
    try:
        opts = normalise_options(r.dataset, opts, r.run_id)
    except ValueError:  # unknown dataset or options: keep them as recorded
        pass
    return board_key(r.dataset, r.protocol_hash, opts), opts


def _hardware(hw: dict) -> str:
    dev = str(hw.get("device", ""))
    chip = hw.get("gpu") or hw.get("processor") or hw.get("machine") or ""
    cpus = f", {hw['cpus']} cpus" if hw.get("cpus") else ""
    return f"{dev} ({chip}{cpus})" if chip or cpus else dev


def _config_hash(r: RunRecord) -> str:
    train = {k: v for k, v in (r.train_config or {}).items()
             if k not in ("seed", "progress", "num_threads", "eval_batch_size", "device")}
    blob = json.dumps({"hparams": r.hparams, "objective": r.objective, "train": train},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:6]


STOP_LABELS = {"early_stopping": "early stop", "closed_form": "closed form",
               "time_budget": "capped", "max_epochs": "epoch limit"}


def stop_reason(r: RunRecord) -> str:
    """``early_stopping`` | ``closed_form`` (no epochs) | ``time_budget`` | ``max_epochs`` |
    ``""`` (not recorded): :func:`benchmark.records.stop_reason` of its fit."""
    return fit_stop_reason(r.fit)


def stop_summary(recs: list[RunRecord]) -> tuple[str, bool | None]:
    """How a row's runs ended (``"converged"``, ``"capped"``, ``"epoch limit"``, or counts
    such as ``"capped 1, early stop 2"`` when they differ) and whether all converged (None when
    no run recorded it)."""
    reasons = [stop_reason(r) for r in recs]
    if not any(reasons):
        return "not recorded", None
    converged = all(x in CONVERGED_STOPS for x in reasons)
    kinds = sorted(set(reasons))
    if converged:
        return "converged", True
    if len(kinds) == 1:
        return STOP_LABELS.get(kinds[0], kinds[0]), False
    return ", ".join(f"{STOP_LABELS.get(k, k or 'unrecorded')} {reasons.count(k)}"
                     for k in kinds), False


def _per_horizon(summaries: list[dict]) -> dict[str, list[float]]:
    """Mean over seeds of each per-horizon metric list (shortest common length)."""
    out = {}
    for k in ("mae", "rmse", "mape"):
        lists = [s.get("per_horizon", {}).get(k) for s in summaries]
        lists = [v for v in lists if isinstance(v, list) and v]
        if len(lists) == len(summaries) and lists:
            n = min(len(v) for v in lists)
            out[k] = [_nanmean([float(v[i]) for v in lists]) for i in range(n)]
    return out


def _mean_flat(summaries: list[dict]) -> dict[str, float]:
    """Flat metrics (:func:`flat_metrics`) averaged over several summaries (seeds)."""
    flat = [flat_metrics(s) for s in summaries]
    names = sorted(set().union(*flat)) if flat else []
    return {k: _nanmean([f.get(k, math.nan) for f in flat]) for k in names}


def _per_channel(summaries: list[dict]) -> dict[str, dict[str, float]]:
    chans = [s.get("per_channel") or {} for s in summaries]
    names = sorted(set().union(*chans)) if chans else []
    return {name: _mean_flat([c[name] for c in chans if name in c]) for name in names}


def record_rows(records: list[RunRecord]) -> list[Row]:
    """The suite's finished runs, one row per (board, model, fraction, teacher, configuration,
    sweep, recipe, machine kind): rows never pool records of different sweeps, recipes or
    machine kinds; metrics and efficiency are averaged over seeds."""
    groups: dict[tuple, list[RunRecord]] = defaultdict(list)
    boards: dict[tuple, tuple[str, dict]] = {}
    for r in records:
        if r.status != "finished" or not (r.metrics or {}).get("test"):
            continue
        board, opts = _record_board(r)
        teacher = (r.teacher or {}).get("id") or ""
        key = (r.dataset, board, r.model, float(r.train_fraction), str(teacher), _config_hash(r),
               record_sweep(r), str((r.recipe or {}).get("name") or ""),
               machine_kind(r.hardware or {}))
        groups[key].append(r)
        boards[key] = (board, opts)
    configs: dict[tuple, set] = defaultdict(set)
    for key in groups:
        configs[key[:5] + key[6:]].add(key[5])
    rows = []
    for key, recs in sorted(groups.items()):
        dataset, board, model, frac, teacher, cfg, sweep, recipe, machine = key
        seeds = {r.seed for r in recs}
        metrics = _mean_flat([r.metrics["test"] for r in recs])
        label = model if len(configs[key[:5] + key[6:]]) == 1 else f"{model} [cfg {cfg}]"
        stopped, converged = stop_summary(recs)
        tests = [r.metrics["test"] for r in recs]
        eff = [r.efficiency or {} for r in recs]
        proto = {k: v for k, v in (recs[0].protocol or {}).items() if k not in _TRAINING_KEYS}
        rows.append(Row(
            dataset=dataset, board=board, protocol=proto, options=boards[key][1], model=label,
            source="suite", train_fraction=frac, metrics=metrics, seeds=len(seeds),
            params=_mean([r.params for r in recs]),
            latency_ms=_mean([e.get("latency_ms_b1_median") for e in eff]), latency_batch=1,
            peak_mb=_mean([e.get("peak_memory_mb_inference") for e in eff]),
            hardware=_hardware(recs[0].hardware or {}), extra_data=False,
            teacher=str(teacher) if teacher else "",
            ident=", ".join(sorted(r.run_id for r in recs)), sweep=sweep, recipe=recipe,
            machine=machine, stopped=stopped, converged=converged,
            per_horizon=_per_horizon(tests), per_channel=_per_channel(tests),
            all_targets=_mean_flat([t.get("all_targets") or {} for t in tests]),
            records=sorted(recs, key=lambda r: (r.seed, r.run_id))))
    return rows


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def _mean(values: list) -> float | None:
    nums = [float(v) for v in values if _num(v) is not None]
    return float(sum(nums) / len(nums)) if nums else None


# ------------------------------------------------------------------------------ columns
@dataclass(frozen=True)
class Column:
    label: str
    kind: str  # "num" | "str" | "links"


def _fmt(v: float | None, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if abs(v) >= 1e5 and float(v).is_integer():
        return f"{int(v):,}"
    return f"{v:.{digits}f}"


def _horizons(rows: list[Row]) -> list[str]:
    hs = {k.split("@")[1] for r in rows for k in r.metrics if k.startswith("mae@")}
    return sorted(hs, key=int)


def table(rows: list[Row]) -> tuple[list[Column], list[list[tuple[str, object]]]]:
    """Columns and cells ``(text, sort value)`` of one board, rows sorted by overall MAE."""
    hs = _horizons(rows)
    cols = [Column("#", "num"), Column("model", "str"), Column("source", "str"),
            Column("train data", "num"), Column("seeds", "num"), Column("MAE", "num"),
            Column("RMSE", "num"), Column("MAPE %", "num"), Column("MAE (mean of h)", "num"),
            *[Column(f"MAE@{h}", "num") for h in hs],
            Column("params", "num"), Column("latency ms", "num"), Column("peak MiB", "num"),
            Column("hardware", "str"), Column("extra data", "str"), Column("teacher", "str"),
            Column("contact", "str"), Column("links", "links"), Column("id", "str")]

    def mae(r: Row) -> float:
        v = r.metrics.get("mae", math.nan)
        return math.inf if math.isnan(v) else v

    ordered = sorted(rows, key=lambda r: (mae(r), r.model, r.source, r.ident))
    out = []
    for rank, r in enumerate(ordered, 1):
        m = r.metrics
        star = "*"
        lat = _fmt(r.latency_ms)
        if lat:
            lat += (star if r.latency_claimed else "") + (f" (b={r.latency_batch})"
                                                          if r.latency_batch else "")
        frac = f"{r.train_fraction:.0%}" if not math.isnan(r.train_fraction) else ""
        cells: list[tuple[str, object]] = [
            (str(rank), rank), (r.model, r.model), (r.source, r.source),
            (frac, r.train_fraction), (str(r.seeds) if r.seeds else "", r.seeds),
            (_fmt(m.get("mae")), m.get("mae")), (_fmt(m.get("rmse")), m.get("rmse")),
            (_fmt(m.get("mape"), 2), m.get("mape")), (_fmt(m.get("mae_moh")), m.get("mae_moh")),
            *[(_fmt(m.get(f"mae@{h}")), m.get(f"mae@{h}")) for h in hs],
            ((_fmt(r.params, 0) + (star if r.params_claimed and r.params is not None else "")),
             r.params),
            (lat, r.latency_ms),
            ((_fmt(r.peak_mb, 2) + (star if r.peak_claimed and r.peak_mb is not None else "")),
             r.peak_mb),
            (r.hardware, r.hardware),
            ({True: "yes", False: "no"}.get(r.extra_data, ""), str(r.extra_data)),
            (r.teacher, r.teacher), (r.contact, r.contact), ("", r.links), (r.ident, r.ident)]
        out.append(cells)
    return cols, out


def group_rows(rows: list[Row]) -> dict[tuple[str, str], list[Row]]:
    boards: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for r in rows:
        boards[(r.dataset, r.board)].append(r)
    return dict(sorted(boards.items()))


def protocol_line(rows: list[Row]) -> str:
    p = next((r.protocol for r in rows if r.protocol), {})
    opts = next((r.options for r in rows if r.options), {})
    parts = []
    if p:
        parts.append(f"input {p.get('input_len')} -> horizon {p.get('horizon')} steps")
        if p.get("split_steps"):
            parts.append(f"split steps {p.get('split_steps')}")
        else:
            parts.append("split " + "/".join(f"{x:g}" for x in p.get("split_ratios") or []))
        if p.get("time_range"):
            parts.append(f"time range {p.get('time_range')}")
        parts.append(f"null value {p.get('null_value')}")
        if p.get("mask_threshold") is not None:
            parts.append(f"targets <= {p.get('mask_threshold'):g} masked in loss and metrics")
        parts.append(f"MAPE where |y| > {p.get('mape_threshold')}")
        parts.append(f"scaler {p.get('scaler')}")
    if opts:
        parts.append("dataset options " + json.dumps(opts, sort_keys=True))
    return "; ".join(parts)


# ----------------------------------------------------------------------------- markdown
def md_escape(text: str) -> str:
    """Text safe inside a markdown table cell (no HTML, no cell breaks, no code spans)."""
    text = " ".join(str(text).split())
    for a, b in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ("|", "\\|"), ("`", "&#96;"),
                 ("[", "\\["), ("]", "\\]"), ("*", "\\*"), ("_", "\\_")):
        text = text.replace(a, b)
    return text


def md_url(url: str) -> str:
    return quote(url, safe=":/?#@!$&'+,;=%~-._*")


HEADER = """# FlowDistill-Bench leaderboard

Generated by `flowdistill leaderboard render` from {n_entries} submitted entries
(`results/leaderboard/entries/`) and {n_records} run records of the suite's own models
(`results/records/`). Every metric is recomputed by the suite from the submitted predictions
against its own ground truth (claimed numbers are ignored). Rows are sorted by overall (pooled)
MAE on the test split; **source** `suite` rows are the suite's models (mean over seeds),
`submission` rows are external submissions. **train data** is the share of the training
windows the model saw (100% unless noted). Efficiency: parameters, inference latency (median,
batch size in brackets) and peak inference memory; values marked `*` are claimed by the
submitter, not measured by the suite. How to submit: [docs/leaderboard.md]({docs}).
"""


def render_markdown(rows: list[Row], n_entries: int, n_records: int) -> str:
    lines = [HEADER.format(n_entries=n_entries, n_records=n_records, docs=DOCS_LINK)]
    if not rows:
        lines.append("No entries yet.\n")
    for (dataset, board), brows in group_rows(rows).items():
        lines.append(f"## {md_escape(dataset)} · protocol `{md_escape(board)}`\n")
        lines.append(md_escape(protocol_line(brows)) + "\n")
        cols, cells = table(brows)
        lines.append("| " + " | ".join(md_escape(c.label) for c in cols) + " |")
        lines.append("|" + "|".join("---:" if c.kind == "num" else "---" for c in cols) + "|")
        for row in cells:
            out = []
            for col, (text, val) in zip(cols, row, strict=True):
                if col.kind == "links":
                    out.append(" ".join(f"[{md_escape(label)}]({md_url(u)})"
                                        for label, u in val))  # type: ignore[union-attr]
                else:
                    out.append(md_escape(text))
            lines.append("| " + " | ".join(out) + " |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"

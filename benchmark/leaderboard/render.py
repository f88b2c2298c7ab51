"""Rendering: one markdown table and one sortable HTML table per (dataset, protocol board).

Rows come from two places: submitted entries (``<root>/entries/<dataset>/<board>/*.json``) and
the suite's own run records (``results/records``; finished runs, averaged over seeds per model,
training fraction, teacher and configuration). Every piece of text from a submission is escaped
(HTML: ``html.escape``; markdown: ``& < > |`` and backticks), links are kept only when they are
http(s), and the page carries a Content-Security-Policy that allows only its own inline script.
Output is deterministic (no timestamps), so rendering twice changes nothing.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit

import numpy as np

from ..records import RunRecord
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
        metrics=flat_metrics(entry.get("metrics", {}).get("test", {})),
        params=_num(meta.get("parameter_count")), params_claimed=True,
        latency_ms=_num(eff.get("latency_ms")), latency_batch=eff.get("latency_batch"),
        latency_claimed=True, peak_mb=_num(eff.get("peak_memory_mb")), peak_claimed=True,
        hardware=str(meta.get("hardware", "")), extra_data=meta.get("extra_data"),
        teacher=teacher, links=links, contact=str(meta.get("contact", "")),
        ident=str(entry.get("entry_id", "")))


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


def record_rows(records: list[RunRecord]) -> list[Row]:
    """The suite's finished runs, one row per (board, model, fraction, teacher, configuration),
    metrics and efficiency averaged over seeds."""
    groups: dict[tuple, list[RunRecord]] = defaultdict(list)
    boards: dict[tuple, tuple[str, dict]] = {}
    for r in records:
        if r.status != "finished" or not (r.metrics or {}).get("test"):
            continue
        board, opts = _record_board(r)
        teacher = (r.teacher or {}).get("id") or ""
        key = (r.dataset, board, r.model, float(r.train_fraction), str(teacher), _config_hash(r))
        groups[key].append(r)
        boards[key] = (board, opts)
    configs: dict[tuple, set] = defaultdict(set)
    for key in groups:
        configs[key[:5]].add(key[5])
    rows = []
    for key, recs in sorted(groups.items()):
        dataset, board, model, frac, teacher, cfg = key
        seeds = {r.seed for r in recs}
        flat = [flat_metrics(r.metrics["test"]) for r in recs]
        names = sorted(set().union(*flat))
        metrics = {k: _nanmean([f.get(k, math.nan) for f in flat]) for k in names}
        label = model if len(configs[key[:5]]) == 1 else f"{model} [cfg {cfg}]"
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
            ident=", ".join(sorted(r.run_id for r in recs))))
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


# --------------------------------------------------------------------------------- html
SORT_JS = """(function () {
  function key(td, num) {
    var v = td.getAttribute('data-v');
    if (num) { return v === null || v === '' ? NaN : parseFloat(v); }
    return (v === null ? td.textContent : v).toLowerCase();
  }
  document.querySelectorAll('table.lb').forEach(function (table) {
    var heads = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(heads, function (th, col) {
      th.addEventListener('click', function () {
        var num = th.getAttribute('data-type') === 'num';
        var asc = th.getAttribute('aria-sort') !== 'ascending';
        Array.prototype.forEach.call(heads, function (h) { h.removeAttribute('aria-sort'); });
        th.setAttribute('aria-sort', asc ? 'ascending' : 'descending');
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = key(a.cells[col], num), y = key(b.cells[col], num);
          if (num) {
            if (isNaN(x)) { return isNaN(y) ? 0 : 1; }
            if (isNaN(y)) { return -1; }
            return asc ? x - y : y - x;
          }
          return asc ? x.localeCompare(y) : y.localeCompare(x);
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  });
})();
"""
CSS = """body { font-family: system-ui, sans-serif; margin: 2em; }
table.lb { border-collapse: collapse; margin-bottom: 2em; font-size: 0.9em; }
table.lb th, table.lb td { border: 1px solid #ccc; padding: 0.25em 0.5em; }
table.lb th { cursor: pointer; background: #f3f3f3; }
table.lb th[aria-sort=ascending]::after { content: " \\25B2"; }
table.lb th[aria-sort=descending]::after { content: " \\25BC"; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.suite td { background: #fafaff; }
"""


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _csp() -> str:
    digest = base64.b64encode(hashlib.sha256(SORT_JS.encode()).digest()).decode()
    return (f"default-src 'none'; script-src 'sha256-{digest}'; style-src 'unsafe-inline'; "
            "img-src 'none'; base-uri 'none'; form-action 'none'")


def render_html(rows: list[Row], n_entries: int, n_records: int) -> str:
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           f'<meta http-equiv="Content-Security-Policy" content="{_esc(_csp())}">',
           '<meta name="referrer" content="no-referrer">',
           "<title>FlowDistill-Bench leaderboard</title>", f"<style>\n{CSS}</style>", "</head>",
           "<body>", "<h1>FlowDistill-Bench leaderboard</h1>",
           f"<p>{n_entries} submitted entries and {n_records} run records. Every metric is "
           "recomputed by the suite from the predictions; claimed numbers are ignored. Values "
           "marked * are claimed by the submitter. Click a column header to sort.</p>"]
    if not rows:
        out.append("<p>No entries yet.</p>")
    for (dataset, board), brows in group_rows(rows).items():
        out.append(f"<h2>{_esc(dataset)} &middot; protocol <code>{_esc(board)}</code></h2>")
        out.append(f"<p>{_esc(protocol_line(brows))}</p>")
        cols, cells = table(brows)
        out.append('<table class="lb">')
        out.append("<thead><tr>" + "".join(
            f'<th data-type="{"num" if c.kind == "num" else "str"}">{_esc(c.label)}</th>'
            for c in cols) + "</tr></thead>")
        out.append("<tbody>")
        for row in cells:
            src = row[2][1]
            tds = []
            for col, (text, val) in zip(cols, row, strict=True):
                if col.kind == "links":
                    links = " ".join(f'<a href="{_esc(u)}" rel="nofollow noopener noreferrer">'
                                     f"{_esc(label)}</a>" for label, u in val)  # type: ignore
                    tds.append(f"<td>{links}</td>")
                elif col.kind == "num":
                    v = "" if val is None or (isinstance(val, float) and math.isnan(val)) \
                        else repr(float(val))
                    tds.append(f'<td class="num" data-v="{_esc(v)}">{_esc(text)}</td>')
                else:
                    tds.append(f"<td>{_esc(text)}</td>")
            out.append(f'<tr class="{_esc(src)}">' + "".join(tds) + "</tr>")
        out.append("</tbody></table>")
    out.append(f"<script>{SORT_JS}</script>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def render_pages(entries: list[dict], records: list[RunRecord]) -> dict[str, str]:
    """``{"README.md": ..., "index.html": ...}`` for these entries and records."""
    rows = [entry_row(e) for e in entries] + record_rows(records)
    n_rec = sum(1 for r in records if r.status == "finished")
    return {"README.md": render_markdown(rows, len(entries), n_rec),
            "index.html": render_html(rows, len(entries), n_rec)}

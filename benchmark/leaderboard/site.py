"""The leaderboard as a static site: an index of boards, one page per board, one per entry.

Layout (relative links only, so it opens from the file system and on any static host)::

    index.html               the boards (dataset x protocol), with their best row
    boards/<board>.html      compact rows, filters, sorting, accuracy-vs-latency scatter (Pareto
                             front marked) and error per horizon
    pages/<item>.html        one submitted entry or one suite model: protocol, metrics per
                             horizon and channel, the records behind it, the submitter's text

Self-contained: no fonts, images, stylesheets or scripts from elsewhere; charts are inline SVG
drawn here; one inline script (filters and sorting) allowed by its hash in the
Content-Security-Policy. Every piece of text is escaped; only http(s) links given in a
submission's ``paper_url``/``code_url`` become links (URLs inside free text stay text). Output is
deterministic (no timestamps).
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
import re
from collections import defaultdict

from .boards import Row, group_rows, protocol_line

SCRIPT = """(function () {
  'use strict';
  var each = function (list, fn) { Array.prototype.forEach.call(list, fn); };
  function sortKey(td, num) {
    var v = td.getAttribute('data-v');
    if (num) { return v === null || v === '' ? NaN : parseFloat(v); }
    return (v === null ? td.textContent : v).toLowerCase();
  }
  function sortable(table) {
    var heads = table.tHead.rows[0].cells;
    each(heads, function (th, col) {
      th.tabIndex = 0;
      var go = function () {
        var num = th.getAttribute('data-type') === 'num';
        var asc = th.getAttribute('aria-sort') !== 'ascending';
        each(heads, function (h) { h.removeAttribute('aria-sort'); });
        th.setAttribute('aria-sort', asc ? 'ascending' : 'descending');
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = sortKey(a.cells[col], num), y = sortKey(b.cells[col], num);
          if (num) {
            if (isNaN(x)) { return isNaN(y) ? 0 : 1; }
            if (isNaN(y)) { return -1; }
            return asc ? x - y : y - x;
          }
          return asc ? x.localeCompare(y) : y.localeCompare(x);
        });
        rows.forEach(function (r) { body.appendChild(r); });
      };
      th.addEventListener('click', go);
      th.addEventListener('keydown', function (e) { if (e.key === 'Enter') { go(); } });
    });
  }
  function filterable(table) {
    var fields = document.querySelectorAll('[data-filter]');
    var shown = document.getElementById('shown');
    if (!fields.length) { return; }
    var apply = function () {
      var want = [];
      each(fields, function (f) {
        var v = f.type === 'checkbox' ? (f.checked ? 'yes' : '') : f.value.trim().toLowerCase();
        if (v) { want.push([f.getAttribute('data-filter'), v, f.getAttribute('data-match')]); }
      });
      var n = 0;
      each(table.tBodies[0].rows, function (row) {
        var ok = want.every(function (w) {
          var have = (row.getAttribute('data-' + w[0]) || '').toLowerCase();
          return w[2] === 'contains' ? have.indexOf(w[1]) >= 0 : have === w[1];
        });
        row.hidden = !ok;
        if (ok) { n += 1; }
      });
      if (shown) { shown.textContent = String(n); }
    };
    each(fields, function (f) {
      f.addEventListener('input', apply);
      f.addEventListener('change', apply);
    });
    apply();
  }
  each(document.querySelectorAll('table.lb'), function (t) { sortable(t); filterable(t); });
  document.body.setAttribute('data-ready', 'yes');
})();
"""

CSS = """:root { --fg: #1b1b1b; --muted: #5f6368; --line: #d7d7db; --head: #f2f2f4;
  --suite: #f7f8ff; --link: #0b57d0; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg);
  margin: 0 auto; padding: 1.2em 1.5em 3em; max-width: 1320px; }
h1 { font-size: 1.5em; margin: 0.3em 0; } h2 { font-size: 1.15em; margin-top: 1.6em; }
a { color: var(--link); }
nav.crumbs { font-size: 0.9em; color: var(--muted); }
p.note, figcaption, .muted { color: var(--muted); font-size: 0.9em; }
table { border-collapse: collapse; font-size: 0.92em; }
th, td { border-bottom: 1px solid var(--line); padding: 0.3em 0.55em; text-align: left;
  white-space: nowrap; vertical-align: top; }
th { background: var(--head); position: sticky; top: 0; }
table.lb th { cursor: pointer; user-select: none; }
table.lb th[aria-sort=ascending]::after { content: " \\25B2"; font-size: 0.75em; }
table.lb th[aria-sort=descending]::after { content: " \\25BC"; font-size: 0.75em; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.suite td { background: var(--suite); }
td.wrap, dd { white-space: pre-wrap; overflow-wrap: anywhere; }
.scroll { overflow-x: auto; }
form.filters { display: flex; flex-wrap: wrap; gap: 0.6em 1.2em; align-items: center;
  margin: 0.8em 0; padding: 0.6em 0.8em; background: var(--head); border-radius: 6px; }
form.filters label { font-size: 0.9em; }
.tag { display: inline-block; padding: 0 0.4em; border-radius: 3px; font-size: 0.85em; }
.tag.yes { background: #e3f4e7; color: #185c2c; } .tag.no { background: #fdeceb; color: #8a1c13; }
.tag.unknown { background: #eee; color: var(--muted); }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 0.2em 1em; }
dl.facts dt { color: var(--muted); } dl.facts dd { margin: 0; }
code { font-size: 0.9em; overflow-wrap: anywhere; white-space: pre-wrap; }
figure { margin: 1em 0; } svg text { font: 11px system-ui, sans-serif; fill: #333; }
.charts { display: flex; flex-wrap: wrap; gap: 1em 2em; }
"""

# Kelly's colours of maximum contrast (white dropped, darkest first), then black
PALETTE = ("#0067A5", "#BE0032", "#008856", "#F38400", "#875692", "#882D17", "#E68FAC",
           "#8DB600", "#A1CAF1", "#604E97", "#F6A600", "#B3446C", "#848482", "#2B3D26",
           "#E25822", "#C2B280", "#654522", "#F99379", "#DCD300", "#F3C300", "#222222")
DASHES = ("", "6 3", "2 2", "8 3 2 3")
LINK_REL = "nofollow noopener noreferrer"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def script_hash() -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()


def csp() -> str:
    return (f"default-src 'none'; script-src '{script_hash()}'; style-src 'unsafe-inline'; "
            "img-src 'none'; base-uri 'none'; form-action 'none'")


def _fmt(v: float | None, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if abs(v) >= 1e4 and float(v).is_integer():
        return f"{int(v):,}"
    return f"{v:.{digits}f}"


def _num_attr(v: float | None) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else repr(float(v))


def _frac(f: float) -> str:
    return "" if math.isnan(f) else f"{f:.0%}"


def _slug(text: str) -> str:
    return _UNSAFE.sub("_", text).strip("_")[:80] or "x"


def board_path(dataset: str, board: str) -> str:
    return f"boards/{_slug(dataset)}-{_slug(board)}.html"


def item_path(row: Row) -> str:
    """``pages/entry-<entry id>.html`` or ``pages/suite-<model>-<hash of the row's key>.html``."""
    if row.source == "submission":
        return f"pages/entry-{_slug(row.ident)}.html"
    key = json.dumps([row.dataset, row.board, row.model, row.train_fraction, row.teacher,
                      row.sweep, row.recipe, row.machine, row.ident], default=str)
    return f"pages/suite-{_slug(row.model)}-{hashlib.sha256(key.encode()).hexdigest()[:10]}.html"


def model_colours(rows: list[Row]) -> dict[str, str]:
    """A colour per model name of these rows (one board; alphabetical order of the names), the
    same on the board's page and its entries' pages."""
    names = sorted({_base_model(r.model) for r in rows})
    return {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(names)}


def _base_model(label: str) -> str:
    return label.split(" [cfg ")[0]


def _mae(r: Row) -> float:
    v = r.metrics.get("mae", math.nan)
    return math.inf if math.isnan(v) else v


def ranked(rows: list[Row]) -> list[Row]:
    return sorted(rows, key=lambda r: (_mae(r), r.model, r.source, r.ident))


def _source_text(r: Row) -> str:
    if r.source != "suite":
        return "submission"
    return "suite" + (f" · {r.sweep}" if r.sweep else "")


def _converged_attr(r: Row) -> str:
    return {True: "yes", False: "no"}.get(r.converged, "unknown")


def _converged_cell(r: Row) -> str:
    state = _converged_attr(r)
    text = {"yes": "yes"}.get(state, r.stopped or "not recorded")
    return f'<span class="tag {state}">{_esc(text)}</span>'


def _short(text: str, n: int = 32) -> str:
    return text if len(text) <= n else text[:n - 1] + "…"


# --------------------------------------------------------------------------------- page
def page(title: str, body: list[str], depth: int, script: bool = False,
         crumbs: str = "") -> str:
    up = "../" * depth
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           f'<meta http-equiv="Content-Security-Policy" content="{_esc(csp())}">',
           '<meta name="referrer" content="no-referrer">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{_esc(title)}</title>", f"<style>\n{CSS}</style>", "</head>", "<body>",
           *([f'<nav class="crumbs"><a href="{up}index.html">FlowDistill-Bench leaderboard</a>'
              f"{' › ' + crumbs if crumbs else ''}</nav>"] if depth else []), *body]
    if script:
        out.append(f"<script>{SCRIPT}</script>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------- charts
def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    step = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= step * m:
            step *= m
            break
    first = math.ceil(lo / step - 1e-9) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def _log_ticks(lo: float, hi: float) -> list[float]:
    out = []
    for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1):
        for m in (1, 2, 5):
            v = m * 10 ** e
            if lo <= v <= hi:
                out.append(v)
    return out or [lo, hi]


class _Axes:
    """A plot area with linear or log scales; ``x()``/``y()`` map data to SVG pixels."""

    def __init__(self, xs: list[float], ys: list[float], width: int, height: int,
                 log_x: bool = False) -> None:
        self.left, self.right, self.top, self.bottom = 58, width - 12, 12, height - 40
        self.log_x = log_x
        x_lo, x_hi = min(xs), max(xs)
        if log_x:
            x_lo, x_hi = math.log10(x_lo) - 0.08, math.log10(x_hi) + 0.08
        else:
            pad = (x_hi - x_lo) * 0.05 or max(abs(x_hi) * 0.05, 0.5)
            x_lo, x_hi = x_lo - pad, x_hi + pad
        y_lo, y_hi = min(ys), max(ys)
        pad = (y_hi - y_lo) * 0.08 or max(abs(y_hi) * 0.05, 0.05)
        self.x_lo, self.x_hi, self.y_lo, self.y_hi = x_lo, x_hi, y_lo - pad, y_hi + pad

    def x(self, v: float) -> float:
        v = math.log10(v) if self.log_x else v
        return self.left + (v - self.x_lo) / (self.x_hi - self.x_lo) * (self.right - self.left)

    def y(self, v: float) -> float:
        return self.bottom - (v - self.y_lo) / (self.y_hi - self.y_lo) * (self.bottom - self.top)

    def frame(self, x_label: str, y_label: str, integer_x: bool = False) -> list[str]:
        out = [f'<rect x="{self.left}" y="{self.top}" width="{self.right - self.left}" '
               f'height="{self.bottom - self.top}" fill="white" stroke="#999"/>']
        if self.log_x:
            xt = _log_ticks(10 ** self.x_lo, 10 ** self.x_hi)
        else:
            xt = [t for t in _ticks(self.x_lo, self.x_hi, 6)
                  if not integer_x or float(t).is_integer()]
        for t in xt:
            px = self.x(t)
            out.append(f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{self.top}" y2="{self.bottom}" '
                       'stroke="#eee"/>')
            out.append(f'<text x="{px:.1f}" y="{self.bottom + 14}" text-anchor="middle">'
                       f"{t:g}</text>")
        for t in _ticks(self.y_lo, self.y_hi, 5):
            py = self.y(t)
            out.append(f'<line x1="{self.left}" x2="{self.right}" y1="{py:.1f}" y2="{py:.1f}" '
                       'stroke="#eee"/>')
            out.append(f'<text x="{self.left - 5}" y="{py + 4:.1f}" text-anchor="end">'
                       f"{t:g}</text>")
        cx = (self.left + self.right) / 2
        out.append(f'<text x="{cx:.1f}" y="{self.bottom + 32}" text-anchor="middle">'
                   f"{_esc(x_label)}</text>")
        cy = (self.top + self.bottom) / 2
        out.append(f'<text transform="translate(14 {cy:.1f}) rotate(-90)" '
                   f'text-anchor="middle">{_esc(y_label)}</text>')
        return out


def _legend(items: list[tuple[str, str, str, str]], x: int, top: int) -> list[str]:
    """Legend entries ``(label, colour, dash, marker)`` stacked at ``x`` (outside the data)."""
    out = []
    for i, (label, colour, dash, marker) in enumerate(items):
        y = top + 8 + 16 * i
        if marker == "line":
            d = f' stroke-dasharray="{dash}"' if dash else ""
            out.append(f'<line x1="{x}" x2="{x + 18}" y1="{y}" y2="{y}" stroke="{colour}" '
                       f'stroke-width="2"{d}/>')
        else:
            out.append(_marker(marker, x + 9, y, colour, 4.5))
        out.append(f'<text x="{x + 24}" y="{y + 4}">{_esc(_short(label, 48))}</text>')
    return out


def _marker(kind: str, cx: float, cy: float, colour: str, r: float = 5.0,
            extra: str = "") -> str:
    if kind == "square":
        return (f'<rect x="{cx - r:.1f}" y="{cy - r:.1f}" width="{2 * r:.1f}" '
                f'height="{2 * r:.1f}" fill="{colour}"{extra}/>')
    return f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="{r:.1f}" fill="{colour}"{extra}/>'


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both latency and error (lower is better),
    in order of latency."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], points[i][1]))
    front, best = [], math.inf
    for i in order:
        if points[i][1] < best:
            front.append(i)
            best = points[i][1]
    return front


def scatter_svg(rows: list[Row], colours: dict[str, str], up: str, title: str) -> str:
    """Test MAE against inference latency (batch 1), one point per row; the Pareto front (no
    row both faster and more accurate) is joined by a dashed line and labelled."""
    pts = [(r.latency_ms, r.metrics["mae"], r) for r in rows
           if r.latency_ms and r.latency_ms > 0 and not math.isnan(r.metrics.get("mae", math.nan))]
    width, height, legend_w = 520, 300, 230
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    log_x = max(xs) / min(xs) > 8
    ax = _Axes(xs, ys, width, height, log_x=log_x)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width + legend_w}" '
           f'height="{height}" viewBox="0 0 {width + legend_w} {height}" role="img" '
           f'aria-label="{_esc(title)}">', f"<title>{_esc(title)}</title>",
           *ax.frame("inference latency, ms (batch 1" + (", log scale)" if log_x else ")"),
                     "test MAE (pooled)")]
    front = pareto_front([(p[0], p[1]) for p in pts])
    if len(front) > 1:
        d = " ".join(("M" if k == 0 else "L") + f"{ax.x(pts[i][0]):.1f} {ax.y(pts[i][1]):.1f}"
                     for k, i in enumerate(front))
        out.append(f'<path d="{d}" fill="none" stroke="#444" stroke-dasharray="4 3"/>')
    on_front = set(front)
    for i, (lat, mae, r) in sorted(enumerate(pts), key=lambda t: t[0] in on_front):
        colour = colours.get(_base_model(r.model), "#333")
        ring = ' stroke="black" stroke-width="1.6"' if i in on_front else ' fill-opacity="0.8"'
        tip = (f"{r.model} · {_source_text(r)} · {_frac(r.train_fraction)} data · "
               f"MAE {mae:.3f} · {lat:.3g} ms · {r.machine}")
        out.append(f'<a href="{up}{item_path(r)}"><title>{_esc(tip)}</title>'
                   + _marker("square" if r.source == "submission" else "circle",
                             ax.x(lat), ax.y(mae), colour, 5.0, ring) + "</a>")
        if i in on_front:
            dy = -7 if front.index(i) % 2 == 0 else 15
            out.append(f'<text x="{ax.x(lat) + 7:.1f}" y="{ax.y(mae) + dy:.1f}">'
                       f"{_esc(_short(r.model, 22))} {_esc(_frac(r.train_fraction))}</text>")
    models = sorted({_base_model(p[2].model) for p in pts})
    items = [(m, colours.get(m, "#333"), "", "circle") for m in models]
    items.append(("Pareto front", "#444", "4 3", "line"))
    if any(p[2].source == "submission" for p in pts):
        items.append(("square: submission (claimed)", "#888", "", "square"))
    out += _legend(items, width + 8, ax.top)
    out.append("</svg>")
    return "\n".join(out)


def lines_svg(series: list[tuple[str, str, str, list[float], str]], y_label: str,
              title: str) -> str:
    """Lines ``(label, colour, dash, values per horizon step, href)`` against the step."""
    width, height, legend_w = 520, 300, 320
    xs = [float(i + 1) for s in series for i in range(len(s[3]))]
    ys = [v for s in series for v in s[3] if not math.isnan(v)]
    ax = _Axes(xs, ys, width, height)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width + legend_w}" '
           f'height="{height}" viewBox="0 0 {width + legend_w} {height}" role="img" '
           f'aria-label="{_esc(title)}">', f"<title>{_esc(title)}</title>",
           *ax.frame("horizon step", y_label, integer_x=True)]
    for label, colour, dash, vals, href in series:
        pts = [(ax.x(i + 1), ax.y(v)) for i, v in enumerate(vals) if not math.isnan(v)]
        d = " ".join(("M" if k == 0 else "L") + f"{x:.1f} {y:.1f}" for k, (x, y) in
                     enumerate(pts))
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        body = (f'<path d="{d}" fill="none" stroke="{colour}" stroke-width="2"{dash_attr}/>'
                + "".join(_marker("circle", x, y, colour, 2.5) for x, y in pts))
        tip = f"<title>{_esc(label)}</title>"
        out.append(f'<a href="{href}">{tip}{body}</a>' if href else f"<g>{tip}{body}</g>")
    out += _legend([(s[0], s[1], s[2], "line") for s in series], width + 8, ax.top)
    out.append("</svg>")
    return "\n".join(out)


def _horizon_values(r: Row, metric: str = "mae") -> list[float]:
    if r.per_horizon.get(metric):
        return [float(v) for v in r.per_horizon[metric]]
    at = {int(k.split("@")[1]): v for k, v in r.metrics.items() if k.startswith(f"{metric}@")}
    if not at:
        return []
    return [at.get(h, math.nan) for h in range(1, max(at) + 1)]


def horizon_series(rows: list[Row], colours: dict[str, str], up: str,
                   limit: int = 8) -> list[tuple[str, str, str, list[float], str]]:
    """The ``limit`` best rows (by MAE) with per-horizon errors; a model drawn more than once
    (several fractions or machines) gets a dash pattern per row."""
    out, seen = [], defaultdict(int)
    several_sweeps = len({r.sweep for r in rows}) > 1
    several_machines = len({r.machine for r in rows}) > 1
    for r in ranked(rows):
        vals = _horizon_values(r)
        if not vals:
            continue
        base = _base_model(r.model)
        dash = DASHES[seen[base] % len(DASHES)]
        seen[base] += 1
        label = " · ".join([r.model, _frac(r.train_fraction)]
                           + ([r.sweep or r.source] if several_sweeps else [])
                           + ([_short(r.machine, 16)] if several_machines else []))
        out.append((label, colours.get(base, "#333"), dash, vals, f"{up}{item_path(r)}"))
        if len(out) == limit:
            break
    return out


# ------------------------------------------------------------------------------ boards
BOARD_COLUMNS = (("#", "num"), ("model", "str"), ("source", "str"), ("train data", "num"),
                 ("seeds", "num"), ("MAE", "num"), ("RMSE", "num"), ("MAPE %", "num"),
                 ("params", "num"), ("latency ms", "num"),
                 ("peak MiB", "num"), ("machine", "str"), ("converged", "str"))


def _board_row(rank: int, r: Row) -> str:
    m = r.metrics
    star = "*" if r.source == "submission" else ""

    def num(v: float | None, digits: int = 3, claimed: bool = False) -> str:
        text = _fmt(v, digits)
        return (f'<td class="num" data-v="{_esc(_num_attr(v))}">{_esc(text)}'
                f'{star if claimed and text else ""}</td>')

    attrs = {"fraction": f"{r.train_fraction:g}", "source": r.source, "sweep": r.sweep,
             "machine": r.machine, "converged": _converged_attr(r), "model": r.model}
    data = " ".join(f'data-{k}="{_esc(v)}"' for k, v in attrs.items())
    machine = f'<td title="{_esc(r.machine)}">{_esc(_short(r.machine, 20))}</td>'
    return (f'<tr class="{_esc(r.source)}" {data}>'
            f'<td class="num" data-v="{rank}">{rank}</td>'
            f'<td data-v="{_esc(r.model.lower())}"><a href="../{item_path(r)}">'
            f"{_esc(r.model)}</a></td>"
            f"<td>{_esc(_source_text(r))}</td>"
            f'<td class="num" data-v="{_esc(_num_attr(r.train_fraction))}">'
            f"{_frac(r.train_fraction)}</td>"
            + num(r.seeds, 0) + num(m.get("mae")) + num(m.get("rmse")) + num(m.get("mape"), 2)
            + num(r.params, 0, r.params_claimed)
            + num(r.latency_ms, 3, r.latency_claimed) + num(r.peak_mb, 2, r.peak_claimed)
            + machine + f'<td data-v="{_converged_attr(r)}">{_converged_cell(r)}</td></tr>')


def _select(name: str, label: str, values: list[str], shown: dict[str, str]) -> str:
    opts = ['<option value="">all</option>'] + [
        f'<option value="{_esc(v)}">{_esc(shown.get(v, v))}</option>' for v in values]
    return (f'<label>{_esc(label)} <select id="f-{name}" data-filter="{name}">'
            + "".join(opts) + "</select></label>")


def _filters(rows: list[Row]) -> str:
    fracs = sorted({r.train_fraction for r in rows if not math.isnan(r.train_fraction)})
    parts = [_select("fraction", "training data", [f"{f:g}" for f in fracs],
                     {f"{f:g}": _frac(f) for f in fracs}),
             _select("source", "source", sorted({r.source for r in rows}), {})]
    sweeps = sorted({r.sweep for r in rows if r.sweep})
    if sweeps:
        parts.append(_select("sweep", "suite sweep", sweeps, {}))
    machines = sorted({r.machine for r in rows})
    parts.append(_select("machine", "machine", machines, {m: _short(m, 40) for m in machines}))
    parts.append('<label><input type="checkbox" id="f-converged" data-filter="converged"> '
                 "converged only</label>")
    parts.append('<label>model <input type="search" id="f-model" data-filter="model" '
                 'data-match="contains" placeholder="name contains…"></label>')
    parts.append(f'<span class="muted"><span id="shown">{len(rows)}</span> of {len(rows)} '
                 "rows shown</span>")
    return '<form class="filters" id="filters">' + "".join(parts) + "</form>"


def board_page(dataset: str, board: str, rows: list[Row], colours: dict[str, str]) -> str:
    title = f"{dataset} · protocol {board}"
    body = [f"<h1>{_esc(dataset)} <span class=\"muted\">· protocol <code>{_esc(board)}</code>"
            "</span></h1>", f'<p class="note">{_esc(protocol_line(rows))}</p>',
            '<p class="note">Test-split metrics recomputed by the suite. Suite rows are the '
            "suite's models (mean over seeds; never pooled across sweeps, recipes or machine "
            "kinds); submission rows are external entries (values marked * are claimed by the "
            "submitter). <b>converged</b>: every run stopped by early stopping or was a "
            "closed-form fit; <i>capped</i> runs hit a time budget, <i>epoch limit</i> runs "
            "the maximum number of epochs; submissions do not report it. Click a header to "
            "sort; a model name opens its page.</p>", _filters(rows),
            '<div class="scroll"><table class="lb" id="board"><thead><tr>'
            + "".join(f'<th data-type="{kind}">{_esc(label)}</th>'
                      for label, kind in BOARD_COLUMNS) + "</tr></thead><tbody>"]
    body += [_board_row(i, r) for i, r in enumerate(ranked(rows), 1)]
    body.append("</tbody></table></div>")
    body.append('<h2>Accuracy against cost</h2><div class="charts">')
    groups: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        if r.latency_ms and r.latency_ms > 0 and not math.isnan(r.metrics.get("mae", math.nan)):
            groups["claimed by submitters" if r.source == "submission" else r.machine].append(r)
    if not groups:
        body.append('<p class="note">No row has a latency measurement.</p>')
    for machine, grows in sorted(groups.items()):
        body.append("<figure>" + scatter_svg(grows, colours, "../", f"MAE vs latency, {machine}")
                    + "<figcaption>Test MAE (this board's protocol; pooled over horizons, "
                    "nodes and channels) against median inference latency at "
                    f"batch size 1 on <b>{_esc(machine)}</b> (latencies are compared within one "
                    "machine kind only). Each point is a row of the table (mean over seeds); "
                    "circled points with labels form the Pareto front: no other row is both "
                    "faster and more accurate. Points link to their pages.</figcaption>"
                    "</figure>")
    series = horizon_series(rows, colours, "../")
    if series:
        body.append("<figure>" + lines_svg(series, "test MAE", f"MAE per horizon step, {title}")
                    + "<figcaption>Test MAE at each horizon step (mean over seeds) of the "
                    f"{len(series)} best rows by overall MAE; the same model at another "
                    "training fraction or machine kind is dashed.</figcaption></figure>")
    body.append("</div>")
    return page(f"{title} — FlowDistill-Bench", body, depth=1, script=True)


# ------------------------------------------------------------------------------ pages
def _facts(items: list[tuple[str, str]]) -> str:
    return ('<dl class="facts">' + "".join(f"<dt>{_esc(k)}</dt><dd>{v}</dd>"
                                          for k, v in items if v) + "</dl>")


def _metrics_table(views: list[tuple[str, dict]]) -> str:
    head = "<tr><th>view</th><th>MAE</th><th>RMSE</th><th>MAPE %</th></tr>"
    body = []
    for name, flat in views:
        if not flat:
            continue
        body.append(f"<tr><td>{_esc(name)}</td>" + "".join(
            f'<td class="num">{_esc(_fmt(flat.get(k), 2 if k.startswith("mape") else 3))}</td>'
            for k in ("mae", "rmse", "mape")) + "</tr>")
    return f"<table>{head}{''.join(body)}</table>"


def _views(flat: dict[str, float]) -> list[tuple[str, dict]]:
    hs = sorted({int(k.split("@")[1]) for k in flat if "@" in k})
    views = [("overall (pooled)", {k: flat.get(k) for k in ("mae", "rmse", "mape")}),
             ("mean of horizons", {k: flat.get(f"{k}_moh") for k in ("mae", "rmse", "mape")})]
    views += [(f"horizon {h}", {k: flat.get(f"{k}@{h}") for k in ("mae", "rmse", "mape")})
              for h in hs]
    return [(n, {k: v for k, v in d.items() if v is not None}) for n, d in views]


def item_page(r: Row, colours: dict[str, str]) -> str:
    board_link = f'<a href="../{board_path(r.dataset, r.board)}">{_esc(r.dataset)} · ' \
                 f"protocol {_esc(r.board)}</a>"
    links = " ".join(f'<a href="{_esc(u)}" rel="{LINK_REL}">{_esc(label)}</a>'
                     for label, u in r.links)
    entry = r.entry or {}
    facts = [("board", board_link), ("source", _esc(_source_text(r))),
             ("recipe", _esc(r.recipe)), ("training data", _esc(_frac(r.train_fraction))),
             ("seeds", _esc(r.seeds or "")),
             ("machine kind", _esc(r.machine) if r.source == "suite" else ""),
             ("hardware", _esc(r.hardware)), ("converged", _converged_cell(r)),
             ("parameters", _esc(_fmt(r.params, 0)) + (" (claimed)" if r.params_claimed else "")),
             ("latency", _esc(_fmt(r.latency_ms) + " ms" if r.latency_ms is not None else "")
              + (" (claimed)" if r.latency_claimed and r.latency_ms is not None else "")),
             ("peak memory", _esc(_fmt(r.peak_mb, 2) + " MiB" if r.peak_mb is not None else "")
              + (" (claimed)" if r.peak_claimed and r.peak_mb is not None else "")),
             ("teacher", _esc(r.teacher)),
             ("extra data", {True: "yes", False: "no"}.get(r.extra_data, "")),
             ("authors", _esc(r.authors)), ("contact", _esc(r.contact)),
             ("description", _esc(r.description)), ("links", links),
             ("entry id", _esc(entry.get("entry_id", ""))),
             ("predictions sha256", _esc(entry.get("predictions_sha256", ""))),
             ("submitted", _esc(entry.get("submitted", ""))),
             ("validated with", _esc(entry.get("validated_with", ""))),
             ("claims ignored", _esc(", ".join(entry.get("ignored_claims") or [])))]
    kind = "Submitted entry" if r.source == "submission" else "Suite model"
    body = [f"<h1>{_esc(r.model)} <span class=\"muted\">· {kind}</span></h1>", _facts(facts),
            "<h2>Protocol</h2>", f'<p class="note">{_esc(protocol_line([r]))}</p>',
            "<table>" + "".join(f"<tr><td>{_esc(k)}</td><td><code>"
                                f"{_esc(json.dumps(v, sort_keys=True, default=str))}</code></td>"
                                "</tr>" for k, v in sorted(r.protocol.items())) + "</table>",
            "<h2>Test metrics</h2>",
            '<p class="note">Recomputed by the suite' + (" (mean over seeds)" if r.seeds else "")
            + "; the protocol's masked view:</p>", _metrics_table(_views(r.metrics))]
    if r.all_targets:
        body += ['<p class="note">Over every finite target (no null mask):</p>',
                 _metrics_table(_views(r.all_targets))]
    if r.per_horizon.get("mae"):
        n = len(r.per_horizon["mae"])
        body.append("<h2>Per horizon step</h2><div class=\"scroll\"><table><tr><th>step</th>"
                    + "".join(f'<th>{i}</th>' for i in range(1, n + 1)) + "</tr>")
        for k in ("mae", "rmse", "mape"):
            vals = r.per_horizon.get(k) or []
            body.append(f"<tr><td>{k.upper()}</td>" + "".join(
                f'<td class="num">{_esc(_fmt(v, 2 if k == "mape" else 3))}</td>'
                for v in vals) + "</tr>")
        body.append("</table></div>")
        colour = colours.get(_base_model(r.model), "#333")
        body.append("<figure>" + lines_svg(
            [("MAE", colour, "", r.per_horizon["mae"], ""),
             ("RMSE", colour, "6 3", r.per_horizon.get("rmse") or [], "")],
            "test error", f"error per horizon step, {r.model}")
            + "<figcaption>Test MAE (solid) and RMSE (dashed) at each horizon step."
            "</figcaption></figure>")
    if r.per_channel:
        body.append("<h2>Per channel</h2>")
        body.append(_metrics_table([(name, {k: flat.get(k) for k in ("mae", "rmse", "mape")})
                                    for name, flat in sorted(r.per_channel.items())]))
    if r.records:
        body.append("<h2>Run records</h2><div class=\"scroll\"><table><tr><th>run id</th>"
                    "<th>seed</th><th>MAE</th><th>stopped by</th><th>epochs</th>"
                    "<th>train s</th><th>hardware</th><th>git SHA</th><th>sweep</th></tr>")
        for rec in r.records:
            fit = rec.fit or {}
            mae = ((rec.metrics.get("test") or {}).get("overall") or {}).get("mae")
            hw = rec.hardware or {}
            hw_text = ", ".join(f"{k} {hw[k]}" for k in ("device", "gpu", "processor", "cpus")
                                if hw.get(k))
            body.append(
                f"<tr><td><code>{_esc(rec.run_id)}</code></td><td class=\"num\">{rec.seed}</td>"
                f'<td class="num">{_esc(_fmt(mae))}</td>'
                f"<td>{_esc(fit.get('stopped_by') or '')}</td>"
                f'<td class="num">{_esc(fit.get("epochs_run", ""))}</td>'
                f'<td class="num">{_esc(_fmt(fit.get("train_seconds"), 1))}</td>'
                f"<td>{_esc(hw_text)}</td><td><code>{_esc((rec.git_sha or '')[:12])}</code>"
                f"</td><td>{_esc(rec.sweep)}</td></tr>")
        body.append("</table></div><h3>Commands</h3>")
        for rec in r.records:
            body.append(f"<p><code>{_esc(rec.command or '(not recorded)')}</code></p>")
    return page(f"{r.model} — {r.dataset} — FlowDistill-Bench", body, depth=1,
                crumbs=board_link)


# ------------------------------------------------------------------------------- index
def index_page(boards: dict[tuple[str, str], list[Row]], n_entries: int,
               n_records: int) -> str:
    body = ["<h1>FlowDistill-Bench leaderboard</h1>",
            f'<p class="note">{n_entries} submitted entries and {n_records} finished run '
            "records of the suite's own models. Every metric is recomputed by the suite from the "
            "predictions against its own ground truth; claimed numbers are ignored. One board "
            "per dataset and evaluation protocol; open a board for its rows, filters and "
            'charts. How to submit: <a href="../../docs/leaderboard.md">docs/leaderboard.md</a>.'
            "</p>"]
    if not boards:
        body.append("<p>No entries yet.</p>")
    else:
        body.append('<div class="scroll"><table class="lb" id="boards"><thead><tr>'
                    + "".join(f'<th data-type="{k}">{label}</th>' for label, k in (
                        ("dataset", "str"), ("protocol", "str"), ("rows", "num"),
                        ("submissions", "num"), ("best model (MAE)", "str"), ("MAE", "num"),
                        ("evaluation", "str")))
                    + "</tr></thead><tbody>")
        for (dataset, board), rows in boards.items():
            best = ranked(rows)[0]
            n_sub = sum(r.source == "submission" for r in rows)
            mae = best.metrics.get("mae")
            body.append(
                f'<tr><td><a href="{board_path(dataset, board)}">{_esc(dataset)}</a></td>'
                f"<td><code>{_esc(board)}</code></td>"
                f'<td class="num" data-v="{len(rows)}">{len(rows)}</td>'
                f'<td class="num" data-v="{n_sub}">{n_sub}</td>'
                f'<td><a href="{item_path(best)}">{_esc(best.model)}</a> '
                f'<span class="muted">{_esc(_frac(best.train_fraction))}</span></td>'
                f'<td class="num" data-v="{_esc(_num_attr(mae))}">{_esc(_fmt(mae))}</td>'
                f'<td class="wrap muted">{_esc(protocol_line(rows))}</td></tr>')
        body.append("</tbody></table></div>")
    for (dataset, board), rows in boards.items():
        body.append(_preview(dataset, board, rows))
    return page("FlowDistill-Bench leaderboard", body, depth=0, script=bool(boards))


PREVIEW_ROWS = 5


def _preview(dataset: str, board: str, rows: list[Row]) -> str:
    """A board's best rows on the index (no filters; the board's page has them all)."""
    href = board_path(dataset, board)
    out = [f'<h2><a href="{href}">{_esc(dataset)}</a> <span class="muted">· protocol '
           f"<code>{_esc(board)}</code></span></h2>",
           '<div class="scroll"><table class="preview"><tr>' + "".join(
               f"<th>{h}</th>" for h in ("#", "model", "source", "train data", "MAE", "RMSE",
                                         "latency ms", "machine", "converged")) + "</tr>"]
    for rank, r in enumerate(ranked(rows)[:PREVIEW_ROWS], 1):
        m = r.metrics
        out.append(
            f'<tr class="{_esc(r.source)}"><td class="num">{rank}</td>'
            f'<td><a href="{item_path(r)}">{_esc(r.model)}</a></td>'
            f"<td>{_esc(_source_text(r))}</td>"
            f'<td class="num">{_frac(r.train_fraction)}</td>'
            f'<td class="num">{_esc(_fmt(m.get("mae")))}</td>'
            f'<td class="num">{_esc(_fmt(m.get("rmse")))}</td>'
            f'<td class="num">{_esc(_fmt(r.latency_ms))}'
            f'{"*" if r.latency_claimed and r.latency_ms is not None else ""}</td>'
            f'<td title="{_esc(r.machine)}">{_esc(_short(r.machine, 20))}</td>'
            f"<td>{_converged_cell(r)}</td></tr>")
    more = len(rows) - PREVIEW_ROWS
    out.append("</table></div>" + (f'<p class="note"><a href="{href}">all {len(rows)} rows, '
                                   "filters and charts</a></p>" if more > 0 else
                                   f'<p class="note"><a href="{href}">filters and charts</a></p>'))
    return "\n".join(out)


def render_site(rows: list[Row], n_entries: int, n_records: int) -> dict[str, str]:
    """Every page of the site, ``{relative path: html}``."""
    boards = group_rows(rows)
    pages = {"index.html": index_page(boards, n_entries, n_records)}
    for (dataset, board), brows in boards.items():
        colours = model_colours(brows)
        pages[board_path(dataset, board)] = board_page(dataset, board, brows, colours)
        for r in brows:
            pages[item_path(r)] = item_page(r, colours)
    return pages

"""The paper's figures (PNG and PDF), built from a records frame, scaling rows or saved
predictions. Each function returns the paths it wrote, or ``[]`` (with a printed reason) when its
inputs are absent. Output is deterministic: figures are plain :class:`matplotlib.figure.Figure`
objects (no pyplot state, rendered by Agg for PNG), fixed style settings, no creation date in
the PDFs.
"""

from __future__ import annotations

import math
import zlib
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter
from matplotlib.transforms import blended_transform_factory

from benchmark.atomic import atomic_file
from benchmark.records import aggregate

from .frame import (
    AVG,
    METRIC_LABELS,
    MODEL_ORDER,
    UNPOOLED_KEYS,
    metric_column,
    model_sort_key,
    rows_of,
    with_unpooled_keys,
)
from .predictions import load_predictions, predictions_path
from .scaling import series_sort_key, stop_reason
from .tables import (
    HEADLINE_BASELINES,
    HEADLINE_STUDENT,
    HEADLINE_TAGS,
    _mask_text,
    _protocol_text,
    dataset_groups,
    headline_frame,
)

STYLE = {"figure.dpi": 100, "savefig.dpi": 200, "font.size": 9, "axes.titlesize": 9,
         "legend.fontsize": 7, "axes.grid": True, "grid.alpha": 0.3, "pdf.fonttype": 42,
         "svg.hashsalt": "flowdistill", "lines.linewidth": 1.4}
METHOD = "flowdistill"


# The student and its variants: one family, told apart by line style and marker (the same in
# every figure); the method itself is black and thicker, its plain-MLP base grey.
STUDENT_STYLES = {
    "flowdistill": {"color": "black", "ls": "-", "marker": "o", "lw": 2.2},
    "flowdistill-kd": {"color": "#D55E00", "ls": "--", "marker": "s", "lw": 1.8},
    "flowdistill-noteacher": {"color": "#0072B2", "ls": ":", "marker": "^", "lw": 1.8},
    "flowdistill-noib": {"color": "#009E73", "ls": "-.", "marker": "D", "lw": 1.6},
    "flowdistill-notb": {"color": "#CC79A7", "ls": (0, (5, 1.5)), "marker": "v", "lw": 1.6},
    "mlp": {"color": "#7F7F7F", "ls": (0, (1, 1.5)), "marker": "x", "lw": 1.4},
}
# Every other model: a colour of its own (no two alike, none the students' colours), solid.
BASELINE_COLOURS = ("#1F77B4", "#E6A000", "#8C564B", "#9467BD", "#2CA02C", "#D62728",
                    "#17BECF", "#BCBD22", "#393B79", "#8C6D31", "#843C39", "#7B4173",
                    "#637939", "#E377C2", "#5254A3", "#AD494A")
BASELINE_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
TEACHER_LINESTYLES = ("-", "--", ":", "-.")  # a model drawn once per teacher kind


def model_style(model: str, variant: int = 0) -> dict:
    """Colour, line style, marker and width of ``model``, the same in every figure. The
    ``variant``-th series of one model (another teacher kind) keeps its colour and changes its
    line style and marker, so no two series look alike."""
    if model in STUDENT_STYLES:
        st = dict(STUDENT_STYLES[model])
        zorder = 5
    else:
        baselines = [m for m in MODEL_ORDER if m not in STUDENT_STYLES]
        idx = baselines.index(model) if model in baselines else \
            len(baselines) + zlib.crc32(model.encode())
        st = {"color": BASELINE_COLOURS[idx % len(BASELINE_COLOURS)], "ls": "-",
              "marker": BASELINE_MARKERS[idx % len(BASELINE_MARKERS)], "lw": 1.4}
        zorder = 3
    if variant:
        st["ls"] = TEACHER_LINESTYLES[variant % len(TEACHER_LINESTYLES)]
        st["marker"] = BASELINE_MARKERS[(variant + 3) % len(BASELINE_MARKERS)]
    return {**st, "zorder": zorder}


def _line_kw(style: dict) -> dict:
    """``model_style`` as keyword arguments of ``Axes.plot`` (``ls`` -> ``linestyle``)."""
    st = dict(style)
    return {"color": st.pop("color"), "linestyle": st.pop("ls", "-"),
            "marker": st.pop("marker", "o"), "lw": st.pop("lw", 1.4), **st}


def _outside_legend(fig: Figure, axes: list, ncol: int = 1, extra: tuple = ()) -> None:
    """One legend for the whole figure, to the right of the panels (never over the data);
    series drawn in several panels appear once; ``extra`` handles go last."""
    seen: dict[str, object] = {}
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(label, h)
    for h in extra:
        seen.setdefault(h.get_label(), h)
    if seen:
        fits = max(6, int(fig.get_figheight() * 72 / (STYLE["legend.fontsize"] * 1.9)))
        ncol = max(ncol, math.ceil(len(seen) / fits))
        fig.legend(list(seen.values()), list(seen), loc="upper left", ncol=ncol,
                   bbox_to_anchor=(1.0, 0.98), frameon=False)


def _caption(fig: Figure, text: str) -> None:
    """A caption under the panels (wrapped to the figure's width)."""
    fig.text(0.0, -0.04, text, ha="left", va="top", wrap=True, fontsize=7.5)


def _protocol_caption(panels: list[tuple[str, pd.DataFrame]]) -> str:
    """The panels' protocol (input and output steps, target mask), per panel when they differ."""
    texts = [(title, ", ".join(t for t in (_protocol_text(g), _mask_text(g)) if t))
             for title, g in panels]
    if len({t for _, t in texts}) == 1:
        return texts[0][1]
    return "; ".join(f"{title}: {t}" for title, t in texts if t)


def _seeds_text(g: pd.DataFrame) -> str:
    n = g.groupby(["model", "train_fraction"])["seed"].nunique() if "seed" in g else None
    if n is None or n.empty:
        return ""
    lo, hi = int(n.min()), int(n.max())
    return f"{lo}" if lo == hi else f"{lo}-{hi}"


def save_figure(fig: Figure, out_dir: Path, stem: str) -> list[Path]:
    """Write ``<stem>.png`` and ``<stem>.pdf`` atomically (no creation date)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext, meta in (("png", {"Software": None}), ("pdf", {"CreationDate": None})):
        path = out_dir / f"{stem}.{ext}"
        with atomic_file(path) as tmp:
            fig.savefig(tmp, format=ext, metadata=meta, bbox_inches="tight")
        paths.append(path)
    return paths


def _plain_log_labels(axis, lo: float, hi: float) -> None:
    """Label a log axis with plain numbers (``20``, not ``2 x 10^1``); minor labels only when
    the axis spans less than a decade."""
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    axis.set_major_formatter(plain)
    axis.set_minor_formatter(plain if lo > 0 and hi / lo < 10 else NullFormatter())


def _grid(n: int, width: float = 4.2, height: float = 3.2):
    ncols = min(n, 3)
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(width * ncols, height * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


SERIES_KEYS = UNPOOLED_KEYS  # a line never pools these


def _short_machine(machine: str) -> str:
    """``"NVIDIA H100 80GB HBM3"`` -> ``"H100"``; ``"cpu"`` stays."""
    words = machine.replace("NVIDIA ", "").replace("GeForce ", "").split()
    return words[0] if words else "?"


def _series_label(key: tuple[str, ...], g: pd.DataFrame) -> str:
    """The model, plus its teacher, sweep or machine where the panel has several of them."""
    model, teacher, sweep, machine = key
    mine = g[g["model"] == model]
    extra = []
    if mine["teacher_kind"].nunique() > 1:
        extra.append(teacher or "no teacher")
    if g["sweep"].nunique() > 1 and mine["sweep"].nunique() > 1:
        extra.append(sweep or "ad hoc")
    if g["machine"].nunique() > 1:
        extra.append(_short_machine(machine))
    return f"{model} [{', '.join(extra)}]" if extra else model


def _band(ax, x, mean, std, style: dict, label: str) -> None:
    """A line with markers and a shaded band of mean ± one standard deviation over seeds."""
    ax.plot(x, mean, ms=3.5, label=label, **_line_kw(style))
    std = np.asarray(std, dtype=float)
    if np.isfinite(std).any():
        s = np.nan_to_num(std)
        ax.fill_between(x, mean - s, mean + s, color=style["color"], alpha=0.15, lw=0)


def _series_keys(g: pd.DataFrame) -> list[tuple[tuple[str, ...], int]]:
    """``(key, variant)`` per line (key: :data:`SERIES_KEYS`) in model order; ``variant``
    numbers the lines of one model (other teacher, sweep or machine)."""
    keys = sorted(g[list(SERIES_KEYS)].drop_duplicates().itertuples(index=False, name=None),
                  key=lambda k: (model_sort_key(k[0]), k[1:]))
    out, seen = [], {}
    for key in keys:
        seen[key[0]] = seen.get(key[0], -1) + 1
        out.append((key, seen[key[0]]))
    return out


def _figure_series(frames: list[pd.DataFrame]) -> tuple[pd.DataFrame, dict]:
    """All panels' rows together and each line's variant, so one line looks and is named the
    same in every panel."""
    everything = pd.concat(frames)
    return everything, dict(_series_keys(everything))


BAND_TEXT = "Shaded band: mean ± 1 standard deviation over seeds"


def fraction_figure(frame: pd.DataFrame, out_dir: Path, metric: str = "mae", key: str = AVG,
                    stem: str = "fraction_vs_error") -> list[Path]:
    """Test error vs share of the training data: a line per model (and teacher, sweep, machine
    kind: never pooled), mean ± std band over seeds, a panel per dataset with at least two
    training fractions; one legend outside the panels, a caption naming the protocol."""
    col = metric_column(metric, key)
    panels = []
    if not frame.empty and col in frame:
        for dataset, _, g, suffix in dataset_groups(frame):
            if g["train_fraction"].nunique() >= 2:
                panels.append((dataset + suffix, with_unpooled_keys(g)))
    if not panels:
        print(f"skip {stem}: no dataset has records at two or more training fractions")
        return []
    what = "mean over horizons" if key == AVG else key
    everything, variants = _figure_series([g for _, g in panels])
    with matplotlib.rc_context(STYLE):
        fig, axes = _grid(len(panels))
        for ax, (title, g) in zip(axes, panels, strict=True):
            for skey, _ in _series_keys(g):
                a = aggregate(rows_of(g, skey), by=("train_fraction",), metrics=(col,))
                a = a.sort_values("train_fraction")
                if len(a) < 2:
                    continue
                _band(ax, 100 * a["train_fraction"].to_numpy(), a[f"{col}_mean"].to_numpy(),
                      a[f"{col}_std"].to_numpy(), model_style(skey[0], variants[skey]),
                      _series_label(skey, everything))
            ax.set_title(title)
            ax.set_xlabel("training data (%)")
            ax.set_ylabel(f"test {METRIC_LABELS.get(metric, metric)} ({what})")
        _outside_legend(fig, axes)
        _caption(fig, f"Test {METRIC_LABELS.get(metric, metric)} ({what}) against the share of "
                      f"the training period each model saw. Protocol: "
                      f"{_protocol_caption(panels)}. {BAND_TEXT} "
                      f"({_seeds_text(everything)} per point).")
        return save_figure(fig, out_dir, stem)


def horizon_figure(frame: pd.DataFrame, out_dir: Path, metric: str = "mae",
                   stem: str = "error_per_horizon") -> list[Path]:
    """Test error at each horizon step: a line per model (and teacher, sweep, machine kind),
    mean ± std band over seeds; one legend outside the panels, a caption naming the protocol."""
    col = f"per_horizon_{metric}"
    panels = []
    if not frame.empty and col in frame:
        for dataset, _, g, suffix in dataset_groups(frame):
            g = g[g[col].apply(lambda v: isinstance(v, list) and len(v) > 0)]
            if not g.empty:
                panels.append((dataset + suffix, with_unpooled_keys(g)))
    if not panels:
        print(f"skip {stem}: no records with per-horizon metrics")
        return []
    everything, variants = _figure_series([g for _, g in panels])
    with matplotlib.rc_context(STYLE):
        fig, axes = _grid(len(panels))
        for ax, (title, g) in zip(axes, panels, strict=True):
            for skey, _ in _series_keys(g):
                arrs = rows_of(g, skey)[col].tolist()
                length = min(len(a) for a in arrs)
                stack = np.array([a[:length] for a in arrs], dtype=float)
                std = stack.std(axis=0, ddof=1) if len(stack) > 1 else np.full(length, np.nan)
                _band(ax, np.arange(1, length + 1), stack.mean(axis=0), std,
                      model_style(skey[0], variants[skey]), _series_label(skey, everything))
            ax.set_title(title)
            ax.set_xlabel("horizon step")
            ax.set_ylabel(f"test {METRIC_LABELS.get(metric, metric)}")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        _outside_legend(fig, axes)
        _caption(fig, f"Test {METRIC_LABELS.get(metric, metric)} at each step ahead. Protocol: "
                      f"{_protocol_caption(panels)}. {BAND_TEXT} ({_seeds_text(everything)}).")
        return save_figure(fig, out_dir, stem)


GRAPH_BASELINES = ("dcrnn", "stgcn", "stgcn-gcn", "astgcn", "tgcn", "gwnet", "stsgcn", "agcrn",
                   "mtgnn", "stwa")


def headline_figure(frame: pd.DataFrame, out_dir: Path, metric: str = "mae", key: str = AVG,
                    stem: str = "headline_student_vs_graph") -> list[Path]:
    """The paper's claim in one picture: the student and its variants trained on 10..100 % of
    the training period (lines, mean ± std over seeds) against graph baselines trained on all of
    it (horizontal lines with their own band). A panel per dataset that has a student at two or
    more fractions and at least one graph baseline at 100 %; skipped (with a note) otherwise."""
    col = metric_column(metric, key)
    panels = []
    if not frame.empty and col in frame:
        for dataset, _, g, suffix in dataset_groups(frame):
            g = with_unpooled_keys(g)
            students = g[g["model"].isin(STUDENT_STYLES)]
            graphs = g[g["model"].isin(GRAPH_BASELINES) & (g["train_fraction"] == 1.0)]
            if students["train_fraction"].nunique() >= 2 and not graphs.empty:
                panels.append((dataset + suffix, students, graphs))
    if not panels:
        print(f"skip {stem}: no dataset has a student at two or more training fractions and a "
              "graph baseline at 100 % (run the student and baselines sweeps)")
        return []
    what = "mean over horizons" if key == AVG else key
    everything, variants = _figure_series([pd.concat([p[1], p[2]]) for p in panels])
    with matplotlib.rc_context(STYLE):
        fig, axes = _grid(len(panels), width=5.0, height=3.6)
        for ax, (title, students, graphs) in zip(axes, panels, strict=True):
            lo = 100 * students["train_fraction"].min()
            top = -math.inf
            for skey, _ in _series_keys(students):
                a = aggregate(rows_of(students, skey), by=("train_fraction",), metrics=(col,))
                a = a.sort_values("train_fraction")
                if len(a) >= 2:
                    mean, std = a[f"{col}_mean"].to_numpy(), a[f"{col}_std"].to_numpy()
                    _band(ax, 100 * a["train_fraction"].to_numpy(), mean, std,
                          model_style(skey[0], variants[skey]), _series_label(skey, everything))
                    top = max(top, float(np.nanmax(mean + np.nan_to_num(std))))
            # the y axis shows the students and every baseline up to 1.5x their worst error;
            # baselines above that are named in the legend with their error
            limit = 1.5 * top if math.isfinite(top) else math.inf
            for skey, _ in _series_keys(graphs):
                vals = rows_of(graphs, skey)[col].dropna().to_numpy(dtype=float)
                if not len(vals):
                    continue
                st = model_style(skey[0], variants[skey])
                mean = float(vals.mean())
                std = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
                label = _series_label(skey, everything) + " (100 %)"
                if mean > limit:
                    ax.plot([], [], color=st["color"], ls=(0, (4, 2)), lw=1.3,
                            label=f"{label}: {mean:.2f}, off scale")
                    continue
                dash = (0, (4, 2)) if variants[skey] == 0 else (0, (1, 1.5))
                ax.hlines(mean, lo, 100, colors=st["color"], linestyles=[dash], lw=1.3,
                          label=label, zorder=2)
                if std > 0:
                    ax.fill_between([lo, 100], mean - std, mean + std, color=st["color"],
                                    alpha=0.10, lw=0)
            ax.set_title(title)
            ax.set_xlabel("student's training data (%)")
            ax.set_ylabel(f"test {METRIC_LABELS.get(metric, metric)} ({what})")
        _outside_legend(fig, axes)
        _caption(fig, f"Students (lines with markers) trained on a share of the training period "
                      f"against graph baselines trained on all of it (dashed horizontal lines). "
                      f"Test {METRIC_LABELS.get(metric, metric)} ({what}). Protocol: "
                      f"{_protocol_caption([(p[0], p[1]) for p in panels])}. {BAND_TEXT} "
                      f"({_seeds_text(everything)}).")
        return save_figure(fig, out_dir, stem)


def headline_claim_figure(frame: pd.DataFrame, out_dir: Path, metric: str = "mae",
                          key: str = AVG, stem: str = "headline_claim") -> list[Path]:
    """The headline claim at a glance: per dataset, FlowDistill trained on 10 % of the training
    data beside STGCN and GWNet trained on all of it (:func:`paper.tables.headline_frame`):
    each run a dot, the mean over seeds a bar with ± 1 std, the seed count under it; an arm
    without records is marked as awaiting. A panel per dataset with the student and at least
    one baseline; skipped (with a note) otherwise."""
    col = metric_column(metric, key)
    arms = [HEADLINE_STUDENT, *HEADLINE_BASELINES]
    panels = []
    sel = headline_frame(frame) if not frame.empty else frame
    if not sel.empty and col in sel:
        for dataset, _, g, suffix in dataset_groups(sel):
            g = with_unpooled_keys(g)
            models = set(g["model"])
            if HEADLINE_STUDENT[0] in models and models & {m for m, _, _ in HEADLINE_BASELINES}:
                panels.append((dataset + suffix, g))
    if not panels:
        print(f"skip {stem}: no dataset has FlowDistill at 10 % (sweep {HEADLINE_TAGS[0]}) and "
              f"STGCN or GWNet at 100 % (sweep {HEADLINE_TAGS[1]})")
        return []
    what = "mean over horizons" if key == AVG else key
    with matplotlib.rc_context(STYLE):
        fig, axes = _grid(len(panels), width=3.6, height=3.2)
        for ax, (title, g) in zip(axes, panels, strict=True):
            for x, (model, frac, label) in enumerate(arms):
                rows = g[(g["model"] == model) & (g["train_fraction"] == frac)]
                st = model_style(model)
                keys = _series_keys(rows) if not rows.empty else []
                if not keys:
                    ax.text(x, 0.02, "awaits", transform=blended_transform_factory(
                        ax.transData, ax.transAxes), ha="center", va="bottom", fontsize=7,
                        color="0.4")
                    continue
                width = 0.6 / len(keys)
                for i, (skey, _) in enumerate(keys):
                    vals = rows_of(rows, skey)[col].dropna().to_numpy(dtype=float)
                    if not len(vals):
                        continue
                    xi = x - 0.3 + width * (i + 0.5)
                    std = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
                    ax.bar(xi, float(vals.mean()), width=width * 0.9, color=st["color"],
                           alpha=0.35, yerr=std if std > 0 else None, capsize=3, lw=0,
                           label=label if i == 0 else None)
                    ax.plot(np.full(len(vals), xi), vals, ls="none", marker=st["marker"],
                            ms=3.5, color=st["color"])
                    ax.text(xi, 0.02, f"n={len(vals)}", transform=blended_transform_factory(
                        ax.transData, ax.transAxes), ha="center", va="bottom", fontsize=7)
            ax.set_xticks(range(len(arms)), [label for _, _, label in arms], fontsize=7)
            ax.set_xlim(-0.6, len(arms) - 0.4)
            ax.set_title(title)
            ax.set_ylabel(f"test {METRIC_LABELS.get(metric, metric)} ({what})")
        _outside_legend(fig, axes)
        _caption(fig, f"FlowDistill trained on the most recent 10 % of the training period "
                      f"(sweep {HEADLINE_TAGS[0]}) against STGCN and GWNet trained on all of it "
                      f"(sweep {HEADLINE_TAGS[1]}). Test {METRIC_LABELS.get(metric, metric)} "
                      f"({what}); dots: runs, bars: mean over seeds with ± 1 standard deviation, "
                      f"n: seeds. Protocol: {_protocol_caption(panels)}.")
        return save_figure(fig, out_dir, stem)


# Stop markers of the scaling figure: why a series has no value at some N.
STOP_MARKERS = {"out of memory": {"marker": "x"}, "timeout": {"marker": "d"},
                "dense by design": {"marker": "s", "facecolors": "none"},
                "error": {"marker": "*"}}


def _stops(s: pd.DataFrame) -> pd.DataFrame:
    """The rows of one series where it stopped (sorted by N): every row that is not ok, except
    those recorded without running because a smaller N already ran out of memory or time."""
    bad = s[s.status != "ok"]
    if "error" in bad:
        derived = bad["error"].fillna("").astype(str).str.startswith("not run:")
        bad = bad[~derived]
    return bad.sort_values("num_nodes")


def _stop_sentence(series: str, s: pd.DataFrame, stops: pd.DataFrame) -> str:
    """``"stgcn: ran to N = 1,000; timeout (180 s) at N = 5,000"``; stops with the same reason
    are listed together (``"... at N = 10,000, 50,000"``)."""
    ok = s[s.status == "ok"]["num_nodes"]
    parts = [f"ran to N = {int(ok.max()):,}" if len(ok) else "did not run"]
    grouped: dict[str, list[int]] = {}
    for _, r in stops.iterrows():
        why = stop_reason(r)
        settings = r.get("settings")
        if why == "timeout" and isinstance(settings, dict) and settings.get("timeout_s"):
            why += f" ({settings['timeout_s']:g} s)"
        elif why == "out of memory" and isinstance(settings, dict) \
                and settings.get("memory_limit_gb"):
            why += f" ({settings['memory_limit_gb']:g} GB limit)"
        elif why == "dense by design":
            error = r.get("error")
            detail = error.split("dense by design: ", 1)[-1] if isinstance(error, str) else ""
            why = "not attempted with sparse supports, dense by design" + \
                (f" ({detail})" if detail else "")
        grouped.setdefault(why, []).append(int(r["num_nodes"]))
    parts += [f"{why} at N = {', '.join(f'{n:,}' for n in ns)}" for why, ns in grouped.items()]
    return f"{series}: " + "; ".join(parts)


def scaling_figure(rows: pd.DataFrame, out_dir: Path, stem: str = "scaling") -> list[Path]:
    """Latency (median; bar up to p95) and peak inference memory vs N, log-log, one line per
    series (a model, or a model with sparse supports: same colour, another line style). Where a
    series stops, its line ends in a dotted segment to a marker that says why (out of memory,
    timeout, not attempted because the graph is dense by design, other error), and the caption
    lists, per series, the last N that ran and the first that did not, with the reason."""
    if rows.empty:
        print(f"skip {stem}: no scaling rows (results/scaling/*.json or records with num_nodes)")
        return []
    rows = rows.assign(series=rows["series"] if "series" in rows else rows["model"])
    several_devices = rows["device"].nunique() > 1
    series_keys = sorted(rows[["series", "model", "device"]].drop_duplicates()
                         .itertuples(index=False, name=None),
                         key=lambda k: (series_sort_key(k[0]), k[2]))
    panels = (("latency_ms_median", "inference latency (ms, median; bar: p95)"),
              ("peak_memory_mb_inference", "peak inference memory (MB)"))
    sentences, reasons = [], set()
    with matplotlib.rc_context(STYLE):
        fig, axes = _grid(2)
        fig.subplots_adjust(wspace=0.35)
        for panel, (ax, (col, ylabel)) in enumerate(zip(axes, panels, strict=True)):
            edge = blended_transform_factory(ax.transData, ax.transAxes)
            stacked: dict[int, int] = {}  # markers already drawn at each N (stacked downwards)
            for i, (series, model, device) in enumerate(series_keys):
                s = rows[(rows.series == series) & (rows.device == device)]
                s = s.sort_values("num_nodes")
                style = model_style(model, variant=int(series != model))
                ls = ("-", "--", ":", "-.")[i % 4] if several_devices else style["ls"]
                label = f"{series} ({device})" if several_devices else series
                ok = s[(s.status == "ok") & (s[col] > 0)]
                x, y = ok["num_nodes"].to_numpy(), ok[col].to_numpy(dtype=float)
                if col == "latency_ms_median" and "latency_ms_p95" in ok:
                    up = np.clip(ok["latency_ms_p95"].to_numpy(dtype=float) - y, 0, None)
                    ax.errorbar(x, y, yerr=[np.zeros_like(y), np.nan_to_num(up)],
                                marker=style["marker"], ms=3.5, capsize=2, ls=ls, label=label,
                                color=style["color"], lw=style["lw"], zorder=style["zorder"])
                else:
                    ax.plot(x, y, ms=3.5, label=label, **_line_kw(style | {"ls": ls}))
                stops = _stops(s)
                for j, (_, r) in enumerate(stops.iterrows()):
                    n = int(r["num_nodes"])
                    why = stop_reason(r)
                    reasons.add(why)
                    kw = dict(STOP_MARKERS[why])
                    colour = {"edgecolors" if kw.get("facecolors") == "none" else "color":
                              style["color"]}
                    if len(x):  # the line ends dotted, at its last height, at the stop
                        if j == 0:
                            ax.plot([x[-1], n], [y[-1], y[-1]], color=style["color"], lw=1.0,
                                    ls=":", zorder=style["zorder"])
                        ax.scatter([n], [y[-1]], s=42, zorder=6, lw=1.4, **kw, **colour)
                    else:  # never ran: on the top edge
                        level = stacked.get(n, 0)
                        stacked[n] = level + 1
                        ax.scatter([n], [0.97 - 0.06 * level], s=42, transform=edge,
                                   clip_on=False, zorder=6, lw=1.4, **kw, **colour)
                if panel == 0 and (len(stops) or (s.status != "ok").any()):
                    sentences.append(_stop_sentence(label, s, stops))
            ax.set_xscale("log")
            ax.set_yscale("log", nonpositive="mask")
            _plain_log_labels(ax.xaxis, *ax.get_xlim())
            _plain_log_labels(ax.yaxis, *ax.get_ylim())
            ax.set_xlabel("number of nodes N")
            ax.set_ylabel(ylabel)
        extra = []
        for why, kw in STOP_MARKERS.items():
            if why in reasons:
                hollow = kw.get("facecolors") == "none"
                extra.append(Line2D([], [], marker=kw["marker"], ls="", color="grey",
                                    markerfacecolor="none" if hollow else "grey",
                                    label="not attempted: graph dense by design"
                                    if why == "dense by design" else why))
        _outside_legend(fig, axes, extra=tuple(extra))
        ran_all = [label for (series, _, device), label in
                   ((k, f"{k[0]} ({k[2]})" if several_devices else k[0]) for k in series_keys)
                   if (rows[(rows.series == series) & (rows.device == device)].status
                       == "ok").all()]
        text = ("Inference cost on synthetic kNN graphs of N nodes (one forward pass; "
                "\"(sparse)\": the model with sparse graph supports). A series that stops ends "
                "in a dotted segment at the height of its last measurement; its markers there "
                "are the N that did not run, and why.")
        if sentences:
            text += " Where each series stops: " + ". ".join(sentences) + "."
        if ran_all:
            text += " Ran at every N measured: " + ", ".join(ran_all) + "."
        _caption(fig, text)
        return save_figure(fig, out_dir, stem)


def _pick_prediction_runs(g: pd.DataFrame, runs_dir: Path, max_models: int) -> list[pd.Series]:
    """Per model, the lowest-seed run with saved predictions; the method first, then by error."""
    have = g[[predictions_path(r, runs_dir).is_file() for r in g["run_id"]]]
    if have.empty:
        return []
    err = metric_column("mae", AVG)
    score = have.groupby("model")[err].mean() if err in have else pd.Series(dtype=float)
    models = sorted(have["model"].unique(),
                    key=lambda m: (m != METHOD, score.get(m, math.inf), model_sort_key(m)))
    return [have[have.model == m].sort_values(["seed", "run_id"]).iloc[0]
            for m in models[:max_models]]


def series_figure(frame: pd.DataFrame, out_dir: Path, runs_dir: Path, zones: int = 3,
                  step: int = 1, max_windows: int = 336, max_models: int = 3,
                  stem: str = "series") -> list[Path]:
    """Predicted vs true series at horizon ``step`` for the ``zones`` busiest nodes (largest mean
    true value of channel 0), over the first ``max_windows`` test windows; one figure per
    dataset with saved predictions (``<runs>/<run_id>/test_predictions.npz``)."""
    paths: list[Path] = []
    if frame.empty:
        print(f"skip {stem}: no records")
        return paths
    for dataset, phash, g, suffix in dataset_groups(frame):
        picked = _pick_prediction_runs(g, runs_dir, max_models)
        if not picked:
            continue
        preds = [load_predictions(r["run_id"], runs_dir) for r in picked]
        common = preds[0].starts
        for p in preds[1:]:
            common = np.intersect1d(common, p.starts)
        common = np.sort(common)[:max_windows]
        if len(common) == 0:
            print(f"skip {stem} for {dataset}: the saved predictions share no test window")
            continue
        h = min(step, preds[0].pred.shape[1]) - 1

        def at(p, kind: str, common=common, h=h) -> np.ndarray:
            idx = {s: i for i, s in enumerate(p.starts.tolist())}
            rows = [idx[s] for s in common.tolist()]
            return getattr(p, kind)[rows, h]  # [W, N, C]

        true = at(preds[0], "true")
        pred_series = [at(p, "pred") for p in preds]
        busiest = np.argsort(-np.nanmean(true[..., 0], axis=0), kind="stable")[:zones]
        input_len = int(picked[0]["input_len"]) if pd.notna(picked[0]["input_len"]) else 0
        t = common + input_len + h
        with matplotlib.rc_context(STYLE):
            fig = Figure(figsize=(8, 2.0 * len(busiest)))
            axes = fig.subplots(len(busiest), 1, squeeze=False, sharex=True)
            for ax, node in zip(axes[:, 0], busiest, strict=True):
                ax.plot(t, true[:, node, 0], color="grey", lw=1.0, label="observed")
                for r, pred in zip(picked, pred_series, strict=True):
                    style = model_style(r["model"]) | {"lw": 1.0, "marker": ""}
                    ax.plot(t, pred[:, node, 0], label=r["model"], **_line_kw(style))
                ax.set_ylabel(f"node {int(node)}")
            axes[0, 0].set_title(f"{dataset}{suffix}: {h + 1}-step-ahead test predictions, "
                                 "channel 0")
            _outside_legend(fig, list(axes[:, 0]))
            axes[-1, 0].set_xlabel("time step")
            axes[-1, 0].xaxis.set_major_locator(MaxNLocator(integer=True))
            name = (f"{stem}_{dataset}" + (f"_{phash[:8]}" if "[protocol" in suffix else "")
                    + (f"_{g['recipe'].iloc[0] or 'unrecorded'}" if "[recipe" in suffix else ""))
            paths += save_figure(fig, out_dir, name)
    if not paths:
        print(f"skip {stem}: no run has saved test predictions (<runs>/<run_id>/"
              "test_predictions.npz)")
    return paths

"""The paper's figures (PNG and PDF), built from a records frame, scaling rows or saved
predictions. Each function returns the paths it wrote, or ``[]`` (with a printed reason) when its
inputs are absent. Output is deterministic: figures are plain :class:`matplotlib.figure.Figure`
objects (no pyplot state, rendered by Agg for PNG), fixed style settings, no creation date in
the PDFs.
"""

from __future__ import annotations

import math
import os
import zlib
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter
from matplotlib.transforms import blended_transform_factory

from benchmark.records import aggregate

from .frame import AVG, METRIC_LABELS, MODEL_ORDER, metric_column, model_sort_key
from .predictions import load_predictions, predictions_path
from .tables import dataset_groups

STYLE = {"figure.dpi": 100, "savefig.dpi": 200, "font.size": 9, "axes.titlesize": 9,
         "legend.fontsize": 7, "axes.grid": True, "grid.alpha": 0.3, "pdf.fonttype": 42,
         "svg.hashsalt": "flowdistill", "lines.linewidth": 1.4}
METHOD = "flowdistill"


def model_style(model: str) -> dict:
    """A colour per model, stable across figures; the method itself is black and thicker."""
    if model == METHOD:
        return {"color": "black", "lw": 2.2, "zorder": 5}
    cmap = matplotlib.colormaps["tab20"]  # dark shades first, then the light ones
    idx = (MODEL_ORDER.index(model) if model in MODEL_ORDER else zlib.crc32(model.encode())) % 20
    return {"color": cmap(2 * idx % 20 + idx // 10), "lw": 1.4, "zorder": 3}


def save_figure(fig: Figure, out_dir: Path, stem: str) -> list[Path]:
    """Write ``<stem>.png`` and ``<stem>.pdf`` atomically (no creation date)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext, meta in (("png", {"Software": None}), ("pdf", {"CreationDate": None})):
        path = out_dir / f"{stem}.{ext}"
        tmp = out_dir / f".{stem}.{ext}.tmp"
        try:
            fig.savefig(tmp, format=ext, metadata=meta, bbox_inches="tight")
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
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


def _series_label(model: str, teacher: str, g: pd.DataFrame) -> str:
    if g.loc[g["model"] == model, "teacher_kind"].nunique() > 1:
        return f"{model} [{teacher or 'no teacher'}]"
    return model


def _band(ax, x, mean, std, style: dict, label: str) -> None:
    ax.plot(x, mean, marker="o", ms=3, label=label, **style)
    std = np.asarray(std, dtype=float)
    if np.isfinite(std).any():
        s = np.nan_to_num(std)
        ax.fill_between(x, mean - s, mean + s, color=style["color"], alpha=0.15, lw=0)


def fraction_figure(frame: pd.DataFrame, out_dir: Path, metric: str = "mae", key: str = AVG,
                    stem: str = "fraction_vs_error") -> list[Path]:
    """Test error vs share of the training data: a line per model, mean ± std band over seeds,
    a panel per dataset with at least two training fractions."""
    col = metric_column(metric, key)
    panels = []
    if not frame.empty and col in frame:
        for dataset, _, g, suffix in dataset_groups(frame):
            if g["train_fraction"].nunique() >= 2:
                panels.append((dataset + suffix, g))
    if not panels:
        print(f"skip {stem}: no dataset has records at two or more training fractions")
        return []
    with matplotlib.rc_context(STYLE):
        fig, axes = _grid(len(panels))
        for ax, (title, g) in zip(axes, panels, strict=True):
            agg = aggregate(g, by=("model", "teacher_kind", "train_fraction"), metrics=(col,))
            keys = sorted(agg[["model", "teacher_kind"]].drop_duplicates()
                          .itertuples(index=False, name=None),
                          key=lambda k: (model_sort_key(k[0]), k[1]))
            for model, teacher in keys:
                a = agg[(agg.model == model) & (agg.teacher_kind == teacher)]
                a = a.sort_values("train_fraction")
                if len(a) < 2:
                    continue
                _band(ax, 100 * a["train_fraction"].to_numpy(), a[f"{col}_mean"].to_numpy(),
                      a[f"{col}_std"].to_numpy(), model_style(model),
                      _series_label(model, teacher, g))
            ax.set_title(title)
            ax.set_xlabel("training data (%)")
            what = "mean over horizons" if key == AVG else key
            ax.set_ylabel(f"test {METRIC_LABELS.get(metric, metric)} ({what})")
            ax.legend()
        return save_figure(fig, out_dir, stem)


def horizon_figure(frame: pd.DataFrame, out_dir: Path, metric: str = "mae",
                   stem: str = "error_per_horizon") -> list[Path]:
    """Test error at each horizon step: a line per model, mean ± std band over seeds."""
    col = f"per_horizon_{metric}"
    panels = []
    if not frame.empty and col in frame:
        for dataset, _, g, suffix in dataset_groups(frame):
            g = g[g[col].apply(lambda v: isinstance(v, list) and len(v) > 0)]
            if not g.empty:
                panels.append((dataset + suffix, g))
    if not panels:
        print(f"skip {stem}: no records with per-horizon metrics")
        return []
    with matplotlib.rc_context(STYLE):
        fig, axes = _grid(len(panels))
        for ax, (title, g) in zip(axes, panels, strict=True):
            keys = sorted(g[["model", "teacher_kind"]].drop_duplicates()
                          .itertuples(index=False, name=None),
                          key=lambda k: (model_sort_key(k[0]), k[1]))
            for model, teacher in keys:
                arrs = g[(g.model == model) & (g.teacher_kind == teacher)][col].tolist()
                length = min(len(a) for a in arrs)
                stack = np.array([a[:length] for a in arrs], dtype=float)
                std = stack.std(axis=0, ddof=1) if len(stack) > 1 else np.full(length, np.nan)
                _band(ax, np.arange(1, length + 1), stack.mean(axis=0), std, model_style(model),
                      _series_label(model, teacher, g))
            ax.set_title(title)
            ax.set_xlabel("horizon step")
            ax.set_ylabel(f"test {METRIC_LABELS.get(metric, metric)}")
            ax.legend()
        return save_figure(fig, out_dir, stem)


def scaling_figure(rows: pd.DataFrame, out_dir: Path, stem: str = "scaling") -> list[Path]:
    """Latency (median; bar up to p95) and peak inference memory vs N, log-log; runs that ran
    out of memory are drawn as crosses on the top edge, failed runs as diamonds below them."""
    if rows.empty:
        print(f"skip {stem}: no scaling rows (results/scaling/*.json or records with num_nodes)")
        return []
    several_devices = rows["device"].nunique() > 1
    panels = (("latency_ms_median", "inference latency (ms, median; bar: p95)"),
              ("peak_memory_mb_inference", "peak inference memory (MB)"))
    with matplotlib.rc_context(STYLE):
        fig, axes = _grid(2)
        for ax, (col, ylabel) in zip(axes, panels, strict=True):
            edge = blended_transform_factory(ax.transData, ax.transAxes)
            series = sorted(rows[["model", "device"]].drop_duplicates()
                            .itertuples(index=False, name=None),
                            key=lambda k: (model_sort_key(k[0]), k[1]))
            for i, (model, device) in enumerate(series):
                s = rows[(rows.model == model) & (rows.device == device)].sort_values("num_nodes")
                style = model_style(model)
                ls = ("-", "--", ":", "-.")[i % 4] if several_devices else "-"
                label = f"{model} ({device})" if several_devices else model
                ok = s[(s.status == "ok") & (s[col] > 0)]
                x, y = ok["num_nodes"].to_numpy(), ok[col].to_numpy(dtype=float)
                if col == "latency_ms_median" and "latency_ms_p95" in ok:
                    up = np.clip(ok["latency_ms_p95"].to_numpy(dtype=float) - y, 0, None)
                    ax.errorbar(x, y, yerr=[np.zeros_like(y), np.nan_to_num(up)], marker="o",
                                ms=3, capsize=2, ls=ls, label=label, color=style["color"],
                                lw=style["lw"], zorder=style["zorder"])
                else:
                    ax.plot(x, y, marker="o", ms=3, ls=ls, label=label, **style)
                for status, marker, yy in (("oom", "x", 0.98), ("error", "d", 0.92)):
                    bad = s[s.status == status]["num_nodes"].to_numpy()
                    if len(bad):
                        ax.scatter(bad, np.full(len(bad), yy), marker=marker, s=40,
                                   color=style["color"], transform=edge, clip_on=False,
                                   zorder=6)
            ax.set_xscale("log")
            ax.set_yscale("log", nonpositive="mask")
            _plain_log_labels(ax.xaxis, *ax.get_xlim())
            _plain_log_labels(ax.yaxis, *ax.get_ylim())
            ax.set_xlabel("number of nodes N")
            ax.set_ylabel(ylabel)
            handles, _ = ax.get_legend_handles_labels()
            if (rows.status == "oom").any():
                handles.append(Line2D([], [], marker="x", ls="", color="grey",
                                      label="out of memory"))
            if (rows.status == "error").any():
                handles.append(Line2D([], [], marker="d", ls="", color="grey", label="failed"))
            ax.legend(handles=handles)
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
                    style = model_style(r["model"]) | {"lw": 1.0}
                    ax.plot(t, pred[:, node, 0], label=r["model"], **style)
                ax.set_ylabel(f"node {int(node)}")
            axes[0, 0].set_title(f"{dataset}{suffix}: {h + 1}-step-ahead test predictions, "
                                 "channel 0")
            axes[0, 0].legend(ncol=len(picked) + 1)
            axes[-1, 0].set_xlabel("time step")
            axes[-1, 0].xaxis.set_major_locator(MaxNLocator(integer=True))
            name = (f"{stem}_{dataset}" + (f"_{phash[:8]}" if "[protocol" in suffix else "")
                    + (f"_{g['recipe'].iloc[0] or 'unrecorded'}" if "[recipe" in suffix else ""))
            paths += save_figure(fig, out_dir, name)
    if not paths:
        print(f"skip {stem}: no run has saved test predictions (<runs>/<run_id>/"
              "test_predictions.npz)")
    return paths

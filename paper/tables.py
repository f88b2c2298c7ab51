"""The paper's tables, built from a records frame (:func:`paper.frame.load_frame`) alone.

Each function takes the frame and an output directory, writes ``<name>.md`` and ``<name>.tex``
and returns their paths; with no suitable records it prints why and returns ``[]``. Numbers are
means over seeds with the sample standard deviation (``mean ± std``; the mean alone for one
seed); the lowest error per column and section is bold. The accuracy tables (main, ablation,
training fraction, headline) give per row how many seeds (runs) it has, how many of them
converged (:data:`CONVERGED_NOTE`) and how each stopped, each in its own column.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from benchmark.records import aggregate, converged, stop_reason

from .frame import (
    AVG,
    METRIC_LABELS,
    METRICS,
    UNPOOLED_KEYS,
    channels_of,
    metric_column,
    model_sort_key,
    report_horizons,
    rows_of,
    with_unpooled_keys,
)
from .table_markup import Cell, Section, Table, mark_best, write_tables

ABLATION_MODELS = {
    "flowdistill": "full method",
    "flowdistill-noib": "no information bottleneck",
    "flowdistill-notb": "no teacher-bounded loss",
    "flowdistill-kd": "plus direct soft-label term",
    "flowdistill-noteacher": "no teacher",
    "mlp": "plain MLP, no VIB, no teacher",
}


def _skip(what: str, why: str) -> list[Path]:
    print(f"skip {what}: {why}")
    return []


def dataset_groups(frame: pd.DataFrame) -> Iterator[tuple[str, str, pd.DataFrame, str]]:
    """``(dataset, protocol_hash, rows, suffix)``; ``suffix`` names the protocol when one dataset
    was run under several (e.g. the STGCN paper's protocol beside the default one), and the
    training recipe when its records were trained under several (``paper``, ``common``): runs
    of different recipes never share a table."""
    for dataset, dg in frame.groupby("dataset", sort=True):
        hashes = sorted(dg["protocol_hash"].unique(), key=lambda h: (-int((dg.protocol_hash == h)
                                                                          .sum()), h))
        for h in hashes:
            g = dg[dg["protocol_hash"] == h]
            suffix = f" [protocol {h[:8]}]" if len(hashes) > 1 else ""
            recipes = (sorted(g["recipe"].fillna("").unique()) if "recipe" in g.columns
                       else [None])
            for r in recipes:
                gr = g if r is None else g[g["recipe"].fillna("") == r]
                rsuffix = f" [recipe {r or 'unrecorded'}]" if len(recipes) > 1 else ""
                yield str(dataset), str(h), gr, suffix + rsuffix


def table_label(dataset: str, phash: str, suffix: str) -> str:
    """Dataset id plus, where :func:`dataset_groups` split it, protocol hash and recipe."""
    label = dataset.replace("_", "-")
    if "[protocol" in suffix:
        label += f"-{phash[:8]}"
    if "[recipe " in suffix:
        label += "-" + suffix.rsplit("[recipe ", 1)[1].rstrip("]")
    return label


def _protocol_text(g: pd.DataFrame) -> str:
    if {"input_len", "horizon"} <= set(g.columns) and g["horizon"].notna().any():
        return f"{int(g['input_len'].iloc[0])} steps in, {int(g['horizon'].iloc[0])} out"
    return ""


ROW_KEYS = UNPOOLED_KEYS

STOP_LABELS = {"early_stopping": "early stop", "max_epochs": "epoch limit",
               "time_budget": "time cap", "max_steps": "step limit", "closed_form": "closed form"}

# The legend of the Converged column (benchmark.records.CONVERGED_STOPS).
CONVERGED_NOTE = ("Converged: runs whose training the trainer ended by early stopping (its "
                  "patience of validations without a lower validation MAE) or that have none to "
                  "end (a closed-form fit); the rest stopped at a cap: the epoch limit (also how "
                  "recipes without early stopping end, their source training a fixed number of "
                  "epochs) or the time budget. Failed runs leave no record and count nowhere "
                  "('flowdistill campaign status' lists them). Stopped: how each run ended.")


def _row_keys(g: pd.DataFrame, order=model_sort_key) -> list[tuple[str, ...]]:
    keys = (with_unpooled_keys(g)[list(ROW_KEYS)].drop_duplicates()
            .itertuples(index=False, name=None))
    return sorted(keys, key=lambda k: (order(k[0]),) + tuple(k[1:]))


def _fit_of(r: pd.Series) -> dict:
    """The frame row's fit fields, as :func:`benchmark.records.stop_reason` reads a record's."""
    return {"epochs_run": r.get("epochs_run"), "stopped_by": r.get("stopped_by")}


def stop_summary(rows: pd.DataFrame) -> str:
    """How a row's runs ended, e.g. ``"early stop 2, time cap 1"``: a capped or unconverged
    cell says so (``fit.stopped_by``; closed-form fits have no epochs)."""
    if rows.empty:
        return ""
    reasons = [stop_reason(_fit_of(r)) for _, r in rows.iterrows()]
    counts = pd.Series(reasons).value_counts()
    return ", ".join(f"{STOP_LABELS.get(k, k or 'unrecorded')} {n}"
                     for k, n in counts.items())


def _source_label(key: tuple[str, ...], g: pd.DataFrame) -> str:
    """``" [sweep @ machine]"`` when ``g`` mixes sweeps or machine kinds, else ``""``."""
    g = with_unpooled_keys(g)
    if not key[2] and not key[3]:  # a row without records (awaiting) has no source
        return ""
    if g["sweep"].nunique() > 1 or g["machine"].nunique() > 1:
        sweep, machine = key[2] or "ad hoc", key[3] or "?"
        return f" [{sweep} @ {machine}]"
    return ""


def _ablation_order(model: str) -> int:
    """The full method first, then its ablations in :data:`ABLATION_MODELS` order."""
    return list(ABLATION_MODELS).index(model)


def _model_label(key: tuple[str, ...], g: pd.DataFrame) -> str:
    """The model name, plus its teacher when one model appears with several teachers, plus the
    sweep and machine kind of its runs when the table mixes several."""
    model, teacher = key[0], key[1]
    label = model
    if g.loc[g["model"] == model, "teacher_kind"].nunique() > 1:
        label = f"{model} [{teacher or 'no teacher'}]"
    return label + _source_label(key, g)


def _value_cells(agg_row: pd.Series | None, cols: list[str], digits: int) -> list[Cell]:
    cells = []
    for c in cols:
        if agg_row is None or f"{c}_mean" not in agg_row:
            cells.append(Cell(digits=digits))
            continue
        mean, std = agg_row[f"{c}_mean"], agg_row[f"{c}_std"]
        cells.append(Cell(mean=None if pd.isna(mean) else float(mean),
                          std=None if pd.isna(std) else float(std), digits=digits))
    return cells


def _metric_section(g: pd.DataFrame, title: str | None, keys: list[str], channel: str | None,
                    metrics: tuple[str, ...], digits: int, labels,
                    order=model_sort_key, awaiting: dict[str, str] | None = None) -> Section:
    """Rows (one per model, teacher, sweep and machine kind: never pooled) of ``metric@key``
    means over seeds, the seeds, how many converged and how the runs stopped; then one row per
    model in ``awaiting`` (model -> the command that would run it) with no records, saying
    so."""
    cols = [metric_column(m, k, channel) for k in keys for m in metrics]
    present = tuple(c for c in cols if c in g.columns)
    gk = with_unpooled_keys(g)
    agg = aggregate(gk, by=ROW_KEYS, metrics=present) if not gk.empty else gk
    sec = Section(title)
    for key in _row_keys(gk, order):
        hit = rows_of(agg, key) if not agg.empty else agg
        row = hit.iloc[0] if len(hit) else None
        cells = labels(key) + _value_cells(row, cols, digits)
        seeds = int(row["seeds"]) if row is not None else 0
        mine = rows_of(gk, key)
        sec.rows.append(cells + [Cell(text=str(seeds)), Cell(text=str(converged_count(mine))),
                                 Cell(text=stop_summary(mine) or "–")])
    n_labels = len(labels(("",) * len(ROW_KEYS)))
    mark_best(sec, n_labels, list(range(len(cols))))
    have = set(gk["model"]) if not gk.empty else set()
    for model in sorted(set(awaiting or {}) - have, key=order):
        sec.rows.append(labels((model,) + ("",) * (len(ROW_KEYS) - 1))
                        + [Cell(digits=digits) for _ in cols]
                        + [Cell(text="0"), Cell(text="0"),
                           Cell(text=f"awaits: {awaiting[model]}")])
    return sec


def _metric_groups(keys: list[str], metrics: tuple[str, ...]) -> list[tuple[str, list[str]]]:
    names = [METRIC_LABELS.get(m, m) for m in metrics]
    return ([("Avg." if k == AVG else k, names) for k in keys]
            + [("", ["Seeds", "Converged", "Stopped"])])


def _mask_text(g: pd.DataFrame) -> str:
    """The caption's words for the protocol's target mask."""
    if "mask_threshold" in g.columns and g["mask_threshold"].notna().any():
        t = float(g["mask_threshold"].dropna().iloc[0])
        return (f"targets <= {t:g} masked in loss and metrics (the FlowDistill release's "
                "convention; records also hold the all-targets metrics)")
    if "null_value" in g.columns and g["null_value"].notna().any():
        return f"targets equal to {float(g['null_value'].dropna().iloc[0]):g} masked"
    return "every target counts"


def accuracy_table(frame: pd.DataFrame, out_dir: Path, metrics: tuple[str, ...] = METRICS,
                   digits: int = 2, stem: str = "accuracy",
                   awaiting: dict[str, dict[str, str]] | None = None) -> list[Path]:
    """Per dataset: models x {MAE, RMSE, MAPE} at each reported horizon and averaged over horizons
    (mean of per-horizon errors), for all channels and then per channel (inflow/outflow)."""
    if frame.empty:
        return _skip(stem, "no records")
    tables = []
    for dataset, phash, g, suffix in dataset_groups(frame):
        keys = [f"@{h}" for h in report_horizons(g)] + [AVG]
        channels = channels_of(g)
        sections = []
        for ch in [None] + channels:
            title = ("all channels" if channels else None) if ch is None else ch
            sections.append(_metric_section(
                g, title, keys, ch, metrics, digits,
                lambda k, g=g: [Cell(text=_model_label(k, g))],
                awaiting=(awaiting or {}).get(dataset) if ch is None else None))
        proto = ", ".join(t for t in (_protocol_text(g), _mask_text(g)) if t)
        tables.append(Table(
            caption=f"{dataset}{suffix}: test error, mean ± std over seeds"
                    + (f" ({proto})" if proto else ""),
            label=f"tab:{stem}-{table_label(dataset, phash, suffix)}", row_header=["Model"],
            column_groups=_metric_groups(keys, metrics), sections=sections,
            note="@h: error at horizon step h; Avg.: mean of the per-step errors. "
                 + CONVERGED_NOTE + " awaits: no record yet, and the command that makes it. "
                 "Bold: lowest mean per column."))
    return write_tables(tables, out_dir, stem, "Forecasting accuracy")


def ablation_table(frame: pd.DataFrame, out_dir: Path, metrics: tuple[str, ...] = METRICS,
                   digits: int = 2, stem: str = "ablation", title: str = "Ablation") -> list[Path]:
    """FlowDistill vs its ablations (and teacher kinds), per dataset and training fraction."""
    sub = frame[frame["model"].isin(ABLATION_MODELS)] if not frame.empty else frame
    if sub.empty:
        return _skip(stem, "no records of flowdistill or its variants")
    tables = []
    for dataset, phash, g, suffix in dataset_groups(sub):
        keys = [f"@{h}" for h in report_horizons(g)] + [AVG]
        sections = []
        for frac in sorted(g["train_fraction"].unique(), reverse=True):
            gf = g[g["train_fraction"] == frac]
            sections.append(_metric_section(
                gf, f"{frac:.0%} of the training data", keys, None, metrics, digits,
                lambda k, g=gf: [Cell(text=k[0] + _source_label(k, g)),
                                 Cell(text=k[1] or "–")], order=_ablation_order))
        variants = "; ".join(f"{m}: {d}" for m, d in ABLATION_MODELS.items()
                             if m in set(g["model"]))
        tables.append(Table(
            caption=f"{dataset}{suffix}: ablation, test error, mean ± std over seeds ("
                    f"{_mask_text(g)})",
            label=f"tab:{stem}-{table_label(dataset, phash, suffix)}",
            row_header=["Variant", "Teacher"], column_groups=_metric_groups(keys, metrics),
            sections=sections, note=variants + ". " + CONVERGED_NOTE
            + " Bold: lowest mean per column."))
    return write_tables(tables, out_dir, stem, title)


def fraction_table(frame: pd.DataFrame, out_dir: Path, metric: str = "mae", key: str = AVG,
                   digits: int = 2, stem: str = "fraction") -> list[Path]:
    """Per dataset: models x training fractions, ``metric`` (mean over horizons by default)."""
    if frame.empty:
        return _skip(stem, "no records")
    col = metric_column(metric, key)
    tables = []
    for dataset, phash, g, suffix in dataset_groups(frame):
        fracs = sorted(g["train_fraction"].unique())
        if len(fracs) < 2 or col not in g.columns:
            continue
        g = with_unpooled_keys(g)
        agg = aggregate(g, by=(*ROW_KEYS, "train_fraction"), metrics=(col,))
        sec = Section(None)
        for key in _row_keys(g):
            mine = rows_of(g, key)
            if mine["train_fraction"].nunique() < 2:
                continue
            cells = [Cell(text=_model_label(key, g))]
            mine_agg = rows_of(agg, key)
            for f in fracs:
                hit = mine_agg[mine_agg.train_fraction == f]
                cells += _value_cells(hit.iloc[0] if len(hit) else None, [col], digits)
            sec.rows.append(cells + [Cell(text=str(len(mine))),
                                     Cell(text=str(converged_count(mine))),
                                     Cell(text=stop_summary(mine) or "–")])
        if not sec.rows:
            continue
        mark_best(sec, 1)
        over = "mean over horizons" if key == AVG else key
        what = f"{METRIC_LABELS.get(metric, metric)} ({over})"
        tables.append(Table(
            caption=f"{dataset}{suffix}: test {what} vs share of the training data",
            label=f"tab:{stem}-{table_label(dataset, phash, suffix)}", row_header=["Model"],
            column_groups=[("Training data", [f"{f:.0%}" for f in fracs]),
                           ("", ["Runs", "Converged", "Stopped"])],
            sections=[sec],
            note="Mean ± std over seeds; the most recent share of the training period; "
                 f"{_mask_text(g)}. Runs: the row's runs over all shares (seeds x shares). "
                 + CONVERGED_NOTE + " Bold: lowest mean per column."))
    if not tables:
        return _skip(stem, "no dataset has records at two or more training fractions")
    return write_tables(tables, out_dir, stem, "Error vs training data")


EFFICIENCY_COLUMNS = (  # (frame column, group, column title, digits)
    ("params", "", "Params", 0),
    ("seconds_per_epoch", "Training", "s/epoch", 2),
    ("peak_memory_mb_train", "Training", "peak MB", 1),
    ("peak_memory_mb_inference", "Inference", "peak MB", 1),
    ("latency_ms_b1_median", "Latency b=1 (ms)", "median", 2),
    ("latency_ms_b1_p95", "Latency b=1 (ms)", "p95", 2),
    ("latency_ms_median", "Latency b={B} (ms)", "median", 2),
    ("latency_ms_p95", "Latency b={B} (ms)", "p95", 2),
)


def efficiency_table(frame: pd.DataFrame, out_dir: Path, stem: str = "efficiency") -> list[Path]:
    """Per dataset: parameters, training seconds per epoch, peak memory of training and inference,
    latency at batch 1 and at the fixed batch (median, p95) and the device; means over seeds."""
    if frame.empty:
        return _skip(stem, "no records")
    tables = []
    for dataset, phash, g, suffix in dataset_groups(frame):
        g = g.copy()
        if "seconds_per_epoch" in g and "epochs_run" in g:  # closed-form fits have no epochs
            g.loc[g["epochs_run"].fillna(0) <= 0, "seconds_per_epoch"] = float("nan")
        cols = [c for c, *_ in EFFICIENCY_COLUMNS if c in g.columns]
        if not any(c.startswith(("latency", "peak")) for c in cols):
            print(f"skip {stem} for {dataset}: records carry no efficiency measurements")
            continue
        batch = (int(g["latency_batch"].dropna().mode().iloc[0])
                 if "latency_batch" in g and g["latency_batch"].notna().any() else "B")
        means = g.groupby("model")[cols].mean(numeric_only=True)
        sec = Section(None)
        for model in sorted(means.index, key=model_sort_key):
            cells = [Cell(text=model)]
            for c, _, _, digits in EFFICIENCY_COLUMNS:
                v = means.at[model, c] if c in means.columns else float("nan")
                cells.append(Cell(mean=None if pd.isna(v) else float(v), digits=digits,
                                  thousands=c == "params"))
            rows = g[g["model"] == model]
            gpu = rows["gpu"].fillna("") if "gpu" in rows else pd.Series([""] * len(rows))
            dev = rows["device"].fillna("") if "device" in rows else pd.Series([""] * len(rows))
            names = sorted({(gg or d) for gg, d in zip(gpu, dev, strict=True) if (gg or d)})
            cells.append(Cell(text=", ".join(names) or "–"))
            sec.rows.append(cells)
        groups: list[tuple[str, list[str]]] = []
        for _, grp, title, _ in EFFICIENCY_COLUMNS:
            grp = grp.format(B=batch)
            if groups and groups[-1][0] == grp and grp:
                groups[-1][1].append(title)
            else:
                groups.append((grp, [title]))
        groups.append(("", ["Device"]))
        tables.append(Table(
            caption=f"{dataset}{suffix}: model size, training cost and inference cost",
            label=f"tab:{stem}-{table_label(dataset, phash, suffix)}", row_header=["Model"],
            column_groups=groups, sections=[sec],
            note="Means over seeds. Peak memory: CUDA max allocated on a GPU, resident-set "
                 "increase on a CPU. s/epoch: – for closed-form fits."))
    if not tables:
        return _skip(stem, "no records with efficiency measurements")
    return write_tables(tables, out_dir, stem, "Efficiency")


# The paper's headline claim: the student on a tenth of the training data against the graph
# baselines on all of it. (model, training fraction, label); the student's runs come from the
# ``headline`` sweep, the baselines' from ``main`` (each model's own recipe, no time cap).
HEADLINE_STUDENT = ("flowdistill", 0.1, "FlowDistill, 10 %")
HEADLINE_BASELINES = (("stgcn", 1.0, "STGCN, 100 %"), ("gwnet", 1.0, "GWNet, 100 %"))
HEADLINE_TAGS = ("headline", "main")  # the student's sweep, the baselines' sweep


def headline_frame(frame: pd.DataFrame, student_tag: str = HEADLINE_TAGS[0],
                   baseline_tag: str = HEADLINE_TAGS[1]) -> pd.DataFrame:
    """The records of the headline claim: the student at its fraction from ``student_tag``, the
    baselines at theirs from ``baseline_tag``."""
    if frame.empty:
        return frame
    tag = frame["tag"] if "tag" in frame.columns else frame["sweep"]
    keep = pd.Series(False, index=frame.index)
    model, frac, _ = HEADLINE_STUDENT
    keep |= (frame["model"] == model) & (frame["train_fraction"] == frac) & (tag == student_tag)
    for model, frac, _ in HEADLINE_BASELINES:
        keep |= ((frame["model"] == model) & (frame["train_fraction"] == frac)
                 & (tag == baseline_tag))
    return frame[keep]


def converged_count(rows: pd.DataFrame) -> int:
    """Runs that converged (:func:`benchmark.records.converged`: early stopping or a
    closed-form fit, not a cap)."""
    return sum(converged(_fit_of(r)) for _, r in rows.iterrows())


def headline_table(frame: pd.DataFrame, out_dir: Path, awaiting: dict[str, dict[str, str]]
                   | None = None, metrics: tuple[str, ...] = METRICS, digits: int = 2,
                   stem: str = "headline") -> list[Path]:
    """Per dataset: FlowDistill trained on 10 % of the training data against STGCN and GWNet
    trained on all of it (records of :func:`headline_frame`), errors averaged over horizons,
    mean ± std over seeds, how many seeds converged and how each run stopped, and the student's
    MAE relative to each baseline's, whichever way it falls. ``awaiting`` ({dataset: {model:
    command}}) adds datasets without records and names the command for each missing arm.
    Without any records (of any run) it writes nothing, like every other table."""
    if frame.empty:
        return _skip(stem, "no records")
    sel = headline_frame(frame)
    awaiting = awaiting or {}
    arms = [HEADLINE_STUDENT, *HEADLINE_BASELINES]
    cols = [metric_column(m, AVG) for m in metrics]
    groups = list(dataset_groups(sel)) if not sel.empty else []
    have = {d for d, *_ in groups}
    groups += [(d, "", pd.DataFrame(), "") for d in sorted(set(awaiting) - have)]
    if not groups:
        return _skip(stem, "no records of the headline claim and no sweep that makes them")
    tables = []
    mae = metric_column("mae", AVG)
    for dataset, phash, g, suffix in groups:
        gk = with_unpooled_keys(g) if not g.empty else g
        sec = Section(None)
        student_mae: dict[str, float] = {}  # machine -> the student's mean MAE
        for model, frac, label in arms:
            mine = gk[(gk["model"] == model) & (gk["train_fraction"] == frac)] if not gk.empty \
                else gk
            keys = _row_keys(mine) if not mine.empty else []
            if not keys:
                cmd = (awaiting.get(dataset) or {}).get(model)
                sec.rows.append([Cell(text=label)] + [Cell(digits=digits) for _ in cols]
                                + [Cell(text="0"), Cell(text="0"),
                                   Cell(text=f"awaits: {cmd}" if cmd else "no records"),
                                   Cell(text="–")])
                continue
            for key in keys:
                rows = rows_of(mine, key)
                agg = aggregate(rows, by=ROW_KEYS, metrics=tuple(c for c in cols
                                                                 if c in rows.columns))
                row = agg.iloc[0]
                vs = "–"
                m = float(row[f"{mae}_mean"]) if f"{mae}_mean" in row else float("nan")
                if model == HEADLINE_STUDENT[0]:
                    student_mae.setdefault(key[3], m)
                elif key[3] in student_mae and m > 0:
                    rel = 100 * (student_mae[key[3]] - m) / m
                    vs = f"{rel:+.1f} % ({'lower' if rel < 0 else 'higher'})"
                sec.rows.append([Cell(text=label + _source_label(key, mine))]
                                + _value_cells(row, cols, digits)
                                + [Cell(text=str(int(row["seeds"]))),
                                   Cell(text=str(converged_count(rows))),
                                   Cell(text=stop_summary(rows) or "–"), Cell(text=vs)])
        mark_best(sec, 1, list(range(len(cols))))
        proto = ", ".join(t for t in (_protocol_text(g), _mask_text(g)) if t) if not g.empty \
            else ""
        label = table_label(dataset, phash, suffix) if phash else dataset.replace("_", "-")
        tables.append(Table(
            caption=f"{dataset}{suffix}: FlowDistill on 10 % of the training data vs STGCN and "
                    f"GWNet on all of it, test error averaged over horizons"
                    + (f" ({proto})" if proto else ""),
            label=f"tab:{stem}-{label}", row_header=["Model, training data"],
            column_groups=[("Avg.", [METRIC_LABELS.get(m, m) for m in metrics]),
                           ("", ["Seeds", "Converged", "Stopped", "FlowDistill 10 % MAE vs row"])],
            sections=[sec],
            note=f"Mean ± std over seeds. FlowDistill: sweep {HEADLINE_TAGS[0]} (the most recent "
                 f"10 % of the training period, its teacher trained on all of it); STGCN, GWNet: "
                 f"sweep {HEADLINE_TAGS[1]}; each model with its own recipe. "
                 + CONVERGED_NOTE + " Last column: FlowDistill's mean MAE relative to the "
                 "row's (negative: FlowDistill is better). awaits: no record yet, and the command "
                 "that makes it. Bold: lowest mean per column."))
    return write_tables(tables, out_dir, stem, "Headline: FlowDistill at 10 % vs STGCN and GWNet "
                        "at 100 %")

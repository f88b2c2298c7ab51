"""Our runs beside the numbers their papers published, under the papers' own protocols.

Each :class:`PublishedResult` is a row of a paper's results table, with the dataset, model, sweep
tag and horizons (steps) that reproduce its protocol here. :func:`published_table` writes
``published.md``/``.tex``: per entry, the paper's value and ours (mean ± std over seeds) at each
horizon, and our minus theirs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .frame import METRIC_LABELS, METRICS, metric_column
from .table_markup import Cell, Section, Table, write_tables


@dataclass(frozen=True)
class PublishedResult:
    """Test errors a paper reports for ``model`` on ``dataset`` at ``horizons`` (steps)."""

    paper: str
    table: str
    dataset: str
    model: str
    label: str
    tag: str
    spec: str  # the sweep file that runs the paper's protocol
    horizons: tuple[int, ...]
    values: dict[str, tuple[float, ...]]  # metric -> one value per horizon (MAPE in %)


# Yu, Yin, Zhu, "Spatio-Temporal Graph Convolutional Networks: A Deep Learning Framework for
# Traffic Forecasting", IJCAI 2018, Table 2 (PeMSD7(M); 15/30/45 min = steps 3/6/9 at 5 min).
STGCN_SPEC = "paper/experiments/stgcn_pems.toml"
STGCN_PEMSD7M = (
    PublishedResult(
        paper="Yu et al., IJCAI 2018", table="Table 2", dataset="pems07m", model="stgcn",
        label="STGCN(Cheb)", tag="stgcn-paper", spec=STGCN_SPEC, horizons=(3, 6, 9),
        values={"mae": (2.25, 3.03, 3.57), "mape": (5.26, 7.33, 8.69),
                "rmse": (4.04, 5.70, 6.77)}),
    PublishedResult(
        paper="Yu et al., IJCAI 2018", table="Table 2", dataset="pems07m", model="stgcn-gcn",
        label="STGCN(1st)", tag="stgcn-paper", spec=STGCN_SPEC, horizons=(3, 6, 9),
        values={"mae": (2.26, 3.09, 3.79), "mape": (5.24, 7.39, 9.12),
                "rmse": (4.07, 5.77, 7.03)}),
)
PUBLISHED: tuple[PublishedResult, ...] = STGCN_PEMSD7M


def _ours(frame: pd.DataFrame, entry: PublishedResult) -> pd.DataFrame:
    if frame.empty or "tag" not in frame:
        return frame.iloc[0:0]
    sel = frame[(frame["tag"] == entry.tag) & (frame["dataset"] == entry.dataset)
                & (frame["model"] == entry.model)]
    if "train_fraction" in sel:
        sel = sel[sel["train_fraction"] == 1.0]
    return sel


def published_table(frame: pd.DataFrame, out_dir: Path, entries=PUBLISHED,
                    stem: str = "published", digits: int = 2) -> list[Path]:
    """Write the paper-vs-ours table for every entry that has records; skip the rest."""
    by_table: dict[tuple[str, str, str, tuple[int, ...]], list[PublishedResult]] = {}
    for e in entries:
        by_table.setdefault((e.paper, e.table, e.dataset, e.horizons), []).append(e)
    tables = []
    for (paper, table, dataset, horizons), group in by_table.items():
        sec = Section(None)
        for e in group:
            ours = _ours(frame, e)
            if ours.empty:
                print(f"skip {stem}: no {e.tag} records of {e.model} on {e.dataset}")
                continue
            seeds = ours["seed"].nunique() if "seed" in ours else len(ours)
            rows = {"paper": [], "ours": [], "diff": []}
            for m in METRICS:
                for h, theirs in zip(horizons, e.values[m], strict=True):
                    col = metric_column(m, f"@{h}")
                    vals = ours[col].dropna() if col in ours else pd.Series(dtype=float)
                    mean = float(vals.mean()) if len(vals) else float("nan")
                    std = float(vals.std(ddof=1)) if len(vals) > 1 else None
                    rows["paper"].append(Cell(mean=theirs, digits=digits))
                    rows["ours"].append(Cell(mean=mean, std=std, digits=digits))
                    rows["diff"].append(Cell(text=f"{mean - theirs:+.{digits}f}"))
            sec.rows.append([Cell(text=e.label), Cell(text=f"{paper}, {table}"),
                             *rows["paper"]])
            sec.rows.append([Cell(text=e.label), Cell(text=f"ours ({seeds} seeds)"),
                             *rows["ours"]])
            sec.rows.append([Cell(text=e.label), Cell(text="ours - paper"), *rows["diff"]])
        if not sec.rows:
            continue
        groups = [(METRIC_LABELS[m], [f"@{h}" for h in horizons]) for m in METRICS]
        tables.append(Table(
            caption=f"{dataset}: ours vs {paper} ({table}), test error at steps "
                    f"{', '.join(map(str, horizons))}",
            label=f"tab:{stem}-{dataset}", row_header=["Model", "Source"],
            column_groups=groups, sections=[sec],
            note="Ours: mean ± std over seeds of runs under the paper's protocol ("
                 + ", ".join(sorted({e.spec for e in group})) + ")."))
    if not tables:
        print(f"skip {stem}: no records for any published comparison")
        return []
    return write_tables(tables, out_dir, stem, "Published results vs ours")

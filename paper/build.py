"""Rebuild every table and figure of the paper from run records alone.

    python -m paper.build --records results/records --out results/

(or ``flowdistill figures``). Tables go to ``<out>/tables/`` (markdown + LaTeX), figures to
``<out>/figures/`` (PNG + PDF). Which records feed what:

* accuracy and efficiency tables, error per horizon, predicted vs true series: sweeps ``main``,
  ``foundation``, ``baselines`` and ``student`` (every record when none carries those tags),
  full training data;
* training-fraction table and figure: sweeps ``fraction`` and ``student`` (else every record);
* the headline claim (table and figure): flowdistill at 10 % from sweep ``headline`` against
  STGCN and GWNet at 100 % from ``main``, per dataset, with ``awaits`` rows for what is missing;
* students vs graph baselines: every record; students at two or more fractions, graph
  baselines at 100 %;
* ablation table: sweeps ``ablation`` and ``student`` (else every record), flowdistill and its
  variants; ``ablation_cpu``: the CPU sweeps ``student-cpu`` and ``student-llm``;
* scaling table and figure: ``<out>/scaling/*.json`` rows plus records with ``num_nodes``;
* published vs ours: the runs of :data:`paper.published.PUBLISHED` (their own sweep tags).

When several records share dataset, protocol, model, teacher, fraction and seed, the newest
counts. A table or figure whose records are absent is skipped with a printed note.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .figures import (
    fraction_figure,
    headline_claim_figure,
    headline_figure,
    horizon_figure,
    scaling_figure,
    series_figure,
)
from .frame import dedupe, load_frame, select_tag
from .published import published_table
from .scaling import load_scaling, scaling_table
from .tables import (
    HEADLINE_TAGS,
    ablation_table,
    accuracy_table,
    efficiency_table,
    fraction_table,
    headline_table,
)
from .teacher_study import teacher_study_table

# one record per run: the newest of identical runs of one sweep, recipe and machine kind (runs
# of different sweeps, recipes or machines are different rows, never pooled or replaced)
RUN_KEYS = ("dataset", "protocol_hash", "model", "teacher_kind", "train_fraction", "seed",
            "sweep", "recipe", "machine")


@dataclass
class BuildConfig:
    """Inputs and outputs of the build.

    Attributes:
        records: run-record directory, searched recursively (default ``$FLOWDISTILL_RECORDS``,
            else ``results/records``).
        out: output root; tables go to ``out/tables``, figures to ``out/figures``.
        runs: run directories holding ``<run_id>/test_predictions.npz``, optional (default
            ``$FLOWDISTILL_RUNS``, else ``runs``).
        scaling: scaling rows directory (default ``out/scaling``).
        main_tag, fraction_tag, ablation_tag: sweep names feeding each experiment
            (comma-separated for several, e.g. ``"baselines,student"``). The defaults name the
            paper's sweeps and the capped GPU sweeps that stand in for them until they run.
        cpu_ablation_tag: the 2-core CPU student sweeps, tabled apart (``ablation_cpu``) since
            their runs stop after 30 epochs.
        digits: decimals of the error tables.
    """

    records: Path = field(default_factory=lambda: Path(
        os.environ.get("FLOWDISTILL_RECORDS", "results/records")))
    out: Path = Path("results")
    runs: Path = field(default_factory=lambda: Path(os.environ.get("FLOWDISTILL_RUNS", "runs")))
    scaling: Path | None = None
    main_tag: str = "main,foundation,baselines,baselines-cpu,student"
    fraction_tag: str = "fraction,student"
    ablation_tag: str = "ablation,student"
    cpu_ablation_tag: str = "student-cpu,student-llm"
    digits: int = 2


def experiment_frame(frame: pd.DataFrame, tag: str, purpose: str, full_data: bool) -> pd.DataFrame:
    if frame.empty:
        return frame
    sel = select_tag(frame, tag, purpose)
    if full_data:
        sel = sel[sel["train_fraction"] == 1.0]
    return dedupe(sel, RUN_KEYS, purpose)


EXPERIMENTS = Path(__file__).resolve().parent / "experiments"


def awaiting_models(tag: str, full_data: bool) -> dict[str, dict[str, str]]:
    """``{dataset: {model: command}}``: every model the shipped sweeps named in ``tag`` run
    (at 100 % of the training data when ``full_data``), with the command that runs it; tables
    list those without records as awaiting (most of them await a GPU)."""
    from benchmark.sweep import load_sweeps

    wanted = [t.strip() for t in tag.split(",") if t.strip()]
    specs = {}
    for path in sorted(EXPERIMENTS.glob("*.toml")):
        for spec in load_sweeps(path):
            specs.setdefault(spec.name, (path, spec))
    out: dict[str, dict[str, str]] = {}
    for name in wanted:
        if name not in specs:
            continue
        path, spec = specs[name]
        if full_data and 1.0 not in [float(f) for f in spec.fractions]:
            continue
        cmd = f"flowdistill sweep paper/experiments/{path.name}"
        for ds in spec.datasets:
            for model in spec.models:
                out.setdefault(ds, {}).setdefault(model, cmd)
    return out


def build(cfg: BuildConfig) -> dict[str, list[Path]]:
    """Write every table and figure the records allow; return ``{output name: paths}``."""
    frame = load_frame(cfg.records)
    tables, figures = Path(cfg.out) / "tables", Path(cfg.out) / "figures"
    runs = frame
    if not frame.empty:  # scaling runs measure cost on synthetic graphs, not accuracy
        is_scaling = frame["tag"] == "scaling"
        if "num_nodes" in frame:
            is_scaling |= frame["num_nodes"].notna()
        runs = frame[~is_scaling]
    main = experiment_frame(runs, cfg.main_tag, "accuracy", full_data=True)
    frac = experiment_frame(runs, cfg.fraction_tag, "training fraction", full_data=False)
    abl = experiment_frame(runs, cfg.ablation_tag, "ablation", full_data=False)
    abl_cpu = experiment_frame(runs, cfg.cpu_ablation_tag, "CPU ablation", full_data=False)
    rows = load_scaling(cfg.scaling or Path(cfg.out) / "scaling", frame)
    headline = runs if runs.empty else dedupe(runs, RUN_KEYS, "headline")
    return {
        "accuracy table": accuracy_table(main, tables, digits=cfg.digits,
                                         awaiting=awaiting_models(cfg.main_tag, True)),
        "efficiency table": efficiency_table(main, tables),
        "ablation table": ablation_table(abl, tables, digits=cfg.digits),
        "CPU ablation table": ablation_table(
            abl_cpu, tables, digits=cfg.digits, stem="ablation_cpu",
            title=f"Ablation on the 2-core CPU (sweeps {cfg.cpu_ablation_tag})"),
        "training-fraction table": fraction_table(frac, tables, digits=cfg.digits),
        "scaling table": scaling_table(rows, tables),
        "published vs ours": published_table(runs, tables, digits=cfg.digits),
        "error vs training fraction": fraction_figure(frac, figures),
        "error per horizon": horizon_figure(main, figures),
        "headline table": headline_table(
            headline, tables, digits=cfg.digits,
            awaiting=awaiting_models(",".join(HEADLINE_TAGS), full_data=False)),
        "headline figure": headline_claim_figure(headline, figures),
        "students vs graph baselines": headline_figure(headline, figures),
        "latency and memory vs N": scaling_figure(rows, figures),
        "teacher study table": teacher_study_table(runs, tables, digits=cfg.digits),
        "predicted vs true series": series_figure(main, figures, cfg.runs),
    }


def main(argv: list[str] | None = None) -> int:
    d = BuildConfig()
    p = argparse.ArgumentParser(prog="python -m paper.build", description=__doc__.splitlines()[0])
    p.add_argument("--records", type=Path, default=d.records)
    p.add_argument("--out", type=Path, default=d.out)
    p.add_argument("--runs", type=Path, default=d.runs,
                   help="run directories with test_predictions.npz (series figure)")
    p.add_argument("--scaling", type=Path, help="scaling rows directory (default <out>/scaling)")
    p.add_argument("--main-tag", default=d.main_tag)
    p.add_argument("--fraction-tag", default=d.fraction_tag)
    p.add_argument("--ablation-tag", default=d.ablation_tag)
    p.add_argument("--cpu-ablation-tag", default=d.cpu_ablation_tag)
    p.add_argument("--digits", type=int, default=d.digits)
    a = p.parse_args(argv)
    cfg = BuildConfig(records=a.records, out=a.out, runs=a.runs, scaling=a.scaling,
                      main_tag=a.main_tag, fraction_tag=a.fraction_tag,
                      ablation_tag=a.ablation_tag, cpu_ablation_tag=a.cpu_ablation_tag,
                      digits=a.digits)
    try:
        outputs = build(cfg)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"\nfrom the records in {cfg.records}:")
    for name, paths in outputs.items():
        where = ", ".join(str(p) for p in paths) if paths else "(skipped)"
        print(f"  {name:28s} {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

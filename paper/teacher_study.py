"""Issue 14's study table: does the LLM matter? Built from records alone.

The study is ``paper/experiments/teacher_study.toml``: one sweep per arm (``[[variant]]``,
tag ``teacher-study-<variant>``), the variant named ``<setting>-<teacher>`` or ``noteacher``.
Per setting (A: the teacher trained on all of nyc_taxi_manhattan's training data; B: only on the
student's 10 %; C: the taxi teacher labels nyc_bike_manhattan) one section, a row per teacher
and one for no teacher, and per student, ``flowdistill`` (the paper's teacher-bounded loss) and
``flowdistill-kd`` (the suite's soft-label extension), the test MAE and RMSE averaged over
horizons (mean ± std over seeds), the seeds, and the MAE relative to no teacher. Every cell is
filled from records or says ``awaits: <command>`` (the command that makes its records).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from benchmark.sweep import load_sweeps

from .frame import AVG, metric_column
from .table_markup import Cell, Section, Table, mark_best, write_tables

STUDY_FILE = Path(__file__).resolve().parent / "experiments" / "teacher_study.toml"
STUDENTS = (("flowdistill", "flowdistill (paper's bounded loss)"),
            ("flowdistill-kd", "flowdistill-kd (suite's soft-label extension)"))
NO_TEACHER = "flowdistill-noteacher"
NO_TEACHER_VARIANT = "noteacher"
TEACHERS = {"smollm2-lora": "SmolLM2-135M, pretrained + LoRA",
            "smollm2-scratch": "SmolLM2-135M arch., scratch, full tuning",
            "tiny": "tiny Llama 0.9 M, scratch",
            "stid": "STID forecaster"}
SETTINGS = {"A": "(A) teacher trained on all of the training data",
            "B": "(B) teacher trained on the student's 10 % only",
            "C": "(C) transfer: the taxi teacher of (A) labels the bike data"}
FRACTION = 0.1
METRICS = ("mae", "rmse")


@dataclass(frozen=True)
class Arm:
    """One sweep of the study: ``setting`` ("A", "B", "C", or "" for no teacher), ``teacher``
    (a :data:`TEACHERS` key, or "" for no teacher)."""

    variant: str
    tag: str
    setting: str
    teacher: str
    datasets: tuple[str, ...]
    models: tuple[str, ...]

    def command(self) -> str:
        return f"flowdistill sweep teacher_study --variant {self.variant}"


def study_arms(path: Path = STUDY_FILE) -> list[Arm]:
    """The arms of the study file, in its order."""
    sweeps = load_sweeps(path)
    prefix = "teacher-study-"
    arms = []
    for s in sweeps:
        if not s.name.startswith(prefix):
            raise ValueError(f"{path}: sweep {s.name!r} is not named {prefix}<variant>")
        variant = s.name.removeprefix(prefix)
        setting, _, teacher = variant.partition("-")
        if variant == NO_TEACHER_VARIANT:
            setting = teacher = ""
        elif setting not in SETTINGS or teacher not in TEACHERS:
            raise ValueError(f"{path}: variant {variant!r} is not <A|B|C>-<"
                             f"{'|'.join(TEACHERS)}> or {NO_TEACHER_VARIANT}")
        arms.append(Arm(variant, s.name, setting, teacher, tuple(s.datasets), tuple(s.models)))
    return arms


def _rows(frame: pd.DataFrame, tag: str, model: str, dataset: str) -> pd.DataFrame:
    """The newest record per seed of ``model`` on ``dataset`` at 10 % in sweep ``tag``."""
    if frame.empty or "tag" not in frame.columns:
        return pd.DataFrame()
    g = frame[(frame["tag"] == tag) & (frame["model"] == model) & (frame["dataset"] == dataset)
              & (frame["train_fraction"].astype(float) == FRACTION)]
    if g.empty:
        return g
    return g.sort_values(["created", "run_id"]).drop_duplicates(["seed"], keep="last")


def _cells(rows: pd.DataFrame, arm: Arm, none_mae: float | None,
           digits: int) -> list[Cell]:
    """MAE, RMSE (avg over horizons), seeds, MAE vs no teacher; or an ``awaits`` row."""
    if rows.empty:
        return [Cell(text=f"awaits: {arm.command()}"), Cell(text="–"), Cell(text="0"),
                Cell(text="–")]
    out = []
    for m in METRICS:
        col = metric_column(m, AVG)
        vals = rows[col].astype(float) if col in rows.columns else pd.Series(dtype=float)
        std = float(vals.std()) if len(vals) > 1 else None
        out.append(Cell(mean=float(vals.mean()) if len(vals) else None, std=std,
                        digits=digits))
    mae = out[0].mean
    vs = "–"
    if arm.teacher and none_mae and mae is not None:
        rel = 100 * (mae - none_mae) / none_mae
        vs = f"{rel:+.1f} %"
    return out + [Cell(text=str(len(rows))), Cell(text=vs)]


def _mean_mae(rows: pd.DataFrame) -> float | None:
    col = metric_column("mae", AVG)
    if rows.empty or col not in rows.columns:
        return None
    return float(rows[col].astype(float).mean())


def teacher_study_table(frame: pd.DataFrame, out_dir: Path, digits: int = 2,
                        stem: str = "teacher_study", path: Path = STUDY_FILE) -> list[Path]:
    """``<stem>.md`` and ``.tex`` (see the module docstring); every cell without records of the
    study awaits its command. Without any records (of any run) it writes nothing, like every
    other table."""
    if frame.empty:
        print(f"skip {stem}: no records")
        return []
    arms = study_arms(path)
    none_arm = next((a for a in arms if not a.teacher), None)
    sections = []
    for setting, title in SETTINGS.items():
        mine = [a for a in arms if a.setting == setting]
        if not mine:
            continue
        dataset = mine[0].datasets[0]
        sec = Section(f"{title}; students on {dataset}")
        none_rows = (_rows(frame, none_arm.tag, NO_TEACHER, dataset)
                     if none_arm and dataset in none_arm.datasets else pd.DataFrame())
        none_mae = _mean_mae(none_rows)
        for arm in sorted(mine, key=lambda a: list(TEACHERS).index(a.teacher)):
            row = [Cell(text=TEACHERS[arm.teacher])]
            for model, _ in STUDENTS:
                row += _cells(_rows(frame, arm.tag, model, dataset), arm, none_mae, digits)
            sec.rows.append(row)
        if none_arm is not None and dataset in none_arm.datasets:
            # no teacher: both students reduce to flowdistill-noteacher
            sec.rows.append([Cell(text=f"none ({NO_TEACHER})")]
                            + _cells(none_rows, none_arm, None, digits)
                            + _cells(none_rows, none_arm, None, digits))
        mark_best(sec, 1, [0, 1, 4, 5])
        sections.append(sec)
    groups = [(label, ["MAE", "RMSE", "Seeds", "MAE vs none"]) for _, label in STUDENTS]
    table = Table(
        caption="Does the LLM matter? Students at 10 % of the training data taught by a "
                "language-pretrained LLM, the same architecture from scratch, the tiny Llama, an "
                "STID forecaster, or no teacher; test error averaged over horizons",
        label=f"tab:{stem}", row_header=["Teacher"], column_groups=groups, sections=sections,
        note="Mean ± std over seeds (sweeps teacher-study-<setting>-<teacher> of "
             "paper/experiments/teacher_study.toml; teachers: paper/experiments/teachers/ and "
             "model:stid). flowdistill: the paper's teacher-bounded loss; flowdistill-kd: the "
             "suite's extension with a direct soft-label term. Students see the most recent 10 % "
             "of the training period. MAE vs none: the row's mean MAE relative to the student "
             "without a teacher on the same data (negative: the teacher helps). (C): the teacher "
             "trained on all of nyc_taxi_manhattan's training data labels nyc_bike_manhattan, "
             "standardised by the bike data's own scaler (fitted on the bike student's 10 %); "
             "the LLM teachers have no per-node embedding, STID's node embeddings carry over "
             "because both datasets are the same 69 zones. awaits: no record yet, and the "
             "command that makes them (GPU-sized: `flowdistill campaign run` works the study "
             "within GPU leases, paper/experiments/campaigns/gpu.toml). Bold: lowest mean per "
             "column and section.")
    return write_tables([table], out_dir, stem, "Teacher study (issue 14): does the LLM matter?")

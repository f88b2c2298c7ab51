"""A small table model rendered to markdown and to LaTeX (booktabs).

A :class:`Table` has row-label columns, value columns grouped under spanning headers (``@3``:
MAE, RMSE, MAPE), and sections (one per channel or training fraction). Cells keep their numbers,
so the best value per column and section can be marked after the fact (:func:`mark_best`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from benchmark.atomic import atomic_write_text

DASH_MD = "–"
DASH_TEX = "--"


@dataclass
class Cell:
    """A value cell (``mean`` and optional ``std`` over seeds) or a text cell (``text``)."""

    mean: float | None = None
    std: float | None = None
    text: str | None = None
    digits: int = 2
    bold: bool = False
    thousands: bool = False

    @property
    def sortable(self) -> float | None:
        if self.text is not None or self.mean is None or not math.isfinite(self.mean):
            return None
        return float(self.mean)

    def _num(self, x: float) -> str:
        return f"{x:,.{self.digits}f}" if self.thousands else f"{x:.{self.digits}f}"

    def markdown(self) -> str:
        if self.text is not None:
            s = self.text
        elif self.sortable is None:
            return DASH_MD
        elif self.std is None or not math.isfinite(self.std):
            s = self._num(self.mean)
        else:
            s = f"{self._num(self.mean)} ± {self._num(self.std)}"
        return f"**{s}**" if self.bold else s

    def latex(self) -> str:
        if self.text is not None:
            s = latex_escape(self.text)
        elif self.sortable is None:
            return DASH_TEX
        elif self.std is None or not math.isfinite(self.std):
            s = self._num(self.mean).replace(",", "{,}")
        else:
            s = (f"{self._num(self.mean)} $\\pm$ {self._num(self.std)}").replace(",", "{,}")
        return f"\\textbf{{{s}}}" if self.bold else s


@dataclass
class Section:
    """Rows under an optional sub-heading; each row is ``labels + values`` cells."""

    title: str | None
    rows: list[list[Cell]] = field(default_factory=list)


@dataclass
class Table:
    """``row_header`` names the label columns; ``column_groups`` = [(group title, [columns])]."""

    caption: str
    label: str
    row_header: list[str]
    column_groups: list[tuple[str, list[str]]]
    sections: list[Section] = field(default_factory=list)
    note: str = ""

    @property
    def value_columns(self) -> list[str]:
        return [f"{g} {c}".strip() for g, cols in self.column_groups for c in cols]


def mark_best(section: Section, n_labels: int, columns: list[int] | None = None) -> None:
    """Bold the lowest mean of each value column (ties all bold) in ``section``."""
    if not section.rows:
        return
    n = len(section.rows[0]) - n_labels
    for j in columns if columns is not None else range(n):
        vals = [row[n_labels + j].sortable for row in section.rows]
        finite = [v for v in vals if v is not None]
        if len(finite) < 2:
            continue
        best = min(finite)
        for row, v in zip(section.rows, vals, strict=True):
            if v is not None and v == best:
                row[n_labels + j].bold = True


def latex_escape(s: str) -> str:
    repl = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
            "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
            "^": r"\textasciicircum{}", "±": r"$\pm$", "–": "--"}
    return "".join(repl.get(ch, ch) for ch in s)


def to_markdown(table: Table) -> str:
    """``### caption`` then one pipe table per section (its title as a bold line above it)."""
    head = table.row_header + table.value_columns
    align = ["---"] * len(table.row_header) + ["---:"] * len(table.value_columns)
    lines = [f"### {table.caption}", ""]
    for sec in table.sections:
        if sec.title:
            lines += [f"**{sec.title}**", ""]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "|".join(align) + "|")
        for row in sec.rows:
            lines.append("| " + " | ".join(c.markdown() for c in row) + " |")
        lines.append("")
    if table.note:
        lines += [table.note, ""]
    return "\n".join(lines)


def to_latex(table: Table) -> str:
    """A ``table`` environment with a booktabs ``tabular`` (needs ``\\usepackage{booktabs}``)."""
    nl = len(table.row_header)
    ncols = nl + sum(len(c) for _, c in table.column_groups)
    spec = "l" * nl + "".join("r" * len(c) for _, c in table.column_groups)
    out = ["\\begin{table}[t]", "\\centering", "\\small",
           f"\\caption{{{latex_escape(table.caption)}}}", f"\\label{{{table.label}}}",
           f"\\begin{{tabular}}{{{spec}}}", "\\toprule"]
    if any(g for g, _ in table.column_groups):
        top, rules, col = [""] * nl, [], nl + 1
        for g, cols in table.column_groups:
            if g and len(cols) > 1:
                top.append(f"\\multicolumn{{{len(cols)}}}{{c}}{{{latex_escape(g)}}}")
                rules.append(f"\\cmidrule(lr){{{col}-{col + len(cols) - 1}}}")
            else:
                top += [latex_escape(g)] + [""] * (len(cols) - 1)
            col += len(cols)
        out.append(" & ".join(top) + " \\\\")
        if rules:
            out.append(" ".join(rules))
    out.append(" & ".join(latex_escape(h) for h in table.row_header) + " & "
               + " & ".join(latex_escape(c) for _, cols in table.column_groups for c in cols)
               + " \\\\")
    for i, sec in enumerate(table.sections):
        out.append("\\midrule")
        if sec.title and (len(table.sections) > 1 or i > 0):
            out.append(f"\\multicolumn{{{ncols}}}{{l}}{{\\textit{{{latex_escape(sec.title)}}}}} "
                       "\\\\")
        for row in sec.rows:
            out.append(" & ".join(c.latex() for c in row) + " \\\\")
    out += ["\\bottomrule", "\\end{tabular}"]
    if table.note:
        out.append(f"\\par\\smallskip{{\\footnotesize {latex_escape(table.note)}}}")
    out.append("\\end{table}")
    return "\n".join(out) + "\n"


def write_tables(tables: list[Table], out_dir: Path, stem: str, title: str) -> list[Path]:
    """``<stem>.md`` (every table, headed by ``title``) and ``<stem>.tex`` (one float each)."""
    md = f"## {title}\n\n" + "\n".join(to_markdown(t) for t in tables)
    tex = ("% Generated by paper/build.py from run records; needs \\usepackage{booktabs}.\n"
           + "\n".join(to_latex(t) for t in tables))
    paths = [Path(out_dir) / f"{stem}.md", Path(out_dir) / f"{stem}.tex"]
    for path, text in zip(paths, (md, tex), strict=True):
        atomic_write_text(path, text)
    return paths

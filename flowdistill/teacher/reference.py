"""Options of a sweep's teacher reference: ``"<kind>:<name>[,key=value...]"``.

The resolvers of :data:`benchmark.sweep.TEACHER_RESOLVERS` get the part after ``<kind>:``;
``model:`` (a registered forecaster, :mod:`.model_labels`) and ``llm:`` (a fine-tuned LLM
teacher, :mod:`.llm_teacher`) read it with :func:`parse_reference`. Options:

* ``train_fraction=F``: the teacher is trained on the most recent ``F`` of its dataset's training
  period only (the windows a student at fraction ``F`` trains on: the study's data-scarce
  setting B); default 1 (setting A, all training data).
* ``dataset=ID``: the teacher is trained on dataset ``ID`` and labels the sweep's dataset
  (transfer, setting C); default the sweep's dataset. The labelled dataset is then standardised
  by its own scaler, fitted on the windows the sweep's students may see (one training fraction
  per sweep, so that no student's labels use statistics of data it may not see).

``model:stid`` and ``model:stid,train_fraction=1`` name the same teacher (and run).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TeacherReference:
    """``name`` and its options (see the module docstring)."""

    name: str
    train_fraction: float = 1.0
    dataset: str | None = None

    def source_dataset(self, labelled: str) -> str:
        """The dataset the teacher is trained on when it labels ``labelled``."""
        return self.dataset or labelled

    def is_transfer(self, labelled: str) -> bool:
        return self.source_dataset(labelled) != labelled


def parse_reference(arg: str, kind: str) -> TeacherReference:
    """``"stid,train_fraction=0.1"`` -> ``TeacherReference("stid", 0.1)``; a bad option raises
    one line naming the reference."""
    name, *opts = [p.strip() for p in arg.split(",")]
    where = f"teacher reference {kind}:{arg!r}"
    if not name:
        raise ValueError(f"{where}: no teacher name before the options")
    out: dict = {}
    for opt in opts:
        key, sep, value = opt.partition("=")
        if not sep or key not in ("train_fraction", "dataset") or not value:
            raise ValueError(f"{where}: option {opt!r} is not train_fraction=F or dataset=ID")
        if key in out:
            raise ValueError(f"{where}: option {key!r} given twice")
        if key == "train_fraction":
            try:
                f = float(value)
            except ValueError:
                f = -1.0
            if not 0.0 < f <= 1.0:
                raise ValueError(f"{where}: train_fraction must be in (0, 1], got {value!r}")
            out[key] = f
        else:
            out[key] = value
    return TeacherReference(name, **out)


def student_fraction(sweep, where: str) -> float:
    """The one training fraction of ``sweep``'s students (transfer and LLM labels are made for
    the windows, and with the scaler, of one fraction)."""
    fractions = sorted({float(f) for f in sweep.fractions})
    if len(fractions) != 1:
        raise ValueError(f"{where}: sweep {sweep.name!r} has training fractions {fractions}; "
                         f"this teacher labels the windows of one fraction: split the sweep")
    return fractions[0]


def label_fraction(sweep, transfer: bool, where: str) -> float:
    """The training fraction whose visible windows a teacher labels for ``sweep``: the largest
    of its fractions (the windows of every smaller one are among them), or, for transfer (the
    labelled data's own scaler), the sweep's one fraction."""
    if transfer:
        return student_fraction(sweep, where)
    return max(float(f) for f in sweep.fractions)

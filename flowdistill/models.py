"""Registered FlowDistill variants and the objective each one trains with.

All variants share :class:`~flowdistill.student.FlowDistillStudent`'s backbone (same layers,
same parameter count); they differ in the VIB head and in the loss:

=========================  =====  ==============  ================  =====================
name                       VIB    teacher bound   soft-label (KD)   teacher labels
=========================  =====  ==============  ================  =====================
``flowdistill``            yes    yes             no                required
``flowdistill-noteacher``  yes    no              no                not used
``flowdistill-noib``       no     yes             no                required
``flowdistill-notb``       yes    no              yes               required
``flowdistill-kd``         yes    yes             yes               required
``mlp``                    no     no              no                not used
=========================  =====  ==============  ================  =====================

``flowdistill-notb`` is "the teacher bound replaced by the direct soft-label term" (with no
teacher term at all it would be ``flowdistill-noteacher``); ``flowdistill-kd`` adds the
soft-label term to the bound. Every variant uses the same ground-truth distance (Huber in
original units, the release's default), so the no-teacher variants differ from ``flowdistill``
only in the teacher's role.

Every variant trains by default with the release's recipe (:data:`RECIPE`), ``mlp`` included
(it is the family's backbone ablation); ``recipe=common`` swaps in the shared one, its loss
included (the distance below then follows the recipe's loss).

Each registry entry carries

* ``objective_factory(teacher_path, loss=None, **overrides)`` (what ``benchmark.experiment``
  calls with the recipe's ``loss``; it sets ``distance``/``huber_delta``): opens
  the :class:`~flowdistill.teacher.label_store.SoftLabelStore` at ``teacher_path`` (if any) and
  returns :func:`objective_for`'s objective;
* tags: ``"flowdistill"`` on all six; ``"distill"`` and ``"needs_teacher"`` on the variants
  that learn from teacher labels (their objective has ``requires_teacher = True`` and refuses to
  start training until a store is attached, e.g. ``objective.store = store``).
"""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path

from benchmark.models import get_spec, register_model
from benchmark.objectives import Objective
from benchmark.recipes import Recipe, every

from .distillation import DistillationConfig, DistillationObjective
from .student import FlowDistillStudent
from .teacher.label_store import SoftLabelStore

CITATION = ("Yu, Xie, Huang, Qiu. FlowDistill: Scalable Traffic Flow Prediction via "
            "Distillation from LLMs. arXiv 2504.02094, 2025")
BACKBONE = dict(embed_dim=64, node_dim=64, tod_dim=64, dow_dim=64, num_layers=3, dropout=0.15,
                num_samples=10)
FAMILY, DISTILL, NEEDS_TEACHER = "flowdistill", "distill", "needs_teacher"
KD_WEIGHT = 1.0  # weight of the soft-label term in the variants that use it

# The authors' release: conf/general_conf/global_baselines.conf ([train]: batch_size 128,
# epochs 200, lr_init 0.0055, lr_decay_rate 0.62 at lr_decay_step 15, 30, ..., 150,
# early_stop_patience 25, max_grad_norm 15) and conf/KDMLP/KDMLP.conf (loss_func = mask_huber,
# delta 1 in original units). The IB weight's anneal is defined over these 200 epochs.
RECIPE = Recipe(
    source="FlowDistill release (zxc2012/FlowDistill) conf/general_conf/global_baselines.conf "
           "[train] + conf/KDMLP/KDMLP.conf loss_func=mask_huber",
    optimizer="adam", lr=0.0055, weight_decay=0.0, lr_milestones=every(15, 151),
    lr_gamma=0.62, batch_size=128, epochs=200, patience=25, grad_clip=15.0, loss="huber",
    huber_delta=1.0)

# name -> (uses the teacher, DistillationConfig overrides)
VARIANTS: dict[str, tuple[bool, dict]] = {
    "flowdistill": (True, {}),
    "flowdistill-noteacher": (False, {}),
    "flowdistill-noib": (True, {}),
    "flowdistill-notb": (True, {"bound_weight": 0.0, "kd_weight": KD_WEIGHT}),
    "flowdistill-kd": (True, {"kd_weight": KD_WEIGHT}),
    "mlp": (False, {}),
}

_DESCRIPTIONS = {
    "flowdistill": "FlowDistill student (MLP + VIB) with the teacher-bounded loss",
    "flowdistill-noteacher": "FlowDistill student (MLP + VIB) trained on ground truth only",
    "flowdistill-noib": "FlowDistill without the VIB (deterministic bottleneck), teacher bound",
    "flowdistill-notb": "FlowDistill with the soft-label (KD) term instead of the teacher bound",
    "flowdistill-kd": "FlowDistill with the teacher bound plus the soft-label (KD) term",
    "mlp": "FlowDistill's backbone without VIB or teacher (plain MLP with ST embeddings)",
}


def objective_for(model_name: str, teacher_store=None, **overrides) -> Objective:
    """The training objective of a registered FlowDistill variant.

    Args:
        model_name: one of :data:`VARIANTS`.
        teacher_store: a :class:`~flowdistill.teacher.label_store.SoftLabelStore`. The variants
            tagged ``"needs_teacher"`` need one before training (when None here, attach it as
            ``objective.store``; ``objective.teacher_labels()`` raises until then). The others
            refuse one (a no-teacher run given a teacher is a mistake in a sweep spec).
        **overrides: :class:`~flowdistill.distillation.DistillationConfig` fields (``bound_weight``,
            ``bound_margin``, ``gate``, ``kd_weight``, ``distance``, ``huber_delta``), applied
            over the variant's settings.

    Raises:
        KeyError: unknown variant; ValueError: unexpected teacher, unknown override.
    """
    if model_name not in VARIANTS:
        raise KeyError(f"{model_name!r} is not a FlowDistill variant; choose from "
                       f"{sorted(VARIANTS)}")
    uses_teacher, variant = VARIANTS[model_name]
    if not uses_teacher and teacher_store is not None:
        raise ValueError(f"model {model_name!r} does not use a teacher, but one was given")
    valid = {f.name for f in fields(DistillationConfig)}
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise ValueError(f"unknown distillation settings {unknown}; valid: {sorted(valid)}")
    config = replace(DistillationConfig(), **{**variant, **overrides})
    return DistillationObjective(teacher_store, config,
                                 requires_teacher=NEEDS_TEACHER in get_spec(model_name).tags)


def loss_overrides(loss: dict | None) -> dict:
    """A recipe's ground-truth loss (:meth:`~benchmark.recipes.Recipe.loss_settings`) as
    :class:`~flowdistill.distillation.DistillationConfig` settings."""
    if not loss:
        return {}
    if loss["loss"] not in ("huber", "mae"):
        raise ValueError(f"FlowDistill's objective supports the huber and mae losses, not "
                         f"{loss['loss']!r}")
    out = {"distance": loss["loss"]}
    if "huber_delta" in loss:
        out["huber_delta"] = loss["huber_delta"]
    return out


def _objective_factory(model_name: str):
    def make(teacher_path: str | Path | None = None, loss: dict | None = None,
             **overrides) -> Objective:
        store = SoftLabelStore.open(teacher_path) if teacher_path is not None else None
        return objective_for(model_name, store, **{**loss_overrides(loss), **overrides})

    make.__name__ = f"objective_for_{model_name.replace('-', '_')}"
    make.settings = DistillationConfig  # the overrides it accepts (checked by the CLI, sweeps)
    return make


for _name, (_uses_teacher, _) in VARIANTS.items():
    register_model(
        _name, citation=CITATION, description=_DESCRIPTIONS[_name],
        tags=(FAMILY, DISTILL, NEEDS_TEACHER) if _uses_teacher else (FAMILY,),
        objective_factory=_objective_factory(_name), recipe=RECIPE,
        use_ib=_name not in ("flowdistill-noib", "mlp"), **BACKBONE,
    )(FlowDistillStudent)

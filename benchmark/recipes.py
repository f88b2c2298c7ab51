"""Training recipes: how each model is trained by default, and one shared recipe.

Every gradient-trained model registers the recipe of its own paper or official code
(``register_model(..., recipe=Recipe(...))``; each module writes it at its top with the source
cited, as LargeST and BasicTS configure each model). A run picks one of two *kinds*:

* ``"paper"`` (default): the model's own recipe;
* ``"common"``: :data:`COMMON`, the same recipe for every model, for equal-terms comparisons.

Explicit trainer settings (``--train k=v``, a sweep's ``[train]``) apply on top of the chosen
recipe; the record names the recipe kind, its source and every setting in which the run
deviates from it (:func:`describe_recipe`). Closed-form models (historical averages, ridge)
have no recipe.

Settings a recipe cannot express in this trainer (warm-up, polynomial decay, scheduled sampling,
Adam's epsilon, ...) are named in the recipe's ``notes``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from .losses import LOSS_NAMES
from .trainer import TrainConfig

RECIPE_KINDS = ("paper", "common")
# TrainConfig fields a recipe sets (the rest -- seed, device, progress, ... -- are the run's).
TRAIN_FIELDS = ("optimizer", "lr", "weight_decay", "lr_milestones", "lr_gamma", "batch_size",
                "epochs", "patience", "grad_clip")
CLOSED_FORM_SOURCE = "closed-form fit (no gradient training, no recipe)"


@dataclass(frozen=True)
class Recipe:
    """A training recipe (trainer settings plus the ground-truth loss).

    Attributes:
        source: where the settings come from (paper section or official file).
        optimizer: "adam" or "rmsprop".
        lr: initial learning rate.
        weight_decay: L2 weight decay of the optimiser.
        lr_milestones: epochs at which the LR is multiplied by ``lr_gamma``.
        lr_gamma: LR decay factor at each milestone.
        batch_size: training batch size.
        epochs: maximum number of epochs; epoch-based schedules (the IB-weight anneal) are
            defined over this many epochs.
        patience: early-stopping patience in epochs; None means the source does not stop early
            (it keeps the best validation epoch of all ``epochs``).
        grad_clip: max global gradient norm; None: no clipping.
        loss: masked ground-truth loss, "mae", "huber" or "mse" (in original units).
        huber_delta: Huber transition point (original units), for ``loss="huber"``.
        notes: what the source does that this trainer does not (or does differently).
    """

    source: str
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    lr_milestones: tuple[int, ...] = ()
    lr_gamma: float = 0.5
    batch_size: int = 64
    epochs: int = 100
    patience: int | None = None
    grad_clip: float | None = None
    loss: str = "mae"
    huber_delta: float = 1.0
    notes: str = ""

    def __post_init__(self) -> None:
        if not self.source.strip():
            raise ValueError("a recipe needs a source")
        if self.optimizer not in ("adam", "rmsprop"):
            raise ValueError(f"unknown optimizer {self.optimizer!r}")
        if self.loss not in LOSS_NAMES:
            raise ValueError(f"unknown loss {self.loss!r}; choose from {LOSS_NAMES}")

    def train_settings(self) -> dict:
        """The :class:`~benchmark.trainer.TrainConfig` fields this recipe sets."""
        return {"optimizer": self.optimizer, "lr": self.lr, "weight_decay": self.weight_decay,
                "lr_milestones": tuple(self.lr_milestones), "lr_gamma": self.lr_gamma,
                "batch_size": self.batch_size, "epochs": self.epochs,
                "patience": self.epochs if self.patience is None else self.patience,
                "grad_clip": self.grad_clip}

    def loss_settings(self) -> dict:
        """``{"loss": ..., "huber_delta": ...}`` (the delta only for the Huber loss)."""
        return ({"loss": self.loss, "huber_delta": self.huber_delta} if self.loss == "huber"
                else {"loss": self.loss})

    def to_dict(self) -> dict:
        d = asdict(self)
        d["lr_milestones"] = list(self.lr_milestones)
        return d

    def summary(self) -> str:
        """One line: optimiser, LR and schedule, batch, epochs, patience, clip, loss."""
        sched = (f" x{self.lr_gamma:g} at {list(self.lr_milestones)}" if self.lr_milestones
                 else "")
        loss = (f"huber(delta={self.huber_delta:g})" if self.loss == "huber" else self.loss)
        return (f"{self.optimizer} lr={self.lr:g}{sched} wd={self.weight_decay:g} "
                f"batch={self.batch_size} epochs={self.epochs} "
                f"patience={self.patience if self.patience is not None else 'none'} "
                f"clip={self.grad_clip if self.grad_clip is not None else 'none'} "
                f"loss=masked {loss}")


def every(step: int, epochs: int) -> tuple[int, ...]:
    """Milestones of a step schedule: ``step, 2*step, ...`` below ``epochs``."""
    return tuple(range(step, epochs, step))


# The shared recipe. These are the trainer's defaults, i.e. the settings every record made before
# per-model recipes existed was trained with, and the Graph WaveNet / MTGNN family's settings
# (Adam 1e-3, batch 64, 100 epochs, clip 5, masked MAE), which LargeST also uses for most models;
# no weight decay and no LR decay so that no model is favoured by a schedule tuned for another,
# and a patience of 10 epochs so that a comparison of many models stays affordable.
COMMON = Recipe(
    source="FlowDistill-Bench shared recipe (benchmark/recipes.py COMMON; the trainer defaults)",
    optimizer="adam", lr=1e-3, weight_decay=0.0, lr_milestones=(), lr_gamma=0.5, batch_size=64,
    epochs=100, patience=10, grad_clip=5.0, loss="mae")


def get_recipe(model: str, kind: str = "paper") -> Recipe | None:
    """The recipe a run of ``model`` uses under ``kind``; None for closed-form models. A
    gradient-trained model registered without a recipe gets :data:`COMMON` under "paper" too
    (its source says so)."""
    from .models import get_spec

    if kind not in RECIPE_KINDS:
        raise ValueError(f"unknown recipe {kind!r}; choose from {RECIPE_KINDS}")
    spec = get_spec(model)
    if spec.closed_form:
        return None
    if kind == "common":
        return COMMON
    if spec.recipe is None:  # e.g. a user's model registered without one
        return replace(COMMON, source=f"model {model!r} registers no recipe of its own: "
                                      f"the common recipe ({COMMON.source})")
    return spec.recipe


def train_config_for(model: str, kind: str = "paper", overrides: dict | None = None,
                     ) -> TrainConfig:
    """The :class:`TrainConfig` of ``model`` under recipe ``kind`` with ``overrides`` (any
    TrainConfig fields) on top. ``schedule_epochs`` is the recipe's epochs unless overridden.

    Raises:
        ValueError: unknown recipe kind or unknown trainer setting.
    """
    overrides = dict(overrides or {})
    valid = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise ValueError(f"unknown trainer settings {unknown}; valid: {sorted(valid)}")
    if "lr_milestones" in overrides:
        overrides["lr_milestones"] = tuple(overrides["lr_milestones"])
    recipe = get_recipe(model, kind)
    base = {} if recipe is None else {**recipe.train_settings(), "schedule_epochs": recipe.epochs}
    return TrainConfig(**{**base, **overrides})


def recipe_deviations(recipe: Recipe | None, train: TrainConfig,
                      objective_overrides: dict | None = None) -> dict:
    """``{setting: {"recipe": value, "run": value}}`` where the run differs from ``recipe``:
    trainer settings, the anneal's ``schedule_epochs``, and loss settings overridden through the
    objective (``loss_name``/``distance``/``huber_delta``)."""
    if recipe is None:
        return {}
    out = {}
    run = train.to_dict()
    for k, want in {**recipe.train_settings(), "schedule_epochs": recipe.epochs}.items():
        have = run.get(k)
        if k == "lr_milestones":
            want, have = list(want), list(have)
        if k == "schedule_epochs" and have is None:
            have = train.epochs
        if have != want:
            out[k] = {"recipe": want, "run": have}
    obj = objective_overrides or {}
    loss = obj.get("loss_name", obj.get("distance"))
    if loss is not None and loss != recipe.loss:
        out["loss"] = {"recipe": recipe.loss, "run": loss}
    if "huber_delta" in obj and obj["huber_delta"] != recipe.huber_delta:
        out["huber_delta"] = {"recipe": recipe.huber_delta, "run": obj["huber_delta"]}
    return out


def describe_recipe(model: str, kind: str, train: TrainConfig,
                    objective_overrides: dict | None = None) -> dict:
    """What a run record says about its recipe: ``{"name", "source", "settings",
    "deviations"}`` (``settings`` None for closed-form models)."""
    recipe = get_recipe(model, kind)
    return {"name": kind,
            "source": CLOSED_FORM_SOURCE if recipe is None else recipe.source,
            "settings": None if recipe is None else recipe.to_dict(),
            "deviations": recipe_deviations(recipe, train, objective_overrides)}

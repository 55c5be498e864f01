"""The stages of a recipe as typed dataclasses: train, dns, vd, retrain, inq, finalize, export.

:mod:`nncompress.recipe` builds them from YAML (and re-exports them); the checks beyond types
are in :mod:`nncompress._recipe_checks`, epoch counts in :mod:`nncompress._recipe_epochs`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Union

from nncompress._config import FieldError
from nncompress._typed import RecipeError, build_dataclass, shown
from nncompress.train.config import BiasConfig, LRConfig, OptimizerConfig
from nncompress.train.distill import DistillConfig

__all__ = ["STAGE_TYPES", "DNSStage", "ExportStage", "FinalizeStage", "INQStage",
           "RetrainStage", "Stage", "TrainStage", "VDStage"]

STAGE_TYPES = ("train", "dns", "vd", "retrain", "inq", "finalize", "export")


@dataclass(frozen=True, kw_only=True)
class _StageBase:
    stage: str
    name: str = ""


@dataclass(frozen=True, kw_only=True)
class _TrainingStage(_StageBase):
    batch_size: int = 64
    eval_interval: int = 500  # 0: evaluate only at the end of the stage
    checkpoint_interval: int = 1000  # 0: checkpoint only at stage (and INQ step) ends
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    lr: LRConfig = field(default_factory=LRConfig)
    bias: BiasConfig = field(default_factory=BiasConfig)
    # Knowledge distillation: {teacher, temperature, alpha}, built into a DistillConfig (or
    # None) by __post_init__, so that a mistake in it is reported at its own key.
    distill: Any = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "distill", _build_distill(self.distill))


def _build_distill(value: Any) -> DistillConfig | None:
    if value is None or isinstance(value, DistillConfig):
        return value
    if not isinstance(value, Mapping):
        raise FieldError("stage", "distill", "expected a mapping of teacher, temperature and "
                         f"alpha, e.g. {{teacher: reference}}, got {shown(value)}")
    try:
        config: DistillConfig = build_dataclass(DistillConfig, value, "distill")
    except RecipeError as exc:  # reported at the stage's path by the recipe reader
        raise FieldError("stage", exc.path, exc.problem) from None
    return config


@dataclass(frozen=True, kw_only=True)
class _CountedStage(_TrainingStage):
    iterations: int | None = None  # give this or epochs; resolved from epochs when the run starts
    epochs: float | None = None  # passes over the training set (see _recipe_epochs)

    def total_iterations(self) -> int:
        """The stage's iteration count (from ``epochs`` once :func:`resolve_epochs` ran)."""
        if self.iterations is None:
            raise RecipeError(self.name, f"epochs {self.epochs:g} are not resolved to "
                              "iterations yet; call resolve_epochs(recipe, train_size)")
        return self.iterations


@dataclass(frozen=True, kw_only=True)
class TrainStage(_CountedStage):
    """Plain training (the reference model)."""


@dataclass(frozen=True, kw_only=True)
class DNSStage(_CountedStage):
    """Dynamic Network Surgery: ``defaults`` are DNSConfig fields, ``layers`` overrides."""

    defaults: dict[str, Any] = field(default_factory=dict)
    layers: dict[str, dict[str, Any] | None] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class VDStage(_CountedStage):
    """Sparse variational dropout: ``defaults`` are VDConfig fields, ``layers`` overrides.

    The training loss gets the layers' KL term divided by the training set's size. When the
    stage ends, each layer keeps ``log alpha < threshold`` as a frozen DNS mask
    (:func:`nncompress.vd_to_masks`), so ``retrain``, ``inq`` and ``finalize`` may follow.
    """

    defaults: dict[str, Any] = field(default_factory=dict)
    layers: dict[str, dict[str, Any] | None] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class RetrainStage(TrainStage):
    """Fixed-mask retraining after DNS: every layer under DNS keeps its masks, kept entries train.

    The layers' DNS configs continue with ``iter_stop = -1`` (no surgery); pruned entries stay
    pruned, layers outside DNS train as they are. It must follow a ``dns`` or ``vd`` stage.
    """


@dataclass(frozen=True, kw_only=True)
class INQStage(_TrainingStage):
    """INQ: for each accumulated portion, quantize then retrain ``iterations_per_step``.

    ``portions`` becomes every layer's ``INQConfig.portions``, the schedule the quantize steps
    follow; it is a stage key rather than a per-layer one, so all layers step together.
    A recipe may write it ``{step: 0.05}``, written out when the stage is built
    (:mod:`nncompress._recipe_portions`, which also says how single step counts then apply).
    """

    portions: tuple[float, ...] = (0.5, 0.75, 0.875, 1.0)
    iterations_per_step: int | tuple[int, ...] | None = None  # or epochs_per_step
    epochs_per_step: float | tuple[float, ...] | None = None
    defaults: dict[str, Any] = field(default_factory=dict)
    layers: dict[str, dict[str, Any] | None] = field(default_factory=dict)

    def step_iterations(self) -> tuple[int, ...]:
        """Training iterations after each portion's quantization step."""
        if self.iterations_per_step is None:
            raise RecipeError(self.name, "epochs_per_step are not resolved to iterations yet; "
                              "call resolve_epochs(recipe, train_size)")
        if isinstance(self.iterations_per_step, int):
            return (self.iterations_per_step,) * len(self.portions)
        return self.iterations_per_step


@dataclass(frozen=True, kw_only=True)
class FinalizeStage(_StageBase):
    """Bake masks and quantized values into plain layers."""


@dataclass(frozen=True, kw_only=True)
class ExportStage(_StageBase):
    """Write the compact model file into the run folder."""

    file: str = "model.ncz"  # relative to the run folder
    float_dtype: Literal["float32", "float16"] = "float32"  # of tensors that are not INQ levels


Stage = Union[TrainStage, DNSStage, VDStage, RetrainStage, INQStage,  # noqa: UP007
              FinalizeStage, ExportStage]
_STAGE_CLASSES: dict[str, type[Any]] = {
    "train": TrainStage, "dns": DNSStage, "vd": VDStage, "retrain": RetrainStage, "inq": INQStage,
    "finalize": FinalizeStage, "export": ExportStage,
}

"""What each recipe stage does to the model's layers, without training: check, apply, restore.

A recipe's structure is the sequence of ``prepare`` / ``quantize_step`` / ``finalize`` calls its
stages make. :func:`check_recipe` runs them on a copy of the model to find a bad layer selection
before anything is written; :func:`restore_checkpoint` replays them on a fresh model up to where
a checkpoint was saved, so the checkpoint's state dict (masks, fixed values) fits it exactly.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any

from torch import nn

from nncompress.dns import DNSConfig
from nncompress.errors import FormatError, NNCompressError
from nncompress.inq import INQConfig
from nncompress.models import build_model
from nncompress.prepare import finalize, is_prepared, prepare, quantize_step, vd_to_masks
from nncompress.recipe import (
    DNSStage,
    FinalizeStage,
    INQStage,
    Recipe,
    RecipeError,
    RetrainStage,
    Stage,
    VDStage,
)
from nncompress.retrain import freeze_masks
from nncompress.train.checkpoint import Checkpoint
from nncompress.vd import VDConfig

__all__ = ["Position", "apply_structure", "check_recipe", "end_position", "plain_copy",
           "restore_checkpoint", "stage_tag"]


@dataclass(frozen=True, order=True)
class Position:
    """Where a run stands: stage index, INQ step, iteration in it, and whether the stage ended.

    Checkpoints store it as their ``position`` metadata; positions sort in run order.
    """

    stage: int
    step: int
    iteration: int
    done: bool  # the stage is complete


def end_position(index: int, stage: Stage) -> Position:
    """The position at the end of stage ``index``: its last INQ step, its last iteration.

    Example:
        >>> end_position(2, FinalizeStage(stage="finalize"))
        Position(stage=2, step=0, iteration=0, done=True)
    """
    if isinstance(stage, INQStage):
        return Position(index, len(stage.portions) - 1, stage.step_iterations()[-1], True)
    return Position(index, 0, getattr(stage, "iterations", None) or 0, True)


def stage_tag(index: int, name: str) -> str:
    """``s<index>-<name>``, the start of the file names of a stage's checkpoints and teacher.

    Example:
        >>> stage_tag(1, "dns 2/3")
        's01-dns_2_3'
    """
    return f"s{index:02d}-{re.sub(r'[^A-Za-z0-9_]+', '_', name)[:40]}"


def _selection(stage: DNSStage | VDStage | INQStage) -> dict[str | type[nn.Module], Any]:
    return dict(stage.layers.items())


def apply_structure(model: nn.Module, stage: Stage, upto_step: int | None = None) -> nn.Module:
    """Prepare / quantize / finalize ``model`` as ``stage`` does, without training.

    An INQ stage hands its ``portions`` to every layer's INQConfig, and each quantize step
    takes the layers to the next portion of that schedule; ``upto_step`` limits the steps
    applied (None: all, -1: none, only ``prepare``). A vd stage prepares its layers and, unless
    ``upto_step`` is -1 (the stage is still training), ends with :func:`vd_to_masks`. A retrain
    stage freezes the masks of the layers under DNS (:func:`nncompress.retrain.freeze_masks`).

    Returns:
        The model (a new object only when ``finalize`` replaced a prepared top-level layer).

    Example:
        >>> # model = apply_structure(model, recipe.stages[1])
    """
    if isinstance(stage, RetrainStage):
        freeze_masks(model)
    elif isinstance(stage, DNSStage):
        prepare(model, DNSConfig(**stage.defaults), layers=_selection(stage))
    elif isinstance(stage, VDStage):
        prepare(model, VDConfig(**stage.defaults), layers=_selection(stage))
        if upto_step != -1:
            vd_to_masks(model)
    elif isinstance(stage, INQStage):
        prepare(model, INQConfig(portions=stage.portions, **stage.defaults),
                layers=_selection(stage))
        last = len(stage.portions) - 1 if upto_step is None else upto_step
        for _ in range(last + 1):
            quantize_step(model)
    elif isinstance(stage, FinalizeStage):
        model = finalize(model)
    return model


def check_recipe(recipe: Recipe, model: nn.Module | None = None, *,
                 require_files: bool = True) -> None:
    """Check that every stage's layer selection and configs fit the recipe's model.

    Builds the model (unless given) and applies each stage's ``prepare``, ``quantize_step``
    and ``finalize`` to a copy, without data or training; a distilling stage's teacher must
    be an earlier stage or a model file that fits the model (:mod:`nncompress._teachers`).

    With ``require_files=False`` (``nncompress validate``) a teacher file that does not exist
    is not an error.

    Raises:
        RecipeError: a stage does not fit the model (path ``stages[i]``), or a teacher is
            not usable (path ``stages[i].distill.teacher``).
        ConfigError: the model cannot be built.

    Example:
        >>> # check_recipe(load_recipe("demo_lenet300_100"))
    """
    if model is None:
        model = build_model(recipe.model.ref, **recipe.model.kwargs)
    trial = copy.deepcopy(model)
    for index, stage in enumerate(recipe.stages):
        try:
            trial = apply_structure(trial, stage)
        except NNCompressError as exc:
            raise RecipeError(f"stages[{index}]", str(exc)) from None
    from nncompress._teachers import check_teachers  # it builds on this module

    check_teachers(recipe, model, require_files=require_files)


def restore_checkpoint(recipe: Recipe, model: nn.Module,
                       checkpoint: Checkpoint) -> tuple[nn.Module, Position]:
    """Replay the stages' structure up to the checkpoint's position, then load its state.

    Args:
        recipe: the run's recipe.
        model: a fresh model of the recipe (plain, as built).
        checkpoint: a checkpoint of that run.

    Returns:
        The model holding the checkpoint's state, and the checkpoint's position.

    Raises:
        FormatError: the checkpoint's state does not fit the replayed model.

    Example:
        >>> # model, pos = restore_checkpoint(recipe, build_model("lenet5"), checkpoint)
    """
    pos = Position(**checkpoint.metadata["position"])
    for index, stage in enumerate(recipe.stages[:pos.stage + 1]):
        if index < pos.stage or pos.done or not isinstance(stage, (INQStage, VDStage)):
            model = apply_structure(model, stage)
        else:  # in the middle of an INQ or vd stage
            model = apply_structure(model, stage, upto_step=pos.step if isinstance(
                stage, INQStage) else -1)
    try:
        model.load_state_dict(checkpoint.model_state, strict=True)
    except RuntimeError as exc:
        raise FormatError(f"{checkpoint.path}: does not fit the recipe's model ({exc})") from None
    return model, pos


def plain_copy(model: nn.Module) -> nn.Module:
    """A finalized deep copy of a prepared ``model``; ``model`` itself when it is plain."""
    return finalize(copy.deepcopy(model)) if is_prepared(model) else model

"""A training stage's length: ``iterations`` or ``epochs`` (INQ: ``*_per_step``), and resolving it.

One epoch is ``ceil(training examples / batch_size)`` iterations (the global batch under
torchrun); ``epochs`` may be fractional and round up to whole iterations. The training set's
size is known only once the data is opened, so a recipe keeps ``epochs`` until the run starts;
:func:`resolve_stage` then writes the iteration count beside it. A run folder's ``recipe.yaml``
holds both (``epochs: 12`` and ``iterations: 60060``): reading it back gives the same run, and
a stage with both is checked against the data it runs on (:class:`RecipeError` when they
disagree), so a resumed run cannot silently train a changed data set for another length.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any

from nncompress._typed import RecipeError, join_path, require

if TYPE_CHECKING:
    from nncompress.recipe import Recipe

__all__ = ["check_length", "iterations_for", "resolve_epochs", "resolve_stage"]

# (iterations key, epochs key) of each stage type that trains
_KEYS = {"inq": ("iterations_per_step", "epochs_per_step")}
_PLAIN = ("iterations", "epochs")


def _keys(stage: Any) -> tuple[str, str]:
    return _KEYS.get(stage.stage, _PLAIN)


def _as_tuple(value: Any, count: int) -> tuple[Any, ...]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * count


def iterations_for(epochs: float, train_size: int, batch_size: int) -> int:
    """Iterations of ``epochs`` passes over ``train_size`` examples in batches of ``batch_size``.

    Example:
        >>> iterations_for(1, 80, 32), iterations_for(2, 80, 32), iterations_for(0.5, 80, 32)
        (3, 6, 2)
    """
    per_epoch = math.ceil(train_size / batch_size)
    return math.ceil(epochs * per_epoch - 1e-9)  # 2.9999999 (float epochs) is 3 iterations


def check_length(stage: Any, path: str) -> None:
    """The stage gives its length as iterations or epochs, each count >= 0, one per portion.

    Raises:
        RecipeError: neither is given, a count is negative, or (INQ) the list lengths differ
            from the number of portions.
    """
    it_key, ep_key = _keys(stage)
    iterations, epochs = getattr(stage, it_key), getattr(stage, ep_key)
    require(iterations is not None or epochs is not None, join_path(path, it_key),
            "required key missing")
    count = len(stage.portions) if stage.stage == "inq" else 1
    for key, value in ((it_key, iterations), (ep_key, epochs)):
        if value is None:
            continue
        where = join_path(path, key)
        values = _as_tuple(value, count)
        if stage.stage == "inq":
            require(len(values) == count, where,
                    f"has {len(values)} entries but there are {count} portions; "
                    "give one count per portion or a single "
                    + ("integer" if key == it_key else "number"))
            require(all(n >= 0 for n in values), where, f"counts must be >= 0, got {list(values)}")
        else:
            require(value >= 0, where, f"must be >= 0, got {value!r}")


def resolve_stage(stage: Any, train_size: int, path: str) -> Any:
    """``stage`` with its iteration counts computed from its epochs (unchanged without epochs).

    Raises:
        RecipeError: the stage also gives iterations, and they are not what its epochs make
            with this training set.
    """
    it_key, ep_key = _keys(stage)
    epochs = getattr(stage, ep_key)
    if epochs is None:
        return stage
    inq = stage.stage == "inq"
    counts = tuple(iterations_for(e, train_size, stage.batch_size)
                   for e in _as_tuple(epochs, len(stage.portions) if inq else 1))
    resolved: Any = (counts[0] if not isinstance(epochs, (tuple, list)) else counts) if inq \
        else counts[0]
    given = getattr(stage, it_key)
    if given is not None and _as_tuple(given, len(counts)) != counts:
        raise RecipeError(join_path(path, it_key), (
            f"{_shown(given)} does not match {ep_key} {_shown(epochs)}: with {train_size:,} "
            f"training examples in batches of {stage.batch_size} they are {_shown(resolved)} "
            f"iterations; give only {ep_key} (a run's recipe.yaml records both, so this data "
            "differs from the data it was started with)"))
    return dataclasses.replace(stage, **{it_key: resolved})


def resolve_epochs(recipe: Recipe, train_size: int) -> Recipe:
    """``recipe`` with every stage's ``epochs`` turned into iterations for ``train_size``.

    One epoch is ``ceil(train_size / batch_size)`` iterations. Stages keep their ``epochs``
    beside the iterations, so the dumped recipe records both.

    Raises:
        RecipeError: a stage gives iterations that its epochs do not make with this data.

    Example:
        >>> from nncompress.recipe import parse_recipe
        >>> r = parse_recipe({"version": 1, "model": "tiny_mlp", "data": "synthetic",
        ...                   "stages": [{"stage": "train", "epochs": 2, "batch_size": 32}]})
        >>> resolve_epochs(r, train_size=100).stages[0].iterations
        8
    """
    stages = tuple(resolve_stage(s, train_size, join_path("stages", i))
                   if s.stage in ("train", "dns", "vd", "retrain", "inq") else s
                   for i, s in enumerate(recipe.stages))
    return dataclasses.replace(recipe, stages=stages)


def _shown(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_shown(v) for v in value) + "]"
    return f"{value:g}"

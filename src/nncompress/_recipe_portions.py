"""An INQ stage's ``portions: {step: 0.05}``, written out before the stage is built.

``portions`` is either a list of accumulated fractions or a mapping ``{step: s}`` that stands
for ``s, 2s, ...`` below 1.0, then 1.0 (:func:`nncompress.inq.portion_steps`). With the step
form, a single ``iterations_per_step`` / ``epochs_per_step`` is the training after every step
but the last: the last step fixes every remaining entry, so it trains 0 iterations (the
stage still evaluates there). A list gives every step its own count, the last one included,
and must have one entry per step. The stage then holds the written-out lists, so a run's
``recipe.yaml`` records the exact schedule.

Example:
    >>> out = expand_portions({"stage": "inq", "portions": {"step": 0.25},
    ...                        "iterations_per_step": 100}, "stages[2]")
    >>> out["portions"], out["iterations_per_step"]
    ([0.25, 0.5, 0.75, 1.0], [100, 100, 100, 0])
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from nncompress._typed import RecipeError, check_keys, convert, join_path, require
from nncompress.errors import ConfigError
from nncompress.inq import portion_steps

__all__ = ["expand_portions"]

_COUNT_KEYS = (("iterations_per_step", int), ("epochs_per_step", float))


def _steps(value: Mapping[str, Any], path: str) -> tuple[float, ...]:
    check_keys(value, ["step"], path)
    where = join_path(path, "step")
    require("step" in value, where, "required key missing; write e.g. portions: {step: 0.05}")
    step = value["step"]
    with contextlib.suppress(RecipeError):  # portion_steps names a bad value and the fix
        step = convert(float, step, where)  # '5e-2', which YAML 1.1 reads as text, too
    try:
        return portion_steps(step)
    except ConfigError as exc:
        raise RecipeError(where, str(exc)) from None


def _single(value: Any, kind: type) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return kind is float or float(value).is_integer()


def expand_portions(stage: Mapping[str, Any], path: str) -> Mapping[str, Any]:
    """``stage`` (an INQ stage as read from YAML) with a ``{step: s}`` schedule written out.

    Args:
        stage: the stage's mapping; returned as is unless its ``portions`` is a mapping.
        path: the stage's path for error messages (``stages[2]``).

    Returns:
        A new mapping with ``portions`` as a list and each single step count as one count per
        step, 0 for the last.

    Raises:
        RecipeError: an unknown key, a step that is not a number in (0, 1], or a count list
            whose length is not the number of steps.
    """
    portions = stage.get("portions")
    if not isinstance(portions, Mapping):
        return stage
    steps = _steps(portions, join_path(path, "portions"))
    out = dict(stage)
    out["portions"] = list(steps)
    for key, kind in _COUNT_KEYS:
        count = stage.get(key)
        if _single(count, kind):
            out[key] = [count] * (len(steps) - 1) + [0]
        elif isinstance(count, (list, tuple)):
            require(len(count) == len(steps), join_path(path, key),
                    f"has {len(count)} entries but portions {{step: {portions['step']}}} make "
                    f"{len(steps)} steps; give {len(steps)} counts (the last one after the "
                    "step to 1.0) or a single number, used for every step but the last")
    return out

"""Fine INQ partitions: ``portion_steps`` and a recipe's ``portions: {step: s}``."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

import nncompress as nnc
from nncompress.errors import ConfigError
from nncompress.recipe import INQStage, RecipeError, dump_recipe, parse_recipe, resolve_epochs

TWENTIETHS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7,
              0.75, 0.8, 0.85, 0.9, 0.95, 1.0)


@pytest.mark.parametrize(("step", "expected"), [
    (0.05, TWENTIETHS),
    (0.1, (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)),  # 3 * 0.1 is 0.30000000000000004
    (0.25, (0.25, 0.5, 0.75, 1.0)),
    (0.3, (0.3, 0.6, 0.9, 1.0)),  # does not divide 1: a shorter last step to 1.0
    (0.4, (0.4, 0.8, 1.0)),
    (0.5, (0.5, 1.0)),
    (1, (1.0,)),
    (1.0, (1.0,)),
])
def test_portion_steps_are_exact_decimal_multiples_ending_at_one(
        step: float, expected: tuple[float, ...]) -> None:
    steps = nnc.portion_steps(step)
    assert steps == expected
    assert all(type(v) is float for v in steps)


def test_the_finest_step_makes_a_thousand_portions() -> None:
    steps = nnc.portion_steps(0.001)
    assert len(steps) == 1000
    assert steps[:3] == (0.001, 0.002, 0.003) and steps[-3:] == (0.998, 0.999, 1.0)
    assert steps[8] == 0.009  # 9 * 0.001 in floats is 0.009000000000000001


def test_portion_steps_feed_an_inq_config() -> None:
    config = nnc.INQConfig(portions=nnc.portion_steps(0.05))
    assert config.portions == TWENTIETHS


@pytest.mark.parametrize(("step", "message"), [
    (0, "portions.step=0 is invalid: use a fraction in (0, 1], e.g. 0.05 for 20 steps"),
    (-0.05, "portions.step=-0.05 is invalid: use a fraction in (0, 1], e.g. 0.05 for 20 steps"),
    (1.5, "portions.step=1.5 is invalid: use a fraction in (0, 1], e.g. 0.05 for 20 steps"),
    (float("nan"), "portions.step=nan is invalid: use a fraction in (0, 1], e.g. 0.05 for 20 "
     "steps"),
    ("0.1", "portions.step='0.1' is invalid: use a fraction in (0, 1], e.g. 0.05 for 20 steps"),
    (True, "portions.step=True is invalid: use a fraction in (0, 1], e.g. 0.05 for 20 steps"),
    (0.0005, "portions.step=0.0005 is invalid: it makes 2,000 steps; use a step of at least "
     "0.001 (1,000 steps)"),
])
def test_bad_steps_name_the_value_and_the_fix(step: Any, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        nnc.portion_steps(step)
    assert str(info.value) == message


def _recipe(**inq: Any) -> dict[str, Any]:
    return {"version": 1, "model": "tiny_mlp", "data": "synthetic",
            "stages": [{"stage": "inq", **inq}, {"stage": "finalize"}]}


def _inq(**inq: Any) -> INQStage:
    stage = parse_recipe(_recipe(**inq)).stages[0]
    assert isinstance(stage, INQStage)
    return stage


def test_a_single_count_trains_after_every_step_but_the_last() -> None:
    stage = _inq(portions={"step": 0.25}, iterations_per_step=100)
    assert stage.portions == (0.25, 0.5, 0.75, 1.0)
    assert stage.step_iterations() == (100, 100, 100, 0)
    fine = _inq(portions={"step": 0.05}, iterations_per_step=7)
    assert fine.portions == TWENTIETHS
    assert fine.step_iterations() == (7,) * 19 + (0,)


def test_a_count_list_gives_every_step_its_own_count() -> None:
    stage = _inq(portions={"step": 0.3}, iterations_per_step=[1, 2, 3, 4])
    assert stage.portions == (0.3, 0.6, 0.9, 1.0)
    assert stage.step_iterations() == (1, 2, 3, 4)


def test_a_list_of_portions_keeps_one_count_for_every_step() -> None:
    stage = _inq(portions=[0.5, 0.75, 1.0], iterations_per_step=100)
    assert stage.step_iterations() == (100, 100, 100)


def test_epochs_per_step_resolve_with_a_last_step_of_none() -> None:
    recipe = parse_recipe(_recipe(portions={"step": 0.5}, epochs_per_step=2, batch_size=32))
    stage = recipe.stages[0]
    assert isinstance(stage, INQStage) and stage.epochs_per_step == (2.0, 0.0)
    resolved = resolve_epochs(recipe, train_size=100).stages[0]
    assert isinstance(resolved, INQStage)
    assert resolved.step_iterations() == (8, 0)  # 2 * ceil(100 / 32)


def test_step_form_round_trips_through_the_dumped_recipe() -> None:
    recipe = parse_recipe(_recipe(portions={"step": "5e-2"}, iterations_per_step=3))
    dumped = yaml.safe_load(dump_recipe(recipe))
    assert dumped["stages"][0]["portions"] == list(TWENTIETHS)
    assert dumped["stages"][0]["iterations_per_step"] == [3] * 19 + [0]
    assert parse_recipe(dumped) == recipe


@pytest.mark.parametrize(("inq", "message"), [
    ({"portions": {"step": 0.25}, "iterations_per_step": [1, 2, 3]},
     "r.yaml: stages[0].iterations_per_step: has 3 entries but portions {step: 0.25} make 4 "
     "steps; give 4 counts (the last one after the step to 1.0) or a single number, used for "
     "every step but the last"),
    ({"portions": {"step": 0.5}, "epochs_per_step": [1.0]},
     "r.yaml: stages[0].epochs_per_step: has 1 entries but portions {step: 0.5} make 2 steps; "
     "give 2 counts (the last one after the step to 1.0) or a single number, used for every "
     "step but the last"),
    ({"portions": {"stepp": 0.1}, "iterations_per_step": 1},
     "r.yaml: stages[0].portions.stepp: unknown key (did you mean 'step'?); allowed keys: step"),
    ({"portions": {}, "iterations_per_step": 1},
     "r.yaml: stages[0].portions.step: required key missing; write e.g. portions: {step: 0.05}"),
    ({"portions": {"step": 0}, "iterations_per_step": 1},
     "r.yaml: stages[0].portions.step: portions.step=0.0 is invalid: use a fraction in (0, 1], "
     "e.g. 0.05 for 20 steps"),
    ({"portions": {"step": 2}, "iterations_per_step": 1},
     "r.yaml: stages[0].portions.step: portions.step=2.0 is invalid: use a fraction in (0, 1], "
     "e.g. 0.05 for 20 steps"),
    ({"portions": {"step": "fine"}, "iterations_per_step": 1},
     "r.yaml: stages[0].portions.step: portions.step='fine' is invalid: use a fraction in "
     "(0, 1], e.g. 0.05 for 20 steps"),
])
def test_step_form_errors(inq: dict[str, Any], message: str) -> None:
    with pytest.raises(RecipeError) as info:
        parse_recipe(_recipe(**inq), source="r.yaml")
    assert str(info.value) == message


def test_a_single_count_of_the_wrong_type_is_reported_as_given() -> None:
    with pytest.raises(RecipeError) as info:
        parse_recipe(_recipe(portions={"step": 0.25}, iterations_per_step=2.5), source="r.yaml")
    text = str(info.value)
    assert text.startswith("r.yaml: stages[0].iterations_per_step: expected an integer")
    assert text.endswith("got 2.5 (a number)")

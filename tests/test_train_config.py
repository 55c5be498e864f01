"""Training configs: validated at construction, located at their path inside a recipe."""

from __future__ import annotations

from typing import Any

import pytest

from nncompress import recipe as recipe_module
from nncompress._config import FieldError
from nncompress.errors import ConfigError
from nncompress.recipe import RecipeError, parse_recipe
from nncompress.train.config import BiasConfig, LRConfig, OptimizerConfig


def test_optimizer_options_are_filled_per_optimizer() -> None:
    assert OptimizerConfig().options() == {"momentum": 0.9, "weight_decay": 5e-4,
                                           "nesterov": False}
    lars = OptimizerConfig(name="lars", weight_decay=0.0)
    assert lars.options() == {"momentum": 0.9, "weight_decay": 0.0, "local_gw_ratio": 0.001}
    assert OptimizerConfig(name="adamw", betas=[0.8, 0.9]).betas == (0.8, 0.9)  # type: ignore[arg-type]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"name": "adam", "momentum": 0.9},
     "OptimizerConfig.momentum: not an option of optimizer 'adam'; its options: betas, eps, "
     "weight_decay"),
    ({"momentum": -0.1}, "OptimizerConfig.momentum: must be >= 0, got -0.1"),
    ({"momentum": 0.0, "nesterov": True}, "OptimizerConfig.nesterov: nesterov needs momentum > 0"),
    ({"name": "sgdd"}, "OptimizerConfig.name: 'sgdd' is not allowed (did you mean 'sgd'?); use "
     "one of sgd, adam, adamw, lars"),
    ({"name": "adam", "betas": (0.9, 1.0)},
     "OptimizerConfig.betas: use two numbers in [0, 1), got (0.9, 1.0)"),
])
def test_optimizer_config_names_the_bad_field(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(FieldError) as info:
        OptimizerConfig(**kwargs)
    assert str(info.value) == message


@pytest.mark.parametrize(("kwargs", "field", "problem"), [
    ({"base_lr": 0.0}, "base_lr", "must be > 0, got 0.0"),
    ({"stepsize": 0}, "stepsize", "must be >= 1, got 0"),
    ({"stepvalues": (5, 3)}, "stepvalues", "must increase, got [5, 3]"),
    ({"min_lr": -1.0}, "min_lr", "must be >= 0, got -1.0"),
    ({"policy": "invv"}, "policy", "'invv' is not allowed (did you mean 'inv'?); use one of "
     "fixed, step, multistep, exp, inv, poly, sigmoid"),
])
def test_lr_config_names_the_bad_field(kwargs: dict[str, Any], field: str, problem: str) -> None:
    with pytest.raises(FieldError) as info:
        LRConfig(**kwargs)
    assert (info.value.field, info.value.problem) == (field, problem)


def test_lr_config_checks_the_policy_needs_and_builds_its_schedule() -> None:
    with pytest.raises(ConfigError, match="policy 'multistep' needs stepvalues"):
        LRConfig(policy="multistep")
    schedule = LRConfig(policy="poly", base_lr=0.1, power=1.0).schedule(10)
    assert schedule.lr_at(5) == pytest.approx(0.05)
    assert schedule.lr_at(10) == 0.0


def test_bias_config_rejects_negative_multipliers() -> None:
    assert BiasConfig(lr_mult=1.0).decay_mult == 1.0
    with pytest.raises(FieldError, match=r"BiasConfig.decay_mult: must be a number >= 0, got -1"):
        BiasConfig(decay_mult=-1)


@pytest.mark.parametrize(("stage", "message"), [
    ({"lr": {"base_lr": 0}}, "r.yaml: stages[0].lr.base_lr: must be > 0, got 0.0"),
    ({"lr": {"policy": "multistep"}},
     "r.yaml: stages[0].lr: policy 'multistep' needs stepvalues, e.g. [5000, 8000]"),
    ({"bias": {"lr_mult": -2}}, "r.yaml: stages[0].bias.lr_mult: must be a number >= 0, got -2.0"),
    ({"optimizer": {"momentum": 0, "nesterov": True}},
     "r.yaml: stages[0].optimizer.nesterov: nesterov needs momentum > 0"),
])
def test_recipe_reports_config_errors_at_their_path(stage: dict[str, Any], message: str) -> None:
    raw = {"version": 1, "model": "tiny_mlp", "data": "synthetic",
           "stages": [{"stage": "train", "iterations": 3, **stage}]}
    with pytest.raises(RecipeError) as info:
        parse_recipe(raw, source="r.yaml")
    assert str(info.value) == message


def test_old_spec_names_stay_importable_from_recipe() -> None:
    assert recipe_module.OptimizerSpec is OptimizerConfig
    assert recipe_module.LRSpec is LRConfig
    assert recipe_module.BiasSpec is BiasConfig

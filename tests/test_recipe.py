"""Recipes: defaults, YAML round trip, --set overrides and the exact text of every error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from nncompress.models import list_models
from nncompress.recipe import (
    DNSStage,
    INQStage,
    RecipeError,
    TrainStage,
    apply_overrides,
    dump_recipe,
    find_recipe,
    load_recipe,
    packaged_recipes,
    parse_recipe,
    recipe_to_dict,
)

REPO = Path(__file__).parents[1]


def _raw(*stages: dict[str, Any], **top: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"version": 1, "model": "tiny_mlp", "data": "synthetic",
                            "stages": list(stages) or [{"stage": "train", "iterations": 10}]}
    base.update(top)
    return base


def _error(raw: Any, overrides: tuple[str, ...] = ()) -> str:
    with pytest.raises(RecipeError) as info:
        parse_recipe(raw, source="r.yaml", overrides=overrides)
    return str(info.value)


def test_defaults_are_the_seed_lenet_solver() -> None:
    recipe = parse_recipe(_raw())
    stage = recipe.stages[0]
    assert isinstance(stage, TrainStage)
    assert (stage.lr.policy, stage.lr.base_lr, stage.lr.gamma, stage.lr.power) == (
        "inv", 0.01, 1e-4, 0.75)
    assert stage.optimizer.options() == {"momentum": 0.9, "weight_decay": 5e-4,
                                         "nesterov": False}
    assert (stage.bias.lr_mult, stage.bias.decay_mult, stage.batch_size) == (2.0, 1.0, 64)
    assert (recipe.model.ref, recipe.data.spec, recipe.data.scale) == (
        "tiny_mlp", "synthetic", 1 / 256)
    assert stage.name == "train" and recipe.name == "recipe"


def test_dns_defaults_filled_and_seeded_from_the_recipe() -> None:
    recipe = parse_recipe(_raw({"stage": "dns", "iterations": 5,
                                "defaults": {"gamma": "1e-4", "c_rate": 2},
                                "layers": {"fc1": {"c_rate": 3}, "fc2": None}}, seed=7))
    stage = recipe.stages[0]
    assert isinstance(stage, DNSStage)
    assert stage.defaults == {"c_rate": 2.0, "gamma": 1e-4, "power": 1.0,
                              "iter_stop": 10_000_000, "alpha_low": 0.95, "alpha_high": 1.05,
                              "include_bias": True, "seed": 7, "advance": "forward",
                              "ramp": 0}
    assert stage.layers == {"fc1": {"c_rate": 3.0}, "fc2": None}


def test_inq_step_iterations_from_int_or_list() -> None:
    one = parse_recipe(_raw({"stage": "inq", "portions": [0.5, 1.0], "iterations_per_step": 4}))
    many = parse_recipe(_raw({"stage": "inq", "portions": [0.3, 0.6, 1.0],
                              "iterations_per_step": [5, 6, 1]}))
    assert isinstance(one.stages[0], INQStage) and isinstance(many.stages[0], INQStage)
    assert one.stages[0].step_iterations() == (4, 4)
    assert many.stages[0].step_iterations() == (5, 6, 1)
    assert one.stages[0].defaults["num_quantum_values"] == 8


def test_dump_and_load_give_an_equal_recipe(tmp_path: Path) -> None:
    recipe = parse_recipe(_raw(
        {"stage": "train", "iterations": 3, "optimizer": {"name": "adam"}},
        {"stage": "dns", "iterations": 2, "layers": {"re:fc.*": {"c_rate": 1.5}}},
        {"stage": "inq", "portions": [0.5, 1.0], "iterations_per_step": [2, 0]},
        {"stage": "finalize"}, {"stage": "export", "float_dtype": "float16"}))
    file = tmp_path / "resolved.yaml"
    file.write_text(dump_recipe(recipe))
    again = load_recipe(file)
    assert again == parse_recipe(recipe_to_dict(recipe))
    assert recipe_to_dict(again) == recipe_to_dict(recipe)
    assert recipe_to_dict(recipe)["stages"][0]["optimizer"] == {
        "name": "adam", "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0}


def test_duplicate_stage_types_get_numbered_names() -> None:
    recipe = parse_recipe(_raw({"stage": "dns", "iterations": 1},
                               {"stage": "dns", "iterations": 1}, {"stage": "finalize"}))
    assert [s.name for s in recipe.stages] == ["dns", "dns_2", "finalize"]


@pytest.mark.parametrize(("raw", "message"), [
    (_raw({"stage": "dns", "iterations": 3, "defaults": {"c_rat": 1}}),
     "r.yaml: stages[0].defaults.c_rat: unknown key (did you mean 'c_rate'?); allowed keys: "
     "c_rate, gamma, power, iter_stop, alpha_low, alpha_high, include_bias, seed, advance, ramp"),
    (_raw({"stage": "dns", "iterations": 3, "c_rate": 1}),
     "r.yaml: stages[0].c_rate: unknown key (a per-layer setting: put it under 'defaults'); "
     "allowed keys: stage, name, batch_size, eval_interval, checkpoint_interval, optimizer, lr, "
     "bias, distill, iterations, epochs, defaults, layers"),
    (_raw({"stage": "dns", "iterations": 3, "defaults": {"iter_stop": 20},
           "layers": {"fc1": {"ramp": 30}}}),
     "r.yaml: stages[0].layers.fc1: DNSConfig.ramp=30 is invalid: the masks stop changing at "
     "iter_stop=20, before the ramp ends; use ramp <= iter_stop"),
    (_raw({"stage": "train", "iterations": "many"}),
     "r.yaml: stages[0].iterations: expected an integer, got 'many' (a string)"),
    (_raw({"stage": "train", "iterations": 2.5}),
     "r.yaml: stages[0].iterations: expected an integer, got 2.5 (a number)"),
    (_raw({"stage": "train"}), "r.yaml: stages[0].iterations: required key missing"),
    (_raw({"stage": "trian", "iterations": 3}),
     "r.yaml: stages[0].stage: unknown stage 'trian' (did you mean 'train'?); stages: train, "
     "dns, vd, retrain, inq, finalize, export"),
    (_raw({"stage": "train", "iterations": 3, "lr": {"policy": "invv"}}),
     "r.yaml: stages[0].lr.policy: 'invv' is not allowed (did you mean 'inv'?); use one of "
     "fixed, step, multistep, exp, inv, poly, sigmoid"),
    (_raw({"stage": "train", "iterations": 3, "optimizer": {"name": "adam", "momentum": 0.9}}),
     "r.yaml: stages[0].optimizer.momentum: not an option of optimizer 'adam'; its options: "
     "betas, eps, weight_decay"),
    (_raw({"stage": "inq", "portions": [0.5, 1.0], "iterations_per_step": [1, 2, 3]}),
     "r.yaml: stages[0].iterations_per_step: has 3 entries but there are 2 portions; give one "
     "count per portion or a single integer"),
    (_raw({"stage": "dns", "iterations": 3, "defaults": {"gamma": -1}}),
     "r.yaml: stages[0].defaults.gamma: DNSConfig.gamma=-1.0 is invalid: use a finite "
     "number >= 0"),
    (_raw({"stage": "dns", "iterations": 3, "layers": {"fc1": {"gama": 1}}}),
     "r.yaml: stages[0].layers.fc1.gama: unknown key (did you mean 'gamma'?); allowed keys: "
     "c_rate, gamma, power, iter_stop, alpha_low, alpha_high, include_bias, seed, advance, ramp"),
    (_raw({"stage": "train", "iterations": 3, "batch_size": 0}),
     "r.yaml: stages[0].batch_size: must be >= 1, got 0"),
    (_raw({"stage": "export", "file": "../x.ncz"}),
     "r.yaml: stages[0].file: '../x.ncz' must be a file name inside the run folder"),
    (_raw(dat="x"), "r.yaml: dat: unknown key (did you mean 'data'?); allowed keys: version, "
     "name, description, model, data, seed, device, precision, verify_ranks, stages"),
    (_raw(model="lenet"), "r.yaml: model.ref: unknown model 'lenet' (did you mean 'lenet5'?); "
     f"registered: {', '.join(list_models())}; or give package.module:callable"),
    (_raw(version=2), "r.yaml: version: unsupported recipe version 2; this nncompress reads "
     "version 1"),
    ({"model": "tiny_mlp"}, "r.yaml: version: required key missing; add 'version: 1'"),
    (_raw(stages=[]), "r.yaml: stages: expected a non-empty list of stages, got [] (a list)"),
])
def test_errors_name_the_path_and_what_is_allowed(raw: Any, message: str) -> None:
    assert _error(raw) == message


def test_set_overrides_win_over_the_file() -> None:
    raw = _raw({"stage": "train", "name": "reference", "iterations": 10},
               {"stage": "dns", "iterations": 5})
    recipe = parse_recipe(raw, overrides=["stages.reference.iterations=3", "seed=4",
                                          "stages.1.defaults.c_rate=2.5", "model.kwargs.hidden=8",
                                          "stages.dns.optimizer={name: adamw}"])
    assert recipe.stages[0].iterations == 3  # type: ignore[union-attr]
    assert recipe.seed == 4 and recipe.model.kwargs == {"hidden": 8}
    dns = recipe.stages[1]
    assert isinstance(dns, DNSStage)
    assert dns.defaults["c_rate"] == 2.5 and dns.defaults["seed"] == 4
    assert dns.optimizer.options() == {"betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.01}
    assert raw["stages"][0]["iterations"] == 10  # the input is not modified


def test_apply_overrides_creates_nested_mappings() -> None:
    out = apply_overrides({"data": "mnist"}, ["data.validation=100", "a.b.c=[1, 2]"])
    assert out == {"data": {"spec": "mnist", "validation": 100}, "a": {"b": {"c": [1, 2]}}}


@pytest.mark.parametrize(("override", "message"), [
    ("stages.4.iterations=1",
     "r.yaml: --set 'stages.4.iterations=1': no stage 4; the recipe has 1 stages (0 to 0)"),
    ("stages.trian.iterations=1",
     "r.yaml: --set 'stages.trian.iterations=1': no stage named 'trian' (did you mean 'train'?); "
     "stages: train"),
    ("seed", "r.yaml: --set 'seed': expected key.path=value, e.g. stages.0.iterations=100"),
    ("stages.0.iterations=x", "r.yaml: stages[0].iterations: expected an integer, got 'x' "
     "(a string)"),
    ("stages.0.iteratons=5", "r.yaml: stages[0].iteratons: unknown key (did you mean "
     "'iterations'?); allowed keys: stage, name, batch_size, eval_interval, "
     "checkpoint_interval, optimizer, lr, bias, distill, iterations, epochs"),
])
def test_override_errors(override: str, message: str) -> None:
    assert _error(_raw(), (override,)) == message


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    file = tmp_path / "bad.yaml"
    file.write_text("version: 1\nmodel: [tiny_mlp\n")
    with pytest.raises(RecipeError) as info:
        load_recipe(file)
    assert str(info.value).startswith(f"{file}: not valid YAML at line 3, column 1:")


def test_missing_file_lists_the_shipped_recipes(tmp_path: Path) -> None:
    with pytest.raises(RecipeError) as info:
        load_recipe(tmp_path / "nope.yaml")
    assert str(info.value) == (f"{tmp_path / 'nope.yaml'}: recipe file not found; give a YAML "
                               "file or one of the shipped recipes: "
                               + ", ".join(packaged_recipes()))


def test_shipped_recipe_found_by_name() -> None:
    assert find_recipe("demo_lenet300_100") == packaged_recipes()["demo_lenet300_100"]


SHIPPED = sorted([*(REPO / "recipes").glob("*.yaml"), *(REPO / "recipes").glob("*/*.yaml")],
                 key=lambda p: p.name)
# checking a recipe runs its stages' structure on its real model: seconds for 10M+ parameters
_BIG = {"alexnet_dns", "resnet18_inq5bit", "resnet50_inq5bit"}
CASES = [pytest.param(p, id=p.stem, marks=pytest.mark.slow if p.stem in _BIG else ())
         for p in SHIPPED]


def test_every_recipe_is_shipped_inside_the_package() -> None:
    assert [p.name for p in SHIPPED] == sorted(p.name for p in packaged_recipes().values())
    for path in SHIPPED:
        assert packaged_recipes()[path.stem].read_bytes() == path.read_bytes()
    assert {"lenet300_100_dns_inq", "lenet5_dns_inq", "lenet5_inq5bit",
            "demo_lenet300_100", "alexnet_dns", "resnet18_inq5bit", "resnet50_inq5bit",
            "squeezenet1_1_inq"} <= {p.stem for p in SHIPPED}
    assert find_recipe("resnet18_inq5bit").read_bytes() == (
        REPO / "recipes" / "imagenet" / "resnet18_inq5bit.yaml").read_bytes()


@pytest.mark.parametrize("path", CASES)
def test_shipped_recipe_is_valid_and_fits_its_model(path: Path) -> None:
    from nncompress.stages import check_recipe

    header = path.read_text().split("\nversion:")[0]
    assert "Command:" in header and "Expected" in header
    recipe = load_recipe(path)
    check_recipe(recipe, require_files=False)  # as `nncompress validate` checks it
    assert recipe.name == path.stem
    assert yaml.safe_load(dump_recipe(recipe))["name"] == path.stem

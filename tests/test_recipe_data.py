"""The recipe's ``data:`` section (streamed options, transform) and stage lengths in epochs."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from nncompress.data import TransformConfig
from nncompress.recipe import RecipeError, dump_recipe, parse_recipe, resolve_epochs


def _raw(data: Any = "folder:/d", *stages: dict[str, Any]) -> dict[str, Any]:
    return {"version": 1, "model": "tiny_cnn", "data": data,
            "stages": list(stages) or [{"stage": "train", "iterations": 10}]}


def _error(raw: Any, overrides: tuple[str, ...] = ()) -> str:
    with pytest.raises(RecipeError) as info:
        parse_recipe(raw, source="r.yaml", overrides=overrides)
    return str(info.value)


def test_streamed_data_section_is_read_with_its_transform() -> None:
    recipe = parse_recipe(_raw({"spec": "folder:/d", "workers": 2, "skip_bad_images": True,
                                "grey": True, "validation": 5,
                                "transform": {"kind": "caffe", "crop_size": 28,
                                              "mean_value": [104, 117, 123], "mirror": True}}))
    data = recipe.data
    assert (data.spec, data.workers, data.skip_bad_images, data.grey, data.validation) == (
        "folder:/d", 2, True, True, 5)
    assert data.transform == TransformConfig(kind="caffe", crop_size=28, mirror=True,
                                             mean_value=(104.0, 117.0, 123.0))
    again = parse_recipe(yaml.safe_load(dump_recipe(recipe)))
    assert again == recipe


def test_old_recipes_and_set_keep_working() -> None:
    recipe = parse_recipe(_raw("synthetic"), overrides=["data.validation=4"])
    assert (recipe.data.spec, recipe.data.validation, recipe.data.workers) == ("synthetic", 4, 0)
    assert recipe.data.transform is None
    streamed = parse_recipe(_raw("synthetic"), overrides=["data.spec=folder:/x",
                                                          "data.transform.kind=imagenet",
                                                          "data.transform.size=32",
                                                          "data.transform.resize=40"])
    assert streamed.data.transform is not None
    assert (streamed.data.transform.size, streamed.data.transform.resize) == (32, 40)


@pytest.mark.parametrize(("data", "message"), [
    ({"spec": "folder:/d", "workers": -1},
     "r.yaml: data.workers: must be an integer >= 0 (0: load in the main process), got -1"),
    ({"spec": "folder:/d", "workers": 1.5},
     "r.yaml: data.workers: expected an integer, got 1.5 (a number)"),
    ({"spec": "folder:/d", "transform": {"kind": "imagenet", "crop_size": 8}},
     "r.yaml: data.transform.crop_size: crop_size applies to kind 'caffe', not 'imagenet'; for "
     "kind 'imagenet' use size, resize, area, ratio, flip, mean, std"),
    ({"spec": "folder:/d", "transform": {"kind": "cafe"}},
     "r.yaml: data.transform.kind: 'cafe' is not allowed (did you mean 'caffe'?); use one of "
     "none, caffe, imagenet"),
    ({"spec": "folder:/d", "transform": {"kind": "imagenet", "size": 300}},
     "r.yaml: data.transform.size: resize=256 must be an integer >= size (300)"),
    ({"spec": "folder:/d", "transform": {"crop": 3}},
     "r.yaml: data.transform.crop: unknown key (did you mean 'crop_size'?); allowed keys: kind, "
     "scale, mean_value, mean_file, crop_size, mirror, size, resize, area, ratio, flip, mean, "
     "std"),
    ({"spec": "folder:/d", "transform": {"kind": "caffe"}, "scale": 0.5},
     "r.yaml: data.scale: applies without a transform; with one, give the scale in "
     "data.transform.scale"),
    ({"spec": "synthetic", "workers": 2},
     "r.yaml: data.workers: applies to streamed data (folder:, lmdb:, package.module:callable), "
     "not to 'synthetic', which is held in memory; remove it"),
    ({"spec": "folder:/d", "grey": "yes"},
     "r.yaml: data.grey: expected true or false, got 'yes' (a string)"),
])
def test_data_errors_name_the_path(data: dict[str, Any], message: str) -> None:
    assert _error(_raw(data)) == message


def test_epochs_resolve_to_iterations_and_are_recorded_with_them() -> None:
    recipe = parse_recipe(_raw("synthetic", {"stage": "train", "epochs": 2, "batch_size": 32},
                               {"stage": "inq", "portions": [0.5, 1.0], "batch_size": 10,
                                "epochs_per_step": [1.5, 0]}))
    assert recipe.stages[0].iterations is None
    with pytest.raises(RecipeError, match="not resolved"):
        recipe.stages[0].total_iterations()
    resolved = resolve_epochs(recipe, train_size=100)  # 4 batches of 32, 10 of 10 per epoch
    assert resolved.stages[0].total_iterations() == 8
    assert resolved.stages[1].step_iterations() == (15, 0)
    text = dump_recipe(resolved)
    saved = yaml.safe_load(text)
    assert saved["stages"][0]["epochs"] == 2 and saved["stages"][0]["iterations"] == 8
    assert saved["stages"][1]["epochs_per_step"] == [1.5, 0]
    assert saved["stages"][1]["iterations_per_step"] == [15, 0]
    assert "iterations" not in yaml.safe_load(dump_recipe(recipe))["stages"][0]
    reread = parse_recipe(saved)
    assert resolve_epochs(reread, 100) == resolved
    with pytest.raises(RecipeError) as info:
        resolve_epochs(reread, 101)  # stage 0 still 8; INQ: 11 batches per epoch
    assert str(info.value) == (
        "stages[1].iterations_per_step: [15, 0] does not match epochs_per_step [1.5, 0]: "
        "with 101 training examples in batches of 10 they are [17, 0] iterations; give only "
        "epochs_per_step (a run's recipe.yaml records both, so this data differs from the data "
        "it was started with)")


def test_changed_data_size_is_refused_for_a_recorded_recipe() -> None:
    saved = parse_recipe(_raw("synthetic", {"stage": "train", "epochs": 1, "batch_size": 10,
                                            "iterations": 10}))
    assert resolve_epochs(saved, 100).stages[0].iterations == 10
    with pytest.raises(RecipeError) as info:
        resolve_epochs(saved, 120)
    assert str(info.value) == (
        "stages[0].iterations: 10 does not match epochs 1: with 120 training examples in "
        "batches of 10 they are 12 iterations; give only epochs (a run's recipe.yaml records "
        "both, so this data differs from the data it was started with)")


@pytest.mark.parametrize(("stage", "message"), [
    ({"stage": "train", "epochs": -1}, "r.yaml: stages[0].epochs: must be >= 0, got -1.0"),
    ({"stage": "dns"}, "r.yaml: stages[0].iterations: required key missing"),
    ({"stage": "inq", "portions": [0.5, 1.0], "epochs_per_step": [1, 2, 3]},
     "r.yaml: stages[0].epochs_per_step: has 3 entries but there are 2 portions; give one "
     "count per portion or a single number"),
    ({"stage": "inq", "portions": [0.5, 1.0]},
     "r.yaml: stages[0].iterations_per_step: required key missing"),
])
def test_length_errors(stage: dict[str, Any], message: str) -> None:
    assert _error(_raw("synthetic", stage)) == message


def test_fractional_epochs_round_up_to_whole_iterations() -> None:
    recipe = parse_recipe(_raw("synthetic", {"stage": "dns", "epochs": 0.5, "batch_size": 3}))
    assert resolve_epochs(recipe, 10).stages[0].iterations == 2  # 4 per epoch, half is 2
    recipe = parse_recipe(_raw("synthetic", {"stage": "dns", "epochs": 0.3, "batch_size": 3}))
    assert resolve_epochs(recipe, 10).stages[0].iterations == 2  # 1.2 rounds up

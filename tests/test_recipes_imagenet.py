"""The ImageNet recipes (recipes/imagenet/): headers, and everything but the proposed fields.

They use fields the recipe schema does not have yet (``device``, ``precision``, a ``data``
section with ``workers`` and ``transform``, ``epochs_per_step``). Until it does, these tests
check the rest: with those fields mapped to today's (``data: synthetic``, epochs counted as
iterations) the recipe validates and its per-layer settings name layers of its model.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from nncompress.recipe import packaged_recipes, parse_recipe

FOLDER = Path(__file__).parents[1] / "src" / "nncompress" / "recipes" / "imagenet"
RECIPES = sorted(FOLDER.glob("*.yaml"))
# checking a recipe runs its stages' structure (prepare, every quantize step, finalize) on a
# real model: seconds for the models of 10M parameters and more
CASES = [pytest.param(p, id=p.stem, marks=() if p.stem == "squeezenet1_1_inq" else
                      pytest.mark.slow) for p in RECIPES]
PROPOSED_TOP = ("device", "precision")


def _today(raw: dict[str, Any]) -> dict[str, Any]:
    """The recipe with the proposed fields taken out or mapped to today's schema."""
    out = {k: v for k, v in raw.items() if k not in PROPOSED_TOP}
    out["data"] = {"spec": "synthetic"}
    out["model"] = {k: v for k, v in raw["model"].items() if k != "weights"}
    stages = []
    for stage in raw["stages"]:
        stage = dict(stage)
        if "epochs_per_step" in stage:
            stage["iterations_per_step"] = stage.pop("epochs_per_step")
        if "epochs" in stage:
            stage["iterations"] = stage.pop("epochs")
        stages.append(stage)
    out["stages"] = stages
    return out


def test_the_four_recipes_exist_outside_the_shipped_glob() -> None:
    assert [p.stem for p in RECIPES] == ["alexnet_dns", "resnet18_inq5bit", "resnet50_inq5bit",
                                         "squeezenet1_1_inq"]
    assert not set(packaged_recipes()) & {p.stem for p in RECIPES}


@pytest.mark.parametrize("path", CASES)
def test_recipe_header_and_todays_fields(path: Path) -> None:
    from nncompress.stages import check_recipe

    text = path.read_text()
    header = text.split("\nversion:")[0]
    for word in ("Paper", "Command:", "Expected", "Hardware and time"):
        assert word in header, word
    raw = yaml.safe_load(text)
    assert raw["name"] == path.stem
    assert set(PROPOSED_TOP) <= set(raw) and "transform" in raw["data"]
    recipe = parse_recipe(_today(raw), source=str(path), check_registries=True)
    check_recipe(recipe)  # builds the model on the meta device and matches the layer keys
    assert recipe.model.ref == raw["model"]["ref"]


def test_alexnet_dns_prunes_conv_then_fc_at_the_papers_fractions() -> None:
    raw = yaml.safe_load((FOLDER / "alexnet_dns.yaml").read_text())
    conv, fc = raw["stages"][0]["layers"], raw["stages"][1]["layers"]
    assert all(conv[n]["iter_stop"] == -1 for n in ("fc6", "fc7", "fc8"))
    assert all(fc[f"conv{i}"]["iter_stop"] == -1 for i in range(1, 6))
    # the DNS paper's kept fractions; for Gaussian weights, |w| has mean sqrt(2/pi) and
    # standard deviation sqrt(1 - 2/pi) (in units of the weights' sigma), and a threshold
    # z sigmas up keeps erfc(z / sqrt(2)) of the entries
    paper = {"conv1": 0.538, "conv2": 0.406, "conv3": 0.290, "conv4": 0.323, "conv5": 0.325,
             "fc6": 0.037, "fc7": 0.066, "fc8": 0.046}
    mean, std = math.sqrt(2 / math.pi), math.sqrt(1 - 2 / math.pi)
    for name, kept in paper.items():
        c_rate = (conv if name.startswith("conv") else fc)[name]["c_rate"]
        z = mean + c_rate * std
        assert math.erfc(z / math.sqrt(2)) == pytest.approx(kept, abs=0.004), name

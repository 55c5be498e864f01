"""The ImageNet recipes (recipes/imagenet/): headers, fields, and validation without ImageNet."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from nncompress.cli import main
from nncompress.recipe import load_recipe, packaged_recipes, resolve_epochs

FOLDER = Path(__file__).parents[1] / "src" / "nncompress" / "recipes" / "imagenet"
RECIPES = sorted(FOLDER.glob("*.yaml"))
# checking a recipe runs its stages' structure (prepare, every quantize step, finalize) on a
# real model: seconds for the models of 10M parameters and more
CASES = [pytest.param(p, id=p.stem, marks=() if p.stem == "squeezenet1_1_inq" else
                      pytest.mark.slow) for p in RECIPES]
ILSVRC_TRAIN = 1_281_167


def test_the_four_recipes_are_shipped_by_name() -> None:
    assert [p.stem for p in RECIPES] == ["alexnet_dns", "resnet18_inq5bit", "resnet50_inq5bit",
                                         "squeezenet1_1_inq"]
    assert all(packaged_recipes()[p.stem] == p for p in RECIPES)


@pytest.mark.parametrize("path", CASES)
def test_recipe_header_and_fields(path: Path) -> None:
    from nncompress.stages import check_recipe

    text = path.read_text()
    header = text.split("\nversion:")[0]
    for word in ("Paper", "Command:", "Expected", "Hardware and time"):
        assert word in header, word
    recipe = load_recipe(path.stem)
    check_recipe(recipe)  # builds the model and matches the layer keys
    assert recipe.name == path.stem and recipe.data.workers == 8
    assert (recipe.device, recipe.precision) == ("auto", "fp32")
    assert recipe.data.transform is not None and recipe.data.transform.kind in ("caffe",
                                                                                 "imagenet")


@pytest.mark.parametrize(("name", "batch", "steps"), [
    ("resnet18_inq5bit", 256, (60060, 60060, 60060, 0)),
    ("squeezenet1_1_inq", 128, (120120,) * 4 + (0,)),
])
def test_inq_recipes_count_12_epochs_per_step_and_step_the_lr_every_3(
        name: str, batch: int, steps: tuple[int, ...]) -> None:
    recipe = resolve_epochs(load_recipe(name), ILSVRC_TRAIN)
    inq = recipe.stages[0]
    assert inq.batch_size == batch and inq.step_iterations() == steps  # type: ignore[union-attr]
    assert inq.lr.stepsize == 3 * math.ceil(ILSVRC_TRAIN / batch)  # type: ignore[union-attr]


def test_validate_accepts_them_without_imagenet_and_names_the_missing_paths(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no weights/ folder here
    assert main(["validate", "squeezenet1_1_inq", "--set",
                 "data.spec=folder:/nonexistent/imagenet"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("squeezenet1_1_inq: valid recipe 'squeezenet1_1_inq', 3 stages: "
                          "inq (48 epochs), finalize, export\n")
    assert out.endswith(
        "note: `nncompress run` would read these paths, which do not exist here (point to them "
        "with --set KEY=VALUE):\n"
        "  data.spec (the image folder's train/): /nonexistent/imagenet/train\n"
        "  data.spec (the image folder's val/): /nonexistent/imagenet/val\n"
        "  model.weights: weights/squeezenet1_1.pth\n")
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "squeezenet1_1.pth").write_bytes(b"")
    (tmp_path / "in" / "train").mkdir(parents=True)
    (tmp_path / "in" / "val").mkdir()
    assert main(["validate", "squeezenet1_1_inq", "--set", f"data.spec=folder:{tmp_path / 'in'}"]
                ) == 0
    assert "note:" not in capsys.readouterr().out


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

"""``nncompress validate``: valid recipes, the resolved recipe, errors by exact text."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from nncompress.cli import main
from nncompress.recipe import load_recipe

RAW = {"version": 1, "model": "tiny_mlp", "data": "synthetic",
       "stages": [{"stage": "dns", "iterations": 4, "layers": {"fc*": {"c_rate": 2}}},
                  {"stage": "finalize"}]}


def _write(tmp_path: Path, raw: object) -> Path:
    file = tmp_path / "r.yaml"
    file.write_text(yaml.safe_dump(raw))
    return file


def test_valid_recipe(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = _write(tmp_path, RAW)
    assert main(["validate", str(file)]) == 0
    assert capsys.readouterr().out == (f"{file}: valid recipe 'r', 2 stages: dns (4 iterations), "
                                       "finalize\n")
    assert list(tmp_path.iterdir()) == [file]  # validate writes nothing


def test_show_prints_the_resolved_recipe(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    file = _write(tmp_path, RAW)
    assert main(["validate", str(file), "--show", "--set", "stages.0.iterations=9"]) == 0
    shown = tmp_path / "shown.yaml"
    shown.write_text(capsys.readouterr().out)
    assert load_recipe(shown) == load_recipe(file, ["stages.0.iterations=9", "name=r"])


def test_selection_that_matches_no_layer(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    raw = {**RAW, "stages": [{"stage": "dns", "iterations": 4, "layers": {"conv1": None}}]}
    assert main(["validate", str(_write(tmp_path, raw))]) == 1
    err = capsys.readouterr().err
    assert err.startswith("nncompress: error: stages[0]: ") and "conv1" in err


def test_shipped_recipe_by_name(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "lenet5_dns_inq"]) == 0
    assert capsys.readouterr().out == (
        "lenet5_dns_inq: valid recipe 'lenet5_dns_inq', 5 stages: reference (10,000 "
        "iterations), dns (16,000 iterations), inq (12,001 iterations), finalize, export\n")


@pytest.mark.parametrize(("text", "message"), [
    ("version: 1\nmodel: tiny_mlp\ndata: synthetic\nstages: [{stage: train, iterations: 1, "
     "optimizer: {name: sgdd}}]\n",
     "stages[0].optimizer.name: 'sgdd' is not allowed (did you mean 'sgd'?); use one of sgd, "
     "adam, adamw, lars"),
    ("version: 1\nmodel: tiny_mlp\ndata: mnistt\nstages: [{stage: finalize}]\n",
     "data.spec: unknown data set 'mnistt' (did you mean 'mnist'?); known: "),
    ("- just\n- a list\n", "a recipe is a mapping of keys, got ['just', 'a list'] (a list)"),
])
def test_invalid_recipes(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str,
                         message: str) -> None:
    file = tmp_path / "bad.yaml"
    file.write_text(text)
    assert main(["validate", str(file)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"nncompress: error: {file}: {message}")
    assert err.count("\n") == 1 and "Traceback" not in err

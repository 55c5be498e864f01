"""Runs on streamed image folders: epochs, evaluation, resume bit for bit, ResNet end to end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from nncompress.cli import main
from nncompress.pipeline import RunInterrupted, run_recipe
from nncompress.recipe import parse_recipe
from nncompress.run_folder import read_rows
from tests.image_folders import make_jpeg_folder


def stream_recipe(root: Path, model: str, kwargs: dict[str, Any], batch: int = 8,
                  **data: Any) -> dict[str, Any]:
    """Reference -> DNS -> INQ -> finalize -> export, lengths in epochs and iterations."""
    common = {"batch_size": batch, "eval_interval": 3, "checkpoint_interval": 2}
    return {
        "version": 1, "name": "stream", "seed": 5,
        "model": {"ref": model, "kwargs": kwargs},
        "data": {"spec": f"folder:{root}", **data},
        "stages": [
            {"stage": "train", "epochs": 2, "lr": {"policy": "fixed", "base_lr": 0.05},
             **common},
            {"stage": "dns", "iterations": 3, "defaults": {"c_rate": 0.5, "gamma": 0.01},
             "lr": {"policy": "fixed", "base_lr": 0.01}, **common},
            {"stage": "inq", "portions": [0.5, 1.0], "epochs_per_step": [1, 0],
             "lr": {"policy": "fixed", "base_lr": 0.01}, "defaults": {"num_quantum_values": 4},
             **common},
            {"stage": "finalize"},
            {"stage": "export"},
        ],
    }


def test_resnet20_on_a_jpeg_folder_runs_and_evaluates(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_jpeg_folder(tmp_path / "images", classes=4, per_class=5, size=8)
    raw = stream_recipe(root, "resnet20", {"num_classes": 4, "input_size": 8})
    result = run_recipe(parse_recipe(raw), tmp_path / "run", progress="none")
    saved = yaml.safe_load((tmp_path / "run" / "recipe.yaml").read_text())
    # 20 training images in batches of 8: 3 iterations per epoch
    assert (saved["stages"][0]["epochs"], saved["stages"][0]["iterations"]) == (2, 6)
    assert saved["stages"][2]["iterations_per_step"] == [3, 0]
    rows = read_rows(tmp_path / "run" / "metrics.jsonl")
    assert [(r["stage"], r["iteration"]) for r in rows] == [
        ("train", 3), ("train", 6), ("dns", 3), ("inq", 3), ("inq", 0)]
    assert all(r["split"] == "test" for r in rows)
    assert (tmp_path / "run" / "model.ncz").is_file()
    test = result.report["test"]
    assert main(["eval", str(tmp_path / "run"), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["examples"] == 8 and printed["data"] == f"folder:{root}"
    assert printed["accuracy"] == test["accuracy"]
    assert printed["loss"] == pytest.approx(test["loss"], rel=1e-6)
    assert main(["eval", str(tmp_path / "run" / "model.ncz"), "--data", f"folder:{root}",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == test["accuracy"]


@pytest.mark.parametrize("workers", [0, pytest.param(2, marks=pytest.mark.slow)])
def test_resume_with_a_streamed_set_is_bit_identical(tmp_path: Path, workers: int) -> None:
    root = make_jpeg_folder(tmp_path / "images", classes=3, per_class=6, size=8)
    raw = stream_recipe(root, "tiny_cnn", {"num_classes": 3, "in_channels": 3, "width": 4},
                        batch=4, validation=3, workers=workers,
                        transform={"kind": "caffe", "crop_size": 6, "mirror": True,
                                   "scale": 0.01, "mean_value": [120]})
    recipe = parse_recipe(raw)
    whole = run_recipe(recipe, tmp_path / "whole", progress="none")
    with pytest.raises(RunInterrupted):
        run_recipe(recipe, tmp_path / "cut", progress="none", stop_after=11)
    resumed = run_recipe(recipe, tmp_path / "cut", progress="none", resume=True)
    assert (tmp_path / "cut" / "model.safetensors").read_bytes() == (
        tmp_path / "whole" / "model.safetensors").read_bytes()
    assert resumed.report["test"] == whole.report["test"]
    rows = read_rows(tmp_path / "cut" / "metrics.jsonl")
    assert rows == [{**r, "elapsed_s": rows[i]["elapsed_s"]}
                    for i, r in enumerate(read_rows(tmp_path / "whole" / "metrics.jsonl"))]
    assert {r["split"] for r in rows} == {"val"}


@pytest.mark.slow
def test_resnet18_reference_dns_inq_export_on_a_generated_folder(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_jpeg_folder(tmp_path / "images", classes=10, per_class=8, size=32,
                            test_per_class=2)
    raw = stream_recipe(root, "resnet18", {"num_classes": 10, "input_size": 32}, batch=16,
                        transform={"kind": "imagenet", "size": 32, "resize": 36})
    raw["stages"][0]["epochs"] = 5  # 80 images: 5 batches per epoch, 25 iterations
    raw["stages"][1]["iterations"] = 20
    raw["stages"][2]["epochs_per_step"] = [4, 0]
    file = tmp_path / "resnet18.yaml"
    file.write_text(yaml.safe_dump(raw))
    assert main(["run", str(file), "--out", str(tmp_path / "run"), "-q", "--threads", "1"]) == 0
    capsys.readouterr()
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    weights = [row for row in report["layers"] if row["name"] != "fc"]
    assert all(row["kept"] < row["entries"] for row in weights)  # DNS pruned every conv
    assert all(row.get("bits") is not None for row in report["layers"])
    assert main(["export", str(tmp_path / "run"), "-o", str(tmp_path / "r18.ncz")]) == 0
    assert main(["eval", str(tmp_path / "r18.ncz"), "--data", f"folder:{root}", "--json"]) == 0
    out = capsys.readouterr().out
    evaluated = json.loads(out[out.index("{"):])
    assert evaluated["examples"] == 20

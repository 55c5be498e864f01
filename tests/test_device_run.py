"""Recipes' ``device`` and ``precision`` through ``nncompress run`` and ``eval``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from nncompress.cli import main
from nncompress.errors import ConfigError
from nncompress.pipeline import RunInterrupted, run_recipe
from nncompress.recipe import RecipeError, parse_recipe
from nncompress.run_folder import load_run_model

TINY: dict[str, Any] = {
    "version": 1, "name": "tiny_device",
    "model": {"ref": "tiny_mlp", "kwargs": {"input_size": 8, "hidden": 12}},
    "data": {"spec": "synthetic:n=128,test=32,size=8"}, "seed": 2,
    "stages": [
        {"stage": "dns", "iterations": 6, "batch_size": 16, "eval_interval": 0,
         "checkpoint_interval": 3, "defaults": {"c_rate": 0.5}},
        {"stage": "inq", "portions": [0.5, 1.0], "iterations_per_step": [4, 2],
         "batch_size": 16, "eval_interval": 0, "defaults": {"num_quantum_values": 4}},
        {"stage": "finalize"},
    ],
}
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="the machine has CUDA")


def _file(tmp_path: Path, **top: Any) -> Path:
    file = tmp_path / "r.yaml"
    file.write_text(yaml.safe_dump({**TINY, **top}))
    return file


def test_recipe_defaults_and_checks_the_spelling() -> None:
    recipe = parse_recipe(TINY)
    assert (recipe.device, recipe.precision) == ("cpu", "fp32")
    assert parse_recipe({**TINY, "device": "cuda:1", "precision": "bf16"}).device == "cuda:1"
    with pytest.raises(RecipeError, match=r"device: unknown device 'cdua' \(did you mean "
                                          r"'cuda'\?\)"):
        parse_recipe({**TINY, "device": "cdua"})
    with pytest.raises(RecipeError, match=r"precision: unknown precision 'fp8'"):
        parse_recipe({**TINY, "precision": "fp8"})


@NO_CUDA
def test_run_on_cuda_without_cuda_exits_1_and_writes_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(["run", str(_file(tmp_path, device="cuda")), "--out", str(out), "-q"]) == 1
    assert "device 'cuda': " in capsys.readouterr().err
    assert not out.exists()
    assert main(["run", str(_file(tmp_path)), "--out", str(out), "-q", "--device",
                 "cuda:3"]) == 1
    assert "device 'cuda:3'" in capsys.readouterr().err
    assert not out.exists()


def test_bad_device_and_fp16_on_the_cpu_exit_1(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(["run", str(_file(tmp_path)), "--out", str(out), "--device", "gpu"]) == 1
    assert "device: unknown device 'gpu'" in capsys.readouterr().err
    assert main(["run", str(_file(tmp_path, precision="fp16")), "--out", str(out),
                 "--device", "cpu"]) == 1
    assert "precision fp16 on the CPU" in capsys.readouterr().err
    assert not out.exists()
    assert main(["eval", str(tmp_path), "--device", "cdua"]) == 1
    assert "did you mean 'cuda'?" in capsys.readouterr().err


def test_bf16_run_keeps_compression_state_exact(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    recipe = parse_recipe({**TINY, "precision": "bf16"})
    result = run_recipe(recipe, tmp_path / "run", progress="none")
    saved = yaml.safe_load((tmp_path / "run" / "recipe.yaml").read_text())
    assert (saved["device"], saved["precision"]) == ("cpu", "bf16")
    weights = [p for n, p in result.model.named_parameters() if n.endswith("weight")]
    for weight in weights:
        assert weight.dtype == torch.float32
        nonzero = weight[weight != 0].abs().double()
        assert nonzero.numel() > 0
        assert torch.equal(torch.log2(nonzero), torch.log2(nonzero).round())
    model, _ = load_run_model(tmp_path / "run")
    assert torch.equal(next(model.parameters()), next(result.model.parameters()))


def test_resume_may_name_another_device(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    whole = run_recipe(parse_recipe(TINY), tmp_path / "whole", progress="none").model
    with pytest.raises(RunInterrupted):
        run_recipe(parse_recipe(TINY), tmp_path / "cut", progress="none", stop_after=4)
    elsewhere = parse_recipe({**TINY, "device": "auto"})
    if torch.cuda.is_available():  # a CPU checkpoint resumes on the GPU: numbers may differ
        run_recipe(elsewhere, tmp_path / "cut", progress="none", resume=True)
        return
    resumed = run_recipe(elsewhere, tmp_path / "cut", progress="none", resume=True).model
    for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(ConfigError, match="different recipe"):
        run_recipe(parse_recipe({**TINY, "seed": 3}), tmp_path / "cut", progress="none",
                   resume=True)


def test_nccl_needs_a_gpu_device() -> None:
    from nncompress.cli._options import check_backend

    check_backend("gloo", "cpu", "fp32")
    with pytest.raises(ConfigError, match="nccl needs the model on a GPU, and the device "
                                          "is 'cpu' \\(cpu\\); give --device cuda"):
        check_backend("nccl", "cpu", "fp32")


@NO_CUDA
def test_validate_accepts_a_cuda_recipe_and_notes_the_missing_gpu(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(_file(tmp_path, device="cuda", precision="fp16"))]) == 0
    out = capsys.readouterr().out
    assert "valid recipe 'tiny_device'" in out
    assert "note: `nncompress run` would stop on this machine unless given another --device: " \
           "device 'cuda': " in out
    assert main(["validate", str(_file(tmp_path))]) == 0
    assert "would stop" not in capsys.readouterr().out

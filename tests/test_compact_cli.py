"""``nncompress export`` and ``nncompress inspect``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import nncompress as nnc
from nncompress.cli import main
from nncompress.export import inspect_compact, load_compact, save_compact
from nncompress.models import build_model


def _inq_mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model("tiny_mlp", input_size=6, hidden=12)
    with torch.no_grad():
        model.fc1.weight.mul_(torch.rand_like(model.fc1.weight) < 0.1)
    nnc.prepare(model, nnc.INQConfig(num_quantum_values=4), layers={"fc2": None})  # fc2 stays float
    nnc.quantize_step(model, 1.0)
    return nnc.finalize(model)


def _weights_file(tmp_path: Path, model: torch.nn.Module) -> Path:
    """A run's model.safetensors: plain weights with the architecture in its header."""
    run = tmp_path / "run"
    run.mkdir()
    header = {"format": "nncompress-weights", "version": 1, "recipe": "test",
              "architecture": {"ref": "tiny_mlp", "kwargs": {"input_size": 6, "hidden": 12}}}
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(run / "model.safetensors"), metadata={"nncompress": json.dumps(header)})
    return run


def test_export_run_folder_then_inspect(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                        ) -> None:
    model = _inq_mlp()
    run = _weights_file(tmp_path, model)
    assert main(["export", str(run), "-o", str(tmp_path / "m.ncz")]) == 0
    size = (tmp_path / "m.ncz").stat().st_size
    assert capsys.readouterr().out.startswith(f"wrote {tmp_path / 'm.ncz'}: {size:,} bytes")
    loaded = load_compact(tmp_path / "m.ncz")
    x = torch.randn(3, 1, 6, 6)
    assert torch.equal(loaded(x), model.eval()(x))

    assert main(["inspect", str(tmp_path / "m.ncz")]) == 0
    lines = capsys.readouterr().out.splitlines()
    fc1 = next(line.split() for line in lines if line.startswith("fc1.weight"))
    info = {t.name: t for t in inspect_compact(tmp_path / "m.ncz").tensors}["fc1.weight"]
    assert fc1[:6] == ["fc1.weight", "12x36", "pow2", info.layout, "432", f"{info.kept}"]
    assert lines[-1].startswith("header and metadata ")
    assert main(["inspect", str(tmp_path / "m.ncz"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["file_bytes"] == size and data["arch"]["ref"] == "tiny_mlp"


def test_export_float16_is_smaller(tmp_path: Path) -> None:
    run = _weights_file(tmp_path, _inq_mlp())
    assert main(["export", str(run), "-o", str(tmp_path / "a.ncz")]) == 0
    assert main(["export", str(run), "-o", str(tmp_path / "b.ncz"), "--float16"]) == 0
    assert (tmp_path / "b.ncz").stat().st_size < (tmp_path / "a.ncz").stat().st_size
    assert inspect_compact(tmp_path / "b.ncz").float_dtype == "float16"


def test_export_needs_an_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = _weights_file(tmp_path, _inq_mlp())
    assert main(["export", str(run)]) == 1
    assert capsys.readouterr().err == (
        "nncompress: error: nothing to write: give -o model.ncz and/or --onnx model.onnx\n")


def test_inspect_of_a_foreign_file_is_one_message(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "x.ncz").write_text("hello")
    assert main(["inspect", str(tmp_path / "x.ncz")]) == 1
    assert capsys.readouterr().err == (f"nncompress: error: {tmp_path / 'x.ncz'}: not an "
                                       "nncompress compact (.ncz) file (wrong magic bytes)\n")


@pytest.mark.slow
def test_export_onnx_from_a_compact_file(tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    model = _inq_mlp()
    save_compact(model, tmp_path / "m.ncz")
    assert main(["export", str(tmp_path / "m.ncz"), "--onnx", str(tmp_path / "m.onnx"),
                 "--input-shape", "1,6,6"]) == 0
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    x = torch.randn(4, 1, 6, 6)
    (got,) = session.run(None, {"input": x.numpy()})
    torch.testing.assert_close(torch.from_numpy(got), model.eval()(x).detach())

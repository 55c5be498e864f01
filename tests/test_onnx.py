"""ONNX export of a finalized model, run with onnxruntime and compared with PyTorch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import nncompress as nnc
from nncompress.models import build_model

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


@pytest.mark.slow
def test_onnx_outputs_match_pytorch(tmp_path: Path) -> None:
    from nncompress.export.onnx import export_onnx

    torch.manual_seed(0)
    model = build_model("tiny_cnn")
    nnc.prepare(model, nnc.INQConfig(num_quantum_values=8))
    nnc.quantize_step(model, 1.0)  # prepared: exported through a finalized copy
    path = export_onnx(model, tmp_path / "m.onnx", (1, 12, 12))
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(5, 1, 12, 12, generator=torch.Generator().manual_seed(1))  # batch != 2
    (got,) = session.run(None, {"input": x.numpy()})
    with torch.no_grad():
        expected = nnc.finalize(model).eval()(x).numpy()
    assert got.shape == (5, 10)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)

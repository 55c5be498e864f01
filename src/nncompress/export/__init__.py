"""Compact model files (.ncz) and ONNX export.

Example:
    >>> import tempfile, pathlib
    >>> from nncompress.models import build_model
    >>> from nncompress.export import load_compact, save_compact
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "model.ncz"
    >>> _ = save_compact(build_model("tiny_mlp"), target)
    >>> model = load_compact(target)
"""

from __future__ import annotations

from nncompress.export.compact import (
    CompactInfo,
    TensorInfo,
    inspect_compact,
    load_compact,
    save_compact,
)
from nncompress.export.onnx import export_onnx

__all__ = ["CompactInfo", "TensorInfo", "export_onnx", "inspect_compact", "load_compact",
           "save_compact"]

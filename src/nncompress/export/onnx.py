"""ONNX export of a finalized model (needs the ``onnx`` extra: onnx, onnxscript)."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import torch
from torch import nn

from nncompress._io import atomic_path
from nncompress.errors import ConfigError

__all__ = ["export_onnx"]


def export_onnx(model: nn.Module, path: str | Path, input_shape: tuple[int, ...],
                *, opset: int | None = None) -> Path:
    """Write ``model`` (finalized on a copy if prepared) as ONNX with a dynamic batch size.

    The graph's input is ``input`` of shape ``(batch, *input_shape)`` and its output
    ``output``. The file is written to a temporary name beside ``path`` and moved into place.

    Args:
        model: the model; DNS/INQ layers are finalized on a copy first.
        path: the .onnx file to write.
        input_shape: the shape of one example, e.g. ``(1, 28, 28)``.
        opset: ONNX opset version (torch's default when None).

    Returns:
        The path written.

    Raises:
        ConfigError: the ONNX exporter is not installed or cannot trace the model.

    Example:
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "m.onnx"
        >>> export_onnx(nn.Linear(4, 2), target, (4,)).name  # doctest: +SKIP
        'm.onnx'
    """
    from nncompress.prepare import finalize, is_prepared

    plain = finalize(copy.deepcopy(model)) if is_prepared(model) else model
    was_training = plain.training
    plain.eval()
    target = Path(path)
    try:
        with atomic_path(target) as tmp:
            _export(plain, tmp, torch.zeros(2, *input_shape), opset)
    finally:
        plain.train(was_training)
    return target


def _export(model: nn.Module, path: Path, example: torch.Tensor, opset: int | None) -> None:
    try:
        import onnx  # noqa: F401  (both exporters need it)
    except ImportError:
        raise ConfigError("ONNX export needs the onnx package: pip install 'nncompress[onnx]'"
                          ) from None
    try:
        with warnings.catch_warnings():
            # The TorchScript exporter is deprecated but fast and writes one self-contained
            # file; the torch.export-based one is used where it is gone.
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=opset,
                              dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                              input_names=["input"], output_names=["output"])
        return
    except (TypeError, NotImplementedError, RuntimeError, ValueError) as legacy_error:
        fallback: Exception = legacy_error
    try:
        torch.onnx.export(model, (example,), str(path), dynamo=True, opset_version=opset,
                          external_data=False, dynamic_shapes=({0: torch.export.Dim("batch")},),
                          input_names=["input"], output_names=["output"])
    except Exception as exc:  # exporter errors have many types
        raise ConfigError(f"cannot export the model to ONNX: {exc} (first attempt: {fallback})"
                          ) from None

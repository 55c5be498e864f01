"""Load a Caffe net with its caffemodel as a plain PyTorch model, evaluate it, and convert it.

Conversions by the output's suffix: ``.ncz`` (nncompress compact file), ``.safetensors`` (a PyTorch
checkpoint of the ``state_dict``, with the net text in its metadata) and ``.caffemodel`` (a normal
caffemodel, masks baked in: turns the seed's four-blob DNS/INQ models into files plain Caffe loads).
The input transform and the scored output blob travel with ``.ncz`` files (architecture
arguments; a mean image as the ``input_transform.mean_image`` tensor) and ``.safetensors`` files
(metadata ``transform`` and ``output``), so every evaluation sees the same inputs.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from nncompress._io import atomic_path
from nncompress.errors import ConfigError
from nncompress.interop.caffe_net import CaffeNet
from nncompress.interop.caffemodel import read_caffemodel, write_caffemodel
from nncompress.interop.deploy import class_scores
from nncompress.interop.prototxt import parse_file
from nncompress.interop.transform import CaffeTransform
from nncompress.interop.weights import bake_masks, load_blobs, net_blobs

__all__ = ["SUFFIXES", "convert", "evaluate", "load_plain"]

SUFFIXES = (".ncz", ".safetensors", ".caffemodel")


def load_plain(net_path: str | Path, weights: str | Path,
               input_shape: Sequence[int] | None = None, *, allow_missing: bool = False,
               allow_nonfinite: bool = False) -> tuple[CaffeNet, str]:
    """The net with the caffemodel's weights, DNS masks baked in, in eval mode.

    ``allow_missing`` and ``allow_nonfinite`` turn a net layer without weights in the file and
    NaN/infinite weights from errors into warnings (see
    :func:`~nncompress.interop.weights.load_blobs`).

    Returns:
        The net and the prototxt text it was built from.

    Example:
        >>> net, text = load_plain("lenet.prototxt", "lenet.caffemodel", (1, 28, 28))
        ... # doctest: +SKIP
    """
    msg = parse_file(net_path, "net prototxt")
    text = Path(net_path).read_text(encoding="utf-8")
    net = CaffeNet(msg, input_shape=input_shape)
    for key, loaded in load_blobs(net, read_caffemodel(weights), weights,
                                  allow_missing=allow_missing,
                                  allow_nonfinite=allow_nonfinite).items():
        if loaded.kind == "dns":
            bake_masks(net.get_submodule(key), loaded.masks)
    return net.eval(), text


@torch.no_grad()
def evaluate(net: CaffeNet, x: torch.Tensor, y: torch.Tensor, batch_size: int = 100,
             transform: Any = None) -> float:
    """Top-1 accuracy of ``net`` (eval mode, TEST phase) on ``x``/``y``.

    Args:
        net: the net.
        x: inputs, before the Data layer's transform.
        y: labels.
        batch_size: examples per forward.
        transform: a callable applied to every batch (the TEST Data layer's transform_param).

    Example:
        >>> evaluate(net, splits.test_x, splits.test_y)  # doctest: +SKIP
        0.9912
    """
    net.eval()
    correct = 0
    for start in range(0, x.shape[0], batch_size):
        batch = x[start:start + batch_size]
        if transform is not None:
            batch = transform(batch)
        scores = class_scores(net(batch), net.outputs.get("TEST") or "output")
        correct += int((scores.argmax(1) == y[start:start + batch_size]).sum())
    return correct / max(x.shape[0], 1)


def convert(net: CaffeNet, text: str, out: str | Path) -> Path:
    """Write ``net`` to ``out`` in the format its suffix names (see the module docstring).

    Raises:
        ConfigError: an unknown suffix.

    Example:
        >>> convert(net, text, "lenet.safetensors")  # doctest: +SKIP
    """
    path = Path(out)
    if path.suffix == ".caffemodel":
        io = {s.spec.name: (s.spec.bottoms, s.spec.tops) for s in net.steps if s.key}
        write_caffemodel(path, net_blobs(net), net.net_name, io)
    elif path.suffix == ".safetensors":
        _save_safetensors(net, text, path)
    elif path.suffix == ".ncz":
        from nncompress.export import save_compact

        save_compact(net, path, arch=_architecture(net, text))
    else:
        raise ConfigError(f"output {str(path)!r} has an unknown suffix; use one of "
                          f"{', '.join(SUFFIXES)}")
    return path


def _architecture(net: CaffeNet, text: str) -> dict[str, Any]:
    """How to rebuild ``net`` (:func:`~nncompress.interop.caffe_net.from_text` arguments)."""
    return {"ref": "nncompress.interop.caffe_net:from_text",
            "kwargs": {"text": text, "input_shape": _shape(net), **_scoring(net)}}


def _shape(net: CaffeNet) -> list[int] | None:
    return list(net.input_shape) if net.input_shape is not None else None


def _scoring(net: CaffeNet) -> dict[str, Any]:
    """How the net is scored: its input transform and TEST output, for the converted file."""
    out: dict[str, Any] = {}
    if isinstance(net.input_transform, CaffeTransform):
        out["transform"] = net.input_transform.to_json()
    if net.outputs.get("TEST"):
        out["output"] = net.outputs["TEST"]
    return out


def _save_safetensors(net: CaffeNet, text: str, path: Path) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().clone() for k, v in net.state_dict().items()}
    meta = {"format": "nncompress.caffe", "net_prototxt": text,
            "input_shape": ",".join(str(d) for d in _shape(net) or [])}
    meta |= {k: json.dumps(v) if isinstance(v, dict) else str(v)
             for k, v in _scoring(net).items()}
    from nncompress.run_folder import WEIGHTS_FORMAT

    # the header nncompress eval/export read to rebuild the model (import path: --allow-import)
    meta["nncompress"] = json.dumps({"format": WEIGHTS_FORMAT, "version": 1,
                                     "architecture": _architecture(net, text)})
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=meta)

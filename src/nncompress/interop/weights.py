"""Move weights between a :class:`CaffeNet` and caffemodel blobs, masks included.

Caffe's DNS and INQ layers (the seed's and Guo's) store four blobs: weights, bias, weight mask,
bias mask. A DNS mask is the surgery mask ``T`` (0 = pruned); an INQ mask marks the entries still
free (1) or already quantized and fixed (0). Which one a file holds is read from the layer type
recorded in the file, or else from the net's layer type.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from nncompress.errors import ConfigError, NonFiniteError
from nncompress.interop.caffe_net import CaffeNet
from nncompress.interop.caffe_ops import CaffeBatchNorm, CaffeScale
from nncompress.interop.caffe_spec import COMPRESSION_TYPES
from nncompress.interop.caffemodel import CaffeLayerBlobs
from nncompress.layers import CompressedLayer

__all__ = ["LoadedMasks", "apply_masks", "load_blobs", "net_blobs"]


@dataclass
class LoadedMasks:
    """The masks read for one layer: ``kind`` is ``dns`` or ``inq``; tensors by blob name."""

    kind: str
    masks: dict[str, torch.Tensor]


def _targets(module: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """The tensors a layer's blobs go to, in Caffe's blob order."""
    if isinstance(module, CaffeBatchNorm):
        return [("running_mean", module.running_mean), ("running_var", module.running_var),
                ("factor", torch.ones(1))]
    out = []
    for name in ("weight", "bias"):
        value = getattr(module, name, None)
        if isinstance(value, torch.Tensor):
            out.append((name, value))
    return out


def _shape_ok(arr: np.ndarray, legacy: bool, expected: tuple[int, ...]) -> bool:
    if tuple(arr.shape) == expected:
        return True
    # the deprecated num/channels/height/width fields pad shapes to 4-D with leading ones
    return legacy and len(expected) <= 4 and tuple(arr.shape) == (1,) * (4 - len(expected)) + \
        expected


def _mask_kind(entry: CaffeLayerBlobs, net: CaffeNet, key: str) -> str:
    if entry.type in COMPRESSION_TYPES:
        return COMPRESSION_TYPES[entry.type][1]
    compression = net.compression().get(key)
    if compression is None:
        raise ConfigError(f"layer '{entry.name}' of the caffemodel holds {len(entry.blobs)} "
                          f"blobs (with masks) but the net's layer '{entry.name}' is a plain "
                          "layer; use the DNS/INQ net prototxt the model was trained with")
    return compression.kind


def load_blobs(net: CaffeNet, layers: Sequence[CaffeLayerBlobs],
               source: str | Path = "caffemodel", *, allow_missing: bool = True,
               allow_nonfinite: bool = False) -> dict[str, LoadedMasks]:
    """Copy caffemodel blobs into ``net`` by layer name, as Caffe's ``CopyTrainedLayersFrom``.

    Layers of the file that the net lacks are ignored. A layer of the net that holds blobs but
    has none in ``layers`` keeps its filler values, with a warning naming it; with
    ``allow_missing=False`` (what :func:`~nncompress.interop.convert.load_plain` and ``caffe
    train --weights`` pass for a whole caffemodel) it is an error: a renamed layer, ``conv1`` in
    the net and ``conw1`` in the file, must not go unnoticed. NaN or
    infinite values in a blob are an error naming the layer, or with ``allow_nonfinite`` a
    warning. DNS masks are not multiplied in: they are returned, to be set on the prepared
    layers (:func:`apply_masks`) or baked in.

    Args:
        net: the net to fill (plain, not yet prepared).
        layers: the blobs read by :func:`~nncompress.interop.caffemodel.read_caffemodel`.
        source: the file name used in error messages.
        allow_missing: warn (the default), instead of failing, about net layers ``layers`` has
            no blobs for.
        allow_nonfinite: warn, instead of failing, about NaN or infinite values.

    Returns:
        Module name -> masks, for layers whose file entry had mask blobs.

    Raises:
        ConfigError: a blob count or shape does not match the net (naming the layer and both
            shapes), or a net layer has no blobs in the file.
        NonFiniteError: a blob holds NaN or infinite values (naming the layer and the blob).

    Example:
        >>> masks = load_blobs(net, read_caffemodel("lenet_DNS.caffemodel"))  # doctest: +SKIP
    """
    _check_complete(net, layers, source, allow_missing)
    found: dict[str, LoadedMasks] = {}
    for entry in layers:
        key = net.keys.get(entry.name)
        if key is None:
            continue
        _check_finite(entry, source, allow_nonfinite)
        module = net.get_submodule(key)
        targets = _targets(module)
        n = len(targets)
        if len(entry.blobs) not in (n, 2 * n) or (len(entry.blobs) == 2 * n and
                                                  isinstance(module, (CaffeBatchNorm, CaffeScale))):
            raise ConfigError(f"{source}: layer '{entry.name}' has {len(entry.blobs)} blobs, the "
                              f"net's layer '{entry.name}' expects {n}"
                              + (f" (or {2 * n} with masks)" if n <= 2 else ""))
        for i, arr in enumerate(entry.blobs):
            name, tensor = targets[i % n]
            if not _shape_ok(arr, entry.legacy_shape[i], tuple(tensor.shape)):
                what = "mask of " + name if i >= n else name
                raise ConfigError(f"{source}: layer '{entry.name}' blob {i} ({what}) has shape "
                                  f"{list(arr.shape)}; the net expects {list(tensor.shape)}")
        values = [torch.from_numpy(np.array(a, dtype=np.float32)) for a in entry.blobs]
        _copy(module, targets, values[:n])
        if len(values) == 2 * n:
            masks = {targets[i][0]: values[n + i].reshape(targets[i][1].shape) != 0
                     for i in range(n)}
            found[key] = LoadedMasks(_mask_kind(entry, net, key), masks)
    return found


def _check_complete(net: CaffeNet, layers: Sequence[CaffeLayerBlobs], source: str | Path,
                    allow: bool) -> None:
    names = {entry.name for entry in layers}
    missing = [name for name in net.keys if name not in names]
    if not missing:
        return
    extra = sorted(names - set(net.keys))
    text = (f"{source}: the net's layer(s) {', '.join(repr(n) for n in missing)} have no "
            "weights in the file" + (f" (the file's layers the net lacks: "
                                     f"{', '.join(repr(n) for n in extra)})" if extra else ""))
    if not allow:
        raise ConfigError(f"{text}; check the layer names, or allow it (--allow-missing, "
                          "allow_missing=True) to keep their initial weights")
    warnings.warn(f"{text}; they keep their initial weights", stacklevel=3)


def _check_finite(entry: CaffeLayerBlobs, source: str | Path, allow: bool) -> None:
    for i, arr in enumerate(entry.blobs):
        bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
        if not bad:
            continue
        text = (f"{source}: layer '{entry.name}' blob {i} holds {bad:,} NaN or infinite "
                f"value(s) of {arr.size:,}")
        if not allow:
            raise NonFiniteError(f"{text}; the model diverged or the file is damaged (allow it "
                                 "with --allow-nonfinite, allow_nonfinite=True)")
        warnings.warn(f"{text}; loaded as they are", stacklevel=3)


def _copy(module: nn.Module, targets: list[tuple[str, torch.Tensor]],
          values: list[torch.Tensor]) -> None:
    with torch.no_grad():
        if isinstance(module, CaffeBatchNorm):
            factor = float(values[2].reshape(-1)[0])
            scale = 0.0 if factor == 0 else 1.0 / factor
            module.running_mean.copy_(values[0].reshape(-1) * scale)
            module.running_var.copy_(values[1].reshape(-1) * scale)
            return
        for (_, tensor), value in zip(targets, values):
            tensor.copy_(value.reshape(tensor.shape))


def apply_masks(net: nn.Module, masks: dict[str, LoadedMasks], previous_portion: dict[str, float]
                ) -> None:
    """Set masks read from a caffemodel on the prepared layers of ``net``.

    DNS masks become the layers' surgery masks. INQ masks fix, at their current values rounded to
    the layer's level set, the entries whose mask is 0; ``previous_portion`` (module name ->
    portion) records the portion those stood for. Masks of a kind the layer is not prepared for are
    multiplied into the weights (a DNS model loaded into an INQ net: pruned entries become 0 and
    stay out of quantization) or, for INQ masks on a layer that is not under INQ, ignored.

    Example:
        >>> apply_masks(net, load_blobs(net, layers), {})  # doctest: +SKIP
    """
    for key, loaded in masks.items():
        module = net.get_submodule(key)
        layer = module if isinstance(module, CompressedLayer) else None
        if loaded.kind == "dns" and layer is not None and layer.dns_config is not None:
            for blob, mask in loaded.masks.items():
                if layer.mask(blob) is not None:
                    layer.set_mask(blob, mask)
        elif loaded.kind == "inq" and layer is not None and layer.inq_config is not None:
            _fix_inq(layer, loaded.masks, previous_portion.get(key, 0.0))
        elif loaded.kind == "dns":
            bake_masks(module, loaded.masks)


def bake_masks(module: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Multiply 0/1 masks into a plain layer's ``weight``/``bias``."""
    with torch.no_grad():
        for blob, mask in masks.items():
            getattr(module, blob).mul_(mask)


def _fix_inq(layer: CompressedLayer, masks: dict[str, torch.Tensor], portion: float) -> None:
    """Fix, at their rounded values, the entries an INQ mask marks as quantized (0)."""
    assert layer.inq_config is not None
    for blob in layer.blobs(layer.inq_config.include_bias):
        if blob in masks:
            layer.fix_entries(blob, ~masks[blob])
    layer.inq_portion.fill_(portion)


def net_blobs(net: CaffeNet, with_masks: bool = False) -> list[CaffeLayerBlobs]:
    """The blobs of every layer of ``net`` that holds any.

    By default, as a normal caffemodel stores them: masks baked in, only the plain blobs, under
    the base layer type (``Convolution``, ``InnerProduct``), so plain Caffe can load the result.
    With ``with_masks``, DNS and INQ layers keep their raw weights followed by their masks, under
    the layer type written in the net (``DNSConvolution``, ...), as the seed's Caffe stores them;
    that file resumes a stage with its masks.

    Example:
        >>> write_caffemodel("out.caffemodel", net_blobs(net))  # doctest: +SKIP
    """
    out: list[CaffeLayerBlobs] = []
    seen: set[str] = set()
    for step in net.steps:
        key = step.key
        if key is None or key in seen:
            continue
        seen.add(key)
        module = net.get_submodule(key)
        targets = _targets(module)
        masks = _masks(module) if with_masks else []
        arrays = [_plain(t) if masks else _effective(module, name, t) for name, t in targets]
        if isinstance(module, CaffeBatchNorm):
            arrays[2] = np.ones(1, dtype=np.float32)
        layer_type = step.spec.written_type if masks else step.spec.type
        out.append(CaffeLayerBlobs(step.spec.name, layer_type, arrays + masks,
                                   [False] * (len(arrays) + len(masks))))
    return out


def _masks(module: nn.Module) -> list[np.ndarray]:
    """DNS masks, or INQ free-entry masks (1 = free), of a prepared layer; else none."""
    if not isinstance(module, CompressedLayer):
        return []
    out = []
    for name, tensor in _targets(module):
        mask = module.mask(name)
        if mask is None:
            mask = module.free_entries(name)
        out.append(mask if mask is not None else torch.ones_like(tensor, dtype=torch.bool))
    return [m.to(torch.float32).cpu().numpy().copy() for m in out]


def _plain(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().to(torch.float32).cpu().numpy().copy()


def _effective(module: nn.Module, name: str, tensor: torch.Tensor) -> np.ndarray:
    value = tensor.detach()
    mask = module.mask(name) if isinstance(module, CompressedLayer) else None
    if mask is not None:
        value = value * mask
    return _plain(value)

"""One builder per supported Caffe layer type.

A builder receives the layer's :class:`LayerSpec`, the shapes of its bottoms and a random
generator for the fillers; it returns the module holding the layer's learned blobs (``None`` for
layers without any) and the operation computing the tops from the bottoms. Convolution and
InnerProduct layers are plain ``nn.ConvNd`` / ``nn.Linear``, so :func:`nncompress.prepare`
compresses them like any PyTorch layer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nncompress.errors import ConfigError
from nncompress.interop import caffe_checks as checks
from nncompress.interop import caffe_ops as ops
from nncompress.interop._layer_base import (
    Builder,
    Built,
    Op,
    Shape,
    axis_index,
    fill,
    opt_float,
    sub,
)
from nncompress.interop.caffe_losses import LOSS_BUILDERS, LOSS_TYPES
from nncompress.interop.caffe_spec import LayerSpec
from nncompress.interop.prototxt import Message, PrototxtError

__all__ = ["BUILDERS", "INPUT_TYPES", "LOSS_TYPES", "Built", "Op", "dummy_blob", "fill",
           "input_blob_shape"]

INPUT_TYPES = ("Data", "Input", "DummyData")

# -- parameterized layers -------------------------------------------------------------------

def _per_axis(m: Message, name: str, n: int, default: int, spec: LayerSpec) -> list[int]:
    h, w = m.get_int(f"{name}_h"), m.get_int(f"{name}_w")
    if h is not None or w is not None:
        if n != 2:
            raise PrototxtError(m.where, f"layer '{spec.name}': {name}_h/{name}_w need 2-D input")
        return [h if h is not None else default, w if w is not None else default]
    values = m.ints(name) if name != "kernel" else m.ints("kernel_size")
    if not values:
        return [default] * n
    if len(values) == 1:
        return values * n
    if len(values) != n:
        raise PrototxtError(m.where, f"layer '{spec.name}': {len(values)} values of {name} for "
                            f"{n} spatial axes")
    return values


def _convolution(spec: LayerSpec, shapes: list[Shape], gen: torch.Generator) -> Built:
    p = sub(spec, "convolution_param")
    shape = shapes[0]
    if axis_index(p.get_int("axis", 1) or 1, len(shape), spec) != 1:
        raise PrototxtError(p.where, f"layer '{spec.name}': only axis 1 is supported")
    nsp = len(shape) - 2
    if nsp not in (1, 2, 3):
        raise PrototxtError(spec.where, f"layer '{spec.name}': Convolution needs 3 to 5 input "
                            f"axes, its input has shape {list(shape)}")
    num_output = p.get_int("num_output")
    if num_output is None or num_output <= 0:
        raise PrototxtError(p.where, f"layer '{spec.name}': convolution_param needs num_output")
    kernel = _per_axis(p, "kernel", nsp, 0, spec)
    if min(kernel) <= 0:
        raise PrototxtError(p.where, f"layer '{spec.name}': kernel_size is required and > 0")
    stride, pad = _per_axis(p, "stride", nsp, 1, spec), _per_axis(p, "pad", nsp, 0, spec)
    dilation = _per_axis(p, "dilation", nsp, 1, spec)
    for name, values, low in (("kernel_size", kernel, 1), ("stride", stride, 1), ("pad", pad, 0),
                              ("dilation", dilation, 1)):
        checks.check_spatial(spec, p.where, name, values, low)
    group = p.get_int("group", 1)
    if group is None or group <= 0 or shape[1] % group or num_output % group:
        raise PrototxtError(p.where, f"layer '{spec.name}': group {group} must divide both the "
                            f"{shape[1]} input channels and num_output {num_output}")
    checks.check_params(spec, p.where, (num_output, shape[1] // group, *kernel))
    checks.check_window_output(spec, num_output, shape[2:], kernel, stride, pad, dilation)
    conv_class: Any = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[nsp - 1]
    module = conv_class(shape[1], num_output, tuple(kernel), stride=tuple(stride),
                        padding=tuple(pad), dilation=tuple(dilation),
                        groups=group, bias=bool(p.get_bool("bias_term", True)))
    fill(module.weight, p.message("weight_filler"), gen, spec)
    if module.bias is not None:
        fill(module.bias, p.message("bias_filler"), gen, spec)
    return Built(module, lambda m, xs, t: [m(xs[0])] if m is not None else [])


def _inner_product(spec: LayerSpec, shapes: list[Shape], gen: torch.Generator) -> Built:
    p = sub(spec, "inner_product_param")
    shape = shapes[0]
    axis = axis_index(p.get_int("axis", 1) or 0, len(shape), spec) if p.has("axis") else 1
    if p.get_bool("transpose", False):
        raise PrototxtError(p.where, f"layer '{spec.name}': transpose: true is not supported")
    num_output = p.get_int("num_output")
    if num_output is None or num_output <= 0:
        raise PrototxtError(p.where, f"layer '{spec.name}': inner_product_param needs num_output")
    checks.check_params(spec, p.where, (num_output, math.prod(shape[axis:])))
    module = nn.Linear(math.prod(shape[axis:]), num_output,
                       bias=bool(p.get_bool("bias_term", True)))
    fill(module.weight, p.message("weight_filler"), gen, spec)
    if module.bias is not None:
        fill(module.bias, p.message("bias_filler"), gen, spec)

    def op(m: nn.Module | None, xs: list[torch.Tensor], training: bool) -> list[torch.Tensor]:
        assert m is not None
        return [m(xs[0].flatten(axis) if axis < xs[0].dim() - 1 else xs[0])]

    return Built(module, op)


def _batch_norm(spec: LayerSpec, shapes: list[Shape], gen: torch.Generator) -> Built:
    p = sub(spec, "batch_norm_param")
    if len(shapes[0]) < 2:
        raise PrototxtError(spec.where, f"layer '{spec.name}': BatchNorm needs channels (2 or "
                            f"more axes); its input has shape {list(shapes[0])}")
    module = ops.CaffeBatchNorm(shapes[0][1], opt_float(p, "eps", 1e-5),
                                opt_float(p, "moving_average_fraction", 0.999),
                                p.get_bool("use_global_stats"))
    return Built(module, lambda m, xs, t: [m(xs[0])] if m is not None else [])


def _scale(spec: LayerSpec, shapes: list[Shape], gen: torch.Generator) -> Built:
    p = sub(spec, "scale_param")
    shape = shapes[0]
    axis = axis_index(p.get_int("axis", 1) or 0, len(shape), spec) if p.has("axis") else 1
    if len(shapes) > 1:
        covered = shapes[1]
    else:
        num_axes = p.get_int("num_axes", 1)
        assert num_axes is not None
        if num_axes < -1 or axis + num_axes > len(shape):
            raise PrototxtError(p.where, f"layer '{spec.name}': num_axes {num_axes} from axis "
                                f"{axis} goes past the {len(shape)} axes of its input")
        covered = shape[axis:] if num_axes == -1 else shape[axis:axis + num_axes]
    module = ops.CaffeScale(covered, axis, bool(p.get_bool("bias_term", False)),
                            learned_scale=len(shapes) == 1)
    if module.weight is not None:
        filler = p.message("filler") or Message(where=p.where, fields=[])
        if p.has("filler"):
            fill(module.weight, filler, gen, spec)
    if module.bias is not None:
        fill(module.bias, p.message("bias_filler"), gen, spec)

    def op(m: nn.Module | None, xs: list[torch.Tensor], training: bool) -> list[torch.Tensor]:
        assert m is not None
        return [m(xs[0], xs[1] if len(xs) > 1 else None)]

    return Built(module, op)


# -- layers without blobs -------------------------------------------------------------------

def _pooling(spec: LayerSpec, shapes: list[Shape], gen: torch.Generator) -> Built:
    p = sub(spec, "pooling_param")
    mode = p.get_enum("pool", ("MAX", "AVE", "STOCHASTIC"), "MAX")
    if mode == "STOCHASTIC":
        raise PrototxtError(p.where, f"layer '{spec.name}': STOCHASTIC pooling is not "
                            "supported; use MAX or AVE")
    if len(shapes[0]) != 4:
        raise PrototxtError(spec.where, f"layer '{spec.name}': Pooling needs 4-D input, got "
                            f"shape {list(shapes[0])}")
    if p.get_bool("global_pooling", False):
        checks.check_global_pooling(spec, p, _per_axis(p, "stride", 2, 1, spec),
                                    _per_axis(p, "pad", 2, 0, spec))
        kernel, stride, pad = list(shapes[0][2:]), [1, 1], [0, 0]
    else:
        kernel = _per_axis(p, "kernel", 2, 0, spec)
        stride, pad = _per_axis(p, "stride", 2, 1, spec), _per_axis(p, "pad", 2, 0, spec)
        if min(kernel) <= 0:
            raise PrototxtError(p.where, f"layer '{spec.name}': kernel_size is required")
        for name, values, low in (("kernel_size", kernel, 1), ("stride", stride, 1),
                                  ("pad", pad, 0)):
            checks.check_spatial(spec, p.where, name, values, low)
        if pad[0] >= kernel[0] or pad[1] >= kernel[1]:
            raise PrototxtError(p.where, f"layer '{spec.name}': pad {pad} must be smaller "
                                f"than the kernel {kernel}")
        checks.check_window_output(spec, shapes[0][1], shapes[0][2:], kernel, stride, pad, [1, 1])
    return Built(None, lambda m, xs, t: [ops.caffe_pool2d(xs[0], kernel, stride, pad, mode)])


def _relu(spec: LayerSpec, shapes: list[Shape], gen: torch.Generator) -> Built:
    slope = opt_float(sub(spec, "relu_param"), "negative_slope", 0.0)
    if slope == 0:
        return Built(None, lambda m, xs, t: [F.relu(xs[0])])
    return Built(None, lambda m, xs, t: [F.leaky_relu(xs[0], slope)])


def _dropout(spec: LayerSpec, shapes: list[Shape], gen: torch.Generator) -> Built:
    ratio = opt_float(sub(spec, "dropout_param"), "dropout_ratio", 0.5)
    return Built(None, lambda m, xs, t: [F.dropout(xs[0], ratio, training=t)])


def _lrn(spec: LayerSpec, shapes: list[Shape], gen: torch.Generator) -> Built:
    p = sub(spec, "lrn_param")
    size = p.get_int("local_size", 5)
    assert size is not None
    checks.check_spatial(spec, p.where, "local_size", [size], 1)
    if size % 2 == 0:
        raise PrototxtError(p.where, f"layer '{spec.name}': LRN local_size must be odd")
    alpha, beta, k = opt_float(p, "alpha", 1.0), opt_float(p, "beta", 0.75), opt_float(p, "k", 1.0)
    region = p.get_enum("norm_region", ("ACROSS_CHANNELS", "WITHIN_CHANNEL"), "ACROSS_CHANNELS")
    return Built(None, lambda m, xs, t: [ops.lrn(xs[0], size, alpha, beta, k, region)])


def _eltwise(spec: LayerSpec, shapes: list[Shape], gen: torch.Generator) -> Built:
    p = sub(spec, "eltwise_param")
    mode = p.get_enum("operation", ("PROD", "SUM", "MAX"), "SUM")
    coeff = p.floats("coeff") or [1.0] * len(shapes)
    if len(coeff) != len(shapes) or any(s != shapes[0] for s in shapes):
        raise PrototxtError(spec.where, f"layer '{spec.name}': Eltwise needs equal shapes and "
                            f"one coeff per bottom, got {[list(s) for s in shapes]}")

    def op(m: nn.Module | None, xs: list[torch.Tensor], training: bool) -> list[torch.Tensor]:
        out = xs[0] * coeff[0] if mode == "SUM" else xs[0]
        for c, x in zip(coeff[1:], xs[1:]):
            out = out + c * x if mode == "SUM" else out * x if mode == "PROD" else \
                torch.maximum(out, x)
        return [out]

    return Built(None, op)


def _concat(spec: LayerSpec, shapes: list[Shape], gen: torch.Generator) -> Built:
    p = sub(spec, "concat_param")
    axis = p.get_int("axis") if p.has("axis") else p.get_int("concat_dim", 1)
    assert axis is not None
    axis = axis_index(axis, len(shapes[0]), spec)
    return Built(None, lambda m, xs, t: [torch.cat(xs, axis)])


def _flatten(spec: LayerSpec, shapes: list[Shape], gen: torch.Generator) -> Built:
    p = sub(spec, "flatten_param")
    ndim = len(shapes[0])
    start = axis_index(p.get_int("axis", 1) or 0, ndim, spec) if p.has("axis") else 1
    end = axis_index(p.get_int("end_axis", -1) or 0, ndim, spec) if p.has("end_axis") else ndim - 1
    return Built(None, lambda m, xs, t: [xs[0].flatten(start, end)])


def _reshape(spec: LayerSpec, shapes: list[Shape], gen: torch.Generator) -> Built:
    p = sub(spec, "reshape_param")
    dims = (p.message("shape") or Message(where=p.where)).ints("dim")
    axis, num_axes = p.get_int("axis", 0) or 0, p.get_int("num_axes", -1)
    assert num_axes is not None

    def op(m: nn.Module | None, xs: list[torch.Tensor], training: bool) -> list[torch.Tensor]:
        shape = list(xs[0].shape)
        start = axis if axis >= 0 else len(shape) + axis + 1
        end = len(shape) if num_axes == -1 else start + num_axes
        new = [shape[start + i] if d == 0 else d for i, d in enumerate(dims)]
        return [xs[0].reshape(shape[:start] + new + shape[end:])]

    return Built(None, op)


def _softmax(spec: LayerSpec, shapes: list[Shape], gen: torch.Generator) -> Built:
    axis = sub(spec, "softmax_param").get_int("axis", 1) or 0
    return Built(None, lambda m, xs, t: [xs[0].softmax(axis)])


def _simple(fn: Callable[[torch.Tensor], torch.Tensor]) -> Builder:
    return lambda spec, shapes, gen: Built(None, lambda m, xs, t: [fn(xs[0])])


def _split(spec: LayerSpec, shapes: list[Shape], gen: torch.Generator) -> Built:
    n = len(spec.tops)
    return Built(None, lambda m, xs, t: [xs[0]] * n)


BUILDERS: dict[str, Builder] = {
    "Convolution": _convolution,
    "InnerProduct": _inner_product,
    "BatchNorm": _batch_norm,
    "Scale": _scale,
    "Pooling": _pooling,
    "ReLU": _relu,
    "Sigmoid": _simple(torch.sigmoid),
    "TanH": _simple(torch.tanh),
    "Dropout": _dropout,
    "LRN": _lrn,
    "Eltwise": _eltwise,
    "Concat": _concat,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Split": _split,
    "Softmax": _softmax,
    **LOSS_BUILDERS,
    "Silence": lambda spec, shapes, gen: Built(None, lambda m, xs, t: []),
}


def dummy_blob(spec: LayerSpec, index: int, gen: torch.Generator | None) -> Sequence[int]:
    """The shape of DummyData top ``index`` (one shape may serve all tops)."""
    p = sub(spec, "dummy_data_param")
    shapes = [s.ints("dim") for s in p.messages("shape")]
    if not shapes:
        legacy = [p.ints(k) for k in ("num", "channels", "height", "width")]
        if all(legacy):
            shapes = [list(v) for v in zip(*legacy)]
    if not shapes:
        raise PrototxtError(p.where, f"layer '{spec.name}': DummyData needs a shape")
    return shapes[index] if len(shapes) > 1 else shapes[0]


def input_blob_shape(spec: LayerSpec, index: int,
                     input_shape: Sequence[int] | None) -> tuple[int, ...]:
    """The shape (batch 1) of top ``index`` of a Data, Input or DummyData layer.

    Data layers read a database: ``input_shape`` (one example) stands for it, cropped as the
    layer's ``transform_param`` says.
    """
    if spec.type == "Data":
        if index > 0:
            return (1,)
        if input_shape is None:
            raise ConfigError(f"{spec.where}: the Data layer '{spec.name}' reads a database; "
                              "give the shape of one example (e.g. input_shape=(1, 28, 28), "
                              "or --data mnist on the command line)")
        crop = (spec.msg.message("transform_param") or Message(where="")).get_int(
            "crop_size", 0) or 0
        shape = tuple(input_shape)
        if crop:
            shape = (*shape[:-2], crop, crop)
        return (1, *shape)
    if spec.type == "Input":
        p = spec.msg.message("input_param") or Message(where=spec.where)
        dims = [s.ints("dim") for s in p.messages("shape")]
        if not dims:
            raise PrototxtError(p.where, f"layer '{spec.name}': Input needs input_param "
                                "{ shape { dim: ... } }")
        return (1, *(dims[index] if len(dims) > 1 else dims[0])[1:])
    return (1, *dummy_blob(spec, index, None)[1:])

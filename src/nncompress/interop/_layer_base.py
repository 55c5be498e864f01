"""What every Caffe layer builder shares: the :class:`Built` result, parameter access, fillers.

A builder receives the layer's :class:`LayerSpec`, the shapes of its bottoms and a random
generator for the fillers; it returns the module holding the layer's learned blobs (``None`` for
layers without any) and the operation computing the tops from the bottoms.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from nncompress.interop.caffe_spec import LayerSpec
from nncompress.interop.prototxt import Message, PrototxtError

__all__ = ["Builder", "Built", "Op", "Shape", "axis_index", "fill", "opt_float", "sub"]

Shape = tuple[int, ...]
# op(module, bottoms, training) -> tops
Op = Callable[[nn.Module | None, list[torch.Tensor], bool], list[torch.Tensor]]


@dataclass
class Built:
    """What a builder returns."""

    module: nn.Module | None
    op: Op


Builder = Callable[[LayerSpec, list[Shape], torch.Generator], Built]


def sub(spec: LayerSpec, name: str) -> Message:
    """The layer's parameter message ``name`` (an empty one when absent)."""
    return spec.msg.message(name) or Message(where=spec.where)


def axis_index(axis: int, ndim: int, spec: LayerSpec) -> int:
    """``axis`` (negative counts from the end) as an index into ``ndim`` axes, checked."""
    if not -ndim <= axis < ndim:
        raise PrototxtError(spec.where, f"layer '{spec.name}': axis {axis} is outside the "
                            f"{ndim} axes of its input")
    return axis % ndim


# -- fillers --------------------------------------------------------------------------------

_FILLERS = ("constant", "gaussian", "uniform", "xavier", "msra")


def fill(t: torch.Tensor, filler: Message | None, gen: torch.Generator, spec: LayerSpec) -> None:
    """Fill ``t`` in place the way Caffe's filler does (default: constant 0)."""
    kind = "constant" if filler is None else filler.get_str("type", "constant") or "constant"
    f = filler or Message(where=spec.where)
    count = t.numel()
    fan_in = count // t.shape[0] if t.dim() > 0 and t.shape[0] else 1
    fan_out = count // t.shape[1] if t.dim() > 1 and t.shape[1] else 1
    norm = f.get_enum("variance_norm", ("FAN_IN", "FAN_OUT", "AVERAGE"), "FAN_IN")
    n = {"FAN_IN": fan_in, "FAN_OUT": fan_out, "AVERAGE": (fan_in + fan_out) / 2}[norm]
    with torch.no_grad():
        if kind == "constant":
            t.fill_(f.get_float("value", 0.0) or 0.0)
        elif kind == "gaussian":
            if (f.get_int("sparse", -1) or -1) >= 0:
                raise PrototxtError(f.where, "the sparse gaussian filler is not supported")
            std = opt_float(f, "std", 1.0)
            if not std >= 0:
                raise PrototxtError(f.where, f"layer '{spec.name}': the gaussian filler's std "
                                    f"{std} must be >= 0")
            t.normal_(f.get_float("mean", 0.0) or 0.0, std, generator=gen)
        elif kind == "uniform":
            low, high = f.get_float("min", 0.0) or 0.0, opt_float(f, "max", 1.0)
            if not low <= high:
                raise PrototxtError(f.where, f"layer '{spec.name}': the uniform filler's min "
                                    f"{low} must not exceed its max {high}")
            t.uniform_(low, high, generator=gen)
        elif kind == "xavier":
            bound = math.sqrt(3.0 / n)
            t.uniform_(-bound, bound, generator=gen)
        elif kind == "msra":
            t.normal_(0.0, math.sqrt(2.0 / n), generator=gen)
        else:
            raise PrototxtError(f.where, f"layer '{spec.name}': filler type {kind!r} is not "
                                f"supported; supported: {', '.join(_FILLERS)}")


def opt_float(m: Message, name: str, default: float) -> float:
    """The float field ``name`` of ``m``, or ``default`` when absent (unlike ``or``, keeps 0)."""
    value = m.get_float(name)
    return default if value is None else value

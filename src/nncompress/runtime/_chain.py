"""A model's forward as a chain of simple operations, found by tracing it with ``torch.fx``.

The fused path of :mod:`nncompress.runtime._fused` runs models whose forward, traced, is one
input passed through a sequence of operations each taking the previous result and nothing else:
sparse (and plain) Linear layers, sparse convolutions, ReLU, 2x2 stride-2 max-pooling and
``flatten(1)``. LeNet-5, LeNet-300-100 and the tiny MLP are such chains; a model with a branch,
a residual sum, data-dependent control flow or any other operation is not, and keeps its own
forward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from nncompress.runtime._base import SparseLayer
from nncompress.runtime._conv import SparseConv
from nncompress.runtime._linear import SparseLinear
from nncompress.runtime._pool import MaxPool2x2, replaceable_pool

__all__ = ["Op", "chain_of"]

KINDS = ("linear", "conv", "dense_linear", "relu", "pool", "flatten")
_RELUS: tuple[Any, ...] = (torch.relu, F.relu)


@dataclass(frozen=True)
class Op:
    """One operation of a chain: its kind (one of ``KINDS``) and, for layers, the module."""

    kind: str
    module: nn.Module | None = None
    ceil_mode: bool = False  # pools only


class _Tracer(fx.Tracer):
    """Keeps the runtime's layers whole (their forward branches on the input)."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, (SparseLayer, MaxPool2x2)) or super().is_leaf_module(
            m, module_qualified_name)


def chain_of(model: nn.Module) -> list[Op] | None:
    """The operations of ``model``'s forward if it is a chain of supported ones, else None.

    Args:
        model: a model (its sparse layers already in place).

    Returns:
        The operations in order, or None when the forward does not trace (data-dependent
        control flow) or is not such a chain.

    Example:
        >>> [op.kind for op in chain_of(nn.Sequential(nn.Flatten(), nn.ReLU()))]
        ['flatten', 'relu']
        >>> chain_of(nn.Sequential(nn.Sigmoid())) is None
        True
    """
    try:
        graph = _Tracer().trace(model)
    except Exception:  # any model that does not trace keeps its own forward
        return None
    ops: list[Op] = []
    previous: fx.Node | None = None
    for node in graph.nodes:
        if node.op == "placeholder":
            if previous is not None:
                return None  # more than one input
            previous = node
        elif node.op == "output":
            return ops if node.args == (previous,) and previous is not None and ops else None
        else:
            op = _op_of(model, node, previous)
            if op is None:
                return None
            ops.append(op)
            previous = node
    return None


def _op_of(model: nn.Module, node: fx.Node, previous: fx.Node | None) -> Op | None:
    """The operation of one node, if it takes exactly the previous node's result."""
    if previous is None or not node.args or node.args[0] is not previous:
        return None
    rest, kwargs = node.args[1:], dict(node.kwargs)
    if node.op == "call_module" and not rest and not kwargs:
        return _module_op(model.get_submodule(str(node.target)))
    if node.op == "call_function" and node.target in _RELUS:
        return Op("relu") if not rest and set(kwargs) <= {"inplace"} else None
    if node.op == "call_function" and node.target is torch.flatten:
        return Op("flatten") if _flattens_from_1(rest, kwargs) else None
    if node.op == "call_method" and node.target in ("relu", "relu_"):
        return Op("relu") if not rest and not kwargs else None
    if node.op == "call_method" and node.target == "flatten":
        return Op("flatten") if _flattens_from_1(rest, kwargs) else None
    return None


def _flattens_from_1(rest: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    args = dict(zip(("start_dim", "end_dim"), rest)) | kwargs
    return set(args) <= {"start_dim", "end_dim"} and args.get("start_dim", 0) == 1 and \
        args.get("end_dim", -1) == -1


def _module_op(module: nn.Module) -> Op | None:
    if isinstance(module, SparseLinear):
        return Op("linear", module)
    if isinstance(module, SparseConv):
        return Op("conv", module)
    if type(module) is nn.Linear:
        return Op("dense_linear", module)
    if type(module) is nn.ReLU:
        return Op("relu")
    if isinstance(module, MaxPool2x2):
        return Op("pool", ceil_mode=module.ceil_mode)
    if replaceable_pool(module):
        return Op("pool", ceil_mode=bool(module.ceil_mode))  # type: ignore[arg-type]
    if type(module) is nn.Flatten and module.start_dim == 1 and module.end_dim == -1:
        return Op("flatten")
    return None

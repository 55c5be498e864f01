"""The fused path: a whole chain model run as a few NumPy and SciPy calls, batch by batch.

At batch 1 a LeNet forward through modules spends most of its time on per-call overhead
(module dispatch, torch operator dispatch, tensor bookkeeping), not arithmetic. For a model
whose forward is a chain (:mod:`nncompress.runtime._chain`), :class:`FusedForward` replaces the
model's ``forward``: each operation becomes one to three NumPy calls and SciPy's compiled CSR
kernel, on C-contiguous arrays in a batch-last layout (``(C, H, W, N)``, ``(features, N)``):

* a sparse Linear layer is ``Y = W X`` with ``X`` the ``(in, N)`` activations: one
  ``csr_matvecs`` call (``csr_matvec`` for one input) over the layer's own CSR arrays, into the
  bias; a ReLU right after it runs in the same step;
* a sparse convolution copies the strided ``(C, kh, kw, out_h, out_w, N)`` window view of its
  input into the ``(C·kh·kw) x (positions·N)`` patch matrix and multiplies it the same way
  (:mod:`._fused_conv`); its result is already the next layer's ``(O, out_h, out_w, N)`` input;
* ReLU, 2x2 max-pooling and ``flatten(1)`` are one or two NumPy calls (flatten: none).

The kernels are those behind ``scipy.sparse``'s own products, from its ``_sparsetools``
module; a SciPy without them (or no SciPy) leaves models module by module. Inputs the path does
not take (a batch above the rule's limit, another dtype or device, gradients, a layer set to a
fixed mode, shapes a step cannot handle) run the model's own forward. Forward hooks of the inner
layers do not run on the fused path. Each call allocates its own arrays (threads may share a
model).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from nncompress.runtime._base import CHANGES, SparseLayer
from nncompress.runtime._chain import Op, chain_of
from nncompress.runtime._fused_conv import conv_step

__all__ = ["FusedForward", "compile_steps", "kernel_available"]

Step = Callable[[Any], Any]
Made = tuple[Step, tuple[int, ...], bool]  # step, output shape (batch last), output owned

try:  # SciPy's compiled CSR kernels: Y += A X for a CSR A and row-major X, Y (y += A x)
    from scipy.sparse import _sparsetools
    _MATVECS: Any = _sparsetools.csr_matvecs
    _MATVEC: Any = _sparsetools.csr_matvec
except (ImportError, AttributeError):  # no SciPy (or another layout of it): no fused path
    _MATVECS = _MATVEC = None


def kernel_available() -> bool:
    """Whether SciPy's compiled CSR kernel, which the fused path needs, can be used.

    Example:
        >>> isinstance(kernel_available(), bool)
        True
    """
    return _MATVECS is not None


def _csr_arrays(layer: SparseLayer) -> tuple[Any, Any, Any]:
    return (layer.weight_row_ptr.numpy(), layer.weight_cols.numpy(),
            layer.weight_values.numpy())


def _bias_filled(bias: Any, rows: int, cols: int, dtype: Any) -> Any:
    out = np.empty((rows, cols), dtype)
    if bias is None:
        out.fill(0)
    elif cols == 1:
        out[:, 0] = bias
    else:
        out[...] = bias[:, None]
    return out


def _linear(op: Op, shape: tuple[int, ...], owned: bool, dtype: Any,
            relu: bool = False) -> Made | None:
    """A sparse Linear layer's step (and the ReLU after it, with ``relu``: one call fewer)."""
    layer = op.module
    assert isinstance(layer, SparseLayer)
    rows, cols = layer.csr_shape
    if len(shape) != 2 or shape[0] != cols:
        return None
    n = shape[1]
    ptr, idx, val = _csr_arrays(layer)
    bias = None if layer.bias is None else layer.bias.numpy()
    zero = np.zeros((), dtype)

    def step(a: Any) -> Any:
        out = _bias_filled(bias, rows, n, dtype)
        _MATVECS(rows, cols, n, ptr, idx, val, a, out)
        return np.maximum(out, zero, out=out) if relu else out

    def one_row(a: Any) -> Any:  # the one-vector kernel: matvecs costs a call per non-zero
        out = np.zeros(rows, dtype) if bias is None else bias.copy()
        _MATVEC(rows, cols, ptr, idx, val, a, out)
        if relu:
            np.maximum(out, zero, out=out)
        return out.reshape(rows, 1)
    return one_row if n == 1 else step, (rows, n), True


def _conv(op: Op, shape: tuple[int, ...], owned: bool, dtype: Any) -> Made | None:
    return conv_step(op, shape, dtype, _MATVECS)


def _dense_linear(op: Op, shape: tuple[int, ...], owned: bool, dtype: Any) -> Made | None:
    layer = op.module
    assert isinstance(layer, nn.Linear)
    if len(shape) != 2 or shape[0] != layer.in_features:
        return None
    weight = layer.weight.detach()
    bias = None if layer.bias is None else layer.bias.detach().view(-1, 1)

    def step(a: Any) -> Any:  # torch's GEMM (its thread setting), on the arrays' memory
        x = torch.from_numpy(a)
        out = weight @ x if bias is None else torch.addmm(bias, weight, x)
        return out.numpy()
    return step, (layer.out_features, shape[1]), True


def _relu(op: Op, shape: tuple[int, ...], owned: bool, dtype: Any) -> Made | None:
    zero = np.zeros((), dtype)  # an array, not the number 0: half the cost per call (measured)

    def step(a: Any) -> Any:
        return np.maximum(a, zero, out=a) if owned else np.maximum(a, zero)
    return step, shape, True


def _pool(op: Op, shape: tuple[int, ...], owned: bool, dtype: Any) -> Made | None:
    if len(shape) != 4:
        return None
    c, h, w, n = shape
    if (op.ceil_mode and (h % 2 or w % 2)) or h < 2 or w < 2:
        return None  # partial windows: the model's own forward
    h2, w2 = 2 * (h // 2), 2 * (w // 2)

    def step(a: Any) -> Any:
        rows = np.maximum(a[:, 0:h2:2], a[:, 1:h2:2])
        return np.maximum(rows[:, :, 0:w2:2], rows[:, :, 1:w2:2])
    return step, (c, h // 2, w // 2, n), True


def _flatten(op: Op, shape: tuple[int, ...], owned: bool, dtype: Any) -> Made | None:
    flat = (math.prod(shape[:-1]), shape[-1])

    def step(a: Any) -> Any:
        return a.reshape(flat)
    return step, flat, owned


_MAKERS: dict[str, Callable[[Op, tuple[int, ...], bool, Any], Made | None]] = {
    "linear": _linear, "conv": _conv, "dense_linear": _dense_linear, "relu": _relu,
    "pool": _pool, "flatten": _flatten}


def compile_steps(ops: list[Op], shape: tuple[int, ...], dtype: torch.dtype
                  ) -> tuple[list[Step], tuple[int, ...], bool] | None:
    """The NumPy steps that run ``ops`` on inputs of (torch) shape ``shape``, batch first.

    Args:
        ops: the chain (see :func:`nncompress.runtime._chain.chain_of`).
        shape: the input's shape, ``(N, ...)``.
        dtype: the input's dtype (the layers' too).

    Returns:
        ``(steps, output shape batch last, whether the output is a new array)``, or None when
        a step cannot take these shapes.
    """
    np_dtype = np.dtype(str(dtype).removeprefix("torch."))
    current, owned, steps, at = (*shape[1:], shape[0]), False, [], 0
    while at < len(ops):
        op = ops[at]
        if op.kind == "linear" and at + 1 < len(ops) and ops[at + 1].kind == "relu":
            made, at = _linear(op, current, owned, np_dtype, relu=True), at + 1
        else:
            made = _MAKERS[op.kind](op, current, owned, np_dtype)
        if made is None:
            return None
        step, current, owned = made
        steps.append(step)
        at += 1
    return steps, current, owned


class FusedForward:
    """A chain model's ``forward``: the fused path for small batches, the model's own otherwise.

    The model is traced on the first call that the fused path could take (not at load:
    tracing costs milliseconds); a model that is not a chain then keeps its own forward.

    Args:
        model: the model (its sparse layers in place); its ``forward`` is this object.
        max_batch: the largest batch the fused path runs (see :mod:`._rule`).
        ops: its chain, when already known.
    """

    def __init__(self, model: nn.Module, max_batch: int, ops: list[Op] | None = None) -> None:
        self.model = model
        self.max_batch = max_batch
        self.ops: list[Op] | None = None
        self._plans: dict[Any, Any] = {}
        self._layers: list[nn.Module] = []
        self._held: list[tuple[dict[str, Any], str, Any]] = []
        self._dtype: torch.dtype | None = None
        self._seen = -1  # CHANGES at the last full check
        self._watch_all = False  # a plain layer in the chain: check its tensors every call
        if ops is not None:
            self._take(ops)

    def _take(self, ops: list[Op]) -> None:
        self.ops = ops
        self._layers = [op.module for op in ops if op.module is not None]
        self._watch_all = any(not isinstance(m, SparseLayer) for m in self._layers)
        self._refresh()

    def chain(self) -> list[Op]:
        """The model's chain (traced on first use; empty when it is not a chain)."""
        if self.ops is None:
            ops = chain_of(self.model)
            self._take(ops if ops is not None and any(
                isinstance(op.module, SparseLayer) for op in ops) else [])
        assert self.ops is not None
        return self.ops

    def _refresh(self) -> None:
        """Note the tensors the steps read (``.to()`` replaces them) and their one dtype."""
        self._plans.clear()
        self._held, dtypes = [], set()
        for layer in self._layers:
            tensors = layer._buffers if isinstance(layer, SparseLayer) else layer._parameters
            for name in ("weight_values", "weight", "bias"):
                tensor = tensors.get(name)
                if tensor is not None:
                    self._held.append((tensors, name, tensor))
                    dtypes.add((tensor.dtype, tensor.is_cpu))
        one = dtypes.pop() if len(dtypes) == 1 else None
        self._dtype = one[0] if one is not None and one[1] else None  # mixed or not CPU: off

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        x = args[0] if len(args) == 1 and not kwargs else None
        # Plain attribute reads first: at batch 1 these checks cost as much as a layer.
        plan = self._plans.get(x.shape) if type(x) is torch.Tensor else None
        if (plan is None or x.dtype is not self._dtype or not x.is_cpu  # type: ignore[union-attr]
                or (x.requires_grad and torch.is_grad_enabled())  # type: ignore[union-attr]
                or not ((CHANGES[0] == self._seen and not self._watch_all) or self._current())):
            return self._first_or_other(args, kwargs)
        return self._run(plan, x)  # type: ignore[arg-type]

    def _first_or_other(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """A shape seen for the first time (compile its steps), or an input the path refuses."""
        x = args[0] if len(args) == 1 and not kwargs else None
        if not (isinstance(x, torch.Tensor) and x.is_cpu and x.dim() >= 2
                and 0 < x.shape[0] <= self.max_batch and self.chain()):
            return type(self.model).forward(self.model, *args, **kwargs)
        # a second look: the first may have found replaced tensors and dropped the plans
        if ((self._current() or self._current()) and x.dtype is self._dtype
                and not (x.requires_grad and torch.is_grad_enabled())
                and x.shape not in self._plans and len(self._plans) < 64):
            plan = self._plans[x.shape] = compile_steps(self.chain(), tuple(x.shape), x.dtype)
            if plan is not None:
                return self._run(plan, x)
        return type(self.model).forward(self.model, *args, **kwargs)

    def _run(self, plan: Any, x: torch.Tensor) -> torch.Tensor:
        steps, out_shape, owned = plan
        array = x.numpy() if not x.requires_grad else x.detach().numpy()
        if out_shape[-1] == 1:  # one input: batch last is a reshape
            a = np.ascontiguousarray(array.reshape((*array.shape[1:], 1)))
            for step in steps:  # each takes and gives C-contiguous arrays
                a = step(a)
            out = a.reshape((1, *out_shape[:-1]))
            return torch.from_numpy(out if owned else out.copy())
        a = np.ascontiguousarray(np.moveaxis(array, 0, -1))
        for step in steps:
            a = step(a)
        return torch.from_numpy(np.array(np.moveaxis(a, -1, 0), order="C"))

    def _current(self) -> bool:
        """Layers in their auto mode, holding the tensors the plans were made with."""
        if CHANGES[0] == self._seen and not self._watch_all:
            return True  # no sparse layer changed since the last full check
        for layer in self._layers:
            if getattr(layer, "_mode", "auto") != "auto":
                return False
        for tensors, name, tensor in self._held:
            if tensors.get(name) is not tensor:  # .to(), .double(), ...: compile again
                self._refresh()
                return False  # this call's plan, if any, is stale: the caller asks again
        self._seen = CHANGES[0]
        return True

    def __getstate__(self) -> dict[str, Any]:
        # compiled steps are closures: copies and pickles compile their own
        return {**self.__dict__, "_plans": {}}

"""Sparse inference: run a compact (.ncz) model with its DNS/INQ layers kept sparse.

:func:`load` rebuilds the model from a ``.ncz`` file and replaces each Linear and Conv1d/Conv2d
layer whose weight is mostly zeros by a :class:`SparseLinear` / :class:`SparseConv`: the weight
is held in CSR form (values, int32 column indices, int32 row pointers; INQ values stay exact
levels) and the dense weight is not kept. Each call runs the sparse kernel or rebuilds
the dense weight for that call, by a rule measured on a CPU (:mod:`nncompress.runtime._rule`).
Sparse kernels use SciPy's CSR product when SciPy is installed (faster on the CPUs measured),
``torch.sparse`` otherwise. The layers are for inference: a call that needs gradients runs the
dense path. 2x2, stride-2 max-pool layers become :class:`MaxPool2x2` (same values, faster
on the CPUs measured) unless ``fast_pool=False``.

A model whose forward is a chain of such layers, ReLU, max-pooling and ``flatten(1)`` (LeNet-5,
LeNet-300-100) also gets a fused ``forward`` for small batches
(:mod:`nncompress.runtime._fused`): the whole model as a few NumPy calls and SciPy's CSR
kernel, without per-module dispatch; other inputs run the model's own forward.

Example:
    >>> import tempfile, pathlib, torch
    >>> from nncompress.models import build_model
    >>> from nncompress.export import load_compact, save_compact
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "m.ncz"
    >>> _ = save_compact(build_model("tiny_mlp"), target)
    >>> fast = load(target)
    >>> x = torch.randn(2, 1, 28, 28)
    >>> torch.allclose(fast(x), load_compact(target)(x), atol=1e-6)
    True
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from nncompress.runtime._base import BACKENDS, SparseLayer, resolve_backend
from nncompress.runtime._conv import SparseConv, convertible_conv
from nncompress.runtime._csr import CSRMatrix, scipy_available
from nncompress.runtime._fused import FusedForward, kernel_available
from nncompress.runtime._linear import SparseLinear
from nncompress.runtime._pool import MaxPool2x2, replaceable_pool
from nncompress.runtime._rule import FUSED_MAX_BATCH, use_sparse

__all__ = ["BACKENDS", "CSRMatrix", "FusedForward", "MaxPool2x2", "SparseConv", "SparseLayer",
           "SparseLinear", "fused", "load", "scipy_available", "sparsify", "use_sparse",
           "weight_bytes"]

# Above this density a layer stays as it is: its CSR arrays would be over half the dense bytes
# and a dense layer in memory is faster (see nncompress.runtime._rule).
MAX_DENSITY = 0.25


def load(path: str | Path, *, allow_import: bool = False, backend: str = "auto",
         fast_pool: bool = True, fuse: bool = True) -> nn.Module:
    """Build the inference model of a .ncz file, its sparse layers in CSR form.

    Args:
        path: the .ncz file.
        allow_import: as for :func:`nncompress.export.load_compact`.
        backend: ``"auto"`` (SciPy when installed, else ``torch.sparse``), ``"scipy"`` or
            ``"torch"``.
        fast_pool: also replace 2x2 stride-2 ``nn.MaxPool2d`` layers by :class:`MaxPool2x2`
            (same values, several times faster on the CPUs measured).
        fuse: give a chain model the fused forward for small batches (not with
            ``backend="torch"``; needs SciPy).

    Returns:
        The model, in eval mode; its outputs equal ``load_compact(path)``'s within float32
        rounding (sums run in another order).

    Raises:
        FormatError: the file is not a valid .ncz file (as ``load_compact``).
        ConfigError: an import-path architecture without ``allow_import``, or a bad backend.

    Example:
        >>> # see the module's example
    """
    from nncompress.export import load_compact

    resolve_backend(backend)  # a bad backend fails before the file is read
    return sparsify(load_compact(path, allow_import=allow_import), backend=backend,
                    fast_pool=fast_pool, fuse=fuse)


def sparsify(model: nn.Module, *, backend: str = "auto", max_density: float = MAX_DENSITY,
             fast_pool: bool = True, fuse: bool = True) -> nn.Module:
    """Replace, in place, each Linear/Conv1d/Conv2d at or below ``max_density`` by its sparse form.

    Args:
        model: a finalized model (plain layers, pruned weights zero).
        backend: as for :func:`load`.
        max_density: layers with more non-zero weights than this fraction stay as they are.
        fast_pool: as for :func:`load`.
        fuse: as for :func:`load`.

    Returns:
        The same model, in eval mode.

    Example:
        >>> layer = nn.Sequential(nn.Linear(4, 4))
        >>> with torch.no_grad():
        ...     _ = layer[0].weight.zero_()
        >>> type(sparsify(layer)[0]).__name__
        'SparseLinear'
    """
    resolve_backend(backend)
    _replace_layers(model, backend, max_density, fast_pool)
    if fuse and backend != "torch" and kernel_available() and any(
            isinstance(m, SparseLayer) for m in model.modules()):
        # traced on first use: a model that is not a chain keeps its own forward
        model.forward = FusedForward(model, FUSED_MAX_BATCH)  # type: ignore[method-assign]
    return model.eval()


def fused(model: nn.Module) -> FusedForward | None:
    """The model's fused forward (see :func:`load`), or None when it runs module by module.

    A model that is not a chain holds one whose :meth:`FusedForward.chain` is empty.

    Example:
        >>> fused(nn.Sequential(nn.Linear(2, 2))) is None
        True
    """
    forward = model.__dict__.get("forward")
    return forward if isinstance(forward, FusedForward) else None


def _replace_layers(model: nn.Module, backend: str, max_density: float,
                    fast_pool: bool) -> None:
    for name, child in list(model.named_children()):
        if fast_pool and replaceable_pool(child):
            setattr(model, name, MaxPool2x2(child.ceil_mode))  # type: ignore[arg-type]
            continue
        weight = getattr(child, "weight", None)
        convertible = type(child) is nn.Linear or convertible_conv(child)
        if convertible and isinstance(weight, torch.Tensor) and weight.dtype in (
                torch.float32, torch.float64):
            if int(torch.count_nonzero(weight)) <= max_density * weight.numel():
                new: nn.Module = (SparseLinear.from_linear(child, backend)  # type: ignore[arg-type]
                                  if type(child) is nn.Linear
                                  else SparseConv.from_conv(child, backend))  # type: ignore[arg-type]
                setattr(model, name, new)
        else:
            _replace_layers(child, backend, max_density, fast_pool)


def weight_bytes(model: nn.Module) -> int:
    """Bytes of the tensors a model holds for inference: parameters and buffers.

    Sparse layers count their CSR arrays and bias (they keep nothing else between calls).

    Example:
        >>> weight_bytes(nn.Linear(10, 10))
        440
    """
    seen: set[int] = set()
    total = 0
    for tensor in [*model.parameters(), *model.buffers()]:
        if tensor.data_ptr() not in seen:
            seen.add(tensor.data_ptr())
            total += tensor.numel() * tensor.element_size()
    return total

"""The part every sparse inference layer shares: its CSR weight, bias and path choice."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from nncompress.errors import ConfigError
from nncompress.runtime._csr import CSRMatrix, scipy_available
from nncompress.runtime._rule import use_sparse

__all__ = ["BACKENDS", "CHANGES", "MODES", "SparseLayer", "resolve_backend"]

BACKENDS = ("auto", "scipy", "torch")
MODES = ("auto", "sparse", "dense")
# Counts changes to any sparse layer's mode or tensors (.to(), a buffer replaced): the fused
# forward re-checks its layers only when this moved (one read per call instead of a scan).
CHANGES = [0]
_TENSORS = frozenset({"weight_values", "weight_cols", "weight_row_ptr", "bias"})
Kind = Literal["linear", "conv"]


def resolve_backend(backend: str) -> str:
    """``"scipy"`` or ``"torch"`` for a backend name; ``"auto"`` is SciPy when installed.

    Raises:
        ConfigError: an unknown name, or ``"scipy"`` without SciPy installed.

    Example:
        >>> resolve_backend("torch")
        'torch'
    """
    if backend not in BACKENDS:
        raise ConfigError(f"backend={backend!r} is not one of {', '.join(BACKENDS)}")
    if backend == "auto":
        return "scipy" if scipy_available() else "torch"
    if backend == "scipy" and not scipy_available():
        raise ConfigError("backend='scipy' needs SciPy: pip install scipy (or use 'torch')")
    return backend


class SparseLayer(nn.Module):
    """Base of :class:`SparseLinear` and :class:`SparseConv`: CSR buffers and the path rule.

    Buffers: ``weight_values`` (the non-zero weights, INQ levels exact), ``weight_cols``
    (int32 column of each), ``weight_row_ptr`` (int32, one per row plus one) and ``bias``.
    ``mode`` is ``"auto"`` (the measured rule of :mod:`nncompress.runtime._rule`), ``"sparse"``
    or ``"dense"`` (the dense weight is rebuilt for the call and dropped after it).
    """

    kind: Kind
    weight_values: torch.Tensor
    weight_cols: torch.Tensor
    weight_row_ptr: torch.Tensor
    bias: torch.Tensor | None

    def __init__(self, csr: CSRMatrix, bias: torch.Tensor | None, entries: int,
                 backend: str) -> None:
        super().__init__()
        self.register_buffer("weight_values", csr.values)
        self.register_buffer("weight_cols", csr.col_indices)
        self.register_buffer("weight_row_ptr", csr.row_ptr)
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        self.csr_shape = csr.shape
        self.entries = entries  # entries of the dense weight
        self.backend = resolve_backend(backend)
        # "auto" also takes torch's CSR addmv for single rows (see _linear.py): fewer calls.
        self.row_kernel_torch = backend in ("auto", "torch")
        self._mode = "auto"
        self._auto: dict[int, bool] = {}  # batch size -> the rule's choice
        self._kernel: Any = None  # the SciPy or torch CSR matrix over the buffers
        self._bias_np: Any = None
        self._torch_kernel: torch.Tensor | None = None
        self._bias_t: torch.Tensor | None = None
        self._dtype = csr.values.dtype

    @property
    def mode(self) -> str:
        """``"auto"`` (the measured rule), ``"sparse"`` or ``"dense"``."""
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        if value not in MODES:
            raise ConfigError(f"mode={value!r} is not one of {', '.join(MODES)}")
        self._mode = value
        CHANGES[0] += 1

    @property
    def density(self) -> float:
        """Non-zero weights over all entries of the dense weight."""
        return self.weight_values.numel() / self.entries if self.entries else 0.0

    def reduction(self) -> float:
        """Dense over sparse work per output (only convolutions use it; see the rule)."""
        return 1.0

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _TENSORS:
            CHANGES[0] += 1
        super().__setattr__(name, value)

    def _apply(self, fn: Any, recurse: bool = True) -> SparseLayer:
        # .to(), .double(), ... replace the buffers: views made of the old ones are dropped.
        self._kernel = self._bias_np = self._torch_kernel = self._bias_t = None
        out = super()._apply(fn, recurse)  # type: ignore[no-untyped-call]
        CHANGES[0] += 1
        self._dtype = self.weight_values.dtype
        return out  # type: ignore[no-any-return]

    def csr(self) -> CSRMatrix:
        """The weight as a :class:`CSRMatrix` over the current buffers."""
        return CSRMatrix(self.weight_values, self.weight_cols, self.weight_row_ptr,
                         self.csr_shape)

    def kernel(self) -> Any:
        """The backend's CSR matrix (SciPy ``csr_matrix`` or torch sparse CSR), made once."""
        if self._kernel is None:
            csr = self.csr()
            self._kernel = csr.scipy() if self.backend == "scipy" else csr.torch()
            if self.backend == "scipy" and self.bias is not None:
                self._bias_np = self.bias.numpy()
        return self._kernel

    def torch_kernel(self) -> torch.Tensor:
        """The weight as a torch sparse CSR tensor over the buffers, made once."""
        if self._torch_kernel is None:
            self._torch_kernel = self.csr().torch()
            self._bias_t = self.bias  # a plain attribute: a buffer lookup costs microseconds
        return self._torch_kernel

    def sparse_for(self, x: torch.Tensor, batch: int) -> bool:
        """Whether this call runs the sparse kernel (inference only: autograd goes dense)."""
        # Plain attributes only: at batch 1 a call's bookkeeping costs as much as its arithmetic.
        mode = self._mode
        if mode == "auto":
            use = self._auto.get(batch)
            if use is None:
                use = self._auto[batch] = use_sparse(self.kind, batch, self.reduction())
        else:
            use = mode == "sparse"
        return (use and batch > 0 and x.dtype is self._dtype and x.is_cpu
                and not (x.requires_grad and torch.is_grad_enabled()))

    def weight_bytes(self) -> int:
        """Bytes of the CSR arrays and the bias held by this layer."""
        held = [self.weight_values, self.weight_cols, self.weight_row_ptr, self.bias]
        return sum(t.numel() * t.element_size() for t in held if t is not None)

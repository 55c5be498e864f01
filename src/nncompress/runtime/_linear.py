"""SparseLinear: ``y = x W^T + b`` with W in CSR form."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nncompress.runtime._base import SparseLayer
from nncompress.runtime._csr import CSRMatrix

__all__ = ["SparseLinear"]


class SparseLinear(SparseLayer):
    """An inference-only ``nn.Linear`` whose weight is kept in CSR form.

    Example:
        >>> layer = nn.Linear(4, 3)
        >>> with torch.no_grad():
        ...     _ = layer.weight.mul_(torch.tensor([[1.0, 0, 0, 0]] * 3))
        >>> sparse = SparseLinear.from_linear(layer)
        >>> x = torch.randn(2, 4)
        >>> torch.allclose(sparse(x), layer(x))
        True
    """

    kind = "linear"

    def __init__(self, csr: CSRMatrix, bias: torch.Tensor | None, backend: str = "auto") -> None:
        super().__init__(csr, bias, csr.shape[0] * csr.shape[1], backend)
        self.out_features, self.in_features = csr.shape

    @classmethod
    def from_linear(cls, layer: nn.Linear, backend: str = "auto") -> SparseLinear:
        """The sparse form of a Linear layer (its weight's non-zeros, its bias).

        Args:
            layer: the layer; left unchanged.
            backend: ``"auto"`` (SciPy when installed, else torch), ``"scipy"`` or ``"torch"``.

        Returns:
            The new layer.
        """
        return cls(CSRMatrix.from_dense(layer.weight.detach()), layer.bias, backend)

    def dense_weight(self) -> torch.Tensor:
        """The ``(out_features, in_features)`` weight, rebuilt from the CSR arrays."""
        return self.csr().to_dense()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x W^T + b`` for ``x`` of shape ``(..., in_features)``."""
        flat = x if x.dim() == 2 else x.reshape(-1, self.in_features)
        batch = flat.shape[0]
        if not self.sparse_for(x, batch):
            return F.linear(x, self.dense_weight(), self.bias)
        flat = flat.detach() if flat.requires_grad else flat
        if batch == 1 and self.row_kernel_torch:
            # One row: torch's CSR matrix-vector product, bias included, is one call; SciPy's
            # is a faster product but the numpy round trip costs more (measured: LeNet-300-100
            # at one image 1.46x dense with this, 1.09x with SciPy).
            kernel = self._torch_kernel
            if kernel is None:
                kernel = self.torch_kernel()
            bias = self._bias_t
            row = flat[0]
            out = torch.mv(kernel, row) if bias is None else torch.addmv(bias, kernel, row)
            return out.view(1, -1) if x.dim() == 2 else out.view(*x.shape[:-1], -1)
        kernel = self._kernel if self._kernel is not None else self.kernel()
        if self.backend == "scipy":
            # (W @ x^T)^T: the kernel walks W's rows once for the whole batch; numpy adds the
            # bias (fewer calls than torch, which matters at batch 1).
            rows = flat.numpy()
            if batch == 1:
                vector = kernel @ rows[0]
                if self._bias_np is not None:
                    vector += self._bias_np
                out = torch.from_numpy(vector).view(1, -1)
            else:
                product = kernel @ rows.T
                if self._bias_np is not None:
                    product += self._bias_np[:, None]
                out = torch.from_numpy(np.ascontiguousarray(product.T))
        else:
            out = torch.sparse.mm(kernel, flat.t())
            if self.bias is not None:
                out.add_(self.bias.view(-1, 1))
            out = out.t().contiguous()
        return out if x.dim() == 2 else out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        """Sizes, density and backend, as ``print(model)`` shows them."""
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"density={self.density:.4f}, backend={self.backend}, mode={self.mode}")

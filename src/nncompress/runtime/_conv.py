"""SparseConv: Conv1d/Conv2d as a CSR weight times the gathered input patches.

The weight ``(O, C/g, kh, kw)`` becomes an ``O x (C·kh·kw)`` matrix (a grouped convolution is
the block-diagonal one; the blocks' zeros cost nothing in CSR) and only the columns that hold a
non-zero are kept. For each input size the layer precomputes, once, where each kept column reads
the input at each output position; a call gathers those values (``(columns, positions)``) and
multiplies them by the CSR matrix. The dense path rebuilds the weight and runs ``F.conv2d``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nncompress.runtime._base import SparseLayer
from nncompress.runtime._csr import CSRMatrix
from nncompress.runtime._rule import conv_reduction

__all__ = ["SparseConv", "convertible_conv"]

_Pair = tuple[int, int]


def convertible_conv(layer: nn.Module) -> bool:
    """Whether ``layer`` is a Conv1d/Conv2d that :class:`SparseConv` can replace.

    Example:
        >>> convertible_conv(nn.Conv2d(1, 2, 3))
        True
        >>> convertible_conv(nn.Conv2d(1, 2, 3, padding="same"))  # stays dense
        False
    """
    return (type(layer) in (nn.Conv1d, nn.Conv2d) and layer.padding_mode == "zeros"
            and not isinstance(layer.padding, str))


def _pair(value: tuple[int, ...], fill: int) -> _Pair:
    return (fill, value[0]) if len(value) == 1 else (value[0], value[1])


def _block_diagonal(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """``(O, C/g, ...)`` grouped weight -> ``(O, C, ...)`` with zeros off the group blocks."""
    out_ch, per_group = weight.shape[:2]
    full = weight.new_zeros(out_ch, per_group * groups, *weight.shape[2:])
    step = out_ch // groups
    for g in range(groups):
        full[g * step:(g + 1) * step, g * per_group:(g + 1) * per_group] = \
            weight[g * step:(g + 1) * step]
    return full


class SparseConv(SparseLayer):
    """An inference-only Conv1d/Conv2d whose weight is kept in CSR form.

    Example:
        >>> conv = nn.Conv2d(2, 3, 3, padding=1)
        >>> with torch.no_grad():
        ...     _ = conv.weight.mul_((torch.rand(3, 2, 3, 3) < 0.3).float())
        >>> sparse = SparseConv.from_conv(conv)
        >>> x = torch.randn(1, 2, 5, 5)
        >>> sparse.mode = "sparse"
        >>> torch.allclose(sparse(x), conv(x), atol=1e-6)
        True
    """

    kind = "conv"
    used_cols: torch.Tensor

    def __init__(self, layer: nn.Conv1d | nn.Conv2d, backend: str = "auto") -> None:
        weight = layer.weight.detach()
        matrix = _block_diagonal(weight, layer.groups).reshape(weight.shape[0], -1)
        used = (matrix != 0).any(0).nonzero().flatten()
        super().__init__(CSRMatrix.from_dense(matrix[:, used]), layer.bias, weight.numel(),
                         backend)
        self.register_buffer("used_cols", used.to(torch.int32))
        self.one_d = isinstance(layer, nn.Conv1d)
        self.weight_shape = tuple(weight.shape)
        self.groups = layer.groups
        self.kernel_size = _pair(layer.kernel_size, 1)
        self.stride = _pair(layer.stride, 1)
        self.padding = _pair(layer.padding, 0)  # type: ignore[arg-type]
        self.dilation = _pair(layer.dilation, 1)
        self.in_channels, self.out_channels = layer.in_channels, layer.out_channels
        self._gathers: dict[tuple[int, ...], tuple[np.ndarray | torch.Tensor, bool, _Pair]] = {}

    @classmethod
    def from_conv(cls, layer: nn.Conv1d | nn.Conv2d, backend: str = "auto") -> SparseConv:
        """The sparse form of a Conv1d/Conv2d layer (zeros padding, any stride or groups).

        Args:
            layer: the layer (see :func:`convertible_conv`); left unchanged.
            backend: ``"auto"`` (SciPy when installed, else torch), ``"scipy"`` or ``"torch"``.

        Returns:
            The new layer.
        """
        return cls(layer, backend)

    def dense_weight(self) -> torch.Tensor:
        """The layer's weight ``(O, C/g, k...)``, rebuilt from the CSR arrays."""
        out_ch = self.weight_shape[0]
        full = self.weight_values.new_zeros(out_ch, self.in_channels * self._kernel_numel())
        full[:, self.used_cols.long()] = self.csr().to_dense()
        full = full.view(out_ch, self.in_channels, -1)
        if self.groups > 1:
            per, step = self.in_channels // self.groups, out_ch // self.groups
            full = torch.cat([full[g * step:(g + 1) * step, g * per:(g + 1) * per]
                              for g in range(self.groups)])
        return full.reshape(self.weight_shape)

    def reduction(self) -> float:
        """Dense over sparse work per output position (see :mod:`._rule`)."""
        return conv_reduction(self.entries, self.weight_values.numel(),
                              self.used_cols.numel(), self.out_channels)

    def _kernel_numel(self) -> int:
        return self.kernel_size[0] * self.kernel_size[1]

    def _gather(self, shape: tuple[int, ...]) -> tuple[np.ndarray | torch.Tensor, bool, _Pair]:
        """Input index of each kept column at each output position, for input ``(C, H, W)``."""
        if shape not in self._gathers:
            numel = int(np.prod(shape))
            base = torch.arange(1, numel + 1, dtype=torch.float64).view(1, *shape)
            cols = F.unfold(base, self.kernel_size, self.dilation, self.padding, self.stride)[0]
            index = cols[self.used_cols.long()].long() - 1
            padded = bool((index < 0).any())
            index[index < 0] = numel  # padding reads a zero appended to the input
            out_hw = tuple(
                (shape[i + 1] + 2 * self.padding[i] - self.dilation[i] * (k - 1) - 1)
                // self.stride[i] + 1 for i, k in enumerate(self.kernel_size))
            table = index.to(torch.int32).numpy() if self.backend == "scipy" else index
            self._gathers[shape] = (table, padded, (out_hw[0], out_hw[1]))
        return self._gathers[shape]

    def index_bytes(self) -> int:
        """Bytes of the gather tables made so far (one per input size seen)."""
        return sum(t.nbytes if isinstance(t, np.ndarray) else t.numel() * t.element_size()
                   for t, _, _ in self._gathers.values())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The convolution of ``x`` (``(N, C, L)`` or ``(N, C, H, W)``)."""
        x4 = x.unsqueeze(2) if self.one_d else x
        if self.sparse_for(x, x4.shape[0]):
            out = self._sparse_forward(x4.detach())
        else:
            weight = self.dense_weight()
            out = F.conv2d(x4, weight.unsqueeze(2) if self.one_d else weight, self.bias,
                           self.stride, self.padding, self.dilation, self.groups)
        return out.squeeze(2) if self.one_d else out

    def _sparse_forward(self, x: torch.Tensor) -> torch.Tensor:
        # One image: gather the (columns, positions) patch matrix and multiply. Several: put
        # the batch innermost first, so each gathered entry is a contiguous run of ``batch``
        # values and the product streams over (positions x batch) columns.
        batch = x.shape[0]
        index, padded, (out_h, out_w) = self._gather(tuple(x.shape[1:]))
        kernel = self._kernel if self._kernel is not None else self.kernel()
        if isinstance(index, np.ndarray):  # SciPy: gather and add the bias in numpy
            flat = x.numpy().reshape(batch, -1)
            if batch == 1:
                if padded:
                    flat = np.concatenate([flat, np.zeros((1, 1), flat.dtype)], 1)
                out_np = kernel @ flat[0][index]  # (O, positions)
            else:
                inner = np.zeros((flat.shape[1] + padded, batch), flat.dtype)
                inner[:flat.shape[1]] = flat.T
                out_np = kernel @ inner.take(index.ravel(), 0).reshape(index.shape[0], -1)
            if self._bias_np is not None:
                out_np += self._bias_np[:, None]
            out = torch.from_numpy(out_np)
        else:
            inner_t = x.reshape(batch, -1).t()
            if padded:
                inner_t = torch.cat([inner_t, inner_t.new_zeros(1, batch)])
            columns = inner_t[index.reshape(-1)].reshape(index.shape[0], -1)
            out = torch.sparse.mm(kernel, columns)
            if self.bias is not None:
                out.add_(self.bias.view(-1, 1))
        if batch > 1:  # (O, positions, batch) -> (batch, O, positions)
            out = out.view(-1, out_h * out_w, batch).permute(2, 0, 1).contiguous()
        return out.view(batch, -1, out_h, out_w)

    def extra_repr(self) -> str:
        """Shape, density and backend, as ``print(model)`` shows them."""
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, groups={self.groups}, "
                f"density={self.density:.4f}, backend={self.backend}, mode={self.mode}")

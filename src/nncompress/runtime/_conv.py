"""SparseConv: Conv1d/Conv2d as a CSR weight times the input's patch matrix (im2col).

The weight ``(O, C/g, kh, kw)`` becomes an ``O x (C·kh·kw)`` CSR matrix (a grouped convolution
is the block-diagonal one; the blocks' zeros cost nothing in CSR). A call views the (padded)
input through strides as ``(C, kh, kw, out_h, out_w)`` windows, copies that view into the
``(C·kh·kw) x positions`` patch matrix (a strided copy; no index tables are kept) and multiplies.
For several images the batch goes innermost first, so the product streams over
``positions x batch`` columns. The dense path rebuilds the weight and runs ``F.conv2d``.
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
    if groups == 1:
        return weight
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

    def __init__(self, layer: nn.Conv1d | nn.Conv2d, backend: str = "auto") -> None:
        weight = layer.weight.detach()
        matrix = _block_diagonal(weight, layer.groups).reshape(weight.shape[0], -1)
        csr = CSRMatrix.from_dense(matrix)
        super().__init__(csr, layer.bias, weight.numel(), backend)
        self.used_columns = int(torch.unique(csr.col_indices).numel())
        self.one_d = isinstance(layer, nn.Conv1d)
        self.weight_shape = tuple(weight.shape)
        self.groups = layer.groups
        self.kernel_size = _pair(layer.kernel_size, 1)
        self.stride = _pair(layer.stride, 1)
        self.padding = _pair(layer.padding, 0)  # type: ignore[arg-type]
        self.dilation = _pair(layer.dilation, 1)
        self.in_channels, self.out_channels = layer.in_channels, layer.out_channels

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
        full = self.csr().to_dense().view(out_ch, self.in_channels, -1)
        if self.groups > 1:
            per, step = self.in_channels // self.groups, out_ch // self.groups
            full = torch.cat([full[g * step:(g + 1) * step, g * per:(g + 1) * per]
                              for g in range(self.groups)])
        return full.reshape(self.weight_shape)

    def reduction(self) -> float:
        """Dense over sparse work per output position (see :mod:`._rule`)."""
        return conv_reduction(self.entries, self.weight_values.numel(), self.used_columns,
                              self.out_channels)

    def _out_size(self, height: int, width: int) -> _Pair:
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = (self.kernel_size, self.stride, self.padding,
                                                  self.dilation)
        return ((height + 2 * ph - dh * (kh - 1) - 1) // sh + 1,
                (width + 2 * pw - dw * (kw - 1) - 1) // sw + 1)

    def _window(self, out_hw: _Pair, strides: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
        """Shape and strides of the ``(C, kh, kw, out_h, out_w[, N])`` view of an input."""
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        shape = (self.in_channels, kh, kw, *out_hw)
        s_c, s_h, s_w = strides[:3]
        return shape, (s_c, dh * s_h, dw * s_w, sh * s_h, sw * s_w)

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
        batch, _, height, width = x.shape
        out_h, out_w = self._out_size(height, width)
        ph, pw = self.padding
        kernel = self._kernel if self._kernel is not None else self.kernel()
        if self.backend == "scipy":
            images = x.numpy()
            if ph or pw:
                images = np.pad(images, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
            if batch > 1:  # (C, H, W, N): the batch innermost
                images = np.ascontiguousarray(images.transpose(1, 2, 3, 0))
            base = images[0] if batch == 1 else images
            shape, strides = self._window((out_h, out_w), base.strides)
            if batch > 1:
                shape, strides = (*shape, batch), (*strides, base.strides[3])
            view = np.lib.stride_tricks.as_strided(base, shape, strides, writeable=False)
            out_np = kernel @ view.reshape(self.csr_shape[1], -1)  # (O, positions[ x N])
            if self._bias_np is not None:
                out_np += self._bias_np[:, None]
            out = torch.from_numpy(out_np)
        else:
            padded = F.pad(x, (pw, pw, ph, ph)) if ph or pw else x
            inner = padded[0] if batch == 1 else padded.permute(1, 2, 3, 0).contiguous()
            shape, strides = self._window((out_h, out_w), inner.stride())
            if batch > 1:
                shape, strides = (*shape, batch), (*strides, inner.stride(3))
            patches = inner.as_strided(shape, strides).reshape(self.csr_shape[1], -1)
            out = torch.sparse.mm(kernel, patches)
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

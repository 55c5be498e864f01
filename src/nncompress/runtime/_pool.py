"""MaxPool2x2: 2x2, stride-2 max-pooling as two element-wise maxima of strided views.

The same values as ``nn.MaxPool2d(2, 2)`` (a maximum is exact; NaN propagates as there), in
the input's layout. On the CPU build measured (PyTorch 2.13, one thread) ``max_pool2d`` on
contiguous NCHW tensors is 2x slower than this on LeNet-5's first pooling for one image and
6-8x slower for 64 (``benchmarks/inference.py`` reports the runtime with and without it);
inputs of fewer than :data:`SMALL` values and partial windows (``ceil_mode`` with an odd size)
use ``F.max_pool2d``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SMALL", "MaxPool2x2", "replaceable_pool"]

# Below this many input values the usual kernel's single call is faster (measured: one LeNet-5
# image, 50x8x8: 16 us against 20 us; 20x24x24: 54 us against 25 us).
SMALL = 8192


def replaceable_pool(layer: nn.Module) -> bool:
    """Whether ``layer`` is a 2x2, stride-2, unpadded, undilated ``nn.MaxPool2d``.

    Example:
        >>> replaceable_pool(nn.MaxPool2d(2, 2)), replaceable_pool(nn.MaxPool2d(3, 2))
        (True, False)
    """
    def pair(v: int | tuple[int, ...]) -> tuple[int, ...]:
        return (v, v) if isinstance(v, int) else tuple(v)

    return (type(layer) is nn.MaxPool2d and pair(layer.kernel_size) == (2, 2)
            and pair(layer.stride) == (2, 2) and pair(layer.padding) == (0, 0)
            and pair(layer.dilation) == (1, 1) and not layer.return_indices)


class MaxPool2x2(nn.Module):
    """``nn.MaxPool2d(2, 2, ceil_mode=...)`` for inputs ``(..., H, W)``.

    Example:
        >>> x = torch.randn(2, 3, 6, 8)
        >>> torch.equal(MaxPool2x2()(x), nn.MaxPool2d(2, 2)(x))
        True
    """

    def __init__(self, ceil_mode: bool = False) -> None:
        super().__init__()
        self.ceil_mode = ceil_mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The 2x2 maxima of ``x``."""
        height, width = x.shape[-2:]
        if (self.ceil_mode and (height % 2 or width % 2)) or x.numel() < SMALL:
            return F.max_pool2d(x, 2, 2, ceil_mode=self.ceil_mode)
        x = x[..., :height - height % 2, :width - width % 2]
        columns = torch.maximum(x[..., 0::2], x[..., 1::2])
        return torch.maximum(columns[..., 0::2, :], columns[..., 1::2, :])

    def extra_repr(self) -> str:
        """The ceil mode, as ``print(model)`` shows it."""
        return f"ceil_mode={self.ceil_mode}"

"""The fused-path step of a sparse convolution.

Activations are batch last, ``(C, H, W, N)``. The step copies the strided window view of its
(padded) input, ``(C, kh, kw, out_h, out_w, N)``, into the ``(C·kh·kw) x (positions·N)`` patch
matrix, whose rows are the CSR weight's columns, and multiplies with SciPy's ``csr_matvecs``:
``(O, positions·N)``, already the next step's ``(O, out_h, out_w, N)``.

Measured and not kept: taking the positions in the order ``(dy, y, x, dx)`` so that a 2x2
max-pool after the convolution folds into the step (one contiguous maximum, one strided) was
no faster for one LeNet-5 image (0.94-1.07x) and 3x slower for 16 (``benchmarks/inference.py``
on the trained model, the 2-core machine under load).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nncompress.runtime._chain import Op
from nncompress.runtime._conv import SparseConv

__all__ = ["conv_step"]

Made = tuple[Any, tuple[int, ...], bool]


def conv_step(op: Op, shape: tuple[int, ...], dtype: Any, matvecs: Any) -> Made | None:
    """The step of a sparse convolution.

    Args:
        op: the convolution.
        shape: its input's shape, batch last.
        dtype: the NumPy dtype of the activations and weights.
        matvecs: SciPy's ``csr_matvecs`` kernel.

    Returns:
        ``(step, output shape, True)``, or None when the shapes do not fit.
    """
    layer = op.module
    assert isinstance(layer, SparseConv)
    if len(shape) != (3 if layer.one_d else 4) or shape[0] != layer.in_channels:
        return None
    c, h, w, n = (shape[0], 1, *shape[1:]) if layer.one_d else shape
    out_h, out_w = layer._out_size(h, w)
    if out_h < 1 or out_w < 1:
        return None
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = (layer.kernel_size, layer.stride, layer.padding,
                                              layer.dilation)
    rows, cols = layer.csr_shape
    positions = out_h * out_w * n
    window = (c, kh, kw, out_h, out_w, n)
    ptr, idx, val = (layer.weight_row_ptr.numpy(), layer.weight_cols.numpy(),
                     layer.weight_values.numpy())
    bias = None if layer.bias is None else layer.bias.numpy()
    out_shape = (rows, out_w, n) if layer.one_d else (rows, out_h, out_w, n)

    def step(a: Any) -> Any:
        if ph or pw:
            padded = np.zeros((c, h + 2 * ph, w + 2 * pw, n), dtype)
            padded[:, ph:ph + h, pw:pw + w] = a.reshape(c, h, w, n)
            a = padded
        else:
            a = a.reshape(c, h, w, n)  # C-contiguous (see _fused.py): a view
        s_c, s_h, s_w, s_n = a.strides
        view = np.ndarray(window, dtype, a, 0,
                          (s_c, dh * s_h, dw * s_w, sh * s_h, sw * s_w, s_n))
        patches = np.empty((cols, positions), dtype)
        np.copyto(patches.reshape(window), view)
        out = np.empty((rows, positions), dtype)
        if bias is None:
            out.fill(0)
        else:
            out[...] = bias[:, None]
        matvecs(rows, cols, positions, ptr, idx, val, patches, out)
        return out.reshape(out_shape)
    return step, out_shape, True

"""When a layer runs its sparse kernel and when the dense one: a rule measured on a CPU.

Measured with ``benchmarks/inference.py --sweep`` (each layer alone against its dense PyTorch
layer, random masks, one thread, the 2-core x86 build machine while other jobs ran: single
numbers are noisy, the trends below held across three sweeps):

* Linear. Against a dense layer kept in memory, the sparse kernel (800x500, 784x300) is
  1.7-2.8x faster at 1-3% density for one row, 2.1-5x for 8 rows and 3.4-6.9x for 64; at 10%
  it breaks even for one row and is 1.6-2.3x faster for 64; at 30% dense wins. Small layers
  (300x100, 500x10) lose 10-40% for one row: a call's fixed cost outweighs their arithmetic.
  The runtime does not keep dense weights, though, and rebuilding one per call costs more than
  the sparse product at every density up to 50% (800x500 at 20%: 8.8x at one row, 1.9x at 64).
  So Linear layers always run sparse, and :func:`nncompress.runtime.sparsify` converts only
  layers at or below 25% density.
* Conv (strided im2col + CSR product). The sparse kernel touches about
  ``used columns + non-zeros + 4 x out channels`` values per output position where the dense
  one does ``entries`` multiply-adds; their quotient, the *reduction*, predicts the winner
  better than density alone (a one-channel input is cheap for the dense kernel). One image:
  sparse won at every point measured (reduction 2.0-37, 1.1-2.3x). 8 images: won from 3.3
  (LeNet conv1 at 10%: 1.2x; conv2 at 10%, reduction 7.8: 1.7x), lost at 3.0 (conv2 at 30%:
  0.7x). 64 images: won from 7.8 (conv2 at 10%: 1.1x; at 3%, reduction 19: 2.1x), lost at 5.6
  and below (conv1 at 1%: 0.5x).

Whole chain models (LeNet-5, LeNet-300-100: see ``_chain.py``) take the fused path of
``_fused.py`` for batches up to :data:`FUSED_MAX_BATCH`: one NumPy/SciPy call or three per
operation, no module or torch dispatch, every sparse layer through SciPy's compiled CSR kernel
(``csr_matvec`` for one row: ``csr_matvecs`` pays a call per non-zero at one column), the conv
as a strided-view copy and ``csr_matvecs``. ``benchmarks/inference.py --fuse-sweep`` (same
machine, loaded; module-by-module time over fused time, trained models) measured: LeNet-5
2.60x at 1 image, 2.97-3.19x at 2-4, 2.12-2.55x at 16-64, 1.21x at 128, 1.38x at 256;
LeNet-300-100 2.71x at 1, 1.68-2.12x at 2-64, 2.19x at 128, 1.45x at 256 (the synthetic
models alike, but for two points of 0.58x and 0.67x that the next run did not repeat). So the
fused path runs up to 256, the largest batch measured; beyond, the modules and the rules
below. At one image the module path spends 20-35 us of fixed cost per sparse call, about what
dense PyTorch spends on the small layers; the fused path spends a few.

SciPy's CSR product against ``torch.sparse`` CSR: neither wins everywhere. For one row, torch's
``addmv`` wins inside a model (LeNet-300-100, one image: 1.46x dense against 1.09x with SciPy)
because it skips the numpy round trip, so the ``auto`` backend uses it there. For convolutions
SciPy was ahead in 14 of 24 sweep points and torch in 9 (most of them LeNet conv2's), with
single points noisy; ``auto`` uses SciPy for convolutions and for Linear batches.
"""

from __future__ import annotations

__all__ = ["CONV_MIN_REDUCTION", "FUSED_MAX_BATCH", "conv_reduction", "use_sparse"]

# The largest batch a chain model runs on the fused path (see _fused.py and above); larger
# batches run module by module, each layer by the rules below.
FUSED_MAX_BATCH = 256

# (largest batch, reduction from which the sparse conv kernel runs); larger batches use the
# last row.
CONV_MIN_REDUCTION: tuple[tuple[int, float], ...] = ((1, 2.0), (8, 3.2), (64, 7.5))


def conv_reduction(entries: int, nnz: int, used_columns: int, out_channels: int) -> float:
    """Dense work over sparse work per output position of a convolution (see above).

    Example:
        >>> round(conv_reduction(25_000, 747, 393, 50), 1)  # LeNet-5 conv2 at 3% density
        18.7
    """
    return entries / (used_columns + nnz + 4 * out_channels)


def use_sparse(kind: str, batch: int, reduction: float) -> bool:
    """Whether a layer runs its sparse kernel for a call of ``batch`` rows or images.

    Args:
        kind: ``"linear"`` (always sparse) or ``"conv"``.
        batch: rows or images in the call.
        reduction: for a conv, :func:`conv_reduction`.

    Returns:
        True for the sparse kernel, False for the dense one.

    Example:
        >>> use_sparse("conv", 1, 3.0), use_sparse("conv", 64, 3.0)  # LeNet-5 conv1 at 12.7%
        (True, False)
    """
    if kind == "linear":
        return True
    for largest_batch, min_reduction in CONV_MIN_REDUCTION:
        if batch <= largest_batch:
            return reduction >= min_reduction
    return reduction >= CONV_MIN_REDUCTION[-1][1]

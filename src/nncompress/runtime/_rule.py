"""When a layer runs its sparse kernel and when the dense one: a rule measured on a CPU.

Measured with ``benchmarks/inference.py --sweep`` and the runtime's own layers (random masks,
SciPy backend, one thread, the 2-core x86 build machine under load from other jobs; each
number a median ratio of interleaved rounds):

* Linear. The runtime does not keep the dense weight, so the dense path must rebuild it each
  call; against that the sparse kernel wins at every density up to 50% and batch 1-64 (at 20%
  density, 800x500: 8.8x at batch 1, 1.9x at 64). Against a dense layer kept in memory it wins
  at 1-3% density (800x500: 1.7-2.4x at batch 1, 3.7-6.9x at 64) and breaks even near 10%.
  So Linear layers always run sparse; :func:`nncompress.runtime.sparsify` converts only layers
  at or below 25% density.
* Conv (im2col gather + CSR product). The sparse kernel touches about
  ``used columns + non-zeros + 4 x out channels`` values per output position where the dense one
  does ``entries`` multiply-adds; their quotient, the *reduction*, predicts the winner better
  than density alone (a 1-channel input is cheap for the dense kernel). Sparse won at batch 1
  from a reduction of 2 (LeNet conv1 at 30%: 1.3x), at batch 8 from 3 (conv1 at 10%: 1.1x;
  conv2 at 10%, reduction 7.8: 1.7x) and at batch 64 from 10 (conv2 at 3%, reduction 19:
  2.0x; at 10%, reduction 7.8: 0.9x; conv1 at 1%, reduction 5.6: 0.65x).
"""

from __future__ import annotations

__all__ = ["CONV_MIN_REDUCTION", "conv_reduction", "use_sparse"]

# (largest batch, reduction from which the sparse conv kernel runs); larger batches use the
# last row.
CONV_MIN_REDUCTION: tuple[tuple[int, float], ...] = ((1, 2.0), (8, 3.0), (64, 10.0))


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
        >>> use_sparse("conv", 1, 3.0), use_sparse("conv", 64, 3.0)
        (True, False)
    """
    if kind == "linear":
        return True
    for largest_batch, min_reduction in CONV_MIN_REDUCTION:
        if batch <= largest_batch:
            return reduction >= min_reduction
    return reduction >= CONV_MIN_REDUCTION[-1][1]

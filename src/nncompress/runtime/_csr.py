"""A weight matrix in compressed sparse row form, with SciPy and ``torch.sparse`` views.

The three arrays are torch buffers (``values``, ``col_indices``, ``row_ptr``; int32 indices),
so a module holding them moves and saves like any other. SciPy's ``csr_matrix`` and
``torch.sparse_csr_tensor`` views share their memory and are made once, on first use.
INQ values (``±2**e``, or ``±(1 + j/2^M) 2**e``) are stored as they are, so they stay exact.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

__all__ = ["CSRMatrix", "scipy_available"]


def scipy_available() -> bool:
    """Whether SciPy (an optional, faster backend) can be imported.

    Example:
        >>> isinstance(scipy_available(), bool)
        True
    """
    try:
        import scipy.sparse  # noqa: F401
    except ImportError:
        return False
    return True


class CSRMatrix:
    """A ``rows x cols`` matrix stored as values, column indices and row pointers.

    Example:
        >>> m = CSRMatrix.from_dense(torch.tensor([[0.0, 2.0], [0.5, 0.0]]))
        >>> m.values.tolist(), m.col_indices.tolist(), m.row_ptr.tolist()
        ([2.0, 0.5], [1, 0], [0, 1, 2])
    """

    def __init__(self, values: torch.Tensor, col_indices: torch.Tensor, row_ptr: torch.Tensor,
                 shape: tuple[int, int]) -> None:
        self.values = values
        self.col_indices = col_indices
        self.row_ptr = row_ptr
        self.shape = shape
        self._scipy: Any = None
        self._torch: torch.Tensor | None = None

    @classmethod
    def from_dense(cls, matrix: torch.Tensor) -> CSRMatrix:
        """The CSR form of a 2-D tensor's non-zero entries (row-major order).

        Args:
            matrix: a 2-D floating tensor.

        Returns:
            The matrix; values keep the tensor's dtype.
        """
        rows, cols = matrix.shape
        flat = matrix.reshape(-1)
        where = flat.nonzero().squeeze(1)  # row-major positions of the non-zeros
        row_of = torch.div(where, cols, rounding_mode="floor") if cols else where
        row_ptr = torch.zeros(rows + 1, dtype=torch.int64)
        torch.cumsum(torch.bincount(row_of, minlength=rows), 0, out=row_ptr[1:])
        return cls(flat[where], (where - row_of * cols).to(torch.int32),
                   row_ptr.to(torch.int32), (rows, cols))

    @property
    def nnz(self) -> int:
        """Number of stored entries."""
        return int(self.values.numel())

    @property
    def nbytes(self) -> int:
        """Bytes of the three arrays."""
        return sum(t.numel() * t.element_size()
                   for t in (self.values, self.col_indices, self.row_ptr))

    def to_dense(self) -> torch.Tensor:
        """The full matrix, zeros included (made on each call, not kept)."""
        rows = torch.repeat_interleave(
            torch.arange(self.shape[0]), (self.row_ptr[1:] - self.row_ptr[:-1]).long())
        out = self.values.new_zeros(self.shape)
        out[rows, self.col_indices.long()] = self.values
        return out

    def scipy(self) -> Any:
        """A ``scipy.sparse.csr_matrix`` sharing this matrix's arrays."""
        if self._scipy is None:
            from scipy.sparse import csr_matrix

            self._scipy = csr_matrix(
                (self.values.numpy(), self.col_indices.numpy(), self.row_ptr.numpy()),
                shape=self.shape, copy=False)
        return self._scipy

    def torch(self) -> torch.Tensor:
        """A ``torch.sparse_csr_tensor`` sharing this matrix's arrays."""
        if self._torch is None:
            with warnings.catch_warnings():  # "sparse CSR support is in beta": known, harmless
                warnings.simplefilter("ignore", UserWarning)
                self._torch = torch.sparse_csr_tensor(
                    self.row_ptr, self.col_indices, self.values, self.shape,
                    check_invariants=False)
        return self._torch

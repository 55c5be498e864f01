"""Live columns of a layer coded against the live rows of the layer before it.

A layer's input features are the previous layer's outputs: a neuron (or channel) that DNS
emptied leaves its inputs in the next layer nearly always dead too. A tensor entry with
``cols_ctx`` codes its live columns as two flag groups (one flag per column): the columns
whose previous row is live (likely live), then the others (likely dead). The previous layer
is the nearest earlier entry of two or more dimensions; it must have a live-row set and a row
count ``R`` that divides this tensor's column count (``g = cols / R`` columns per row, in
order: a convolution's ``in_channels x kh x kw`` or a flattened ``channels x h x w``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nncompress.errors import FormatError
from nncompress.export._positions import _split

__all__ = ["candidates", "columns_of", "context_of", "flag_counts", "with_context"]


def context_of(entries: list[dict[str, Any]], entry: dict[str, Any]) -> tuple[int, int] | None:
    """(index of the previous layer's entry, columns per row) when ``entry``'s columns can be
    coded against it, else None.

    Example:
        >>> prev = {"shape": [4, 6], "rows": 2}
        >>> context_of([prev, {"shape": [4]}], {"shape": [3, 8]})
        (0, 2)
    """
    for i in range(len(entries) - 1, -1, -1):
        shape = entries[i]["shape"]
        if len(shape) >= 2:
            rows = shape[0]
            ncols = _split(tuple(entry["shape"]))[1]
            ok = "rows" in entries[i] and rows > 0 and ncols % rows == 0
            return (i, ncols // rows) if ok else None
    return None


def candidates(prev_rows: np.ndarray, per_row: int, ncols: int) -> tuple[np.ndarray, np.ndarray]:
    """(columns whose previous row is live, the other columns), each sorted.

    Example:
        >>> [c.tolist() for c in candidates(np.array([1]), 2, 6)]
        [[2, 3], [0, 1, 4, 5]]
    """
    live = np.zeros(ncols, dtype=bool)
    live[(prev_rows[:, None] * per_row + np.arange(per_row)[None, :]).reshape(-1)] = True
    return np.flatnonzero(live), np.flatnonzero(~live)


def flag_counts(entries: list[dict[str, Any]], entry: dict[str, Any],
                what: str) -> tuple[int, int]:
    """The two flag groups' sizes of a ``cols_ctx`` entry (from the metadata alone)."""
    context = context_of(entries, entry)
    if context is None:
        raise FormatError(f"{what}: 'cols_ctx' without a previous layer whose live rows "
                          "the columns can be coded against")
    index, per_row = context
    ncols = _split(tuple(entry["shape"]))[1]
    likely = entries[index]["rows"] * per_row
    return likely, ncols - likely


def with_context(cols: np.ndarray, prev_rows: np.ndarray, per_row: int,
                 ncols: int) -> tuple[np.ndarray, np.ndarray]:
    """The two flag arrays (0/1) of the live columns ``cols``."""
    likely, others = candidates(prev_rows, per_row, ncols)
    return np.isin(likely, cols).astype(np.int64), np.isin(others, cols).astype(np.int64)


def columns_of(flags_likely: np.ndarray, flags_other: np.ndarray, prev_rows: np.ndarray,
               per_row: int, ncols: int) -> np.ndarray:
    """Invert :func:`with_context`: the sorted live columns."""
    likely, others = candidates(prev_rows, per_row, ncols)
    return np.sort(np.concatenate([likely[flags_likely > 0], others[flags_other > 0]]))

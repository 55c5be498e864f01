"""Positions of non-zero entries: gap symbols, index sets and live sub-matrix layouts.

A gap ``g`` (entries skipped before the next non-zero) below ``2**d`` is its own symbol; a
bigger gap becomes an escape symbol for its bit length ``b`` followed by its ``b - 1`` low bits
(an Elias-gamma-like code), so the alphabet stays small; ``d`` is chosen per index set. A tensor
seen as a 2-D ``(rows, rest)`` matrix may first code its live rows and live columns, then the
entries inside the live sub-matrix: DNS leaves whole neurons and input features empty, which
this removes from the gaps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from nncompress.errors import FormatError
from nncompress.export._entropy import RansDecoder, RansEncoder, StaticModel
from nncompress.export._streams import (
    RANS,
    RANS_MAX_SYMBOLS,
    RAW,
    read_int,
    smallest,
    unwrap,
    zstd_stream,
)

__all__ = ["Factoring", "GapCode", "best_gaps", "factorings", "positions_stream", "read_layout"]

_MAX_EXTRA_BITS = 62


def _bit_length(values: np.ndarray) -> np.ndarray:
    out = np.zeros(values.shape, dtype=np.int64)
    v = values.astype(np.int64)
    while np.any(v):
        out += v > 0
        v = v >> 1
    return out


@dataclass
class GapCode:
    """An index set as gap symbols (parameter ``d``), escape bits, its model and its cost."""

    d: int
    symbols: np.ndarray
    nextra: np.ndarray
    extra: np.ndarray
    model: StaticModel
    bits: float

    @property
    def count(self) -> int:
        """Number of indices."""
        return int(self.symbols.size)


def _gaps(indices: np.ndarray, d: int) -> GapCode:
    gaps = np.diff(indices.astype(np.int64), prepend=-1) - 1
    small = gaps < (1 << d)
    b = _bit_length(gaps)
    symbols = np.where(small, gaps, (1 << d) + b - d - 1)
    nextra = np.where(small, 0, b - 1)
    extra = np.where(small, 0, gaps - (np.int64(1) << np.maximum(b - 1, 0)))
    alphabet = int(symbols.max()) + 1 if symbols.size else 1
    model = StaticModel.fit(symbols, alphabet)
    bits = 3 + model.cost_bits(symbols) + float(nextra.sum())
    return GapCode(d, symbols, nextra, extra, model, bits)


def best_gaps(indices: np.ndarray) -> GapCode:
    """The cheapest gap code of a sorted index set (``d`` up to the largest gap's length).

    Example:
        >>> best_gaps(np.array([3, 4, 9])).symbols.tolist()
        [3, 0, 4]
    """
    top = int(np.diff(indices, prepend=-1).max()).bit_length() if indices.size else 0
    return min((_gaps(indices, d) for d in range(min(7, top) + 1)), key=lambda g: g.bits)


def _indices_from_gaps(d: int, symbols: np.ndarray, extras: np.ndarray, limit: int,
                       what: str) -> np.ndarray:
    """Invert :func:`_gaps`; ``extras`` holds one value per symbol (0 where not escaped)."""
    big = symbols >= (1 << d)
    b = np.where(big, symbols - (1 << d) + d + 1, 1)
    if np.any(b - 1 > _MAX_EXTRA_BITS):
        raise FormatError(f"{what}: gap too large")
    gaps = np.where(big, (np.int64(1) << (b - 1)) + extras, symbols).astype(np.int64)
    if gaps.size and (int(gaps.max()) >= limit or int(gaps.sum()) + gaps.size > limit):
        raise FormatError(f"{what}: positions run beyond the tensor ({limit} entries)")
    return np.cumsum(gaps + 1) - 1


def _escape_bits(d: int, symbols: np.ndarray) -> np.ndarray:
    return np.where(symbols < (1 << d), 0, symbols - (1 << d) + d)


def _pack_bits(values: np.ndarray, nbits: np.ndarray) -> bytes:
    """Concatenate ``nbits[i]`` low bits of each value, most significant first."""
    total = int(nbits.sum())
    if total == 0:
        return b""
    starts = np.cumsum(nbits) - nbits
    bits = np.zeros(total, dtype=np.uint8)
    for j in range(int(nbits.max())):  # bit j from the top of each value; memory O(total)
        has = nbits > j
        bits[starts[has] + j] = (values[has] >> (nbits[has] - 1 - j)) & 1
    return np.packbits(bits).tobytes()


def _unpack_bits(data: bytes, nbits: np.ndarray, what: str) -> np.ndarray:
    """Invert :func:`_pack_bits`: one value per entry of ``nbits`` (0 for zero bits)."""
    total = int(nbits.sum())
    if total > 8 * len(data):
        raise FormatError(f"{what}: extra bits stream ended early")
    out = np.zeros(nbits.size, dtype=np.int64)
    if total == 0:
        return out
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8))[:total].astype(np.int64)
    starts = np.cumsum(nbits) - nbits
    for j in range(int(nbits.max())):
        has = nbits > j
        out[has] = (out[has] << 1) | bits[starts[has] + j]
    return out


def _check_escapes(nbits: np.ndarray, symbols: np.ndarray, d: int, limit: int,
                   what: str) -> None:
    """Before reading escape bits: each escaped gap is at least ``2**nbits``; they must fit."""
    escaped = symbols >= (1 << d)
    if not np.any(escaped):
        return
    if int(nbits.max()) > _MAX_EXTRA_BITS or float(
            np.sum(np.ldexp(1.0, nbits[escaped]))) > limit:  # float: no overflow
        raise FormatError(f"{what}: positions run beyond the tensor ({limit} entries)")


def positions_stream(coded: list[GapCode]) -> bytes:
    """Code index sets; returns the smallest of the raw, zstd and rANS forms."""
    plain = bytearray()
    for g in coded:
        plain.append(g.d)
        plain.extend(g.symbols.astype(np.uint8).tobytes())
    plain.extend(_pack_bits(np.concatenate([g.extra for g in coded]),
                            np.concatenate([g.nextra for g in coded])))
    candidates = [bytes([RAW]) + bytes(plain), zstd_stream(bytes(plain))]
    if sum(g.count for g in coded) <= RANS_MAX_SYMBOLS:
        enc = RansEncoder()
        for g in coded:
            enc.put_bits(g.d, 3)
            enc.put_model(g.model)
            enc.put_symbols(g.symbols, g.model)
            for value, n in zip(g.extra[g.nextra > 0].tolist(), g.nextra[g.nextra > 0].tolist(),
                                strict=True):
                enc.put_bits(value, n)
        candidates.append(bytes([RANS]) + enc.finish())
    return smallest(*candidates)


def _read_positions(stream: bytes, counts: list[int], limits: list[int],
                    what: str) -> list[np.ndarray]:
    bound = sum(counts) * 9 + len(counts) + 8
    method, body = unwrap(stream, bound, what)
    if method == RANS:
        if sum(counts) > RANS_MAX_SYMBOLS:  # the writer codes longer streams with zstd
            raise FormatError(f"{what}: {sum(counts)} entropy-coded positions, more than the "
                              f"{RANS_MAX_SYMBOLS} a stream may hold")
        dec = RansDecoder(body, what)
        out = []
        for count, limit in zip(counts, limits, strict=True):
            d = dec.get_bits(3)
            model = dec.get_model()
            symbols = np.array(dec.get_symbols(count, model), dtype=np.int64)
            nbits = _escape_bits(d, symbols)
            _check_escapes(nbits, symbols, d, limit, what)
            extras = np.array([dec.get_bits(n) for n in nbits.tolist()], dtype=np.int64)
            out.append(_indices_from_gaps(d, symbols, extras, limit, what))
        dec.finish()
        return out
    pos, parsed = 0, []
    for count in counts:
        if pos + 1 + count > len(body):
            raise FormatError(f"{what}: position stream ended early")
        d = body[pos]
        if d > 7:
            raise FormatError(f"{what}: bad gap parameter {d}")
        parsed.append((d, np.frombuffer(body, np.uint8, count, pos + 1).astype(np.int64)))
        pos += 1 + count
    for (d, symbols), limit in zip(parsed, limits, strict=True):
        _check_escapes(_escape_bits(d, symbols), symbols, d, limit, what)
    nbits = np.concatenate([_escape_bits(d, s) for d, s in parsed])
    extras = _unpack_bits(body[pos:], nbits.astype(np.int64), what)
    out, start = [], 0
    for (d, symbols), limit in zip(parsed, limits, strict=True):
        out.append(_indices_from_gaps(d, symbols, extras[start:start + symbols.size], limit, what))
        start += symbols.size
    return out


def _split(shape: tuple[int, ...]) -> tuple[int, int]:
    rows = shape[0] if len(shape) >= 2 else 1
    return rows, (int(np.prod(shape)) // rows if rows else 0)


@dataclass
class Factoring:
    """A view of the tensor as its live sub-matrix: which rows/columns are coded as sets."""

    extra: dict[str, int]
    sets: list[GapCode]
    sub_flat: np.ndarray  # flat index in the full tensor of every sub-matrix entry
    kept_sub: np.ndarray  # position of each non-zero inside the sub-matrix

    @property
    def sets_bits(self) -> float:
        """Estimated size of the row and column sets."""
        return sum(g.bits for g in self.sets)


def factorings(nonzero: np.ndarray, shape: tuple[int, ...]) -> list[Factoring]:
    """Every way to code the live rows / live columns of ``shape`` viewed as a matrix."""
    nrows, ncols = _split(shape)
    r, c = np.divmod(nonzero, max(ncols, 1))
    live_rows, live_cols = np.unique(r), np.unique(c)
    choices = [(False, False)]
    if nrows > 1:
        choices += [(True, False), (False, True), (True, True)]
        row_code, col_code = best_gaps(live_rows), best_gaps(live_cols)
    out = []
    for use_rows, use_cols in choices:
        rows = live_rows if use_rows else np.arange(nrows)
        cols = live_cols if use_cols else np.arange(ncols)
        rr = np.searchsorted(live_rows, r) if use_rows else r
        cc = np.searchsorted(live_cols, c) if use_cols else c
        sets = ([row_code] if use_rows else []) + ([col_code] if use_cols else [])
        extra = ({"rows": int(live_rows.size)} if use_rows else {}) | (
            {"cols": int(live_cols.size)} if use_cols else {})
        out.append(Factoring(extra, sets, (rows[:, None] * ncols + cols[None, :]).reshape(-1),
                             rr * cols.size + cc))
    return out


def read_layout(stream: bytes, meta: dict[str, Any], shape: tuple[int, ...], sparse: bool,
                 what: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Return (flat index of every sub-matrix entry, kept positions in it or None if dense)."""
    nrows, ncols = _split(shape)
    n_rows = read_int(meta, "rows", what, 0, nrows, nrows)
    n_cols = read_int(meta, "cols", what, 0, ncols, ncols)
    counts, limits = [], []
    if "rows" in meta:
        counts.append(n_rows)
        limits.append(nrows)
    if "cols" in meta:
        counts.append(n_cols)
        limits.append(ncols)
    if sparse:
        kept = read_int(meta, "kept", what, 0, n_rows * n_cols)
        counts.append(kept)
        limits.append(n_rows * n_cols)
    if not counts:
        if stream:
            raise FormatError(f"{what}: a dense tensor has no position stream")
        sets: list[np.ndarray] = []
    else:
        sets = _read_positions(stream, counts, limits, what)
    rows = sets.pop(0) if "rows" in meta else np.arange(nrows)
    cols = sets.pop(0) if "cols" in meta else np.arange(ncols)
    sub_flat = (rows[:, None] * ncols + cols[None, :]).reshape(-1)
    return sub_flat, (sets[0] if sparse else None)

"""Static rANS entropy coder (byte-wise renormalisation) with raw bits in the same stream.

rANS keeps one integer state ``x``. Coding a symbol of frequency ``f`` out of ``2**S`` maps
``x -> (x // f) * 2**S + x % f + start``, which grows ``x`` by about ``log2(2**S / f)`` bits, i.e.
the symbol's information content. Bytes are shifted out to keep ``x`` in ``[L, 256 L)``.
The encoder runs backwards so the decoder reads forwards. Raw bits are coded as a symbol of
frequency 1 out of ``2**k``, so tables, parameters and payload share one stream and one
4-byte final state.

A static model is the quantised symbol counts of one stream; it is written at the head of the
stream with Elias-gamma codes (raw bits), and its precision ``S`` is chosen per stream to
minimise table plus payload size: small streams get coarse tables, big streams precise ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from nncompress.errors import FormatError

__all__ = ["RansDecoder", "RansEncoder", "StaticModel", "read_gamma"]

_L = 1 << 23  # lower bound of the normalised state; the state fits in 31 bits
_MAX_SCALE = 12  # precision written (at most 2**12 slots; readers of version 1 take up to 15)
_MAX_BITS_CHUNK = 16  # raw bits are coded in chunks of at most this many bits
_MAX_ALPHABET = 512


@dataclass(frozen=True)
class StaticModel:
    """Quantised symbol frequencies summing to ``2**scale`` (zero for absent symbols)."""

    scale: int
    freqs: tuple[int, ...]

    @property
    def starts(self) -> list[int]:
        """Cumulative frequency before each symbol."""
        out, total = [], 0
        for f in self.freqs:
            out.append(total)
            total += f
        return out

    @classmethod
    def fit(cls, symbols: np.ndarray, alphabet: int) -> StaticModel:
        """Pick the precision that minimises table bits plus coded payload bits.

        Example:
            >>> StaticModel.fit(np.array([0, 0, 1]), 2).freqs
            (1, 1)
        """
        counts = np.bincount(symbols.astype(np.int64), minlength=alphabet)[:alphabet]
        used = int(np.count_nonzero(counts))
        best: tuple[float, StaticModel] | None = None
        lowest = max(1, math.ceil(math.log2(max(used, 1))))
        # precision beyond the counts' own resolution (about 1/n) buys nothing
        highest = max(lowest, min(_MAX_SCALE, int(symbols.size).bit_length() + 1))
        for scale in range(lowest, highest + 1):
            freqs = _quantise(counts, scale)
            cost = _table_bits(freqs) + _payload_bits(counts, freqs, scale)
            if best is None or cost < best[0]:
                best = (cost, cls(scale, tuple(int(f) for f in freqs)))
        assert best is not None
        return best[1]

    def cost_bits(self, symbols: np.ndarray) -> float:
        """Estimated size in bits of the table plus ``symbols`` coded with this model."""
        counts = np.bincount(symbols.astype(np.int64), minlength=len(self.freqs))
        return _table_bits(np.array(self.freqs)) + _payload_bits(
            counts, np.array(self.freqs), self.scale)


def _quantise(counts: np.ndarray, scale: int) -> np.ndarray:
    """Scale counts to sum ``2**scale``, keeping every present symbol at frequency >= 1."""
    total = 1 << scale
    n = int(counts.sum())
    if n == 0:
        freqs = np.zeros_like(counts)
        freqs[0] = total
        return freqs
    freqs = np.where(counts > 0, np.maximum(1, np.floor(counts * total / n + 0.5)), 0)
    freqs = freqs.astype(np.int64)
    # Fix the sum: take from / give to the most frequent symbols, never dropping one below 1.
    diff = total - int(freqs.sum())
    order = np.argsort(-counts, kind="stable")
    i = 0
    while diff != 0:
        s = order[i % len(order)]
        if counts[s] > 0 and (diff > 0 or freqs[s] > 1):
            step = 1 if diff > 0 else -1
            freqs[s] += step
            diff -= step
        i += 1
    return freqs


def _gamma_bits(values: np.ndarray) -> np.ndarray:
    """Length of the Elias-gamma code of each value (values >= 1)."""
    return np.asarray(2 * np.floor(np.log2(values)).astype(np.int64) + 1)


def read_gamma(get_bits: Callable[[int], int], limit: int, what: str) -> int:
    """Read an Elias-gamma code through ``get_bits`` (which reads that many bits).

    Raises:
        FormatError: the value is above ``limit`` (``what`` starts the message), found as
            soon as its unary prefix is too long.

    Example:
        >>> bits = iter([0, 0, 1, 0, 1])  # 0b101 = 5
        >>> read_gamma(lambda n: sum(next(bits) << i for i in reversed(range(n))), 9, "t")
        5
    """
    zeros = 0
    while get_bits(1) == 0:
        zeros += 1
        if zeros > limit.bit_length():
            raise FormatError(f"{what} exceeds {limit}")
    value = (1 << zeros) | get_bits(zeros)  # the bits below the leading 1
    if value > limit:
        raise FormatError(f"{what} exceeds {limit}")
    return value


def _table_bits(freqs: np.ndarray) -> float:
    # scale (4 bits) + alphabet size (gamma) + one gamma code per symbol
    return 4 + float(_gamma_bits(np.array([len(freqs)]))[0] + _gamma_bits(freqs + 1).sum())


def _payload_bits(counts: np.ndarray, freqs: np.ndarray, scale: int) -> float:
    present = counts > 0
    if np.any(freqs[present] == 0):
        return math.inf
    return float(np.sum(counts[present] * (scale - np.log2(freqs[present]))))


class RansEncoder:
    """Collects symbols and raw bits in order; :meth:`finish` returns the coded bytes.

    Example:
        >>> enc = RansEncoder()
        >>> enc.put_bits(5, 3)
        >>> dec = RansDecoder(enc.finish())
        >>> dec.get_bits(3)
        5
    """

    def __init__(self) -> None:
        self._ops: list[tuple[int, int, int]] = []  # (start, freq, scale)

    def put_bits(self, value: int, nbits: int) -> None:
        """Append ``nbits`` raw bits of ``value`` (most significant chunk first)."""
        while nbits > 0:
            chunk = min(nbits, _MAX_BITS_CHUNK)
            nbits -= chunk
            self._ops.append(((value >> nbits) & ((1 << chunk) - 1), 1, chunk))

    def put_gamma(self, value: int) -> None:
        """Append the Elias-gamma code of ``value >= 1``."""
        n = value.bit_length()
        # the decoder reads the unary prefix one bit at a time, so it is written that way
        self._ops.extend([(0, 1, 1)] * (n - 1))
        self._ops.append((1, 1, 1))
        self.put_bits(value & ((1 << (n - 1)) - 1), n - 1)

    def put_model(self, model: StaticModel) -> None:
        """Append a static model's table."""
        self.put_bits(model.scale, 4)
        self.put_gamma(len(model.freqs))
        for f in model.freqs:
            self.put_gamma(f + 1)

    def put_symbols(self, symbols: Sequence[int] | np.ndarray, model: StaticModel) -> None:
        """Append symbols coded with ``model``."""
        starts, freqs, scale = model.starts, model.freqs, model.scale
        self._ops.extend((starts[s], freqs[s], scale) for s in np.asarray(symbols).tolist())

    def put_symbol(self, symbol: int, model: StaticModel) -> None:
        """Append one symbol coded with ``model``."""
        self._ops.append((model.starts[symbol], model.freqs[symbol], model.scale))

    def finish(self) -> bytes:
        """Encode everything collected (backwards) and return the bytes."""
        out = bytearray()
        x = _L
        for start, freq, scale in reversed(self._ops):
            x_max = ((_L >> scale) << 8) * freq
            while x >= x_max:
                out.append(x & 0xFF)
                x >>= 8
            x = ((x // freq) << scale) + (x % freq) + start
        out.extend(x.to_bytes(4, "little"))
        out.reverse()
        return bytes(out)


class RansDecoder:
    """Reads symbols and raw bits written by :class:`RansEncoder`, in the same order.

    Every read is bounded by the data: running out of bytes, an impossible table or a final
    state that does not match raises :class:`~nncompress.errors.FormatError`.
    """

    def __init__(self, data: bytes, what: str = "stream") -> None:
        if len(data) < 4:
            raise FormatError(f"{what}: entropy-coded stream shorter than its 4-byte state")
        self._data = data
        self._pos = 4
        self._x = int.from_bytes(data[:4], "big")
        self._what = what
        if not _L <= self._x < (_L << 8):
            raise FormatError(f"{what}: entropy coder state out of range")

    def _refill(self, x: int) -> int:
        data, pos = self._data, self._pos
        while x < _L:
            if pos >= len(data):
                raise FormatError(f"{self._what}: entropy-coded stream ended early")
            x = (x << 8) | data[pos]
            pos += 1
        self._pos = pos
        return x

    def get_bits(self, nbits: int) -> int:
        """Read ``nbits`` raw bits."""
        value = 0
        while nbits > 0:
            chunk = min(nbits, _MAX_BITS_CHUNK)
            nbits -= chunk
            x = self._x
            value = (value << chunk) | (x & ((1 << chunk) - 1))
            self._x = self._refill(x >> chunk)
        return value

    def get_gamma(self, limit: int) -> int:
        """Read an Elias-gamma code; values above ``limit`` are a format error."""
        return read_gamma(self.get_bits, limit, f"{self._what}: number in the stream")

    def get_model(self, max_alphabet: int = _MAX_ALPHABET) -> StaticModel:
        """Read a static model's table and check that it is a valid distribution."""
        scale = self.get_bits(4)
        size = self.get_gamma(max_alphabet)
        freqs = tuple(self.get_gamma((1 << scale) + 1) - 1 for _ in range(size))
        if scale == 0 or sum(freqs) != 1 << scale:
            raise FormatError(f"{self._what}: invalid frequency table")
        return StaticModel(scale, freqs)

    def get_symbols(self, count: int, model: StaticModel) -> list[int]:
        """Read ``count`` symbols coded with ``model``."""
        scale, freqs, starts = model.scale, model.freqs, model.starts
        mask = (1 << scale) - 1
        lookup: list[int] = []
        for s, f in enumerate(freqs):
            lookup.extend([s] * f)
        out = [0] * count
        x = self._x
        for i in range(count):
            slot = x & mask
            s = lookup[slot]
            out[i] = s
            x = freqs[s] * (x >> scale) + slot - starts[s]
            if x < _L:
                x = self._refill(x)
        self._x = x
        return out

    def finish(self) -> None:
        """Check that the whole stream was consumed and the state returned to its start."""
        if self._pos != len(self._data) or self._x != _L:
            raise FormatError(f"{self._what}: entropy-coded stream has trailing or bad data")

"""Interleaved rANS lanes decoded with numpy, a bit writer/reader, and raw bit packing.

Symbol ``i`` of a stream of ``T`` symbols is coded in lane ``i % N`` at step ``i // N``, with
``N = lane_count(T, P)`` lanes: the decoder runs every lane of a step as one numpy operation.
Each lane is a byte-wise rANS coder with a 24-bit state in ``[L, 256 L)``, ``L = 2**16``
(model precision at most ``2**12``). At a step the lanes that need bytes read one each in lane
order, then those that still need one read a second.

The stream is the ``N`` final states (3 bytes each, big-endian), then the renormalisation
bytes in decoding order. A lane's encoder starts at ``L + r`` where ``r`` is 23 raw bits of
the caller's payload: the decoder finds them in the lane's end state, so the state written at
the head costs about 3 bits per lane rather than 3 bytes. A lane per :data:`STEPS`
symbols, fewer when the ``P`` raw bits of the stream cannot fill them, but never fewer than
one per :data:`MAX_STEPS` symbols.
"""

from __future__ import annotations

import numpy as np

from nncompress.errors import FormatError
from nncompress.export._entropy import read_gamma

__all__ = ["CARRIED_BITS", "LANE_L", "MAX_SCALE", "MAX_STEPS", "STEPS", "BitReader", "BitWriter",
           "decode_lanes", "encode_lanes", "from_bits", "lane_count", "to_bits"]

LANE_L = 1 << 16
MAX_SCALE = 12
CARRIED_BITS = 23  # raw bits in each lane's start state, which stays below 256 L
_smallest = np.minimum.reduce  # ndarray.min() without its Python wrapper
STEPS = 128  # symbols per lane, when raw bits fill the lanes' start states
MAX_STEPS = 1024  # symbols per lane, at most


def lane_count(total: int, payload: int) -> int:
    """Lanes for ``total`` symbols when ``payload`` raw bits come with them.

    Example:
        >>> lane_count(1, 0), lane_count(129, 10**6), lane_count(10**4, 160), lane_count(10**4, 0)
        (1, 2, 10, 10)
    """
    wanted = min(-(-total // STEPS), -(-payload // CARRIED_BITS))
    return max(1, wanted, -(-total // MAX_STEPS))


# ----------------------------------------------------------------------------- raw bits
def to_bits(values: np.ndarray, nbits: np.ndarray) -> np.ndarray:
    """The ``nbits[i]`` low bits of each value, most significant first, as a 0/1 array."""
    nbits = nbits.astype(np.int64)
    total = int(nbits.sum())
    bits = np.zeros(total, dtype=np.uint8)
    if total == 0:
        return bits
    starts = np.cumsum(nbits) - nbits
    values = values.astype(np.int64)
    for j in range(int(nbits.max())):
        has = nbits > j
        bits[starts[has] + j] = (values[has] >> (nbits[has] - 1 - j)) & 1
    return bits


def from_bits(bits: np.ndarray, nbits: np.ndarray) -> np.ndarray:
    """Invert :func:`to_bits` (``bits`` holds exactly ``nbits.sum()`` bits, at most 63 each).

    Memory is linear in the number of bits: each bit is shifted to its place in its value
    and the values are sums over their runs of bits.
    """
    out = np.zeros(nbits.size, dtype=np.int64)
    has = nbits > 0
    if not np.any(has):
        return out
    n = nbits[has].astype(np.int64)
    starts = np.cumsum(n) - n
    place = np.repeat(n - 1 + starts, n) - np.arange(int(n.sum()))
    out[has] = np.add.reduceat(bits.astype(np.int64) << place, starts)
    return out


class BitWriter:
    """Collects fields most significant bit first; :meth:`finish` pads to whole bytes."""

    def __init__(self) -> None:
        self._value = 0
        self.nbits = 0

    def put(self, value: int, nbits: int) -> None:
        """Append the ``nbits`` low bits of ``value``."""
        self._value = (self._value << nbits) | (value & ((1 << nbits) - 1))
        self.nbits += nbits

    def put_gamma(self, value: int) -> None:
        """Append the Elias-gamma code of ``value >= 1``."""
        n = value.bit_length()
        self.put(0, n - 1)
        self.put(value, n)

    def finish(self) -> bytes:
        """The bits, zero-padded to a byte boundary."""
        pad = -self.nbits % 8
        return (self._value << pad).to_bytes((self.nbits + pad) // 8, "big")


class BitReader:
    """Reads :class:`BitWriter` fields; running out of data is a FormatError."""

    def __init__(self, data: bytes, what: str) -> None:
        self._data, self._what = data, what
        self.pos = 0  # bytes taken from data
        self._acc = self._have = 0

    def get(self, nbits: int) -> int:
        """Read ``nbits`` bits."""
        while self._have < nbits:
            if self.pos >= len(self._data):
                raise FormatError(f"{self._what}: coded stream ended inside its tables")
            self._acc = (self._acc << 8) | self._data[self.pos]
            self.pos += 1
            self._have += 8
        self._have -= nbits
        value = self._acc >> self._have
        self._acc &= (1 << self._have) - 1
        return value

    def get_gamma(self, limit: int) -> int:
        """Read an Elias-gamma code; a value above ``limit`` is a FormatError."""
        return read_gamma(self.get, limit, f"{self._what}: number in the tables")

    @property
    def bits_read(self) -> int:
        """Bits read so far."""
        return 8 * self.pos - self._have

    def align(self) -> int:
        """Skip to the next byte (padding must be zero); returns the byte offset."""
        if self._acc:
            raise FormatError(f"{self._what}: non-zero padding after the tables")
        self._have = 0
        return self.pos


# ----------------------------------------------------------------------------- lanes
def encode_lanes(starts: np.ndarray, freqs: np.ndarray, scales: np.ndarray,
                 carried: np.ndarray) -> bytes:
    """Code symbols given by their (start, frequency, scale) in ``carried.size`` lanes;
    ``carried`` holds ``CARRIED_BITS`` raw bits per lane (as ints) that the decoder gets back
    at the end."""
    total = starts.size
    nlanes = carried.size
    x = LANE_L + carried.astype(np.int64)
    steps: list[bytes] = []
    for t in range((total - 1) // nlanes, -1, -1):
        sl = slice(t * nlanes, min(total, (t + 1) * nlanes))
        n = sl.stop - sl.start
        f, s, st = freqs[sl], scales[sl], starts[sl]
        xa = x[:n]
        x_max = ((LANE_L >> s) << 8) * f
        one = xa >= x_max
        low = xa & 0xFF
        xa = np.where(one, xa >> 8, xa)
        two = xa >= x_max
        high = xa & 0xFF
        xa = np.where(two, xa >> 8, xa)
        # decoder order: first reads of every needy lane, then second reads
        first = np.where(two, high, low)[one]
        steps.append(first.astype(np.uint8).tobytes() + low[two].astype(np.uint8).tobytes())
        x[:n] = ((xa // f) << s) + xa % f + st
    head = b"".join(int(v).to_bytes(3, "big") for v in x.tolist())
    return head + b"".join(reversed(steps))


def decode_lanes(data: bytes, nlanes: int, model_base: np.ndarray, scales: np.ndarray,
                 slot_freq: np.ndarray, slot_bias: np.ndarray,
                 what: str) -> tuple[np.ndarray, np.ndarray, int]:
    """Decode one symbol per entry of the per-symbol model arrays, in ``nlanes`` lanes.

    The models' slots are laid end to end: symbol ``i`` owns slots from ``model_base[i]``
    (``2**scales[i]`` of them); ``slot_freq[g]`` is the frequency of the symbol at global
    slot ``g`` and ``slot_bias[g]`` is ``g``'s offset within that symbol's slots.

    Returns:
        (the global slot of every symbol, the carried bits as a 0/1 array, bytes used).
    """
    total = model_base.size
    if len(data) < 3 * nlanes:
        raise FormatError(f"{what}: coded stream shorter than its {nlanes} lane states")
    head = np.frombuffer(data, np.uint8, 3 * nlanes).astype(np.int64).reshape(-1, 3)
    x = (head[:, 0] << 16) | (head[:, 1] << 8) | head[:, 2]
    if np.any(x < LANE_L):
        raise FormatError(f"{what}: coded stream has a lane state out of range")
    buf = np.frombuffer(data, np.uint8).astype(np.int64)
    pos, size, out = 3 * nlanes, len(data), np.empty(total, dtype=np.int64)
    masks = (np.int64(1) << scales) - 1
    for t in range(-(-total // nlanes)):
        lo, hi = t * nlanes, min(total, (t + 1) * nlanes)
        xa = x[:hi - lo]
        g = model_base[lo:hi] + (xa & masks[lo:hi])
        out[lo:hi] = g
        xa = slot_freq[g] * (xa >> scales[lo:hi]) + slot_bias[g]
        need = xa < LANE_L
        k = int(np.count_nonzero(need))
        if k:
            if pos + k > size:
                raise FormatError(f"{what}: coded stream ended early")
            refilled = (xa[need] << 8) | buf[pos:pos + k]
            pos += k
            if _smallest(refilled) < LANE_L:  # a second byte (never a third: scale <= 12)
                low = refilled < LANE_L
                k = int(np.count_nonzero(low))
                if pos + k > size:
                    raise FormatError(f"{what}: coded stream ended early")
                refilled[low] = (refilled[low] << 8) | buf[pos:pos + k]
                pos += k
            xa[need] = refilled
        if hi - lo == nlanes:
            x = xa
        else:
            x[:hi - lo] = xa
    x -= LANE_L
    if np.any(x >> CARRIED_BITS):
        raise FormatError(f"{what}: coded stream does not end in its start states")
    carried = ((x[:, None] >> np.arange(CARRIED_BITS - 1, -1, -1)) & 1).astype(np.uint8)
    return out, carried.reshape(-1), pos

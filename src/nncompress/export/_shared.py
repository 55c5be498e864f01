"""Format version 2's shared coded stream: every position and INQ level code of a file.

Each tensor contributes groups of symbols, in order: its live rows and live columns (when its
metadata has ``rows`` / ``cols``; with ``cols_ctx`` the columns are two groups of 0/1 flags,
see ``_context``), the gaps between its kept entries (``sparse`` layout), and
for INQ (``pow2``) values one magnitude symbol per coded entry (``sparse``: ``e - exp_min``;
``dense``: 0 for zero, else ``1 + e - exp_min``). The stream is::

    tables   bit-packed: the lane count (a 1 bit when there is one lane per STEPS symbols,
             else a 0 bit and its Elias-gamma code), then per group with symbols the gap
             parameter d (3 bits, gap groups) and the static model (4-bit scale, Elias-gamma
             alphabet size for gap groups, Elias-gamma frequency + 1 per symbol); zero bits
             up to a byte boundary
    lanes    all symbols coded by :mod:`._lanes` (group after group)
    raw      the groups' raw bits in order, the first 23 per lane carried in the lane states,
             the rest packed here (zero-padded to a byte): the low bits of escaped gaps and one
             sign bit (1 = negative) per non-zero level

How many symbols each group has comes from the metadata, so the decoder knows every symbol's
model before it starts; all counts and lengths are checked against the bytes present.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from nncompress.errors import FormatError
from nncompress.export._entropy import StaticModel
from nncompress.export._lanes import (
    CARRIED_BITS,
    MAX_SCALE,
    MAX_STEPS,
    STEPS,
    BitReader,
    BitWriter,
    decode_lanes,
    encode_lanes,
    from_bits,
    lane_count,
    to_bits,
)
from nncompress.export._positions import _check_escapes, _escape_bits, _indices_from_gaps

__all__ = ["Group", "GroupSpec", "decode_groups", "encode_groups"]

_MAX_GAP_ALPHABET = 8 + 64  # 2**7 small gaps ... escapes up to 63 bits


@dataclass
class Group:
    """Symbols of one group with their model, and the raw bits that go with them."""

    model: StaticModel
    symbols: np.ndarray
    d: int | None = None  # gap parameter; None for a magnitude group
    raw_values: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    raw_nbits: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


@dataclass(frozen=True)
class GroupSpec:
    """What the reader knows of a group from the metadata."""

    count: int
    limit: int  # gap groups: entries of the set; magnitude groups: the alphabet size
    gaps: bool
    dense: bool = False  # magnitude groups: 0 codes a zero (no sign bit)
    flags: bool = False  # a flag group (0/1, no raw bits; see ``_context``)


def _put_model(out: BitWriter, model: StaticModel, sized: bool) -> None:
    out.put(model.scale, 4)
    if sized:
        out.put_gamma(len(model.freqs))
    for f in model.freqs:
        out.put_gamma(f + 1)


def encode_groups(groups: list[Group]) -> bytes:
    """The shared stream of ``groups`` (empty when there is no symbol and no raw bit).

    Example:
        >>> g = Group(StaticModel(1, (1, 1)), np.array([0, 1, 1]))
        >>> len(encode_groups([g])) > 0
        True
    """
    live = [g for g in groups if g.symbols.size]
    if not live:
        return b""
    total = sum(g.symbols.size for g in live)
    raw = np.concatenate([to_bits(g.raw_values, g.raw_nbits) for g in live])
    nlanes = lane_count(total, raw.size)
    tables = BitWriter()
    _put_lanes(tables, nlanes, total)
    for g in live:
        if g.model.scale > MAX_SCALE:
            raise ValueError(f"model precision {g.model.scale} above {MAX_SCALE}")
        if g.d is not None:
            tables.put(g.d, 3)
        _put_model(tables, g.model, g.d is not None)
    starts = np.concatenate([np.asarray(g.model.starts)[g.symbols] for g in live])
    freqs = np.concatenate([np.asarray(g.model.freqs)[g.symbols] for g in live])
    scales = np.concatenate([np.full(g.symbols.size, g.model.scale) for g in live])
    head = np.zeros(nlanes * CARRIED_BITS, dtype=np.int64)
    head[:min(raw.size, head.size)] = raw[:head.size]
    carried = from_bits(head, np.full(nlanes, CARRIED_BITS))
    lanes = encode_lanes(starts, freqs, scales, carried)
    return tables.finish() + lanes + np.packbits(raw[head.size:]).tobytes()


def _put_lanes(out: BitWriter, nlanes: int, total: int) -> None:
    """One bit when there is a lane per STEPS symbols, else the Elias-gamma lane count."""
    full = nlanes == -(-total // STEPS)
    out.put(int(full), 1)
    if not full:
        out.put_gamma(nlanes)


def _read_lanes(reader: BitReader, total: int, what: str) -> int:
    most, fewest = -(-total // STEPS), -(-total // MAX_STEPS)
    if reader.get(1):
        return most
    nlanes = reader.get_gamma(most)
    if nlanes < fewest:
        raise FormatError(f"{what}: {nlanes} lanes for {total} symbols, at least {fewest} "
                          "needed")
    return nlanes


def _read_model(reader: BitReader, spec: GroupSpec, what: str) -> tuple[int | None,
                                                                         StaticModel]:
    d = reader.get(3) if spec.gaps else None
    scale = reader.get(4)
    size = reader.get_gamma(_MAX_GAP_ALPHABET) if spec.gaps else spec.limit
    freqs = tuple(reader.get_gamma((1 << scale) + 1) - 1 for _ in range(size))
    if not 1 <= scale <= MAX_SCALE or sum(freqs) != 1 << scale:
        raise FormatError(f"{what}: invalid frequency table in the coded stream")
    return d, StaticModel(scale, freqs)


def decode_groups(coded: bytes, specs: list[GroupSpec], what: str,
                  costs: list[float] | None = None) -> list[np.ndarray]:
    """Decode the shared stream: per group, the sorted indices (gap groups) or the level
    codes ``1 + 2 (e - exp_min) + sign`` with 0 for zero (magnitude groups).

    ``costs``, if given, receives each group's bits: its table, the information of its
    symbols under its model, and its raw bits."""
    live = [i for i, s in enumerate(specs) if s.count]
    if costs is not None:
        costs[:] = [0.0] * len(specs)
    if not live:
        if coded:
            raise FormatError(f"{what}: a coded stream where no tensor has coded symbols")
        return [np.zeros(0, dtype=np.int64) for _ in specs]
    counts = np.array([specs[i].count for i in live], dtype=np.int64)
    reader = BitReader(coded, what)
    nlanes = _read_lanes(reader, int(counts.sum()), what)
    models, table_bits = [], []
    for i in live:
        before = reader.bits_read
        models.append(_read_model(reader, specs[i], what))
        table_bits.append(reader.bits_read - before)
    offset = reader.align()
    if len(coded) - offset < 3 * nlanes:  # checked before any per-symbol array is made
        raise FormatError(f"{what}: coded stream shorter than its {nlanes} lane states")
    sizes = np.array([1 << m.scale for _, m in models], dtype=np.int64)
    bases = np.cumsum(sizes) - sizes
    freqs = np.array([f for _, m in models for f in m.freqs], dtype=np.int64)
    slot_symbol = np.repeat(np.array([s for _, m in models for s in range(len(m.freqs))]), freqs)
    slot_freq = np.repeat(freqs, freqs)
    slot_start = np.repeat(np.array([c for _, m in models for c in m.starts]), freqs)
    slot_bias = np.arange(slot_symbol.size) - bases.repeat(sizes) - slot_start
    scales = np.repeat(np.array([m.scale for _, m in models], dtype=np.int64), counts)
    slots, carried, used = decode_lanes(coded[offset:], nlanes, np.repeat(bases, counts),
                                        scales, slot_freq, slot_bias, what)
    symbols = np.split(slot_symbol[slots], np.cumsum(counts)[:-1])
    nbits = []
    for i, (d, _), sym in zip(live, models, symbols, strict=True):
        spec = specs[i]
        if spec.gaps:
            assert d is not None
            bits = _escape_bits(d, sym)
            _check_escapes(bits, sym, d, spec.limit, what)
        elif spec.flags:
            bits = np.zeros(sym.size, dtype=np.int64)
        else:
            bits = (sym > 0 if spec.dense else np.ones(sym.size, dtype=bool)).astype(np.int64)
        nbits.append(bits)
    raw = _raw_bits(coded[offset + used:], carried, int(sum(int(b.sum()) for b in nbits)), what)
    if costs is not None:
        for i, (_, m), sym, bits, table in zip(live, models, symbols, nbits, table_bits,
                                               strict=True):
            info = m.scale * sym.size - float(np.log2(np.asarray(m.freqs)[sym]).sum())
            costs[i] = table + info + float(bits.sum())
    out = [np.zeros(0, dtype=np.int64) for _ in specs]
    every = from_bits(raw, np.concatenate(nbits))
    for i, (d, _), sym, values in zip(live, models, symbols,
                                      np.split(every, np.cumsum(counts)[:-1]), strict=True):
        spec = specs[i]
        if spec.gaps:
            assert d is not None
            out[i] = _indices_from_gaps(d, sym, values, spec.limit, what)
        elif spec.flags:
            out[i] = sym
        else:
            out[i] = np.where(sym > 0, 2 * sym - 1 + values, 0) if spec.dense else (
                1 + 2 * sym + values)
    return out


def _raw_bits(rest: bytes, carried: np.ndarray, total: int, what: str) -> np.ndarray:
    """All raw bits: those carried by the lanes, then the packed remainder (checked whole)."""
    remaining = max(0, total - carried.size)
    if len(rest) != -(-remaining // 8):
        raise FormatError(f"{what}: coded stream holds {len(rest)} bytes of raw bits, "
                          f"{-(-remaining // 8)} expected")
    bits = np.concatenate([carried, np.unpackbits(np.frombuffer(rest, np.uint8))])
    if np.any(bits[total:]):
        raise FormatError(f"{what}: non-zero padding after the raw bits")
    return bits[:total]

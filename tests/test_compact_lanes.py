"""Format version 2's coded stream: numpy lanes against a scalar reference, raw bits, sizes."""

from __future__ import annotations

import contextlib
import math

import numpy as np
import pytest
import torch

from nncompress.errors import FormatError
from nncompress.export import inspect_compact, load_compact, save_compact
from nncompress.export._entropy import StaticModel
from nncompress.export._lanes import (
    CARRIED_BITS,
    LANE_L,
    BitReader,
    BitWriter,
    decode_lanes,
    encode_lanes,
    from_bits,
    lane_count,
    to_bits,
)
from nncompress.export._shared import Group, GroupSpec, decode_groups, encode_groups
from nncompress.export._tensors import encode_state, stream_sizes


def _reference_decode(data: bytes, models: list[StaticModel], total: int,
                      n: int) -> list[int]:
    """One symbol at a time, lanes in order; a step's first refills, then its second ones."""
    x = [int.from_bytes(data[3 * j:3 * j + 3], "big") for j in range(n)]
    pos, out = 3 * n, []
    for t in range(math.ceil(total / n)):
        active = range(min(n, total - t * n))
        for j in active:
            m = models[t * n + j]
            slot = x[j] % (1 << m.scale)
            s = next(k for k, start in enumerate(m.starts) if start <= slot < start + m.freqs[k])
            out.append(s)
            x[j] = m.freqs[s] * (x[j] >> m.scale) + slot - m.starts[s]
        for _ in range(2):
            for j in active:
                if x[j] < LANE_L:
                    x[j] = (x[j] << 8) | data[pos]
                    pos += 1
    assert pos == len(data)
    return out


def _lanes_round_trip(symbols: np.ndarray, models: list[StaticModel],
                      carried: np.ndarray) -> tuple[bytes, np.ndarray, np.ndarray]:
    starts = np.array([m.starts[s] for s, m in zip(symbols, models, strict=True)])
    freqs = np.array([m.freqs[s] for s, m in zip(symbols, models, strict=True)])
    scales = np.array([m.scale for m in models])
    data = encode_lanes(starts, freqs, scales, carried)
    # slot tables of each symbol's own model, end to end
    base, slot_freq, slot_bias, slot_symbol = [], [], [], []
    for m in models:
        base.append(len(slot_freq))
        for s, (f, start) in enumerate(zip(m.freqs, m.starts, strict=True)):
            slot_freq += [f] * f
            slot_bias += list(range(f))
            slot_symbol += [s] * f
            assert start == len(slot_freq) - base[-1] - f
    slots, bits, used = decode_lanes(data, carried.size, np.array(base), scales,
                                     np.array(slot_freq), np.array(slot_bias), "t")
    assert used == len(data)
    return data, np.array(slot_symbol)[slots], bits


@pytest.mark.parametrize(("total", "payload"), [(1, 0), (7, 100), (128, 10**4), (129, 10**4),
                                                (1000, 10**4), (1000, 40), (3000, 0)])
def test_lanes_match_a_scalar_reference(total: int, payload: int) -> None:
    rng = np.random.default_rng(total)
    pool = [StaticModel(3, (5, 2, 1)), StaticModel(12, (4000, 90, 6)), StaticModel(1, (2,)),
            StaticModel(6, (1, 1, 62))]
    models = [pool[i] for i in rng.integers(0, len(pool), total)]
    symbols = np.array([rng.choice(len(m.freqs), p=np.array(m.freqs) / sum(m.freqs))
                        for m in models])
    carried = rng.integers(0, 1 << CARRIED_BITS, lane_count(total, payload))
    data, decoded, bits = _lanes_round_trip(symbols, models, carried)
    assert decoded.tolist() == symbols.tolist()
    assert _reference_decode(data, models, total, carried.size) == symbols.tolist()
    assert from_bits(bits, np.full(carried.size, CARRIED_BITS)).tolist() == carried.tolist()


def test_lanes_cost_about_the_information_plus_a_few_bits_each() -> None:
    rng = np.random.default_rng(0)
    model = StaticModel(8, (200, 40, 10, 6))
    symbols = rng.choice(4, size=5000, p=np.array(model.freqs) / 256)
    info = float(-np.log2(np.array(model.freqs)[symbols] / 256).sum()) / 8
    n = lane_count(symbols.size, 10**6)
    assert n == 40  # one per 128 symbols
    data, decoded, _ = _lanes_round_trip(symbols, [model] * symbols.size,
                                         rng.integers(0, 1 << CARRIED_BITS, n))
    assert decoded.tolist() == symbols.tolist()
    # the carried bits are payload: without them, a few bits of overhead per lane
    overhead = 8 * len(data) - CARRIED_BITS * n - 8 * info
    assert 0 < overhead < 6 * n, overhead / n


def test_bits_round_trip_against_a_string_reference() -> None:
    values = np.array([5, 0, 1, 2**40 + 3, 6])
    nbits = np.array([3, 0, 1, 41, 4])
    bits = to_bits(values, nbits)
    text = "".join(format(int(v), f"0{n}b") if n else "" for v, n in zip(values, nbits))
    assert "".join(map(str, bits.tolist())) == text
    assert from_bits(bits, nbits).tolist() == values.tolist()
    writer = BitWriter()
    writer.put(5, 3)
    writer.put_gamma(9)
    reader = BitReader(writer.finish(), "t")
    assert (reader.get(3), reader.get_gamma(100), reader.align()) == (5, 9, 2)
    with pytest.raises(FormatError, match="number in the tables exceeds 8"):
        BitReader(b"\x00\x01", "t").get_gamma(8)
    with pytest.raises(FormatError, match="ended inside its tables"):
        BitReader(b"", "t").get(1)


def _groups() -> tuple[list[Group], list[GroupSpec]]:
    gaps = Group(StaticModel(2, (2, 1, 1)), np.array([0, 2, 1, 0]), 1,
                 np.array([0, 1, 0, 0]), np.array([0, 1, 0, 0]))
    mags = Group(StaticModel(1, (1, 1)), np.array([1, 0, 1, 1]), None,
                 np.array([1, 0, 1, 1]), np.ones(4, dtype=np.int64))
    return [gaps, mags], [GroupSpec(4, 20, True), GroupSpec(4, 2, False)]


def test_groups_decode_to_indices_and_level_codes() -> None:
    groups, specs = _groups()
    coded = encode_groups(groups)
    indices, codes = decode_groups(coded, specs, "t")
    # gaps 0, 3 (escape: 2 + low bit 1), 1, 0 -> indices 0, 4, 6, 7
    assert indices.tolist() == [0, 4, 6, 7]
    assert codes.tolist() == [4, 1, 4, 4]  # 1 + 2 * magnitude + sign


def test_damaged_coded_streams_are_format_errors() -> None:
    groups, specs = _groups()
    coded = encode_groups(groups)
    for bad, message in [(coded[:-1], "ended|raw bits|state"), (coded + b"\x00", "raw bits"),
                         (b"", "tables"), (coded[:3], "ended|lane")]:
        with pytest.raises(FormatError, match=message):
            decode_groups(bad, specs, "t")
    with pytest.raises(FormatError, match="no tensor has coded symbols"):
        decode_groups(b"\x00", [GroupSpec(0, 5, True)], "t")
    for i in range(len(coded)):  # any byte changed: an error or other values, nothing else
        for flip in (1, 0x80):
            damaged = bytearray(coded)
            damaged[i] ^= flip
            with contextlib.suppress(FormatError):
                decode_groups(bytes(damaged), specs, "t")


@pytest.mark.parametrize("counts", [[600], [420, 180], [300, 150, 100, 50]])
def test_level_codes_cost_their_entropy(tmp_path: object, counts: list[int]) -> None:
    """Ternary (K=1), 3-bit (K=2) and 4-bit (K=4) layers: value bytes within 6 of the ideal
    (the model's table and the layer's share of the lane states)."""
    rng = np.random.default_rng(len(counts))
    kept = sum(counts)
    mags = rng.permutation(np.repeat(np.arange(len(counts)), counts))
    weight = torch.zeros(256 * 256, dtype=torch.float64)  # sparse: 1% kept
    where = torch.from_numpy(rng.choice(weight.numel(), kept, replace=False))
    signs = torch.from_numpy(rng.integers(0, 2, kept) * 2 - 1).double()
    weight[where] = signs * torch.exp2(-3.0 - torch.from_numpy(mags).double())
    model = torch.nn.Linear(256, 256, bias=False)
    with torch.no_grad():
        model.weight.copy_(weight.reshape(256, 256))
    p = np.array(counts) / kept
    ideal = (kept + float(-(np.array(counts) * np.log2(p)).sum())) / 8  # signs + magnitudes
    metas, coded, streams = encode_state(model.state_dict(), "float32")
    (_, value_bytes), = stream_sizes({"coded": coded}, metas, b"".join(streams), "t")
    assert ideal - 1 <= value_bytes <= ideal + 6
    path = tmp_path / "m.ncz"  # type: ignore[operator]
    save_compact(model, path, arch={"ref": "torch.nn:Linear",
                                    "kwargs": {"in_features": 256, "out_features": 256,
                                               "bias": False}})
    info = inspect_compact(path).tensors[0]
    assert (info.values, info.layout, info.kept, info.value_bytes) == (
        "pow2", "sparse", kept, value_bytes)
    assert info.value_bits_per_kept == pytest.approx(8 * ideal / kept, abs=48 / kept)
    assert torch.equal(load_compact(path, allow_import=True).weight.double(),
                       weight.reshape(256, 256))


def test_a_huge_declared_count_fails_before_its_arrays_are_made() -> None:
    tables = BitWriter()
    tables.put(1, 1)  # a lane per 128 symbols
    tables.put(1, 4)  # scale 1: frequencies (2, 0) of a dense magnitude group
    tables.put_gamma(3)
    tables.put_gamma(1)
    spec = GroupSpec(10**12, 2, False, True)  # 8 TB per int64 array if it were decoded
    with pytest.raises(FormatError, match="shorter than its 7812500000 lane states"):
        decode_groups(tables.finish() + bytes(30), [spec], "t")


def test_the_lane_count_is_read_and_bounded() -> None:
    groups, _ = _groups()
    assert encode_groups(groups)[0] >> 7 == 1  # 8 symbols: one lane, the 1-bit form
    tables = BitWriter()
    tables.put(0, 1)
    tables.put_gamma(2)  # 2 lanes for 4 symbols: more than one per 128
    with pytest.raises(FormatError, match="number in the tables exceeds 1"):
        decode_groups(tables.finish() + bytes(8), [GroupSpec(4, 2, False)], "t")
    tables = BitWriter()
    tables.put(0, 1)
    tables.put_gamma(1)  # 1 lane for 2000 symbols: fewer than one per 1024
    with pytest.raises(FormatError, match="1 lanes for 2000 symbols, at least 2 needed"):
        decode_groups(tables.finish() + bytes(8), [GroupSpec(2000, 2, False)], "t")

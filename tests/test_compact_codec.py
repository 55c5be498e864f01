"""The .ncz codec pieces against slow, obviously correct references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nncompress.errors import FormatError
from nncompress.export._codec import decode_tensor, encode_tensor, pow2_codes
from nncompress.export._entropy import RansDecoder, RansEncoder, StaticModel
from nncompress.export._positions import _gaps, _pack_bits, _unpack_bits


def _entropy_bytes(symbols: np.ndarray) -> float:
    counts = np.bincount(symbols)
    p = counts[counts > 0] / symbols.size
    return float(-(counts[counts > 0] * np.log2(p)).sum() / 8)


@pytest.mark.parametrize("p", [0.05, 0.3, 0.9])
def test_rans_round_trip_near_entropy(p: float) -> None:
    rng = np.random.default_rng(1)
    symbols = np.minimum(rng.geometric(p, size=4000) - 1, 30)
    model = StaticModel.fit(symbols, 31)
    enc = RansEncoder()
    enc.put_model(model)
    enc.put_symbols(symbols, model)
    data = enc.finish()
    dec = RansDecoder(data)
    assert dec.get_model() == model
    assert dec.get_symbols(symbols.size, model) == symbols.tolist()
    dec.finish()
    # within 1% of the order-0 entropy plus the table and the 4-byte state
    assert len(data) <= _entropy_bytes(symbols) * 1.01 + 40


def test_rans_mixes_raw_bits_gamma_codes_and_symbols() -> None:
    model = StaticModel(scale=2, freqs=(3, 1))
    enc = RansEncoder()
    enc.put_bits(0x1234_5678_9ABC, 48)
    enc.put_gamma(1)
    enc.put_gamma(300)
    enc.put_symbols([0, 1, 0, 0], model)
    dec = RansDecoder(enc.finish())
    assert dec.get_bits(48) == 0x1234_5678_9ABC
    assert (dec.get_gamma(10), dec.get_gamma(1000)) == (1, 300)
    assert dec.get_symbols(4, model) == [0, 1, 0, 0]
    dec.finish()


def test_single_symbol_stream_costs_no_payload() -> None:
    model = StaticModel.fit(np.zeros(10_000, dtype=np.int64), 1)
    enc = RansEncoder()
    enc.put_symbols(np.zeros(10_000, dtype=np.int64), model)
    assert len(enc.finish()) == 4


def test_quantised_frequencies_sum_to_scale_and_keep_rare_symbols() -> None:
    counts = np.array([100_000, 1, 0, 3])
    model = StaticModel.fit(np.repeat(np.arange(4), counts), 4)
    assert sum(model.freqs) == 1 << model.scale
    assert model.freqs[1] >= 1 and model.freqs[3] >= 1 and model.freqs[2] == 0


def test_rans_decoder_rejects_truncated_stream() -> None:
    enc = RansEncoder()
    enc.put_bits(0xABCDEF, 24)
    enc.put_bits(0xABCDEF, 24)
    data = enc.finish()
    dec = RansDecoder(data[:-2])
    with pytest.raises(FormatError, match="ended early"):
        dec.get_bits(24)
        dec.get_bits(24)


def _slow_gaps(indices: list[int], d: int) -> list[tuple[int, int, int]]:
    out, prev = [], -1
    for i in indices:
        g = i - prev - 1
        prev = i
        if g < 2**d:
            out.append((g, 0, 0))
        else:
            b = g.bit_length()
            out.append((2**d + b - d - 1, b - 1, g - 2 ** (b - 1)))
    return out


@pytest.mark.parametrize("d", [0, 1, 3, 7])
def test_gap_symbols_match_reference(d: int) -> None:
    rng = np.random.default_rng(d)
    indices = np.unique(rng.integers(0, 1 << 30, size=300))
    g = _gaps(indices, d)
    got = list(zip(g.symbols.tolist(), g.nextra.tolist(), g.extra.tolist(), strict=True))
    assert got == _slow_gaps(indices.tolist(), d)


def test_pack_bits_round_trip() -> None:
    values = np.array([5, 0, 1, 1023, 7, 2**40 + 3])
    nbits = np.array([3, 0, 1, 10, 3, 41])
    packed = _pack_bits(values, nbits)
    assert len(packed) == math.ceil(nbits.sum() / 8)
    assert _unpack_bits(packed, nbits, "x").tolist() == values.tolist()


def test_pow2_codes_match_frexp_reference() -> None:
    values = np.array([0.0, 0.25, -0.25, 2.0, -1.0, 0.0, 0.125])
    e_min, levels, codes = pow2_codes(values)  # type: ignore[misc]
    assert (e_min, levels) == (-3, 5)
    for v, c in zip(values.tolist(), codes.tolist(), strict=True):
        if v == 0:
            assert c == 0
        else:
            m, e = math.frexp(v)
            assert c == 1 + 2 * (e - 1 - e_min) + (m < 0)
    assert pow2_codes(np.array([0.5, 0.75])) is None
    assert pow2_codes(np.array([2.0**-100, 2.0**100])) is None  # 201 levels > 127
    assert pow2_codes(np.array([np.inf, 1.0])) is None


def _round_trip(t: torch.Tensor, float_dtype: str = "float32") -> torch.Tensor:
    enc = encode_tensor("t", t, float_dtype)
    return decode_tensor(enc.meta, enc.positions, enc.values)


@pytest.mark.parametrize("shape", [(7,), (40, 30), (6, 4, 3, 3), (1, 300)])
@pytest.mark.parametrize("density", [0.0, 0.05, 1.0])
def test_tensors_round_trip_bit_exact(shape: tuple[int, ...], density: float) -> None:
    gen = torch.Generator().manual_seed(len(shape) * 10 + int(density * 100))
    mask = torch.rand(shape, generator=gen) < density
    if len(shape) > 1 and shape[0] > 2:
        mask[: shape[0] // 2] = False  # dead rows, as DNS leaves them
    floats = torch.randn(shape, generator=gen) * mask
    levels = torch.sign(floats) * torch.exp2(torch.randint(-9, -2, shape, generator=gen).float())
    for t in (floats, levels, floats.double(), levels.to(torch.bfloat16)):
        out = _round_trip(t)
        assert out.dtype == t.dtype and out.shape == t.shape
        assert torch.equal(out.view(-1).view(torch.uint8), t.abs().view(-1).view(torch.uint8)
                           ) or torch.equal(out, t)


def test_nan_inf_and_integer_tensors_round_trip() -> None:
    t = torch.tensor([0.0, float("nan"), float("inf"), -1.5, 0.0])
    out = _round_trip(t)
    assert torch.equal(out.isnan(), t.isnan()) and torch.equal(out[~t.isnan()], t[~t.isnan()])
    for ints in (torch.tensor(12345678901234), torch.tensor([True, False]),
                 torch.arange(-5, 5, dtype=torch.int8)):
        assert torch.equal(_round_trip(ints), ints)


def test_float16_rounds_floats_but_keeps_levels_exact() -> None:
    floats = torch.tensor([0.1, -3.3, 1e-9, 0.0])
    assert torch.equal(_round_trip(floats, "float16"), floats.half().float())
    levels = torch.tensor([2.0**-30, 0.0, -(2.0**20)])  # outside float16's range, still exact
    assert torch.equal(_round_trip(levels, "float16"), levels)


def test_sparse_levels_are_much_smaller_than_fp32() -> None:
    gen = torch.Generator().manual_seed(0)
    mask = torch.rand(100, 200, generator=gen) < 0.02
    levels = torch.sign(torch.randn(100, 200, generator=gen)) * 0.25 * mask
    enc = encode_tensor("t", levels, "float32")
    # ~400 entries: positions ~7.7 bits, values ~1 bit (one level, random sign)
    assert len(enc.positions) + len(enc.values) < int(mask.sum()) * 9.5 / 8

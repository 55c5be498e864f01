"""INQ levels with mantissa bits: ``±(1 + j/2^M) 2^e``, rounding, layers, checks, the file."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import nncompress as nnc
from nncompress.checkpoint_checks import check_model_state
from nncompress.errors import ConfigError, FormatError
from nncompress.export import inspect_compact, load_compact, save_compact
from nncompress.export._codec import level_codes, level_table, pow2_codes
from nncompress.inq import fit_level_range, level_grid, level_range, quantize
from nncompress.models import build_model
from nncompress.train.checkpoint import Checkpoint
from tests.compact_crafting import as_version2, edited


def reference_levels(n1: int, n2: int, bits: int) -> list[float]:
    """Every magnitude of the level set, ascending, 0 first, written out one by one."""
    out = [0.0]
    for e in range(n2, n1 + 1):
        for j in range(2 ** bits):
            out.append((1 + j / 2 ** bits) * 2.0 ** e)
    return out


def reference_quantize(values: list[float], n1: int, n2: int, bits: int) -> list[float]:
    """Nearest level by scanning the whole set; a tie goes to the larger magnitude."""
    levels = reference_levels(n1, n2, bits)
    out = []
    for v in values:
        best = levels[0]
        for level in levels:
            if abs(abs(v) - level) <= abs(abs(v) - best):  # ascending scan: ties go up
                best = level
        out.append(math.copysign(best, v) if best else 0.0)
    return out


def test_hand_computed_one_mantissa_bit() -> None:
    # levels of (n1, n2) = (1, -1): 0.5, 0.75, 1, 1.5, 2, 3; 0 below 2^-2
    values = torch.tensor([0.74, 0.8, -1.2, 1.3, 9.0, 0.3, 0.2499, 0.25, 0.875, -1.25, 1.75])
    assert quantize(values, 1, -1, 1).tolist() == [
        0.75, 0.75, -1.0, 1.5, 3.0, 0.5, 0.0, 0.5, 1.0, -1.5, 2.0]
    assert quantize(values.double(), 1, -1, 1).tolist() == [
        0.75, 0.75, -1.0, 1.5, 3.0, 0.5, 0.0, 0.5, 1.0, -1.5, 2.0]


@pytest.mark.parametrize("bits", [1, 2, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_quantize_matches_the_scan_of_every_level(bits: int, dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(bits)
    values = (torch.randn(400, generator=gen) * 0.4).to(dtype)
    n1, n2 = 0, -4 if dtype != torch.float16 else -6
    # every boundary exactly: the midpoints between neighbouring levels and 2^(n2-1)
    levels = reference_levels(n1, n2, bits)
    mids = [(a + b) / 2 for a, b in zip(levels, levels[1:])]
    values = torch.cat([values, torch.tensor(mids + [-m for m in mids], dtype=dtype)])
    got = quantize(values, n1, n2, bits)
    assert got.dtype == dtype
    assert got.tolist() == reference_quantize(values.double().tolist(), n1, n2, bits)


def test_the_float32_bit_path_agrees_with_the_float64_path() -> None:
    gen = torch.Generator().manual_seed(0)
    values = torch.randn(20000, generator=gen) * torch.rand(20000, generator=gen) * 2
    for bits in (1, 2, 3):
        for n1, n2 in ((1, -6), (-3, -9), (3, 3)):
            fast = quantize(values, n1, n2, bits)  # bit trick
            slow = quantize(values.double(), n1, n2, bits).float()  # frexp
            assert torch.equal(fast, slow), (bits, n1, n2)


def test_levels_below_the_normal_range_take_the_frexp_path() -> None:
    # n2 = -124 with 2 mantissa bits: the float32 bit trick is not used; results stay exact
    values = torch.tensor([2.0 ** -124 * 1.3, 2.0 ** -125 * 1.01, 2.0 ** -126])
    assert quantize(values, -120, -124, 2).tolist() == reference_quantize(
        values.double().tolist(), -120, -124, 2)


def test_mantissa_zero_is_the_paper_rule() -> None:
    gen = torch.Generator().manual_seed(1)
    values = torch.randn(5000, generator=gen)
    assert torch.equal(quantize(values, 1, -6, 0), quantize(values, 1, -6))
    assert quantize(values, 1, -6).tolist() == reference_quantize(values.tolist(), 1, -6, 0)
    for s in (0.74, 0.75, 1.0, 1.49, 1.5, 3e-3):
        assert level_range(s, 4, mantissa_bits=0) == level_range(s, 4)


@pytest.mark.parametrize("bits", [1, 2, 3])
def test_top_exponent_is_that_of_the_rounded_largest_weight(bits: int) -> None:
    for s in np.linspace(0.01, 7.9, 997):
        rounded = reference_quantize([float(s)], 40, -40, bits)[0]
        assert level_range(float(s), 4, mantissa_bits=bits) == (
            math.frexp(rounded)[1] - 1, math.frexp(rounded)[1] - 4), s


def test_level_range_keeps_mantissa_bits_below_the_least_exponent() -> None:
    # bfloat16 state: 2^-133 is its least power; 1.5 * 2^-133 needs one bit below it
    assert level_range(2.0 ** -130, 8) == (-130, -133)
    assert level_range(2.0 ** -130, 8, mantissa_bits=1) == (-130, -132)
    assert level_range(1e-3, 8, torch.float16, mantissa_bits=2) == (-10, -17)
    assert level_range(1e-6, 8, torch.float16, mantissa_bits=2) == (-20, -22)


def test_mse_levels_search_with_mantissa_bits() -> None:
    w = torch.tensor([0.3, -0.35, 0.4, 0.45, 1.0])
    n1, n2 = fit_level_range(w, 1, "mse", mantissa_bits=1)
    best = min(range(0, -6, -1), key=lambda top: sum(
        (a - b) ** 2 for a, b in zip(w.tolist(), reference_quantize(w.tolist(), top, top, 1))))
    assert (n1, n2) == (best, best)


@pytest.mark.parametrize("bad", [4, -1, True, 1.0, "1"])
def test_config_rejects_bad_mantissa_bits(bad: object) -> None:
    with pytest.raises(ConfigError, match=r"INQConfig.mantissa_bits=.* use an integer from 0"):
        nnc.INQConfig(mantissa_bits=bad)  # type: ignore[arg-type]


def _quantized_mlp(bits: int) -> nn.Module:
    torch.manual_seed(0)
    model = build_model("tiny_mlp", input_size=4, hidden=12)  # fc1 12 x 16, fc2 10 x 12
    nnc.prepare(model, nnc.INQConfig(portions=(0.5, 1.0), num_quantum_values=4,
                                     mantissa_bits=bits))
    return model


def test_layer_fixes_entries_on_the_grid_and_records_the_bits() -> None:
    model = _quantized_mlp(1)
    layer = model.fc1
    assert layer.weight_levels.tolist()[3] == 1 and layer.inq_mantissa_bits("weight") == 1
    n1, n2, count = layer.inq_levels("weight")
    assert count == 12 * 16
    before = layer.weight.detach().clone()
    nnc.quantize_step(model)
    fixed = ~layer.free_entries("weight")
    assert int(fixed.sum()) == count // 2
    expected = reference_quantize(before[fixed].tolist(), n1, n2, 1)
    assert layer.weight.detach()[fixed].tolist() == expected
    nnc.quantize_step(model)
    grid = level_grid(layer.weight.detach())
    assert grid is not None and grid[2] == 1  # some ±1.5 * 2^e
    check_model_state(Checkpoint(Path("c.safetensors"), {}, {
        f"model.{k}": v for k, v in model.state_dict().items()}))
    plain = nnc.finalize(model)
    row = nnc.summarize(plain).layers[0]
    k = row.levels and (row.levels - 1) // 4  # 2 k 2^M + 1 levels
    assert row.bits == 2 + math.ceil(math.log2(k)) + 1


def test_checkpoint_check_names_a_value_off_the_grid() -> None:
    model = _quantized_mlp(1)
    nnc.quantize_step(model, 1.0)
    state = {f"model.{k}": v.clone() for k, v in model.state_dict().items()}
    n1 = int(state["model.fc1.weight_levels"][0])
    off = 1.25 * 2.0 ** n1  # a level of 2 mantissa bits, not of 1
    state["model.fc1.weight_fixed"].view(-1)[0] = off
    state["model.fc1.weight"].view(-1)[0] = off
    with pytest.raises(FormatError, match=r"not 0 or \+-\(1 \+ j/2\) 2\^e"):
        check_model_state(Checkpoint(Path("c.safetensors"), {}, state))
    state["model.fc1.weight_levels"] = state["model.fc1.weight_levels"][:3].clone()  # as M = 0
    state["model.fc1.weight_fixed"].view(-1)[0] = 1.5 * 2.0 ** n1
    state["model.fc1.weight"].view(-1)[0] = 1.5 * 2.0 ** n1
    with pytest.raises(FormatError, match=r"not 0 or \+-2\^e"):
        check_model_state(Checkpoint(Path("c.safetensors"), {}, state))
    state["model.fc1.weight_levels"] = torch.tensor([n1, n1 - 3, 12 * 16, 7])
    with pytest.raises(FormatError, match="mantissa bits from 1 to 3"):
        check_model_state(Checkpoint(Path("c.safetensors"), {}, state))


def test_loading_a_state_of_other_mantissa_bits_says_how_to_prepare() -> None:
    source, target = _quantized_mlp(1), _quantized_mlp(0)
    with pytest.raises(ConfigError, match=r"mantissa_bits 1, .* uses 0; prepare it with "
                                          "mantissa_bits=1"):
        target.load_state_dict(source.state_dict())
    with pytest.raises(ConfigError, match=r"mantissa_bits 1, .* uses 2; prepare it with "
                                          "mantissa_bits=1"):
        _quantized_mlp(2).load_state_dict(source.state_dict())
    with pytest.raises(ConfigError, match="level set cannot change"):
        nnc.prepare(source, nnc.INQConfig(portions=(0.5, 1.0), num_quantum_values=4))


def test_codes_and_table_by_hand() -> None:
    values = np.array([0.0, 0.75, -1.0, 1.5, 0.5])
    # magnitudes 0.5 -> L 0, 0.75 -> 1, 1.0 -> 2, 1.5 -> 3; codes 1 + 2 L + sign
    assert [x if not isinstance(x, np.ndarray) else x.tolist()
            for x in level_codes(values)] == [-1, 4, 1, [0, 3, 6, 7, 1]]
    table = level_table(-1, 4, 1)
    assert table[level_codes(values)[3]].tolist() == values.tolist()
    assert pow2_codes(values) is None  # not all powers of two
    assert level_codes(np.array([0.5, 0.3])) is None  # 0.3 is on no grid of <= 3 bits
    assert level_codes(np.array([1.125, -0.5]))[2] == 3
    assert level_codes(np.ldexp(1.5, np.arange(-70, 0))) is None  # 140 levels: too many


@pytest.mark.parametrize("float_dtype", ["float32", "float16"])
def test_file_round_trip_is_exact_and_smaller_than_floats(tmp_path: Path,
                                                          float_dtype: str) -> None:
    model = _quantized_mlp(2)
    with torch.no_grad():
        model.fc1.weight.mul_(torch.rand_like(model.fc1.weight) < 0.3)
    nnc.quantize_step(model, 1.0)
    plain = nnc.finalize(model)
    path = tmp_path / "m.ncz"
    save_compact(plain, path, float_dtype=float_dtype)
    back = load_compact(path)
    for key, value in plain.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key
    info = inspect_compact(path)
    # the biases are 0 at initialization: stored as floats with nothing kept
    assert {t.name: t.mantissa for t in info.tensors if t.values == "pow2"} == {
        "fc1.weight": 2, "fc2.weight": 2}
    # level codes, not floats: under the 16 bits per kept entry that float16 would take
    assert 8 * info.tensors[0].value_bytes < 16 * info.tensors[0].kept


def test_schema_refuses_bad_mantissa_fields(tmp_path: Path) -> None:
    model = _quantized_mlp(1)
    nnc.quantize_step(model, 1.0)
    path = tmp_path / "m.ncz"
    save_compact(nnc.finalize(model), path)
    data = as_version2(path.read_bytes())  # JSON metadata: a field can take any value
    for value, expected, base in ((0, "an integer in [1, 3] for 'pow2' values", data),
                                  (4, "an integer in [1, 3] for 'pow2' values", data),
                                  (4, "an integer in [1, 3] for 'pow2' values",
                                   path.read_bytes()),  # version 3's binary field
                                  ("1", "an integer in [1, 3]", data)):
        bad = tmp_path / "bad.ncz"
        bad.write_bytes(edited(base, lambda m, v=value: m["tensors"][0].update(mantissa=v)))
        with pytest.raises(FormatError, match=r"tensors\[0\].mantissa .* expected " +
                           expected.replace("[", r"\[").replace("]", r"\]")):
            load_compact(bad)
    # exp_min must leave the mantissa bits below it that float32 holds
    bad.write_bytes(edited(data, lambda m: m["tensors"][0].update(exp_min=-149)))
    with pytest.raises(FormatError, match=r"exp_min .* an integer in \[-148, "):
        load_compact(bad)

"""INQ numbers at the edges of float32: levels exact in the bfloat16 state, never infinite; and
``finalize`` refusing weights that went NaN or infinite."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

import nncompress as nnc
from nncompress.inq import MAX_EXPONENT, MIN_EXPONENT, exponent_range, level_range
from nncompress.layers import CompressedLayer


def _reference(w: float, n1: int, n2: int) -> float:
    """The paper's rounding, one value at a time, in float64 (slow and plain)."""
    a = abs(w)
    if a < 2.0 ** (n2 - 1):
        return 0.0
    for e in range(n2, n1 + 1):
        low = 0.75 * 2.0 ** e if e > n2 else 2.0 ** (n2 - 1)
        if low <= a < 1.5 * 2.0 ** e:
            return math.copysign(2.0 ** e, w)
    return math.copysign(2.0 ** n1, w)


def _quantized(values: list[float], k: int = 8) -> nn.Linear:
    layer = nn.Linear(len(values), 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([values], dtype=torch.float32))
    model = nnc.prepare(layer, nnc.INQConfig(portions=(1.0,), num_quantum_values=k))
    nnc.quantize_step(model)
    return model


def test_the_bfloat16_exponent_range() -> None:
    assert (MIN_EXPONENT, MAX_EXPONENT) == (-133, 127)
    assert torch.tensor(2.0 ** -133).to(torch.bfloat16).item() == 2.0 ** -133
    assert torch.tensor(2.0 ** -134).to(torch.bfloat16).item() == 0.0  # why n2 stops at -133
    assert torch.tensor(2.0 ** 127).to(torch.bfloat16).item() == 2.0 ** 127


@pytest.mark.parametrize(("max_abs", "k", "expected"), [
    (0.75, 8, (0, -7)),
    (3e38, 8, (127, 120)),             # 4/3 * 3e38 = 4e38 would give n1 = 128: 2^128 is inf
    (2.0 ** 127, 1, (127, 127)),
    (2.0 ** -127, 8, (-127, -133)),    # n2 = -134 would be 0 in bfloat16
    (2.0 ** -140, 8, (-133, -133)),    # every level would lie below 2^-133
    (1e-45, 4, (-133, -133)),          # float32's least subnormal
])
def test_level_range_is_clamped_to_exact_powers(max_abs: float, k: int,
                                                expected: tuple[int, int]) -> None:
    assert level_range(max_abs, k) == expected


def test_tiny_weights_are_fixed_at_values_the_state_holds_exactly() -> None:
    values = [2.0 ** -127, 2.0 ** -133, 1.5 * 2.0 ** -134, 2.0 ** -134, 2.0 ** -135, -2.0 ** -130]
    model = _quantized(values)
    n1, n2, _ = model.inq_levels("weight")
    assert (n1, n2) == (-127, -133)
    expected = [2.0 ** -127, 2.0 ** -133, 2.0 ** -133, 2.0 ** -133, 0.0, -2.0 ** -130]
    assert model.weight.detach()[0].tolist() == expected
    assert [_reference(v, n1, n2) for v in values] == expected
    assert model.weight_fixed.float()[0].tolist() == expected  # the bfloat16 state, exactly
    assert model.weight_fixed.float()[0].tolist() == nnc.finalize(model).weight[0].tolist()


def test_a_weight_of_3e38_quantizes_to_the_largest_power_not_inf() -> None:
    model = _quantized([3e38, 1.0, -3e38, 2.0 ** 126])
    assert model.inq_levels("weight")[:2] == (127, 120)
    assert model.weight.detach()[0].tolist() == [2.0 ** 127, 0.0, -2.0 ** 127, 2.0 ** 126]
    assert bool(torch.isfinite(model.weight_fixed.float()).all())


def test_a_float16_layer_keeps_its_levels_finite_and_exact() -> None:
    assert exponent_range(torch.float16) == (-24, 15)
    assert exponent_range(torch.float64) == (MIN_EXPONENT, MAX_EXPONENT)  # the state's range
    layer = nn.Linear(3, 1, bias=False).half()
    with torch.no_grad():  # 4/3 * 60000 = 80000 would give n1 = 16: 2^16 is inf in float16
        layer.weight.copy_(torch.tensor([[60000.0, -300.0, 2.0 ** -24]]))
    model = nnc.prepare(layer, nnc.INQConfig(portions=(1.0,), num_quantum_values=8))
    nnc.quantize_step(model)
    assert model.inq_levels("weight")[:2] == (15, 8)
    assert model.weight.detach()[0].tolist() == [2.0 ** 15, -(2.0 ** 8), 0.0]


def test_every_float32_power_of_two_survives_the_state() -> None:
    """For each e in -149..127, a layer whose largest weight is 2^e: every fixed value equals
    the paper's rounding over the clamped level set and reads back exactly from the bfloat16
    state."""
    for e in range(-149, 128):
        values = [2.0 ** e, -(2.0 ** max(e - 3, -149)), 0.6 * 2.0 ** e, 2.0 ** max(e - 9, -149)]
        values = [float(torch.tensor(v, dtype=torch.float32)) for v in values]
        model = _quantized(values)
        n1, n2, _ = model.inq_levels("weight")
        got = model.weight.detach()[0].tolist()
        assert got == [_reference(v, n1, n2) for v in values], e
        assert model.weight_fixed.float()[0].tolist() == got, e
        # the largest weight is itself a level down to 2^-133; below, the nearest level or 0
        assert got[0] == (2.0 ** e if e >= -133 else 2.0 ** -133 if e == -134 else 0.0), e


def _dns_model() -> nn.Sequential:
    torch.manual_seed(0)
    model = nnc.prepare(nn.Sequential(nn.Linear(4, 3)), nnc.DNSConfig(c_rate=0.5))
    model(torch.randn(2, 4))  # statistics taken, masks made
    return model


def test_finalize_refuses_a_nan_that_dns_pruned() -> None:
    model = _dns_model()
    with torch.no_grad():
        model[0].weight[0, 0] = math.nan
    model(torch.randn(2, 4))  # surgery: the NaN entry is pruned
    assert not bool(model[0].weight_mask[0, 0])
    with pytest.raises(nnc.NonFiniteError) as info:
        nnc.finalize(model)
    assert str(info.value).startswith(
        "layer '0': weight holds 1 NaN or infinite value(s) at finalize (1 of them pruned by DNS")
    assert isinstance(model[0], CompressedLayer)  # nothing changed
    with pytest.warns(UserWarning, match="layer '0': weight holds 1 NaN"):
        plain = nnc.finalize(model, allow_nonfinite=True)
    assert plain[0].weight[0, 0].item() == 0.0


def test_finalize_refuses_inf_in_a_bias_and_nan_in_a_free_inq_entry() -> None:
    model = _dns_model()
    with torch.no_grad():
        model[0].bias[1] = -math.inf
    with pytest.raises(nnc.NonFiniteError, match="layer '0': bias holds 1 NaN or infinite"):
        nnc.finalize(model)
    layer = nnc.prepare(nn.Linear(3, 2), nnc.INQConfig(portions=(0.5, 1.0)))
    nnc.quantize_step(layer)
    with torch.no_grad():
        free = layer.free_entries("weight")
        layer.weight[free] = math.nan
    with pytest.raises(nnc.NonFiniteError, match="weight holds 3 NaN or infinite value"):
        nnc.finalize(layer)


def test_finalize_of_finite_weights_says_nothing() -> None:
    model = _dns_model()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plain = nnc.finalize(model)
    assert type(plain[0]) is nn.Linear

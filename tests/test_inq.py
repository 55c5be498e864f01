"""INQ: level set, rounding, partition counts and frozen entries against slow references."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch
from torch import nn

import nncompress as nnc
from nncompress import inq


def reference_level_range(max_abs: float, k: int) -> tuple[int, int]:
    target = Fraction(4) * Fraction(max_abs) / 3
    n1 = 0
    while Fraction(2) ** (n1 + 1) <= target:
        n1 += 1
    while Fraction(2) ** n1 > target:
        n1 -= 1
    return n1, n1 - k + 1


def reference_round(value: float, n1: int, n2: int) -> float:
    a = abs(value)
    sign = math.copysign(1.0, value)
    if a < 2.0 ** (n2 - 1):
        return 0.0
    if a >= 1.5 * 2.0**n1:
        return sign * 2.0**n1
    if a < 1.5 * 2.0**n2:
        return sign * 2.0**n2
    for e in range(n2 + 1, n1 + 1):
        if 0.75 * 2.0**e <= a < 1.5 * 2.0**e:
            return sign * 2.0**e
    raise AssertionError("unreachable")


@pytest.mark.parametrize("max_abs", [0.75, 0.7499999, 1.0, 1.5, 1.5000001, 3e-5, 0.0123, 47.0])
def test_level_range_matches_exact_reference(max_abs: float) -> None:
    value = float(torch.tensor(max_abs, dtype=torch.float32))
    assert inq.level_range(value, 5) == reference_level_range(value, 5)


def test_level_range_hand_values() -> None:
    assert inq.level_range(0.75, 8) == (0, -7)
    assert inq.level_range(0.7, 4) == (-1, -4)
    assert inq.level_range(1.6, 1) == (1, 1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_rounding_at_every_boundary(dtype: torch.dtype) -> None:
    n1, n2 = 0, -4
    points = []
    for e in range(n2 - 2, n1 + 3):
        for base in (0.75 * 2.0**e, 1.5 * 2.0**e, 2.0**e, 2.0 ** (n2 - 1)):
            point = torch.tensor(base, dtype=dtype)
            below = float(torch.nextafter(point, torch.tensor(0.0, dtype=dtype)))
            above = float(torch.nextafter(point, torch.tensor(10.0, dtype=dtype)))
            points += [base, below, above, -base, -below, -above]
    values = torch.tensor(points, dtype=dtype)
    got = inq.quantize(values, n1, n2).tolist()
    assert got == [reference_round(v, n1, n2) for v in values.tolist()]


def test_rounding_hand_values_and_clamp() -> None:
    got = inq.quantize(torch.tensor([0.03125, 0.0312, 0.0937, 0.09375, 0.2, 0.375, 5.0, -7.0]),
                       0, -4).tolist()
    # 2^(n2-1) = 1/32 is the zero cut; 1.5*2^-4 = 0.09375 rounds up; 5 and -7 clamp to 2^0.
    assert got == [0.0625, 0.0, 0.0625, 0.125, 0.25, 0.5, 1.0, -1.0]


@pytest.mark.parametrize("seed", range(20))
def test_rounding_random_matches_reference(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    values = torch.randn(500, generator=gen) * 2.0 ** float(torch.randint(-6, 4, (1,),
                                                                              generator=gen))
    k = int(torch.randint(1, 9, (1,), generator=gen))
    n1, n2 = inq.level_range(float(values.abs().max()), k)
    got = inq.quantize(values, n1, n2).tolist()
    assert got == [reference_round(v, n1, n2) for v in values.tolist()]


def test_fix_count_rounds_halves_up() -> None:
    assert [inq.fix_count(q, 10) for q in (0.3, 0.55, 0.875, 1.0)] == [3, 6, 9, 10]
    assert inq.fix_count(0.5, 7) == 4
    assert inq.fix_count(0.25, 0) == 0


@pytest.mark.parametrize("seed", range(20))
def test_select_largest_matches_reference(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    keys = torch.randint(0, 6, (60,), generator=gen).float()  # many ties on purpose
    keys[torch.rand(60, generator=gen) < 0.3] = -1.0  # not candidates
    candidates = [i for i in range(60) if keys[i] >= 0]
    count = int(torch.randint(0, len(candidates) + 1, (1,), generator=gen))
    expected = set(sorted(candidates, key=lambda i: (-keys[i].item(), i))[:count])
    got = inq.select_largest(keys, count)
    assert {i for i in range(60) if got[i]} == expected


def _net(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 4))


def _free(layer: nn.Module, blob: str = "weight") -> torch.Tensor:
    return layer.free_entries(blob)


def test_quantize_step_fixes_exact_counts_largest_first() -> None:
    net = _net()
    with torch.no_grad():
        net[0].weight[0, :5] = 0.0  # zeros at INQ start: fixed, not participating
    before = net[0].weight.detach().clone()
    nnc.prepare(net, nnc.INQConfig(num_quantum_values=4))
    layer = net[0]
    n1, n2, n0 = layer.inq_levels("weight")
    assert n0 == 16 * 12 - 5
    assert (n1, n2) == inq.level_range(float(before.abs().max()), 4)
    for q in (0.3, 0.6, 0.8, 1.0):
        nnc.quantize_step(net, q)
        fixed = ~_free(layer)
        assert int(fixed.sum()) - 5 == math.floor(q * n0 + 0.5)
    # The first 30% are the largest magnitudes (ties by index), rounded per Eq. 4.
    net2 = _net()
    with torch.no_grad():
        net2[0].weight[0, :5] = 0.0
    nnc.prepare(net2, nnc.INQConfig(num_quantum_values=4))
    nnc.quantize_step(net2, 0.3)
    flat = before.flatten().tolist()
    order = sorted((i for i in range(len(flat)) if flat[i] != 0), key=lambda i: (-abs(flat[i]), i))
    chosen = set(order[: math.floor(0.3 * n0 + 0.5)])
    fixed = (~_free(net2[0])).flatten()
    assert {i for i in range(len(flat)) if fixed[i] and flat[i] != 0} == chosen
    got = net2[0].weight.detach().flatten().tolist()
    for i in range(len(flat)):
        want = reference_round(flat[i], n1, n2) if i in chosen else flat[i]
        assert got[i] == want


def test_portions_only_increase_and_fixed_never_free_again() -> None:
    net = nnc.prepare(_net(), nnc.INQConfig())
    nnc.quantize_step(net, 0.5)
    fixed = ~_free(net[0])
    nnc.quantize_step(net, 0.5)
    assert torch.equal(~_free(net[0]), fixed)
    with pytest.raises(nnc.ConfigError) as info:
        nnc.quantize_step(net, 0.4)
    assert str(info.value) == ("portion 0.4 is below the portion 0.5 layer '0' already reached; "
                               "portions only increase")
    nnc.quantize_step(net, 0.75)
    assert bool((~_free(net[0]) >= fixed).all())


def test_quantize_step_without_portion_walks_each_layers_schedule() -> None:
    net = nnc.prepare(_net(), nnc.INQConfig(portions=(0.4, 1.0)),
                      layers={"2": nnc.INQConfig(portions=(0.5, 0.8, 1.0))})
    first, second = net[0], net[2]
    n0 = [layer.inq_levels("weight")[2] for layer in (first, second)]
    expected = [(0.4, 0.5), (1.0, 0.8)]
    for portions in expected:
        nnc.quantize_step(net)
        assert (float(first.inq_portion), float(second.inq_portion)) == portions
        fixed = [int((~layer.free_entries("weight")).sum()) for layer in (first, second)]
        assert fixed == [math.floor(p * n + 0.5) for p, n in zip(portions, n0)]
    with pytest.raises(nnc.ConfigError) as info:
        nnc.quantize_step(net)
    assert str(info.value) == ("layer '0' has reached the last portion of its schedule "
                               "[0.4, 1.0]; nothing to quantize")
    assert float(second.inq_portion) == 0.8  # no layer stepped when one could not
    nnc.quantize_step(net, 1.0)
    assert float(second.inq_portion) == 1.0


def test_random_strategy_is_seeded_and_exact() -> None:
    masks = []
    for _ in range(2):
        net = nnc.prepare(_net(), nnc.INQConfig(strategy="random", seed=5))
        nnc.quantize_step(net, 0.5)
        masks.append(~_free(net[0]))
    assert torch.equal(masks[0], masks[1])
    assert int(masks[0].sum()) == 96
    magnitude = nnc.prepare(_net(), nnc.INQConfig())
    nnc.quantize_step(magnitude, 0.5)
    assert not torch.equal(masks[0], ~_free(magnitude[0]))


@pytest.mark.parametrize("make_optimizer", [
    lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=5e-4),
    lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3),
    lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=1e-4),
    lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1),
], ids=["sgd", "nesterov", "adam", "adamw"])
def test_fixed_entries_bit_identical_under_optimizers(make_optimizer) -> None:  # type: ignore[no-untyped-def]
    net = _net()
    optimizer = make_optimizer(net.parameters())  # made before prepare on purpose
    nnc.prepare(net, nnc.INQConfig())
    x, y = torch.randn(32, 16), torch.randint(0, 4, (32,))
    for q in (0.5, 0.75):
        nnc.quantize_step(net, q)
        snapshot = [(p.detach().clone(), ~_free(layer, blob))
                    for layer in (net[0], net[2]) for blob, p in (("weight", layer.weight),
                                                                 ("bias", layer.bias))]
        for _ in range(10):
            optimizer.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
            optimizer.step()
            for layer in (net[0], net[2]):  # the optimizer saw zero gradients there
                assert bool((layer.weight.grad[~_free(layer)] == 0).all())
                assert bool((layer.weight.grad[_free(layer)] != 0).any())
        after = [p.detach() for layer in (net[0], net[2]) for p in (layer.weight, layer.bias)]
        for (old, fixed), new in zip(snapshot, after):
            assert torch.equal(old[fixed], new[fixed])
            assert not torch.equal(old[~fixed], new[~fixed])  # free entries do train


def test_full_quantization_lands_in_level_set_and_finalize_is_exact() -> None:
    net = nnc.prepare(_net(), nnc.INQConfig(num_quantum_values=3))
    for q in (0.5, 1.0):
        nnc.quantize_step(net, q)
    levels = {}
    for layer in (net[0], net[2]):
        for blob in ("weight", "bias"):
            n1, n2, _ = layer.inq_levels(blob)
            levels[(id(layer), blob)] = {0.0} | {s * 2.0**e for e in range(n2, n1 + 1)
                                                 for s in (1, -1)}
    net.eval()
    x = torch.randn(5, 16)
    out = net(x)
    layers = [net[0], net[2]]
    net = nnc.finalize(net)
    assert torch.equal(net(x), out)
    for layer in layers:
        for blob in ("weight", "bias"):
            values = set(getattr(net[0 if layer is layers[0] else 2], blob).flatten().tolist())
            assert values <= levels[(id(layer), blob)]


def test_all_zero_layer_and_nan_errors() -> None:
    net = _net()
    with torch.no_grad():
        net[2].weight.zero_()
    nnc.prepare(net, nnc.INQConfig())
    assert net[2].inq_levels("weight") == (0, 0, 0)
    nnc.quantize_step(net, 1.0)
    assert not bool(torch.isnan(net[2].weight).any())
    bad = _net()
    with torch.no_grad():
        bad[0].weight[1, 1] = math.nan
    with pytest.raises(nnc.NonFiniteError) as info:
        nnc.prepare(bad, nnc.INQConfig())
    assert str(info.value) == ("layer '0' holds NaN or infinite values in weight when INQ starts; "
                               "check the learning rate and the data")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"portions": (0.5, 0.3, 1.0)},
     "INQConfig.portions=(0.5, 0.3, 1.0) is invalid: 0.3 follows 0.5; portions must increase"),
    ({"portions": (0.5, 1.2)},
     "INQConfig.portions=(0.5, 1.2) is invalid: 1.2 is outside (0, 1]; use increasing fractions "
     "ending at 1.0"),
    ({"portions": (0.5, 0.9)},
     "INQConfig.portions=(0.5, 0.9) is invalid: the last portion must be 1.0 so every entry "
     "ends quantized"),
    ({"num_quantum_values": 0},
     "INQConfig.num_quantum_values=0 is invalid: use an integer from 1 to 64 (8 = 5-bit, 1 = "
     "ternary)"),
    ({"strategy": "largest"},
     "INQConfig.strategy='largest' is invalid: use 'magnitude' or 'random'"),
])
def test_config_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(nnc.ConfigError) as info:
        nnc.INQConfig(**kwargs)  # type: ignore[arg-type]
    assert str(info.value) == message


def test_quantize_step_errors() -> None:
    with pytest.raises(nnc.ConfigError, match="no layer is under INQ"):
        nnc.quantize_step(_net(), 0.5)
    net = nnc.prepare(_net(), nnc.INQConfig())
    with pytest.raises(nnc.ConfigError) as info:
        nnc.quantize_step(net, 1.5)
    assert str(info.value) == "portion=1.5 is invalid: use an accumulated fraction in (0, 1]"


def test_rounding_of_tiny_float32_uses_exact_fallback() -> None:
    values = torch.tensor([3e-38, -1.2e-38, 4e-39, 1e-45, 0.0], dtype=torch.float32)
    n1, n2 = inq.level_range(float(values.abs().max()), 8)
    assert n2 < -125  # below float32's normal range: the frexp path
    got = inq.quantize(values, n1, n2).tolist()
    assert got == [reference_round(v, n1, n2) for v in values.tolist()]


def test_mask_fixed_gradients_before_clipping() -> None:
    net = nnc.prepare(_net(), nnc.INQConfig())
    nnc.quantize_step(net, 0.5)
    nn.functional.cross_entropy(net(torch.randn(8, 16)), torch.randint(0, 4, (8,))).backward()
    grad = net[0].weight.grad.clone()
    assert bool((grad[~_free(net[0])] != 0).any())
    nnc.mask_fixed_gradients(net)
    fixed = ~_free(net[0])
    assert bool((net[0].weight.grad[fixed] == 0).all())
    assert torch.equal(net[0].weight.grad[~fixed], grad[~fixed])


def test_bfloat16_layer_keeps_its_state_through_steps() -> None:
    net = _net().to(torch.bfloat16)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    nnc.prepare(net, nnc.INQConfig())
    nnc.quantize_step(net, 0.5)
    fixed_state = net[0].fixed_values("weight").clone()
    fixed = ~_free(net[0])
    before = net[0].weight.detach().clone()
    for _ in range(3):
        optimizer.zero_grad()
        net(torch.randn(4, 16, dtype=torch.bfloat16)).float().sum().backward()
        optimizer.step()
    bits = net[0].fixed_values("weight").view(torch.int16)
    assert torch.equal(bits, fixed_state.view(torch.int16))  # NaN != NaN, so compare bits
    assert torch.equal(net[0].weight[fixed], before[fixed])


def test_a_deep_copy_trains_with_its_own_fixed_entries_frozen() -> None:
    import copy

    original = nnc.prepare(_net(), nnc.INQConfig())
    nnc.quantize_step(original, 0.5)
    net = copy.deepcopy(original)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    fixed = ~_free(net[0])
    before = net[0].weight.detach().clone()
    for _ in range(3):
        optimizer.zero_grad()
        net(torch.randn(4, 16)).sum().backward()
        optimizer.step()
    assert torch.equal(net[0].weight[fixed], before[fixed])
    assert not torch.equal(net[0].weight[~fixed], before[~fixed])

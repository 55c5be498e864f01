"""DNS: the tensor math against per-element references, and the layer's behaviour."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
import torch
from torch import nn

import nncompress as nnc
from nncompress import dns


def reference_statistics(values: list[float]) -> tuple[float, float] | None:
    nonzero = [abs(v) for v in values if v != 0]
    if not nonzero:
        return None
    return statistics.fmean(nonzero), statistics.pstdev(nonzero)


def reference_update(weights: list[float], mask: list[bool], low: float,
                     high: float) -> list[bool]:
    low32, high32 = float(np.float32(low)), float(np.float32(high))
    out = []
    for w, t in zip(weights, mask):
        if t and abs(w) <= low32:
            out.append(False)
        elif not t and abs(w) > high32:
            out.append(True)
        else:
            out.append(t)
    return out


@pytest.mark.parametrize("seed", range(40))
def test_mask_update_matches_reference(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    size = int(torch.randint(1, 400, (1,), generator=gen))
    weight = torch.randn(size, generator=gen) * float(torch.rand(1, generator=gen) * 3)
    mask = torch.rand(size, generator=gen) < 0.6
    config = nnc.DNSConfig(c_rate=float(torch.randn(1, generator=gen) * 2),
                           alpha_low=0.8, alpha_high=1.2)
    stats = dns.mask_statistics([weight * mask], "fc")
    expected_stats = reference_statistics((weight * mask).tolist())
    assert (stats is None) == (expected_stats is None)
    if stats is None:
        return
    assert stats == pytest.approx(expected_stats, rel=1e-9)
    low, high = dns.thresholds(*stats, config)
    t = max(expected_stats[0] + config.c_rate * expected_stats[1], 0.0)
    assert (low, high) == pytest.approx((0.8 * t, 1.2 * t), rel=1e-9)
    expected = reference_update(weight.tolist(), mask.tolist(), low, high)
    dns.update_mask(weight, mask, low, high)
    assert mask.tolist() == expected


def test_hysteresis_band_on_hand_values() -> None:
    # low = 1.0, high = 2.0: kept entries above 1 stay, pruned entries need more than 2.
    weight = torch.tensor([1.0, 1.5, 2.0, 2.5, 1.0, 1.5, 2.0, 2.5, -0.5, -3.0])
    mask = torch.tensor([True] * 4 + [False] * 4 + [True, False])
    dns.update_mask(weight, mask, 1.0, 2.0)
    assert mask.tolist() == [False, True, True, True, False, False, False, True, False, True]


def test_statistics_on_hand_values_and_empty() -> None:
    assert dns.mask_statistics([torch.tensor([0.0, 2.0, -4.0]), torch.tensor([0.0])], "x") == (
        3.0, 1.0)
    assert dns.mask_statistics([torch.zeros(5)], "x") is None
    with pytest.raises(nnc.NonFiniteError, match="layer 'fc1' holds NaN or infinite weights"):
        dns.mask_statistics([torch.tensor([1.0, math.inf])], "fc1")


def test_probability_and_draws() -> None:
    assert dns.surgery_probability(0, 1e-4, 1.0) == 1.0
    assert dns.surgery_probability(10_000, 1e-4, 1.0) == pytest.approx(0.5)
    assert dns.surgery_probability(100, 0.01, 2.0) == pytest.approx(0.25)
    draws = [dns.uniform_draw(123, i) for i in range(20_000)]
    assert all(0.0 <= d < 1.0 for d in draws)
    assert statistics.fmean(draws) == pytest.approx(0.5, abs=0.01)
    assert draws[:5] == [dns.uniform_draw(123, i) for i in range(5)]
    assert draws[:5] != [dns.uniform_draw(124, i) for i in range(5)]


def _layer(seed: int = 0, bias: bool = True) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(20, 10, bias=bias)


def test_forward_uses_masked_weights_and_gradient_is_straight_through() -> None:
    layer = nnc.prepare(_layer(), nnc.DNSConfig(c_rate=0.5, iter_stop=1))
    x = torch.randn(4, 20)
    out = layer(x)  # iteration 0: statistics and surgery (p = 1), then the forward
    mask, bias_mask = layer.mask("weight"), layer.mask("bias")
    assert 0 < int(mask.sum()) < mask.numel()
    masked_weight = (layer.weight * mask).detach().requires_grad_(True)
    masked_bias = (layer.bias * bias_mask).detach().requires_grad_(True)
    expected = nn.functional.linear(x, masked_weight, masked_bias)
    assert torch.equal(out, expected)
    out.square().sum().backward()
    expected.square().sum().backward()
    # Pruned entries receive the gradient of the masked product, not zero.
    assert torch.equal(layer.weight.grad, masked_weight.grad)
    assert torch.equal(layer.bias.grad, masked_bias.grad)
    assert bool((layer.weight.grad[~mask] != 0).any())


def _reference_run(weight: torch.Tensor, bias: torch.Tensor, config: nnc.DNSConfig, seed: int,
                   updates: list[torch.Tensor]) -> list[list[bool]]:
    """Per-iteration reference: statistics at 0, draw, prune/splice; weights move in between."""
    w, b = weight.clone(), bias.clone()
    t_w, t_b = [True] * w.numel(), [True] * b.numel()
    stats = reference_statistics((w.flatten().tolist()) + b.tolist())
    history = []
    for i, delta in enumerate(updates):
        if i < config.iter_stop and stats is not None and \
                dns.uniform_draw(seed, i) < (1 + config.gamma * i) ** -config.power:
            t = max(stats[0] + config.c_rate * stats[1], 0.0)
            lo, hi = config.alpha_low * t, config.alpha_high * t
            if i < config.ramp:  # gradual surgery: the thresholds grow to t over the ramp
                lo, hi = lo * ((i + 1) / config.ramp), hi * ((i + 1) / config.ramp)
            t_w = reference_update(w.flatten().tolist(), t_w, lo, hi)
            t_b = reference_update(b.tolist(), t_b, lo, hi)
        history.append(t_w + t_b)
        w += delta[: w.numel()].reshape(w.shape)
        b += delta[w.numel():]
    return history


def _check_trajectory(config: nnc.DNSConfig, layer_seed: int, update_seed: int, scale: float,
                      steps: int) -> list[int]:
    """Masks of a layer against the reference at every iteration; the pruned count of each."""
    layer = nnc.prepare(_layer(layer_seed), config)
    gen = torch.Generator().manual_seed(update_seed)
    updates = [torch.randn(210, generator=gen) * scale for _ in range(steps)]
    expected = _reference_run(layer.weight.detach(), layer.bias.detach(), config,
                              int(layer.dns_seed), updates)
    x = torch.randn(2, 20)
    pruned = []
    for i, delta in enumerate(updates):
        layer(x)
        got = layer.mask("weight").flatten().tolist() + layer.mask("bias").tolist()
        assert got == expected[i], f"iteration {i}"
        pruned.append(got.count(False))
        with torch.no_grad():
            layer.weight += delta[:200].reshape(10, 20)
            layer.bias += delta[200:]
    assert int(layer.dns_iteration) == steps
    return pruned


def test_surgery_trajectory_matches_reference() -> None:
    config = nnc.DNSConfig(c_rate=0.3, gamma=0.05, power=1.5, iter_stop=25)
    _check_trajectory(config, layer_seed=3, update_seed=9, scale=0.05, steps=40)


def test_ramped_surgery_trajectory_matches_reference_and_prunes_gradually() -> None:
    config = nnc.DNSConfig(c_rate=0.5, gamma=0.0, iter_stop=30, ramp=20)
    pruned = _check_trajectory(config, layer_seed=4, update_seed=11, scale=0.01, steps=30)
    # A twentieth of the threshold prunes a few entries; the full one, reached at iteration 19,
    # prunes what the original surgery prunes at once (about 60% of a uniform layer at c 0.5).
    assert 0 < pruned[0] < pruned[9] < pruned[19]
    assert pruned[0] < 20 and pruned[19] > 100


def test_ramp_factor_and_thresholds_on_hand_values() -> None:
    assert [dns.ramp_factor(i, 4) for i in (-1, 0, 1, 2, 3, 4, 100)] == [1.0, 0.25, 0.5, 0.75,
                                                                         1.0, 1.0, 1.0]
    assert dns.ramp_factor(5, 0) == 1.0
    config = nnc.DNSConfig(c_rate=1.0, alpha_low=0.9, alpha_high=1.1, ramp=10)
    # mu 2, sigma 3: t = 5; at iteration 4 the factor is 0.5
    assert dns.thresholds(2.0, 3.0, config, 4) == pytest.approx((2.25, 2.75))
    assert dns.thresholds(2.0, 3.0, config, 9) == pytest.approx((4.5, 5.5))
    assert dns.thresholds(2.0, 3.0, config) == pytest.approx((4.5, 5.5))


def test_statistics_kept_in_state_and_taken_once() -> None:
    layer = nnc.prepare(_layer(), nnc.DNSConfig())
    layer(torch.randn(1, 20))
    expected = reference_statistics(layer.weight.flatten().tolist() + layer.bias.tolist())
    first = layer.dns_stats.clone()
    assert first.tolist() == pytest.approx([*expected, 1.0], rel=1e-9)
    with torch.no_grad():
        layer.weight.mul_(10)
    layer(torch.randn(1, 20))
    assert torch.equal(layer.dns_stats, first)


def test_eval_mode_changes_nothing() -> None:
    layer = nnc.prepare(_layer(), nnc.DNSConfig(c_rate=1.0))
    layer.eval()
    layer(torch.randn(3, 20))
    assert int(layer.dns_iteration) == 0
    assert bool(layer.mask("weight").all())


def test_negative_iter_stop_freezes_masks_but_counts() -> None:
    layer = nnc.prepare(_layer(), nnc.DNSConfig(c_rate=1.0, iter_stop=-1))
    for _ in range(3):
        layer(torch.randn(1, 20))
    assert bool(layer.mask("weight").all())
    assert int(layer.dns_iteration) == 3


def test_all_zero_layer_makes_no_nan_and_no_update() -> None:
    layer = _layer()
    with torch.no_grad():
        layer.weight.zero_()
        layer.bias.zero_()
    layer = nnc.prepare(layer, nnc.DNSConfig())
    out = layer(torch.randn(2, 20))
    assert torch.equal(out, torch.zeros(2, 10))
    assert layer.dns_stats.tolist() == [0.0, 0.0, 0.0]
    assert bool(layer.mask("weight").all())


def test_nan_weights_raise_at_statistics() -> None:
    layer = _layer()
    with torch.no_grad():
        layer.weight[0, 0] = math.nan
    layer = nnc.prepare(layer, nnc.DNSConfig())
    with pytest.raises(nnc.NonFiniteError, match="NaN or infinite"):
        layer(torch.randn(1, 20))


def test_manual_advance_with_gradient_accumulation() -> None:
    layer = nnc.prepare(_layer(), nnc.DNSConfig(c_rate=1.0, advance="manual"))
    for _ in range(4):  # four micro-batches: no surgery, no counting
        layer(torch.randn(2, 20))
    assert int(layer.dns_iteration) == 0
    assert bool(layer.mask("weight").all())
    nnc.surgery_step(layer)
    assert int(layer.dns_iteration) == 1
    assert not bool(layer.mask("weight").all())


def test_new_stage_restarts_iteration_and_keeps_masks() -> None:
    layer = nnc.prepare(_layer(), nnc.DNSConfig(c_rate=1.0))
    layer(torch.randn(1, 20))
    mask = layer.mask("weight").clone()
    nnc.prepare(layer, nnc.DNSConfig(c_rate=1.0, iter_stop=-1))
    assert int(layer.dns_iteration) == 0
    assert float(layer.dns_stats[2]) == 0.0
    assert torch.equal(layer.mask("weight"), mask)


def test_bias_excluded_when_asked() -> None:
    layer = nnc.prepare(_layer(), nnc.DNSConfig(c_rate=3.0, include_bias=False))
    layer(torch.randn(1, 20))
    assert "bias_mask" not in dict(layer.named_buffers())
    expected = reference_statistics(layer.weight.flatten().tolist())
    assert layer.dns_stats[:2].tolist() == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"gamma": -1.0}, "DNSConfig.gamma=-1.0 is invalid: use a finite number >= 0"),
    ({"alpha_low": 1.2, "alpha_high": 1.1},
     "DNSConfig.alpha_low=1.2 is invalid: must not exceed alpha_high=1.1"),
    ({"power": math.nan}, "DNSConfig.power=nan is invalid: use a finite number >= 0"),
    ({"iter_stop": 1.5}, "DNSConfig.iter_stop=1.5 is invalid: use an integer (negative freezes "
                         "the masks)"),
    ({"advance": "batch"}, "DNSConfig.advance='batch' is invalid: use 'forward' or 'manual'"),
    ({"ramp": -5}, "DNSConfig.ramp=-5 is invalid: use an integer >= 0 (iterations; 0 prunes at "
                   "once)"),
    ({"ramp": 2.5}, "DNSConfig.ramp=2.5 is invalid: use an integer >= 0 (iterations; 0 prunes at "
                    "once)"),
    ({"ramp": 500, "iter_stop": 400}, "DNSConfig.ramp=500 is invalid: the masks stop changing "
                                      "at iter_stop=400, before the ramp ends; use ramp <= "
                                      "iter_stop"),
    ({"c_rat": 2}, "DNSConfig has no field 'c_rat' (did you mean 'c_rate'?); fields are: c_rate, "
                   "gamma, power, iter_stop, alpha_low, alpha_high, include_bias, seed, advance, "
                   "ramp"),
])
def test_config_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(nnc.ConfigError) as info:
        nnc.DNSConfig(**kwargs)  # type: ignore[arg-type]
    assert str(info.value) == message


def test_straight_through_mask_is_the_exact_product_with_the_unmasked_gradient() -> None:
    values = [1.5, -2.0, -0.0, 0.0, -3.0, math.inf, 0.25, -math.inf]
    weight = torch.tensor(values, requires_grad=True)
    mask = torch.tensor([True, False, True, False, False, True, True, False])
    out = dns.straight_through_mask(weight, mask)
    expected = torch.tensor([v * float(t) for v, t in zip(values, mask.tolist())])
    # bit for bit: the signs of the zeros and the NaN of inf * 0 included
    assert torch.equal(out.detach().view(torch.int32), expected.view(torch.int32))
    upstream = torch.tensor([0.5, -1.0, 2.0, 3.0, -0.5, 1.0, 4.0, -2.0])
    out.backward(upstream)
    assert weight.grad is not None and torch.equal(weight.grad, upstream)  # pruned ones too
    # built-in nodes only: no Python autograd function in the backward
    assert not isinstance(out.grad_fn, torch.autograd.function.BackwardCFunction)
    with torch.no_grad():
        plain = dns.straight_through_mask(weight, mask)
    assert plain.grad_fn is None
    assert torch.equal(plain.view(torch.int32), expected.view(torch.int32))


def test_update_mask_with_a_float_mask_keeps_zero_and_one() -> None:
    weight = torch.tensor([1.0, 1.5, 2.5, 0.5])
    mask = torch.tensor([1.0, 0.0, 0.0, 1.0])
    dns.update_mask(weight, mask, 0.75, 2.0)  # keep > 0.75, splice > 2.0
    assert mask.tolist() == [1.0, 0.0, 1.0, 0.0]

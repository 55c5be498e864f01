from __future__ import annotations

import math

import pytest
import torch

from nncompress.errors import ConfigError
from nncompress.train import LRSchedule, apply_lr


@pytest.mark.parametrize(
    ("schedule", "iteration", "expected"),
    [
        (LRSchedule("fixed", base_lr=0.01), 0, 0.01),
        (LRSchedule("fixed", base_lr=0.01), 123_456, 0.01),
        (LRSchedule("step", base_lr=0.1, gamma=0.5, stepsize=10), 0, 0.1),
        (LRSchedule("step", base_lr=0.1, gamma=0.5, stepsize=10), 9, 0.1),
        (LRSchedule("step", base_lr=0.1, gamma=0.5, stepsize=10), 10, 0.05),
        (LRSchedule("step", base_lr=0.1, gamma=0.5, stepsize=10), 25, 0.025),
        (LRSchedule("multistep", base_lr=0.1, gamma=0.1, stepvalues=(100, 200)), 99, 0.1),
        (LRSchedule("multistep", base_lr=0.1, gamma=0.1, stepvalues=(100, 200)), 100, 0.01),
        (LRSchedule("multistep", base_lr=0.1, gamma=0.1, stepvalues=(100, 200)), 199, 0.01),
        (LRSchedule("multistep", base_lr=0.1, gamma=0.1, stepvalues=(100, 200)), 200, 0.001),
        (LRSchedule("exp", base_lr=1.0, gamma=0.5), 3, 0.125),
        (LRSchedule("exp", base_lr=1.0, gamma=0.5), 0, 1.0),
        # Caffe's LeNet solver: (1 + 1e-4 * 10000)^-0.75 = 2^-0.75
        (LRSchedule("inv", base_lr=0.01, gamma=1e-4, power=0.75), 0, 0.01),
        (LRSchedule("inv", base_lr=0.01, gamma=1e-4, power=0.75), 10_000, 0.005946035575013605),
        (LRSchedule("poly", base_lr=0.1, power=2.0, max_iter=100), 50, 0.025),
        (LRSchedule("poly", base_lr=0.1, power=2.0, max_iter=100), 100, 0.0),
        (LRSchedule("poly", base_lr=0.1, power=0.5, max_iter=100), 150, 0.0),
        (LRSchedule("sigmoid", base_lr=0.1, gamma=-0.1, stepsize=50), 50, 0.05),
        # 0.1 / (1 + e^1)
        (LRSchedule("sigmoid", base_lr=0.1, gamma=-0.1, stepsize=50), 60, 0.02689414213699951),
    ],
)
def test_policies_match_hand_computed_values(
    schedule: LRSchedule, iteration: int, expected: float
) -> None:
    assert schedule.lr_at(iteration) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_multistep_matches_a_counting_reference() -> None:
    values = (3, 7, 8, 20)
    schedule = LRSchedule("multistep", base_lr=2.0, gamma=0.5, stepvalues=values)
    for it in range(30):
        passed = len([v for v in values if v <= it])
        assert schedule.lr_at(it) == 2.0 * 0.5**passed


def test_rampup_rises_linearly_from_rampup_lr() -> None:
    schedule = LRSchedule("fixed", base_lr=0.1, rampup_interval=10, rampup_lr=0.02)
    # 0.02 + (0.1 - 0.02) * it / 10
    assert schedule.lr_at(0) == pytest.approx(0.02)
    assert schedule.lr_at(5) == pytest.approx(0.06)
    assert schedule.lr_at(9) == pytest.approx(0.092)
    assert schedule.lr_at(10) == pytest.approx(0.1)
    assert schedule.lr_at(11) == pytest.approx(0.1)


def test_rampup_only_caps_never_raises_the_rate() -> None:
    # rampup_lr above the policy's rate: min() keeps the policy's rate.
    schedule = LRSchedule("fixed", base_lr=0.1, rampup_interval=10, rampup_lr=0.5)
    assert [schedule.lr_at(it) for it in (0, 5, 12)] == [0.1, 0.1, 0.1]


def test_rampup_applies_to_the_decayed_policy_rate() -> None:
    schedule = LRSchedule("exp", base_lr=1.0, gamma=0.5, rampup_interval=4, rampup_lr=0.0)
    # it=2: policy 0.25, ramp 0 + 0.25 * 2/4 = 0.125
    assert schedule.lr_at(2) == pytest.approx(0.125)


def test_min_lr_floors_the_rate_always() -> None:
    schedule = LRSchedule("inv", base_lr=0.01, gamma=1e-4, power=0.75, min_lr=0.009)
    assert schedule.lr_at(0) == 0.01
    assert schedule.lr_at(10_000) == 0.009
    ramped = LRSchedule("fixed", base_lr=0.1, rampup_interval=10, min_lr=0.03)
    assert ramped.lr_at(1) == pytest.approx(0.03)  # ramp gives 0.01, floor wins
    assert ramped.lr_at(5) == pytest.approx(0.05)


def test_stepvalues_list_becomes_a_tuple_and_schedule_is_hashable() -> None:
    schedule = LRSchedule("multistep", stepvalues=[5, 9])  # type: ignore[arg-type]
    assert schedule.stepvalues == (5, 9)
    assert hash(schedule) == hash(LRSchedule("multistep", stepvalues=(5, 9)))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"policy": "ste"},
            "policy='ste' is unknown (did you mean 'step'?); "
            "allowed: fixed, step, multistep, exp, inv, poly, sigmoid",
        ),
        ({"base_lr": -0.1}, "base_lr=-0.1 is not allowed: must be a finite number >= 0"),
        ({"base_lr": math.nan}, "base_lr=nan is not allowed: must be a finite number >= 0"),
        (
            {"policy": "exp", "gamma": -0.5},
            "gamma=-0.5 is not allowed: must be a finite number >= 0",
        ),
        ({"power": -1.0}, "power=-1.0 is not allowed: must be a finite number >= 0"),
        ({"stepsize": 2.5}, "stepsize=2.5 is not allowed: must be an integer >= 0"),
        ({"rampup_interval": -3}, "rampup_interval=-3 is not allowed: must be an integer >= 0"),
        ({"min_lr": True}, "min_lr=True is not allowed: must be a finite number >= 0"),
        (
            {"policy": "multistep", "stepvalues": (100, 100)},
            "stepvalues=[100, 100] must be strictly increasing, e.g. [5000, 8000]",
        ),
        (
            {"stepvalues": (-1,)},
            "stepvalues=-1 is not allowed: must be a list of integers >= 0",
        ),
        ({"policy": "multistep"}, "policy 'multistep' needs stepvalues, e.g. [5000, 8000]"),
        ({"policy": "step", "stepsize": 0}, "stepsize=0 must be >= 1 for policy 'step'"),
        (
            {"policy": "poly"},
            "max_iter=0 must be >= 1 for policy 'poly' (the iteration where the rate reaches 0)",
        ),
    ],
)
def test_invalid_settings_name_field_value_and_allowed(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        LRSchedule(**kwargs)
    assert str(info.value) == message


def test_sigmoid_accepts_negative_gamma() -> None:
    assert LRSchedule("sigmoid", gamma=-0.5, stepsize=0).lr_at(0) == pytest.approx(0.005)


def test_negative_iteration_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"^iteration=-1 must be >= 0$"):
        LRSchedule().lr_at(-1)


def test_apply_lr_multiplies_by_each_groups_lr_mult() -> None:
    w, b, c = (torch.nn.Parameter(torch.zeros(1)) for _ in range(3))
    groups = [{"params": [w]}, {"params": [b], "lr_mult": 2.0}, {"params": [c], "lr_mult": 0}]
    opt = torch.optim.SGD(groups, lr=1.0)
    apply_lr(opt, 0.005)
    assert [g["lr"] for g in opt.param_groups] == [0.005, 0.01, 0.0]
    apply_lr(opt, 0.1)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.2, 0.0]


def test_sigmoid_never_overflows() -> None:
    far_below = LRSchedule(policy="sigmoid", base_lr=0.1, gamma=0.01, stepsize=100_000)
    far_above = LRSchedule(policy="sigmoid", base_lr=0.1, gamma=-0.001, stepsize=1000)
    assert far_below.lr_at(0) == pytest.approx(0.1 / (1 + math.exp(700)), abs=1e-300)
    assert far_above.lr_at(800_000) == 0.0
    assert LRSchedule(policy="sigmoid", base_lr=0.1, gamma=0.01, stepsize=100).lr_at(150) == \
        pytest.approx(0.1 / (1 + math.exp(-0.5)), rel=1e-12)

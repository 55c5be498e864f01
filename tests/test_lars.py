from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook

from nncompress.errors import ConfigError
from nncompress.train import LarsSGD


def _reference_step(
    params: list[torch.Tensor],
    history: list[list[float]],
    settings: list[dict[str, float]],
) -> None:
    """One LARS step, element by element in double precision (slow, obviously correct)."""
    for p, hist, opts in zip(params, history, settings):
        w = p.detach().double().flatten().tolist()
        g = p.grad.detach().double().flatten().tolist()
        wd = opts["weight_decay"]
        w_norm = math.sqrt(sum(x * x for x in w))
        g_norm = math.sqrt(sum(x * x for x in g))
        local = 1.0
        if w_norm > 0 and g_norm > 0:
            local = opts["local_gw_ratio"] * w_norm / (g_norm + wd * w_norm)
        for i in range(len(w)):
            hist[i] = opts["momentum"] * hist[i] + opts["lr"] * local * (g[i] + wd * w[i])
            w[i] -= hist[i]
        with torch.no_grad():
            p.copy_(torch.tensor(w, dtype=torch.float64).view_as(p))


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)).double()


def _loss(model: nn.Module, step: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(step)
    x = torch.randn(8, 5, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (8,), generator=gen)
    return nn.functional.cross_entropy(model(x), y)


def test_matches_slow_reference_with_per_group_options() -> None:
    fast, slow = _model(), _model()
    first = {"lr": 0.5, "momentum": 0.9, "weight_decay": 5e-4, "local_gw_ratio": 0.02}
    second = {"lr": 0.5, "momentum": 0.8, "weight_decay": 0.05, "local_gw_ratio": 0.1}
    opt = LarsSGD(
        [
            {"params": list(fast[0].parameters())},
            {"params": list(fast[2].parameters()), **{k: second[k] for k in second if k != "lr"}},
        ],
        lr=0.5,
        momentum=0.9,
        weight_decay=5e-4,
        local_gw_ratio=0.02,
    )
    slow_params = list(slow[0].parameters()) + list(slow[2].parameters())
    settings = [first, first, second, second]
    history = [[0.0] * p.numel() for p in slow_params]
    for step in range(6):
        for model in (fast, slow):
            model.zero_grad()
            _loss(model, step).backward()
        opt.step()
        _reference_step(slow_params, history, settings)
        for a, b in zip(fast.parameters(), slow.parameters()):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    # the steps really moved the weights (the comparison above is not vacuous)
    with torch.no_grad():
        assert float((fast[0].weight - _model()[0].weight).abs().max()) > 1e-4


def test_local_rate_is_one_when_weight_norm_is_zero() -> None:
    w = nn.Parameter(torch.zeros(3, dtype=torch.float64))
    w.grad = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    opt = LarsSGD([w], lr=0.1, momentum=0.0, weight_decay=0.5, local_gw_ratio=0.001)
    opt.step()
    assert float(opt.state[w]["local_lr"]) == 1.0
    torch.testing.assert_close(w.detach(), torch.tensor([-0.1, 0.2, -0.05], dtype=torch.float64))


def test_local_rate_is_one_when_gradient_norm_is_zero() -> None:
    w = nn.Parameter(torch.tensor([2.0, 0.0], dtype=torch.float64))
    w.grad = torch.zeros(2, dtype=torch.float64)
    opt = LarsSGD([w], lr=0.1, momentum=0.0, weight_decay=0.5, local_gw_ratio=0.001)
    opt.step()
    assert float(opt.state[w]["local_lr"]) == 1.0
    # only the decay term moves w: 2 - 0.1 * 1 * (0.5 * 2)
    torch.testing.assert_close(w.detach(), torch.tensor([1.9, 0.0], dtype=torch.float64))


def test_local_rate_formula_on_known_norms() -> None:
    w = nn.Parameter(torch.tensor([3.0, 4.0]))  # ||w|| = 5
    w.grad = torch.tensor([0.0, 2.0])  # ||g|| = 2
    opt = LarsSGD([w], lr=1.0, momentum=0.0, weight_decay=0.2, local_gw_ratio=0.1)
    opt.step()
    # 0.1 * 5 / (2 + 0.2 * 5) = 1/6
    assert float(opt.state[w]["local_lr"]) == pytest.approx(1 / 6)


def test_parameters_without_gradient_are_left_alone() -> None:
    a, b = nn.Parameter(torch.ones(2)), nn.Parameter(torch.ones(2))
    a.grad = torch.ones(2)
    opt = LarsSGD([a, b], lr=0.1)
    opt.step()
    assert b.tolist() == [1.0, 1.0] and b not in opt.state
    assert a.tolist() != [1.0, 1.0]


def test_state_dict_resume_continues_identically() -> None:
    straight, resumed = _model(), _model()
    opt = LarsSGD(straight.parameters(), lr=0.3, local_gw_ratio=0.05)
    for step in range(3):
        straight.zero_grad()
        _loss(straight, step).backward()
        opt.step()
    resumed.load_state_dict(straight.state_dict())
    opt2 = LarsSGD(resumed.parameters(), lr=0.3, local_gw_ratio=0.05)
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))
    for step in range(3, 5):
        for model, optimizer in ((straight, opt), (resumed, opt2)):
            model.zero_grad()
            _loss(model, step).backward()
            optimizer.step()
    for a, b in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


def test_global_step_hooks_run_for_lars() -> None:
    # Fixed INQ entries are restored by a global optimizer post-step hook; LarsSGD must fire it.
    calls: list[str] = []
    handle = register_optimizer_step_post_hook(
        lambda optimizer, args, kwargs: calls.append(type(optimizer).__name__)
    )
    try:
        w = nn.Parameter(torch.ones(2))
        w.grad = torch.ones(2)
        LarsSGD([w], lr=0.1).step()
    finally:
        handle.remove()
    assert calls == ["LarsSGD"]


def test_closure_loss_is_returned() -> None:
    model = _model()
    opt = LarsSGD(model.parameters(), lr=0.1)

    def closure() -> float:
        opt.zero_grad()
        loss = _loss(model, 0)
        loss.backward()
        return loss.item()

    assert opt.step(closure) == pytest.approx(_loss(_model(), 0).item())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lr": -1.0}, "LarsSGD lr=-1.0 is not allowed: must be a finite number >= 0"),
        ({"momentum": 1.0}, "LarsSGD momentum=1.0 is not allowed: must be a number in [0, 1)"),
        (
            {"weight_decay": math.inf},
            "LarsSGD weight_decay=inf is not allowed: must be a finite number >= 0",
        ),
        (
            {"local_gw_ratio": 0.0},
            "LarsSGD local_gw_ratio=0.0 is not allowed: must be a finite number > 0",
        ),
    ],
)
def test_bad_options_are_refused(kwargs: dict, message: str) -> None:
    options = {"lr": 0.1, **kwargs}
    with pytest.raises(ConfigError) as info:
        LarsSGD([nn.Parameter(torch.ones(1))], **options)
    assert str(info.value) == message


def test_bad_group_option_is_refused() -> None:
    groups = [{"params": [nn.Parameter(torch.ones(1))], "momentum": -0.5}]
    with pytest.raises(ConfigError, match=r"momentum=-0.5 is not allowed"):
        LarsSGD(groups, lr=0.1)

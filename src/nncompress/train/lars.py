"""Layer-wise adaptive rate scaling (LARS) with SGD momentum, as in the seed's ``LarsSGD`` solver.

You, Gitman, Ginsburg, "Large Batch Training of Convolutional Networks", arXiv 1708.03888.
Each parameter tensor gets its own rate from the ratio of its weight norm to its gradient norm,
so layers whose gradients are large relative to their weights take proportionally smaller steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

from nncompress.errors import ConfigError

__all__ = ["LarsSGD"]


class LarsSGD(torch.optim.Optimizer):
    """SGD with momentum and a per-tensor LARS rate.

    For every parameter tensor ``w`` with gradient ``g`` (``wd`` = the group's weight decay)::

        local_lr = local_gw_ratio · ||w|| / (||g|| + wd · ||w||)    (1.0 if ||w|| or ||g|| is 0)
        v = momentum · v + lr · local_lr · (g + wd · w)
        w = w - v

    Every group option may differ per parameter group; set a group's ``weight_decay`` to
    ``weight_decay · decay_mult`` to get Caffe's per-blob decay. The last local rate of each
    tensor is kept in ``state[p]["local_lr"]`` for reports.

    Args:
        params: parameters or parameter groups.
        lr: the global learning rate (the schedule's rate).
        momentum: momentum of the update history, in [0, 1).
        weight_decay: L2 decay, used both in the update and in the local rate.
        local_gw_ratio: the trust coefficient (η in the paper). 0.001 is the paper's value and
            the usual default of Caffe-derived LARS solvers; it suits the large global rates
            LARS is meant for. With a small global rate such as LeNet's 0.01, the local rate is
            tiny and learning crawls: the seed's LeNet LARS solver sets ``trust_coef: 0.1``.

    Example:
        >>> model = torch.nn.Linear(4, 2)
        >>> opt = LarsSGD(model.parameters(), lr=0.1, local_gw_ratio=0.02)
        >>> model(torch.ones(3, 4)).sum().backward()
        >>> opt.step()
        >>> sorted(opt.state[model.weight])
        ['local_lr', 'momentum_buffer']
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        local_gw_ratio: float = 0.001,
    ) -> None:
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "weight_decay": weight_decay,
            "local_gw_ratio": local_gw_ratio,
        }
        _check_options(defaults)
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group after checking its options (same ranges as the constructor)."""
        _check_options({k: v for k, v in param_group.items() if k in self.defaults})
        super().add_param_group(param_group)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """Update every parameter that has a gradient.

        Args:
            closure: optional, re-evaluates the model and returns the loss.

        Returns:
            The closure's loss, or None.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is not None:
                    self._update(param, group)
        return loss

    def _update(self, param: torch.Tensor, group: dict[str, Any]) -> None:
        grad = param.grad
        assert grad is not None
        if grad.is_sparse:
            raise ConfigError("LarsSGD does not support sparse gradients; use dense layers")
        decay = group["weight_decay"]
        local_lr = _local_rate(param, grad, decay, group["local_gw_ratio"])
        scaled = (grad + decay * param) * (local_lr * group["lr"])
        state = self.state[param]
        buf = state.get("momentum_buffer")
        if buf is None:
            buf = state["momentum_buffer"] = torch.zeros_like(param)
        buf.mul_(group["momentum"]).add_(scaled)
        param.sub_(buf)
        state["local_lr"] = local_lr


def _local_rate(
    param: torch.Tensor, grad: torch.Tensor, decay: float, ratio: float
) -> torch.Tensor:
    """``ratio · ||w|| / (||g|| + decay · ||w||)``, or 1 when either norm is 0 (a 0-dim tensor)."""
    w_norm = torch.linalg.vector_norm(param)
    g_norm = torch.linalg.vector_norm(grad)
    both = (w_norm > 0) & (g_norm > 0)
    # The denominator is positive whenever both norms are; clamp only guards the unused branch.
    rate = ratio * w_norm / (g_norm + decay * w_norm).clamp_min(torch.finfo(w_norm.dtype).tiny)
    return torch.where(both, rate, torch.ones_like(rate))


def _check_options(options: dict[str, Any]) -> None:
    ranges = {
        "lr": (0.0, math.inf, "a finite number >= 0"),
        "momentum": (0.0, 1.0, "a number in [0, 1)"),
        "weight_decay": (0.0, math.inf, "a finite number >= 0"),
        "local_gw_ratio": (0.0, math.inf, "a finite number > 0"),
    }
    for name, value in options.items():
        low, high, allowed = ranges[name]
        is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
        in_range = is_number and math.isfinite(value) and low <= value < high
        if not in_range or (name == "local_gw_ratio" and value == 0):
            raise ConfigError(f"LarsSGD {name}={value!r} is not allowed: must be {allowed}")

"""Caffe's learning-rate policies and the seed's warm-up, as pure functions of the iteration.

The schedule never owns the loop: the caller passes the iteration and applies the result with
:func:`apply_lr`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from nncompress.errors import ConfigError, did_you_mean

__all__ = ["POLICIES", "LRSchedule", "apply_lr"]

POLICIES = ("fixed", "step", "multistep", "exp", "inv", "poly", "sigmoid")


@dataclass(frozen=True)
class LRSchedule:
    """A Caffe learning-rate policy plus the seed's warm-up and floor.

    Policies (``it`` = iteration, counted from 0):

    - ``fixed``: ``base_lr``
    - ``step``: ``base_lr · gamma^floor(it / stepsize)``
    - ``multistep``: ``base_lr · gamma^k``, k = number of ``stepvalues`` <= it
    - ``exp``: ``base_lr · gamma^it``
    - ``inv``: ``base_lr · (1 + gamma · it)^(-power)``
    - ``poly``: ``base_lr · (1 - it / max_iter)^power`` (0 from ``max_iter`` on)
    - ``sigmoid``: ``base_lr / (1 + exp(-gamma · (it - stepsize)))``

    Warm-up (seed): for ``it < rampup_interval`` the rate is capped at
    ``rampup_lr + (lr - rampup_lr) · it / rampup_interval``; then it is raised to ``min_lr``.

    Example:
        >>> LRSchedule("inv", base_lr=0.01, gamma=1e-4, power=0.75).lr_at(10_000)
        0.005946035575013605
    """

    policy: str = "fixed"
    base_lr: float = 0.01
    gamma: float = 0.1
    power: float = 1.0
    stepsize: int = 1
    stepvalues: tuple[int, ...] = ()
    max_iter: int = 0  # only poly needs it
    rampup_interval: int = 0
    rampup_lr: float = 0.0
    min_lr: float = 0.0

    def __post_init__(self) -> None:
        # Recipes give lists; keep the dataclass hashable and immutable.
        object.__setattr__(self, "stepvalues", tuple(self.stepvalues))
        if self.policy not in POLICIES:
            raise ConfigError(
                f"policy={self.policy!r} is unknown{did_you_mean(str(self.policy), POLICIES)}; "
                f"allowed: {', '.join(POLICIES)}"
            )
        self._check_numbers()
        self._check_policy_needs()

    def _check_numbers(self) -> None:
        for name in ("base_lr", "power", "rampup_lr", "min_lr"):
            _require(name, getattr(self, name), float, "a finite number >= 0")
        # sigmoid decays with a negative gamma, so only it may have one.
        low = -math.inf if self.policy == "sigmoid" else 0.0
        _require("gamma", self.gamma, float, "a finite number >= 0", low=low)
        for name in ("stepsize", "max_iter", "rampup_interval"):
            _require(name, getattr(self, name), int, "an integer >= 0")
        for value in self.stepvalues:
            _require("stepvalues", value, int, "a list of integers >= 0")
        pairs = zip(self.stepvalues, self.stepvalues[1:])
        if any(later <= earlier for earlier, later in pairs):
            raise ConfigError(
                f"stepvalues={list(self.stepvalues)} must be strictly increasing, e.g. [5000, 8000]"
            )

    def _check_policy_needs(self) -> None:
        if self.policy == "step" and self.stepsize < 1:
            raise ConfigError(f"stepsize={self.stepsize} must be >= 1 for policy 'step'")
        if self.policy == "multistep" and not self.stepvalues:
            raise ConfigError("policy 'multistep' needs stepvalues, e.g. [5000, 8000]")
        if self.policy == "poly" and self.max_iter < 1:
            raise ConfigError(
                f"max_iter={self.max_iter} must be >= 1 for policy 'poly' "
                "(the iteration where the rate reaches 0)"
            )

    def lr_at(self, iteration: int) -> float:
        """Return the learning rate at ``iteration`` (0-based), warm-up and floor included.

        Raises:
            ConfigError: a negative iteration.

        Example:
            >>> LRSchedule("step", base_lr=0.1, gamma=0.5, stepsize=10).lr_at(25)
            0.025
        """
        if iteration < 0:
            raise ConfigError(f"iteration={iteration} must be >= 0")
        lr = self._policy_lr(iteration)
        if iteration < self.rampup_interval:
            ramp = self.rampup_lr + (lr - self.rampup_lr) * iteration / self.rampup_interval
            lr = min(lr, ramp)
        return max(lr, self.min_lr)

    def _policy_lr(self, it: int) -> float:
        base, gamma = self.base_lr, self.gamma
        if self.policy == "fixed":
            return base
        if self.policy == "step":
            return base * float(gamma ** (it // self.stepsize))
        if self.policy == "multistep":
            return base * float(gamma ** sum(1 for v in self.stepvalues if it >= v))
        if self.policy == "exp":
            return base * float(gamma**it)
        if self.policy == "inv":
            return base * math.pow(1.0 + gamma * it, -self.power)
        if self.policy == "poly":
            return base * math.pow(max(0.0, 1.0 - it / self.max_iter), self.power)
        # sigmoid: 1 / (1 + exp(-x)) written with tanh, which cannot overflow for any x
        return base * 0.5 * (1.0 + math.tanh(0.5 * gamma * (it - self.stepsize)))


def _require(name: str, value: Any, kind: type, allowed: str, low: float = 0.0) -> None:
    ok_type = isinstance(value, (int, float)) if kind is float else isinstance(value, int)
    if isinstance(value, bool) or not ok_type or not math.isfinite(value) or value < low:
        raise ConfigError(f"{name}={value!r} is not allowed: must be {allowed}")


def apply_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every parameter group's rate to ``lr · group.get("lr_mult", 1)``.

    Caffe multiplies the solver's rate by each blob's ``lr_mult`` (biases usually 2); store it
    in the group as ``lr_mult``.

    Example:
        >>> w, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(1))
        >>> opt = torch.optim.SGD([{"params": [w]}, {"params": [b], "lr_mult": 2.0}], lr=1.0)
        >>> apply_lr(opt, 0.01)
        >>> [group["lr"] for group in opt.param_groups]
        [0.01, 0.02]
    """
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_mult", 1)

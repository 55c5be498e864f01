"""Training settings of a stage: optimizer, learning-rate policy and bias multipliers.

Each is a frozen dataclass validated in ``__post_init__``: a bad value raises
:class:`~nncompress._config.FieldError` (a :class:`~nncompress.errors.ConfigError`) naming the
field, the value and what is allowed, which a recipe reports at the field's path
(``stages[0].optimizer.momentum``). Recipes hold them as a stage's ``optimizer``, ``lr`` and
``bias``; :func:`nncompress.train.loop.build_optimizer` and ``build_schedule`` turn them into
a ``torch.optim`` optimizer and an :class:`~nncompress.train.lr.LRSchedule`.

Example:
    >>> OptimizerConfig(name="adam").options()
    {'betas': (0.9, 0.999), 'eps': 1e-08, 'weight_decay': 0.0}
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

from nncompress._config import FieldError
from nncompress.errors import did_you_mean
from nncompress.train.lr import POLICIES, LRSchedule

__all__ = ["LR_POLICIES", "OPTIMIZERS", "BiasConfig", "LRConfig", "OptimizerConfig"]

OPTIMIZERS = ("sgd", "adam", "adamw", "lars")
LR_POLICIES = POLICIES

# Options each optimizer takes, with their defaults. SGD and LARS follow the seed's solvers
# (momentum 0.9, weight decay 5e-4); Adam and AdamW use PyTorch's defaults.
_OPTIMIZER_OPTIONS: dict[str, dict[str, Any]] = {
    "sgd": {"momentum": 0.9, "weight_decay": 5e-4, "nesterov": False},
    "adam": {"betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0},
    "adamw": {"betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.01},
    "lars": {"momentum": 0.9, "weight_decay": 5e-4, "local_gw_ratio": 0.001},
}


def _real(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and \
        math.isfinite(float(value))


def _integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True, kw_only=True)
class OptimizerConfig:
    """Optimizer name and options; options left out take the optimizer's default.

    Options of another optimizer are an error (``momentum`` for ``adam``); after construction
    every option of ``name`` is set.

    Raises:
        FieldError: an unknown optimizer, an option it does not take, or a value out of range.

    Example:
        >>> OptimizerConfig(momentum=0.5).options()
        {'momentum': 0.5, 'weight_decay': 0.0005, 'nesterov': False}
    """

    name: Literal["sgd", "adam", "adamw", "lars"] = "sgd"
    momentum: float | None = None
    weight_decay: float | None = None
    nesterov: bool | None = None
    betas: tuple[float, float] | None = None
    eps: float | None = None
    local_gw_ratio: float | None = None

    def __post_init__(self) -> None:
        own = "OptimizerConfig"
        if self.name not in OPTIMIZERS:
            raise FieldError(own, "name", f"{self.name!r} is not allowed"
                             f"{did_you_mean(str(self.name), OPTIMIZERS)}; use one of "
                             + ", ".join(OPTIMIZERS))
        options = _OPTIMIZER_OPTIONS[self.name]
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name != "name" and value is not None and f.name not in options:
                raise FieldError(own, f.name, f"not an option of optimizer {self.name!r}; its "
                                 f"options: {', '.join(options)}")
        for key, default in options.items():
            if getattr(self, key) is None:
                object.__setattr__(self, key, default)
        self._check_values(own)

    def _check_values(self, own: str) -> None:
        for key in ("momentum", "weight_decay", "eps", "local_gw_ratio"):
            value = getattr(self, key)
            if value is not None and not (_real(value) and value >= 0):
                raise FieldError(own, key, f"must be >= 0, got {value!r}")
        if self.nesterov is not None and not isinstance(self.nesterov, bool):
            raise FieldError(own, "nesterov", f"use true or false, got {self.nesterov!r}")
        if self.nesterov and not self.momentum:
            raise FieldError(own, "nesterov", "nesterov needs momentum > 0")
        if self.betas is not None:
            betas = tuple(self.betas)
            if len(betas) != 2 or not all(_real(b) and 0 <= b < 1 for b in betas):
                raise FieldError(own, "betas", f"use two numbers in [0, 1), got {self.betas!r}")
            object.__setattr__(self, "betas", betas)

    def options(self) -> dict[str, Any]:
        """The options of this optimizer, defaults filled in."""
        return {k: getattr(self, k) for k in _OPTIMIZER_OPTIONS[self.name]}


@dataclass(frozen=True, kw_only=True)
class LRConfig:
    """Learning-rate policy (Caffe's), with the seed's warm-up and floor.

    See :class:`~nncompress.train.lr.LRSchedule` for the policies; a stage's iteration count
    is the schedule's ``max_iter``.

    Raises:
        FieldError: a value out of range (``base_lr`` <= 0, decreasing ``stepvalues``, ...).
        ConfigError: the values do not make a schedule of ``policy`` (e.g. ``multistep``
            without ``stepvalues``).

    Example:
        >>> LRConfig(policy="step", base_lr=0.1, gamma=0.5, stepsize=10).schedule(20).lr_at(10)
        0.05
    """

    policy: Literal["fixed", "step", "multistep", "exp", "inv", "poly", "sigmoid"] = "inv"
    base_lr: float = 0.01
    gamma: float = 1e-4
    power: float = 0.75
    stepsize: int = 1
    stepvalues: tuple[int, ...] = ()
    rampup_interval: int = 0
    rampup_lr: float = 0.0
    min_lr: float = 0.0

    def __post_init__(self) -> None:
        own = "LRConfig"
        object.__setattr__(self, "stepvalues", tuple(self.stepvalues))
        if self.policy not in LR_POLICIES:
            raise FieldError(own, "policy", f"{self.policy!r} is not allowed"
                             f"{did_you_mean(str(self.policy), LR_POLICIES)}; use one of "
                             + ", ".join(LR_POLICIES))
        checks = (("base_lr", _real(self.base_lr) and self.base_lr > 0, "must be > 0"),
                  ("stepsize", _integer(self.stepsize) and self.stepsize >= 1, "must be >= 1"),
                  ("rampup_interval", _integer(self.rampup_interval)
                   and self.rampup_interval >= 0, "must be >= 0"),
                  ("min_lr", _real(self.min_lr) and self.min_lr >= 0, "must be >= 0"))
        for key, ok, problem in checks:
            if not ok:
                raise FieldError(own, key, f"{problem}, got {getattr(self, key)!r}")
        values = list(self.stepvalues)
        if values != sorted(set(values)):
            raise FieldError(own, "stepvalues", f"must increase, got {values}")
        self.schedule(1)  # the schedule's own checks (per policy)

    def schedule(self, max_iter: int) -> LRSchedule:
        """The schedule of a stage of ``max_iter`` iterations (``poly`` reaches 0 there)."""
        return LRSchedule(policy=self.policy, base_lr=self.base_lr, gamma=self.gamma,
                          power=self.power, stepsize=self.stepsize, stepvalues=self.stepvalues,
                          max_iter=max(max_iter, 1), rampup_interval=self.rampup_interval,
                          rampup_lr=self.rampup_lr, min_lr=self.min_lr)


@dataclass(frozen=True, kw_only=True)
class BiasConfig:
    """Learning-rate and weight-decay multipliers of biases (Caffe nets give biases lr_mult 2).

    Raises:
        FieldError: a multiplier that is negative or not a finite number.

    Example:
        >>> BiasConfig().lr_mult
        2.0
    """

    lr_mult: float = 2.0
    decay_mult: float = 1.0

    def __post_init__(self) -> None:
        for key in ("lr_mult", "decay_mult"):
            value = getattr(self, key)
            if not (_real(value) and value >= 0):
                raise FieldError("BiasConfig", key, f"must be a number >= 0, got {value!r}")


"""Caffe solver prototxt files: the settings, the learning-rate schedule and the optimizer.

:class:`CaffeSolver` updates parameters the way Caffe's solvers do: the rate is multiplied into the
momentum history (``v = m·v + lr·(g + wd·w)``, ``w -= v``), weight decay is L2 (or L1) per blob,
Adam keeps Caffe's placement of ``delta``, and AdaGrad, RMSProp and AdaDelta follow Caffe's
rules. ``LarsSGD`` uses :class:`nncompress.train.LarsSGD` with the seed's ``trust_coef``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from nncompress.errors import ConfigError, did_you_mean
from nncompress.interop.prototxt import Message, PrototxtError, parse_file
from nncompress.train import LarsSGD, LRSchedule

__all__ = ["SOLVER_TYPES", "CaffeSolver", "SolverSettings", "make_optimizer", "read_solver"]

SOLVER_TYPES = ("SGD", "Nesterov", "Adam", "AdaGrad", "RMSProp", "AdaDelta", "LarsSGD")
_LEGACY_TYPES = ("SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam")
# fields of Caffe's SolverParameter that do not change training here
_IGNORED = {"solver_mode", "device_id", "debug_info", "snapshot_diff", "layer_wise_reduce",
            "test_compute_loss", "eval_type", "ap_version"}
# the forms that name the nets (see solver_nets.py)
NET_FIELDS = ("net", "net_param", "train_net", "train_net_param", "test_net", "test_net_param")


@dataclass
class SolverSettings:
    """The solver fields nncompress uses, with Caffe's defaults."""

    path: str
    msg: Message | None = None  # the parsed file (the net fields are read from it)
    type: str = "SGD"
    base_lr: float = 0.0  # Caffe's SolverParameter gives these no default: unset is 0
    lr_policy: str = "fixed"
    gamma: float = 0.0
    power: float = 0.0
    stepsize: int = 1
    stepvalue: list[int] = field(default_factory=list)
    momentum: float = 0.0
    momentum2: float = 0.999
    delta: float = 1e-8
    rms_decay: float = 0.99
    weight_decay: float = 0.0
    regularization_type: str = "L2"
    clip_gradients: float = -1.0
    max_iter: int = 0
    iter_size: int = 1
    test_iter: list[int] = field(default_factory=list)
    test_interval: int = 0
    test_initialization: bool = True
    display: int = 0
    average_loss: int = 1
    snapshot: int = 0
    snapshot_prefix: str = ""
    snapshot_after_train: bool = True
    random_seed: int = -1
    rampup_interval: int = 0
    rampup_lr: float = 0.0
    min_lr: float = 0.0
    trust_coef: float = 0.001

    def schedule(self) -> LRSchedule:
        """The learning-rate schedule of these settings, with the seed's warm-up and floor.

        Raises:
            ConfigError: a policy field is missing or out of range (naming the solver file).
        """
        try:
            return LRSchedule(self.lr_policy, base_lr=self.base_lr, gamma=self.gamma,
                              power=self.power, stepsize=self.stepsize,
                              stepvalues=tuple(self.stepvalue), max_iter=self.max_iter,
                              rampup_interval=self.rampup_interval, rampup_lr=self.rampup_lr,
                              min_lr=self.min_lr)
        except ConfigError as exc:
            raise ConfigError(f"{self.path}: {exc}") from None


_FLOATS = ("base_lr", "gamma", "power", "momentum", "momentum2", "delta", "weight_decay",
           "clip_gradients", "rampup_lr", "min_lr", "trust_coef", "rms_decay")
_INTS = ("stepsize", "max_iter", "iter_size", "test_interval", "display", "average_loss",
         "snapshot", "random_seed", "rampup_interval")
_STRS = ("type", "lr_policy", "regularization_type", "snapshot_prefix")
_BOOLS = ("test_initialization", "snapshot_after_train")
_LISTS = ("stepvalue", "test_iter")
_ALIASES = {"local_gw_ratio": "trust_coef"}


def read_solver(path: str | Path) -> SolverSettings:
    """Read a Caffe solver prototxt.

    Unknown fields are reported as warnings (with a suggestion for near misses) and skipped, so
    files of other Caffe forks still run.

    Args:
        path: the solver file.

    Returns:
        The settings.

    Raises:
        FormatError: the file is missing or malformed (file:line:column).
        PrototxtError: a field has the wrong kind, or the solver type is not supported.

    Example:
        >>> read_solver("lenet_solver.prototxt").lr_policy  # doctest: +SKIP
        'inv'
    """
    msg = parse_file(path, "solver prototxt")
    settings = SolverSettings(path=str(path), msg=msg)
    known = {*_FLOATS, *_INTS, *_STRS, *_BOOLS, *_LISTS, *_ALIASES, *NET_FIELDS}
    for name in msg.names():
        target = _ALIASES.get(name, name)
        if target in _FLOATS:
            setattr(settings, target, msg.get_float(name))
        elif target in _INTS:
            setattr(settings, target, msg.get_int(name))
        elif target in _STRS:
            setattr(settings, target, msg.get_str(name))
        elif target in _BOOLS:
            setattr(settings, target, msg.get_bool(name))
        elif target == "stepvalue":
            settings.stepvalue = msg.ints(name)
        elif target == "test_iter":
            settings.test_iter = msg.ints(name)
        elif name == "solver_type":
            settings.type = msg.get_enum(name, _LEGACY_TYPES, "SGD")
        elif name in NET_FIELDS or name in ("train_state", "test_state", "snapshot_format"):
            continue  # read by solver_nets.py / checked in _check
        elif name not in _IGNORED:
            f = msg.all(name)[0]
            warnings.warn(f"{f.where}: unknown solver field '{name}' ignored"
                          f"{did_you_mean(name, known)}", stacklevel=2)
    _check(settings, msg)
    return settings


def _check(s: SolverSettings, msg: Message) -> None:
    def where(name: str) -> str:
        f = msg.last(name)
        return f.where if f is not None else msg.where

    if s.type not in SOLVER_TYPES:
        raise PrototxtError(where("type"), f"solver type '{s.type}' is not supported; "
                            f"supported: {', '.join(SOLVER_TYPES)}")
    if s.regularization_type not in ("L1", "L2"):
        raise PrototxtError(where("regularization_type"), "regularization_type must be L1 or L2")
    if s.iter_size < 1 or s.max_iter < 0:
        raise PrototxtError(where("iter_size"), "iter_size must be >= 1 and max_iter >= 0")
    if s.test_interval > 0 and not s.test_iter:
        raise PrototxtError(where("test_interval"), "test_interval is set but test_iter is not")
    if s.type in ("AdaGrad", "RMSProp") and s.momentum != 0:
        raise PrototxtError(where("momentum"), f"{s.type} takes no momentum (Caffe refuses it); "
                            "remove the momentum line")
    if not 0 <= s.rms_decay <= 1:
        raise PrototxtError(where("rms_decay"), f"rms_decay {s.rms_decay} must be in [0, 1]")
    fmt = msg.get_enum("snapshot_format", ("HDF5", "BINARYPROTO"), "BINARYPROTO")
    if fmt == "HDF5":
        raise PrototxtError(where("snapshot_format"), "snapshot_format: HDF5 is not supported; "
                            "snapshots are written as binary caffemodels (BINARYPROTO)")
    for name in ("train_state", "test_state"):
        for state in msg.messages(name):
            if state.has("stage") or (state.get_int("level", 0) or 0) != 0:
                raise PrototxtError(state.where, f"{name} with a stage or a level is not "
                                    "supported; nets run at level 0 with no stages")


class CaffeSolver(torch.optim.Optimizer):
    """Caffe's SGD, Nesterov, Adam, AdaGrad, RMSProp and AdaDelta updates.

    Group options: ``lr`` (already times the blob's ``lr_mult``), ``weight_decay`` (already times
    ``decay_mult``), ``momentum`` (AdaDelta's decay too), ``kind`` (the solver type), ``l1`` (L1
    instead of L2 decay), ``momentum2`` (Adam), ``delta`` (Adam, AdaGrad, RMSProp, AdaDelta) and
    ``rms_decay`` (RMSProp).

    Example:
        >>> w = torch.nn.Parameter(torch.ones(2))
        >>> opt = CaffeSolver([w], lr=0.1, momentum=0.9, weight_decay=0.0)
        >>> w.grad = torch.ones(2); opt.step(); opt.step()
        >>> [round(v, 4) for v in w.tolist()]  # v1 = 0.1, v2 = 0.9*0.1 + 0.1
        [0.71, 0.71]
    """

    def __init__(self, params: Iterable[torch.Tensor] | Iterable[dict[str, Any]], lr: float,
                 momentum: float = 0.0, weight_decay: float = 0.0, kind: str = "SGD",
                 l1: bool = False, momentum2: float = 0.999, delta: float = 1e-8,
                 rms_decay: float = 0.99) -> None:
        defaults = {"lr": lr, "momentum": momentum, "weight_decay": weight_decay, "kind": kind,
                    "l1": l1, "momentum2": momentum2, "delta": delta, "rms_decay": rms_decay}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """Apply one update to every parameter that has a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self._update(p, group)
        return loss

    def _update(self, p: torch.Tensor, group: dict[str, Any]) -> None:
        assert p.grad is not None
        decay = group["weight_decay"]
        g = p.grad + decay * (p.sign() if group["l1"] else p) if decay else p.grad.clone()
        state = self.state[p]
        lr, m = group["lr"], group["momentum"]
        if group["kind"] == "Adam":
            t = state["t"] = state.get("t", 0) + 1
            m1 = state.setdefault("m", torch.zeros_like(p)).mul_(m).add_(g, alpha=1 - m)
            b2 = group["momentum2"]
            v = state.setdefault("v", torch.zeros_like(p)).mul_(b2).addcmul_(g, g, value=1 - b2)
            correction = math.sqrt(1 - b2**t) / (1 - m**t)
            p.sub_(lr * correction * m1 / (v.sqrt() + group["delta"]))
            return
        if group["kind"] in ("AdaGrad", "RMSProp", "AdaDelta"):
            p.sub_(_adaptive_step(group, state, g, p))
            return
        history = state.setdefault("history", torch.zeros_like(p))
        if group["kind"] == "Nesterov":
            previous = history.clone()
            history.mul_(m).add_(g, alpha=lr)
            p.sub_((1 + m) * history - m * previous)
        else:
            history.mul_(m).add_(g, alpha=lr)
            p.sub_(history)


def _adaptive_step(group: dict[str, Any], state: dict[str, Any], g: torch.Tensor,
                   p: torch.Tensor) -> torch.Tensor:
    """The step of Caffe's AdaGrad, RMSProp and AdaDelta (``g`` already regularized).

    AdaGrad: ``h += g^2``; RMSProp: ``h = d h + (1 - d) g^2``; both step
    ``lr g / (sqrt(h) + delta)``. AdaDelta: ``h = m h + (1 - m) g^2``,
    ``u = g sqrt((h2 + delta) / (h + delta))``, ``h2 = m h2 + (1 - m) u^2``, step ``lr u``.
    """
    lr, delta, kind = float(group["lr"]), float(group["delta"]), str(group["kind"])
    history: torch.Tensor = state.setdefault("history", torch.zeros_like(p))
    if kind == "AdaGrad":
        history.addcmul_(g, g)
    else:
        decay = group["rms_decay"] if kind == "RMSProp" else group["momentum"]
        history.mul_(decay).addcmul_(g, g, value=1 - decay)
    if kind != "AdaDelta":
        return g * lr / (history.sqrt() + delta)
    updates: torch.Tensor = state.setdefault("update_history", torch.zeros_like(p))
    step = g * ((updates + delta) / (history + delta)).sqrt()
    updates.mul_(group["momentum"]).addcmul_(step, step, value=1 - group["momentum"])
    return step * lr


def make_optimizer(settings: SolverSettings,
                   groups: Sequence[tuple[torch.Tensor, float, float]]) -> torch.optim.Optimizer:
    """The optimizer of ``settings`` over ``(parameter, lr_mult, decay_mult)`` triples.

    Each parameter gets its own group holding ``lr_mult`` (read by
    :func:`nncompress.train.apply_lr`) and a weight decay already multiplied by ``decay_mult``.
    Parameters with ``lr_mult`` 0 are left out, as Caffe does not update them.

    Example:
        >>> s = SolverSettings(path="s.prototxt", momentum=0.9, weight_decay=5e-4)
        >>> w = torch.nn.Parameter(torch.zeros(2))
        >>> make_optimizer(s, [(w, 2.0, 0.0)]).param_groups[0]["weight_decay"]
        0.0
    """
    param_groups = [{"params": [p], "lr_mult": lr_mult,
                     "weight_decay": settings.weight_decay * decay_mult}
                    for p, lr_mult, decay_mult in groups if lr_mult != 0]
    if not param_groups:
        raise ConfigError("every parameter of the net has lr_mult 0; nothing to train")
    if settings.type == "LarsSGD":
        return LarsSGD(param_groups, lr=settings.base_lr, momentum=settings.momentum,
                       weight_decay=settings.weight_decay, local_gw_ratio=settings.trust_coef)
    return CaffeSolver(param_groups, lr=settings.base_lr, momentum=settings.momentum,
                       weight_decay=settings.weight_decay, kind=settings.type,
                       l1=settings.regularization_type == "L1", momentum2=settings.momentum2,
                       delta=settings.delta, rms_decay=settings.rms_decay)

"""Where a run computes and in which precision: device names, availability, autocast, scaler.

A recipe's top-level ``device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``) and
``precision`` (``fp32``, ``bf16``, ``fp16``) are checked twice: their spelling when the recipe
is read (:func:`check_device_name`, :func:`check_precision_name`; a recipe stays valid on a
machine without the GPU it asks for), and against the machine when a command is about to train
or evaluate (:func:`resolve_device`). ``auto`` takes CUDA when present, else the CPU; under
``torchrun``, ``cuda`` and ``auto`` mean the process's own GPU (``cuda:LOCAL_RANK``).

Precision is mixed: parameters, optimizer state and every piece of compression state keep
their dtypes (float32 weights, bool masks, bfloat16 INQ values, float64 DNS statistics); only
the forward and the loss of a training step run under :func:`torch.autocast` in the chosen
dtype. fp16 adds a :class:`torch.amp.GradScaler`: ``scaler.step`` unscales the gradients
before ``optimizer.step()``, so INQ's global optimizer hooks (which run inside that call) mask
and restore unscaled values, and a step the scaler skips for an overflow never reaches the
optimizer, so neither hook runs and nothing moves.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, fields, is_dataclass, replace
from typing import Any, TypeVar

import torch

from nncompress.errors import ConfigError, did_you_mean

__all__ = ["DEVICES", "PRECISIONS", "Precision", "check_device_name", "check_precision",
           "check_precision_name", "resolve_device", "tensors_to"]

DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
PRECISIONS = ("fp32", "bf16", "fp16")
_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
_DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
T = TypeVar("T")


def check_device_name(name: object) -> str:
    """Check the spelling of a device name (not whether this machine has it).

    Raises:
        ConfigError: not one of ``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``.

    Example:
        >>> check_device_name("cuda:1")
        'cuda:1'
    """
    if isinstance(name, str) and _DEVICE_PATTERN.fullmatch(name):
        return name
    hint = did_you_mean(name, DEVICES[:3] + DEVICES[4:]) if isinstance(name, str) else ""
    raise ConfigError(f"unknown device {name!r}{hint}; use one of {', '.join(DEVICES)} "
                      "(N a GPU index, e.g. cuda:0)")


def check_precision_name(name: object) -> str:
    """Check a precision name.

    Raises:
        ConfigError: not one of ``fp32``, ``bf16``, ``fp16``.

    Example:
        >>> check_precision_name("bf16")
        'bf16'
    """
    if isinstance(name, str) and name in PRECISIONS:
        return name
    hint = did_you_mean(name, PRECISIONS) if isinstance(name, str) else ""
    raise ConfigError(f"unknown precision {name!r}{hint}; use one of {', '.join(PRECISIONS)}")


def _cuda(name: str) -> torch.device:
    if not torch.cuda.is_available():
        build = "this PyTorch build has no CUDA support" if torch.version.cuda is None else \
            "no CUDA device is visible (check the driver and CUDA_VISIBLE_DEVICES)"
        raise ConfigError(f"device {name!r}: {build}; use device cpu (or auto, which takes "
                          "CUDA only when present)")
    count = torch.cuda.device_count()
    if name == "cuda":  # under torchrun, the process's own GPU
        local = os.environ.get("LOCAL_RANK", "")
        index = int(local) if local.isdigit() else torch.cuda.current_device()
        if index < count:
            return torch.device("cuda", index)
        raise ConfigError(f"device 'cuda': this process is LOCAL_RANK {index} but the machine "
                          f"has {count} CUDA device(s); start at most {count} processes per "
                          "machine")
    index = int(name.split(":", 1)[1])
    if index >= count:
        raise ConfigError(f"device {name!r}: this machine has {count} CUDA device(s), "
                          f"cuda:0 to cuda:{count - 1}; use one of those")
    return torch.device("cuda", index)


def resolve_device(name: str, precision: str = "fp32") -> torch.device:
    """The device ``name`` means on this machine, checked together with ``precision``.

    Args:
        name: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        precision: ``fp32``, ``bf16`` or ``fp16``.

    Returns:
        The device to put the model and its data on.

    Raises:
        ConfigError: the name is unknown, the device is absent, or the precision does not
            run on it (fp16 on the CPU).

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    check_device_name(name)
    check_precision_name(precision)
    if name == "auto":
        device = _cuda("cuda") if torch.cuda.is_available() else torch.device("cpu")
    elif name.startswith("cuda"):
        device = _cuda(name)
    elif name == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError("device 'mps': Apple's Metal backend is not available on this "
                              "machine or PyTorch build; use device cpu or auto")
        device = torch.device("mps")
    else:
        device = torch.device("cpu")
    check_precision(precision, device)
    return device


def check_precision(precision: str, device: torch.device) -> None:
    """Refuse a precision that does not train on ``device``.

    Raises:
        ConfigError: fp16 on the CPU, or bf16 on a GPU without bfloat16 support.

    Example:
        >>> check_precision("bf16", torch.device("cpu"))
    """
    if precision == "fp16" and device.type == "cpu":
        raise ConfigError("precision fp16 on the CPU: float16 autocast with gradient scaling "
                          "is for GPUs; use precision bf16 (or fp32) on the CPU, or a cuda "
                          "device")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"precision bf16: {torch.cuda.get_device_name(device)} has no "
                          "bfloat16 support; use precision fp16 (or fp32)")


@dataclass
class Precision:
    """Autocast and, for fp16, a gradient scaler around one training step.

    Attributes:
        name: ``fp32`` (no autocast), ``bf16`` or ``fp16``.
        device_type: ``cpu``, ``cuda`` or ``mps``.

    Example:
        >>> net = torch.nn.Linear(2, 2)
        >>> opt = torch.optim.SGD(net.parameters(), lr=0.1)
        >>> amp = Precision("bf16", "cpu")
        >>> with amp.autocast():
        ...     loss = net(torch.ones(1, 2)).float().sum()
        >>> amp.backward_step(loss, opt)
    """

    name: str = "fp32"
    device_type: str = "cpu"
    scaler: torch.amp.GradScaler | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        check_precision_name(self.name)
        check_precision(self.name, torch.device(self.device_type))
        if self.name == "fp16":
            self.scaler = torch.amp.GradScaler(self.device_type)

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """The forward's context: autocast in the chosen dtype, nothing for fp32."""
        if self.name == "fp32":
            yield
            return
        with torch.autocast(self.device_type, dtype=_AUTOCAST_DTYPES[self.name]):
            yield

    def backward_step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """``loss.backward()`` and ``optimizer.step()``, through the scaler under fp16."""
        if self.scaler is None:
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            return
        self.scaler.scale(loss).backward()  # type: ignore[no-untyped-call]
        self.scaler.step(optimizer)  # unscales first; skips the step on inf/NaN gradients
        self.scaler.update()

    def state(self) -> dict[str, Any]:
        """The scaler's state as JSON-ready values (empty without a scaler), for checkpoints."""
        return {} if self.scaler is None else dict(self.scaler.state_dict())

    def load_state(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state` (ignored when either side has no scaler)."""
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)


def tensors_to(value: T, device: torch.device) -> T:
    """``value`` with each tensor field of a dataclass moved to ``device`` (others as they are).

    Example:
        >>> tensors_to(torch.ones(1), torch.device("cpu")).device
        device(type='cpu')
    """
    if isinstance(value, torch.Tensor):
        return value.to(device)  # type: ignore[return-value]
    if is_dataclass(value) and not isinstance(value, type):
        moved = {f.name: getattr(value, f.name).to(device) for f in fields(value)
                 if f.init and isinstance(getattr(value, f.name), torch.Tensor)}
        return replace(value, **moved) if moved else value  # type: ignore[type-var]
    return value

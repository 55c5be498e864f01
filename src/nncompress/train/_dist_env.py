"""The process group: torchrun detection, start-up and shut-down, rank and world helpers.

Every helper here is a no-op (rank 0 of 1) in a process that torchrun did not start and that
started no process group of its own, so single-process code calls them unconditionally.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist

from nncompress.errors import ConfigError

__all__ = [
    "BACKENDS",
    "DistContext",
    "collective_device",
    "init_distributed",
    "is_distributed",
    "is_writer",
    "launched_by_torchrun",
    "rank",
    "share_from_writer",
    "shutdown",
    "world_size",
]

BACKENDS = ("gloo", "nccl")
_TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
_CPU = torch.device("cpu")
T = TypeVar("T")


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in the job.

    Attributes:
        rank: the process's rank, 0 to ``world_size - 1``.
        world_size: number of processes.
        local_rank: rank among the processes of this machine (selects the GPU).
        backend: ``"gloo"``, ``"nccl"``, or ``""`` without a process group.
        device: the process's GPU under nccl, else the CPU.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = ""
    device: torch.device = _CPU

    @property
    def is_writer(self) -> bool:
        """True on the one process (rank 0) that writes files."""
        return self.rank == 0


def launched_by_torchrun() -> bool:
    """True when ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` are all set, as torchrun does.

    Example:
        >>> import os
        >>> launched_by_torchrun() == all(v in os.environ for v in ("RANK", "WORLD_SIZE",
        ...                                                         "LOCAL_RANK"))
        True
    """
    return all(name in os.environ for name in _TORCHRUN_VARIABLES)


def is_distributed() -> bool:
    """True when a default process group is running in this process.

    Example:
        >>> is_distributed()
        False
    """
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank; 0 without a process group.

    Example:
        >>> rank()
        0
    """
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of processes in the job; 1 without a process group.

    Example:
        >>> world_size()
        1
    """
    return dist.get_world_size() if is_distributed() else 1


def is_writer() -> bool:
    """True on the process that writes files: rank 0, or the only process.

    Example:
        >>> is_writer()
        True
    """
    return rank() == 0


def collective_device() -> torch.device:
    """Where tensors sent through the process group must live (CUDA for nccl, else CPU).

    Example:
        >>> collective_device()
        device(type='cpu')
    """
    if is_distributed() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _env_int(name: str) -> int:
    value = os.environ[name]
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"environment variable {name}={value!r} is not an integer; "
                          "start the job with torchrun") from None


def _choose_backend(backend: str | None) -> str:
    if backend is None:
        return "nccl" if torch.cuda.is_available() else "gloo"
    if backend not in BACKENDS:
        raise ConfigError(f"distributed backend {backend!r} is not one of {', '.join(BACKENDS)}")
    if backend == "nccl" and not (torch.cuda.is_available() and dist.is_nccl_available()):
        raise ConfigError("distributed backend 'nccl' needs CUDA GPUs and a PyTorch built with "
                          "NCCL; use --dist-backend gloo on this machine")
    return backend


def init_distributed(backend: str | None = None,
                     timeout: datetime.timedelta | None = None) -> DistContext:
    """Join the job torchrun started; without torchrun, return the single-process context.

    Reads ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` (and torchrun's ``MASTER_ADDR`` /
    ``MASTER_PORT``) from the environment. On CUDA each process takes GPU ``LOCAL_RANK``.
    Calling it again while the group runs returns the running group's context.

    Args:
        backend: ``"nccl"`` or ``"gloo"``; None takes nccl when CUDA is present, else gloo.
        timeout: how long a collective waits for the other ranks before failing; None keeps
            PyTorch's default.

    Returns:
        The process's rank, world size, local rank, backend and device.

    Raises:
        ConfigError: an unknown backend, nccl without CUDA, or a malformed torchrun variable.

    Example:
        >>> init_distributed() if not launched_by_torchrun() else None
        DistContext(rank=0, world_size=1, local_rank=0, backend='', device=device(type='cpu'))
    """
    chosen = _choose_backend(backend)
    if not is_distributed() and not launched_by_torchrun():
        return DistContext()
    local_rank = _env_int("LOCAL_RANK") if "LOCAL_RANK" in os.environ else 0
    if not is_distributed():
        if not dist.is_available():
            raise ConfigError("this PyTorch build has no torch.distributed; install one with it")
        for name in ("RANK", "WORLD_SIZE"):
            _env_int(name)
        if chosen == "nccl":
            torch.cuda.set_device(local_rank)
        options = {} if timeout is None else {"timeout": timeout}
        dist.init_process_group(backend=chosen, **options)  # type: ignore[arg-type]
    running = str(dist.get_backend())
    device = (torch.device("cuda", torch.cuda.current_device()) if running == "nccl"
              else torch.device("cpu"))
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, running, device)


def shutdown(*, wait: bool = True) -> None:
    """Leave the process group (no-op without one).

    Args:
        wait: first wait until every rank has come here, so that no rank tears down its
            connections while another still uses them (a rank leaving early can abort at
            exit). False on a failure: peers waiting on this rank then fail fast.

    Example:
        >>> shutdown()
    """
    if not is_distributed():
        return
    if wait and dist.get_world_size() > 1:
        with contextlib.suppress(Exception):  # a rank that failed has said so itself
            dist.barrier()
    dist.destroy_process_group()


def share_from_writer(value: T) -> T:
    """Rank 0's ``value`` on every rank (a collective; any picklable value).

    Example:
        >>> share_from_writer("runs/demo/checkpoints/s01.safetensors")
        'runs/demo/checkpoints/s01.safetensors'
    """
    if not is_distributed() or world_size() == 1:
        return value
    box: list[T] = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]

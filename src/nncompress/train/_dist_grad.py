"""Data parallelism by hand, for loops that cannot go through ``DistributedDataParallel``.

The Caffe solver runs a net by ``net.run(blobs)`` rather than ``forward``, so DDP's hooks never
see it. These two collectives do what DDP does for it: start every rank from rank 0's model,
and after the backward pass (all ``iter_size`` passes of it) replace each gradient by the mean
over the ranks, before gradient clipping and the optimizer step (and so before the INQ hooks
zero the gradients of fixed entries).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import nn

from nncompress.train._dist_env import collective_device, is_distributed, world_size

__all__ = ["average_gradients", "broadcast_model"]


def broadcast_model(model: nn.Module) -> None:
    """Copy rank 0's parameters and buffers (masks and fixed values too) to every rank.

    Example:
        >>> broadcast_model(nn.Linear(2, 2))  # a single process has nothing to copy
    """
    if not is_distributed() or world_size() == 1:
        return
    device = collective_device()
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            local = tensor.detach().to(device).contiguous()
            dist.broadcast(local.reshape(-1).view(torch.uint8), src=0)  # any dtype, as bytes
            tensor.copy_(local)


def average_gradients(parameters: Iterable[torch.Tensor]) -> None:
    """Replace each gradient by its mean over the ranks, one all-reduce per dtype.

    Every rank must call it with the same parameters having gradients.

    Example:
        >>> p = nn.Parameter(torch.ones(2)); p.grad = torch.full((2,), 3.0)
        >>> average_gradients([p]); p.grad.tolist()
        [3.0, 3.0]
    """
    if not is_distributed() or world_size() == 1:
        return
    grads: dict[torch.dtype, list[torch.Tensor]] = {}
    for param in parameters:
        if param.grad is not None:
            grads.setdefault(param.grad.dtype, []).append(param.grad)
    device = collective_device()
    for group in grads.values():
        flat = torch.cat([g.reshape(-1) for g in group]).to(device)
        dist.all_reduce(flat)
        flat /= world_size()
        offset = 0
        for grad in group:
            grad.copy_(flat[offset:offset + grad.numel()].view_as(grad))
            offset += grad.numel()

"""Evaluation sharded over ranks whose result equals a single-process evaluation bit for bit.

The evaluation set is cut into the batches a single process would use; rank ``r`` evaluates
batches ``r, r + N, r + 2N, ...``. Each batch's loss sum and correct count go into a float64
table with one row per batch, zero elsewhere; the table is all-reduced (adding zeros is exact)
and every rank then sums it in batch order, as the single process does. Each example is
counted exactly once, whether or not the batch count divides by ``N``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import overload

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from nncompress.train._dist_check import compression_buffer_names, unwrap
from nncompress.train._dist_env import collective_device, is_distributed, rank, world_size

__all__ = ["batches_of_rank", "broadcast_plain_buffers", "evaluate_batches_sharded",
           "evaluate_sharded", "mean_over_ranks", "sharded_sums"]

BatchFn = Callable[[int], tuple[torch.Tensor, torch.Tensor]]


def batches_of_rank(num_batches: int) -> range:
    """The batch numbers this rank evaluates: ``rank, rank + N, ...`` below ``num_batches``.

    Example:
        >>> list(batches_of_rank(3))  # a single process takes them all
        [0, 1, 2]
    """
    return range(rank(), num_batches, world_size())


def broadcast_plain_buffers(model: nn.Module) -> None:
    """Copy rank 0's buffers that are not compression state (BatchNorm statistics) to all ranks.

    ``DistributedDataParallel`` does this before each training forward; an evaluation that
    calls the inner module directly does it here first. No-op without a process group.

    Example:
        >>> broadcast_plain_buffers(nn.BatchNorm1d(2))
    """
    if not is_distributed():
        return
    skip = set(compression_buffer_names(model))
    device = collective_device()
    for name, buffer in unwrap(model).named_buffers():
        if name not in skip:
            local = buffer.detach().to(device)
            dist.broadcast(local, src=0)
            buffer.data.copy_(local)


@torch.no_grad()
def sharded_sums(model: nn.Module, num_batches: int, batch: BatchFn) -> tuple[float, int]:
    """Cross-entropy sum and correct count over ``num_batches`` batches shared among the ranks.

    Args:
        model: the model (a ``DistributedDataParallel`` wrapper is looked through).
        num_batches: how many batches the whole evaluation has.
        batch: returns inputs and labels of batch ``k``; called only for this rank's batches.

    Returns:
        The loss sum and the number of correct predictions over all batches, the same on
        every rank and equal to a single process's batch-by-batch sums.

    Example:
        >>> data = [(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long))] * 3
        >>> sharded_sums(nn.Linear(3, 2, bias=False), 3, data.__getitem__)
        (4.158883094787598, 6)
    """
    module = unwrap(model)
    broadcast_plain_buffers(module)
    table = torch.zeros(num_batches, 2, dtype=torch.float64)
    was_training = module.training
    module.eval()
    try:
        for k in batches_of_rank(num_batches):
            inputs, target = batch(k)
            out = module(inputs)
            target = target.to(out.device)
            table[k, 0] = float(F.cross_entropy(out, target, reduction="sum"))
            table[k, 1] = int((out.argmax(dim=1) == target).sum())
    finally:
        module.train(was_training)
    if is_distributed() and world_size() > 1:
        shared = table.to(collective_device())
        dist.all_reduce(shared)
        table = shared.cpu()
    loss_sum, correct = 0.0, 0
    for k in range(num_batches):  # batch order, as a single process adds them
        loss_sum += float(table[k, 0])
        correct += int(table[k, 1])
    return loss_sum, correct


def evaluate_sharded(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                     batch_size: int = 1000) -> tuple[float, float]:
    """Mean cross-entropy and accuracy on ``(x, y)``, the work shared among the ranks.

    The result equals :func:`nncompress.train.loop.evaluate` of the same weights in one
    process, bit for bit, on every rank. Every rank must call it (it is a collective).

    Args:
        model: the model (a ``DistributedDataParallel`` wrapper is looked through).
        x: all evaluation inputs (each rank holds them all and reads its batches).
        y: their labels.
        batch_size: examples per batch, as in the single-process evaluation.

    Returns:
        Mean loss and accuracy; NaN for both when ``y`` is empty.

    Example:
        >>> loss, acc = evaluate_sharded(nn.Linear(2, 2), torch.zeros(5, 2),
        ...                              torch.zeros(5, dtype=torch.long), batch_size=2)
        >>> 0.0 <= acc <= 1.0
        True
    """
    if len(y) == 0:
        return math.nan, math.nan
    num_batches = -(-len(y) // batch_size)

    def batch(k: int) -> tuple[torch.Tensor, torch.Tensor]:
        return x[k * batch_size:(k + 1) * batch_size], y[k * batch_size:(k + 1) * batch_size]

    loss_sum, correct = sharded_sums(model, num_batches, batch)
    return loss_sum / len(y), correct / len(y)


@torch.no_grad()
def evaluate_batches_sharded(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]
                             ) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over ``batches``, every N-th batch on each rank.

    Every rank iterates the same batches in the same order and evaluates only its own, so the
    result equals :func:`nncompress.train.loop.evaluate` of the same batches in one process.

    Example:
        >>> data = [(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long))] * 3
        >>> evaluate_batches_sharded(nn.Linear(3, 2, bias=False), data)[1]
        1.0
    """
    module = unwrap(model)
    broadcast_plain_buffers(module)
    rows: list[tuple[float, float, float]] = []
    was_training = module.training
    module.eval()
    try:
        for k, (inputs, target) in enumerate(batches):
            if k % world_size() != rank():
                rows.append((0.0, 0.0, 0.0))
                continue
            out = module(inputs)
            target = target.to(out.device)
            rows.append((float(F.cross_entropy(out, target, reduction="sum")),
                         int((out.argmax(dim=1) == target).sum()), len(target)))
    finally:
        module.train(was_training)
    table = torch.tensor(rows, dtype=torch.float64).reshape(len(rows), 3)
    if is_distributed() and world_size() > 1:
        shared = table.to(collective_device())
        dist.all_reduce(shared)
        table = shared.cpu()
    loss_sum, correct, count = 0.0, 0, 0
    for k in range(len(rows)):
        loss_sum += float(table[k, 0])
        correct += int(table[k, 1])
        count += int(table[k, 2])
    return (math.nan, math.nan) if count == 0 else (loss_sum / count, correct / count)


@overload
def mean_over_ranks(value: float) -> float: ...


@overload
def mean_over_ranks(value: None) -> None: ...


def mean_over_ranks(value: float | None) -> float | None:
    """The mean of ``value`` over all ranks (a collective; None stays None on every rank).

    Example:
        >>> mean_over_ranks(0.25)
        0.25
    """
    if value is None or not is_distributed() or world_size() == 1:
        return value
    shared = torch.tensor([value], dtype=torch.float64, device=collective_device())
    dist.all_reduce(shared)
    return float(shared) / world_size()

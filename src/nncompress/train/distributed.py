"""Multi-process training with torchrun and ``DistributedDataParallel`` (DDP).

nncompress runs on PyTorch's own engine: start the job with ``torchrun``, and every helper here
is a no-op in a single process, so one script serves both. All compression state is a pure
function of the weights, the seeds and the iteration (DNS statistics and per-layer surgery
draws, INQ level sets and partitions), and DDP keeps the weights equal on every rank, so each
rank computes the same masks and fixed values on its own. :func:`verify_ranks` proves it.
``nncompress run`` and ``nncompress caffe train`` use these helpers under torchrun.

Your own DDP loop (``torchrun --nproc-per-node 2 train.py``)::

    import torch
    import torch.nn.functional as F
    import nncompress as nnc
    from nncompress.train import distributed as nd

    ctx = nd.init_distributed()                       # nccl on CUDA, gloo on CPU
    model = MyNet().to(ctx.device)                    # every rank builds the same model
    nnc.prepare(model, nnc.DNSConfig(c_rate=2.5))     # 1. prepare, on every rank
    ddp = nd.wrap(model)                              # 2. wrap after prepare
    optimizer = torch.optim.SGD(ddp.parameters(), lr=0.01, momentum=0.9)
    order = BatchOrder(len(y), 64, seed=0)            # global batch 64 (nncompress.train.loop)
    for i in range(iterations):                       # 3. train: each rank its share
        batch = nd.rank_share(order.indices(i))       #    of the global batch of step i
        optimizer.zero_grad()
        F.cross_entropy(ddp(x[batch]), y[batch]).backward()
        optimizer.step()
    nd.verify_ranks(ddp, "after DNS")                 # same weights and masks everywhere
    model = nnc.finalize(model)
    nnc.prepare(model, nnc.INQConfig(num_quantum_values=8))
    ddp = nd.wrap(model)                              # wrap again after each prepare
    optimizer = torch.optim.SGD(ddp.parameters(), lr=0.001, momentum=0.9)
    for portion in (0.5, 0.75, 0.875, 1.0):
        nnc.quantize_step(model, portion)             # 4. on every rank
        ...                                           #    train as above
    loss, accuracy = nd.evaluate_sharded(ddp, test_x, test_y)
    nd.verify_ranks(ddp, "after INQ")
    if nd.is_writer():                                # 5. rank 0 finalizes and writes
        nnc.save_compact(nnc.finalize(model), "model.ncz")
    nd.shutdown()

Why INQ's frozen entries stay frozen: DDP all-reduces the gradients during ``backward()``
(bucket by bucket, finished before ``backward()`` returns), and the global optimizer hooks
(``nncompress._inq_hooks``) run inside ``optimizer.step()``: they zero the averaged gradients
of fixed entries and then write the exact fixed values back, on every rank alike.

Why :func:`wrap` keeps DDP from broadcasting compression buffers: by default DDP sends every
buffer from rank 0 before each forward. Masks (1 byte per weight) and fixed values (2 bytes)
would then add 25% to 50% to the 4 bytes per weight of the gradient all-reduce at every step,
and would hide a divergence instead of letting :func:`verify_ranks` report it. :func:`wrap`
therefore tells DDP to ignore them, copies them once from rank 0 at the wrap, and leaves other
buffers (BatchNorm statistics) to DDP's usual broadcast.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from nncompress.errors import ConfigError, NNCompressError
from nncompress.train._dist_check import (
    PARTS,
    RankMismatchError,
    compression_buffer_names,
    layer_checksums,
    unwrap,
    verify_ranks,
)
from nncompress.train._dist_env import (
    BACKENDS,
    DistContext,
    collective_device,
    init_distributed,
    is_distributed,
    is_writer,
    launched_by_torchrun,
    rank,
    share_from_writer,
    shutdown,
    world_size,
)
from nncompress.train._dist_eval import (
    batches_of_rank,
    broadcast_plain_buffers,
    evaluate_batches_sharded,
    evaluate_sharded,
    mean_over_ranks,
    sharded_sums,
)
from nncompress.train._dist_grad import average_gradients, broadcast_model
from nncompress.train.loop import BatchOrder

__all__ = [
    "BACKENDS",
    "PARTS",
    "DistContext",
    "RankBatchOrder",
    "RankMismatchError",
    "average_gradients",
    "batches_of_rank",
    "broadcast_model",
    "broadcast_plain_buffers",
    "check_batch_divides",
    "compression_buffer_names",
    "evaluate_batches_sharded",
    "evaluate_sharded",
    "failure_guard",
    "init_distributed",
    "is_distributed",
    "is_writer",
    "launched_by_torchrun",
    "layer_checksums",
    "mean_over_ranks",
    "rank",
    "rank_share",
    "sharded_sums",
    "share_from_writer",
    "shutdown",
    "unwrap",
    "verify_ranks",
    "world_size",
    "wrap",
    "writer_first",
]

T = TypeVar("T")

LAYOUTS = ("contiguous", "strided")


def check_batch_divides(batch_size: int, processes: int | None = None) -> int:
    """The per-rank batch size; an error unless ``batch_size`` divides by the process count.

    Args:
        batch_size: the global batch (the recipe's ``batch_size``).
        processes: number of processes; None takes the running job's.

    Returns:
        ``batch_size // processes``.

    Raises:
        ConfigError: naming both numbers when the division leaves a remainder.

    Example:
        >>> check_batch_divides(64, 2)
        32
    """
    count = world_size() if processes is None else processes
    if batch_size % count:
        nearest = max(count, round(batch_size / count) * count)
        raise ConfigError(f"batch_size {batch_size} does not divide over {count} processes; "
                          f"make the global batch a multiple of {count} (such as {nearest}) or "
                          "start a number of processes that divides it")
    return batch_size // count


def rank_share(indices: torch.Tensor, layout: str = "contiguous", *, process: int | None = None,
               processes: int | None = None) -> torch.Tensor:
    """This rank's share of a global batch's example indices.

    The global batch of iteration ``i`` (``BatchOrder(...).indices(i)``) stays a pure function
    of the seed and ``i``; each rank takes ``len(indices) / N`` of it, together all of it.

    Args:
        indices: the global batch's example indices.
        layout: ``"contiguous"`` (rank ``r`` takes the ``r``-th block) or ``"strided"``
            (rank ``r`` takes entries ``r, r + N, ...``).
        process: the rank; None takes this process's.
        processes: number of processes; None takes the running job's.

    Returns:
        The indices this rank trains on.

    Raises:
        ConfigError: the batch does not divide by the process count, or an unknown layout.

    Example:
        >>> rank_share(torch.arange(6), process=1, processes=2).tolist()
        [3, 4, 5]
        >>> rank_share(torch.arange(6), "strided", process=1, processes=2).tolist()
        [1, 3, 5]
    """
    count = world_size() if processes is None else processes
    me = rank() if process is None else process
    share = check_batch_divides(len(indices), count)
    if layout == "contiguous":
        return indices[me * share:(me + 1) * share]
    if layout == "strided":
        return indices[me::count]
    raise ConfigError(f"batch layout {layout!r} is not one of {', '.join(LAYOUTS)}")


class RankBatchOrder(BatchOrder):
    """This rank's share of each global batch of a :class:`BatchOrder`, as a batch order.

    ``batch_size`` is the share (``global_batch_size / N``); ``indices(i)`` is
    :func:`rank_share` of the global batch of iteration ``i``. In one process it equals the
    plain order. A training loop given it needs no other change to train its share.

    Args:
        num_examples: size of the training set.
        batch_size: the global batch.
        seed: seed of the permutations.
        layout: ``"contiguous"`` or ``"strided"`` (see :func:`rank_share`).

    Raises:
        ConfigError: the global batch does not divide by the process count.

    Example:
        >>> RankBatchOrder(10, 4, seed=0).indices(3).tolist() == BatchOrder(10, 4, 0).indices(
        ...     3).tolist()
        True
    """

    def __init__(self, num_examples: int, batch_size: int, seed: int,
                 layout: str = "contiguous") -> None:
        self.whole = BatchOrder(num_examples, batch_size, seed)
        super().__init__(num_examples, check_batch_divides(batch_size), seed)
        self.global_batch_size, self.layout = batch_size, layout

    def permutation(self, epoch: int) -> torch.Tensor:
        """The order of epoch ``epoch`` (of the whole training set)."""
        return self.whole.permutation(epoch)

    def indices(self, iteration: int) -> torch.Tensor:
        """This rank's indices of the batch of ``iteration``."""
        return rank_share(self.whole.indices(iteration), self.layout)


def _broadcast_compression_state(model: nn.Module) -> None:
    wanted = set(compression_buffer_names(model))
    device = collective_device()
    for name, buffer in unwrap(model).named_buffers():
        if name in wanted:
            # bool and bfloat16 travel as bytes, which every backend sends.
            local = buffer.detach().to(device).contiguous()
            raw = local.reshape(-1).view(torch.uint8)
            dist.broadcast(raw, src=0)
            buffer.detach().copy_(local)  # a counted write: DNS host mirrors re-read it


def wrap(model: nn.Module, **ddp_options: Any) -> nn.Module:
    """Wrap a prepared ``model`` in ``DistributedDataParallel``; without a job, return it.

    DDP copies rank 0's parameters to the other ranks; this also copies rank 0's compression
    buffers once, and keeps DDP from broadcasting them at every forward (see the module
    docstring). Wrap again after each :func:`nncompress.prepare`.

    Args:
        model: the model, prepared, on this rank's device.
        ddp_options: further ``DistributedDataParallel`` arguments (``bucket_cap_mb``, ...);
            ``device_ids`` defaults to the model's GPU on CUDA.

    Returns:
        The DDP wrapper (the model itself in a single process).

    Example:
        >>> net = nn.Linear(2, 2)
        >>> wrap(net) is net
        True
    """
    if not is_distributed():
        return model
    inner = unwrap(model)
    ignored = compression_buffer_names(inner)
    nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(  # type: ignore[no-untyped-call]
        inner, ignored)
    _broadcast_compression_state(inner)
    device = next(inner.parameters()).device
    if device.type == "cuda":
        ddp_options.setdefault("device_ids", [device.index])
    return nn.parallel.DistributedDataParallel(inner, **ddp_options)


@contextlib.contextmanager
def failure_guard() -> Iterator[None]:
    """Take the whole job down when this rank fails, instead of leaving the others waiting.

    On an exception inside the block, the rank says which rank failed, leaves the process
    group (the other ranks' pending collectives then fail at once rather than at the
    timeout) and re-raises; its process then exits non-zero, and torchrun stops the others.

    Example:
        >>> with failure_guard():
        ...     pass
    """
    try:
        yield
    except BaseException as error:
        if is_distributed():
            print(f"nncompress: rank {rank()} of {world_size()} failed "
                  f"({type(error).__name__}: {error}); stopping the job",
                  file=sys.stderr, flush=True)
            with contextlib.suppress(Exception):
                shutdown(wait=False)
        raise


def writer_first(action: Callable[[], T]) -> T | None:
    """Run ``action`` on rank 0 while the other ranks wait; its user error stops every rank.

    For what only the writer may do before the others go on (opening the run folder). On the
    other ranks the same :class:`~nncompress.errors.NNCompressError` message is raised, so the
    whole job ends with one clear message instead of ranks waiting on a rank that has left.

    Returns:
        ``action()`` on rank 0 (and in a single process), None on the other ranks.

    Raises:
        NNCompressError: on the other ranks, when ``action`` failed on rank 0 (where its own
            error is raised).

    Example:
        >>> writer_first(lambda: 42)
        42
    """
    if not is_distributed() or world_size() == 1:
        return action()
    message: list[str | None] = [None]
    result: T | None = None
    try:
        if is_writer():
            try:
                result = action()
            except Exception as error:
                message[0] = str(error) if isinstance(error, NNCompressError) else \
                    f"{type(error).__name__}: {error}"
                raise
    finally:
        dist.broadcast_object_list(message, src=0)
    if message[0] is not None:
        raise NNCompressError(f"rank 0 stopped the job: {message[0]}")
    return result

"""Proof that every rank holds the same model: per-layer checksums compared with an all-gather.

Each module that owns parameters, and each prepared layer, gives one row of four 64-bit
BLAKE2b digests: its parameters, its DNS masks, its INQ fixed values, and its other
compression state (DNS iteration, statistics and seed; INQ levels, portion, steps and seed).
Digests cover dtype, shape and bytes, so they are exact: one flipped bit anywhere changes one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import nn

from nncompress.errors import NNCompressError
from nncompress.layers import CompressedLayer
from nncompress.train._dist_env import collective_device, is_distributed, world_size

__all__ = [
    "COMPRESSION_BUFFERS",
    "PARTS",
    "RankMismatchError",
    "compression_buffer_names",
    "layer_checksums",
    "unwrap",
    "verify_ranks",
]

PARTS = ("weights", "masks", "fixed values", "compression state")
# The state_dict keys a prepared layer may hold (see nncompress.layers).
COMPRESSION_BUFFERS = ("weight_mask", "bias_mask", "dns_iteration", "dns_stats", "dns_seed",
                       "weight_fixed", "bias_fixed", "weight_levels", "bias_levels",
                       "inq_portion", "inq_steps", "inq_seed")
_BLOBS = ("weight", "bias")


class RankMismatchError(NNCompressError):
    """Ranks of one job hold different weights or compression state."""


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a ``DistributedDataParallel`` wrapper, or ``model`` itself.

    Example:
        >>> net = nn.Linear(2, 2)
        >>> unwrap(net) is net
        True
    """
    inner = getattr(model, "module", None)
    if isinstance(model, nn.parallel.DistributedDataParallel) and isinstance(inner, nn.Module):
        return inner
    return model


def compression_buffer_names(model: nn.Module) -> list[str]:
    """Qualified names of every compression buffer a layer of ``model`` holds or may hold.

    Names for layers that are not prepared yet are included, so a stage prepared after a
    ``DistributedDataParallel`` wrap is covered too.

    Example:
        >>> compression_buffer_names(nn.Sequential(nn.Linear(2, 2)))[:2]
        ['0.weight_mask', '0.bias_mask']
    """
    names = []
    for name, module in unwrap(model).named_modules():
        if isinstance(module, (CompressedLayer, nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            prefix = f"{name}." if name else ""
            names += [prefix + key for key in COMPRESSION_BUFFERS]
    return names


def _digest(tensors: Iterable[torch.Tensor | None]) -> int:
    hasher = hashlib.blake2b(digest_size=8)
    for tensor in tensors:
        if tensor is None:
            hasher.update(b"none;")
            continue
        flat = tensor.detach().contiguous().reshape(-1).cpu()
        hasher.update(f"{flat.dtype}{tuple(tensor.shape)};".encode())
        hasher.update(flat.view(torch.uint8).numpy().tobytes())
    return int.from_bytes(hasher.digest(), "little", signed=True)


def _row(module: nn.Module) -> list[int]:
    params = [p for _, p in sorted(module.named_parameters(recurse=False))]
    if not isinstance(module, CompressedLayer):
        return [_digest(params), _digest([]), _digest([]), _digest([])]
    masks = [module.mask(blob) for blob in _BLOBS]
    fixed = [module.fixed_values(blob) for blob in _BLOBS]
    skip = {f"{blob}_{kind}" for blob in _BLOBS for kind in ("mask", "fixed")}
    state = [b for n, b in sorted(module.named_buffers(recurse=False)) if n not in skip]
    return [_digest(params), _digest(masks), _digest(fixed), _digest(state)]


def layer_checksums(model: nn.Module) -> tuple[list[str], torch.Tensor]:
    """Per-layer digests of weights, masks, fixed values and other compression state.

    Args:
        model: the model, plain, prepared or wrapped in ``DistributedDataParallel``.

    Returns:
        The layer names (``"(model)"`` for the root module) and an int64 tensor with one row
        per layer and one column per entry of :data:`PARTS`.

    Example:
        >>> names, sums = layer_checksums(nn.Sequential(nn.Linear(2, 2)))
        >>> names, tuple(sums.shape)
        (['0'], (1, 4))
    """
    names, rows = [], []
    for name, module in unwrap(model).named_modules():
        owns = any(True for _ in module.parameters(recurse=False))
        if owns or isinstance(module, CompressedLayer):
            names.append(name or "(model)")
            rows.append(_row(module))
    return names, torch.tensor(rows, dtype=torch.int64).reshape(len(rows), len(PARTS))


def _gather(tensor: torch.Tensor) -> list[torch.Tensor]:
    local = tensor.to(collective_device())
    gathered = [torch.empty_like(local) for _ in range(world_size())]
    dist.all_gather(gathered, local)
    return [g.cpu() for g in gathered]


def verify_ranks(model: nn.Module, where: str = "") -> None:
    """Check that all ranks hold the same weights, masks and fixed values; no-op alone.

    Every rank must call it at the same point (it is a collective). Every rank raises the same
    error, so the job stops as a whole.

    Args:
        model: the model, plain, prepared or wrapped in ``DistributedDataParallel``.
        where: where the run stands, for the message (``"at iteration 500 of stage dns"``).

    Raises:
        RankMismatchError: naming each layer and part that differs and the ranks that differ
            from rank 0.

    Example:
        >>> verify_ranks(nn.Linear(2, 2))  # a single process agrees with itself
    """
    if not is_distributed() or world_size() == 1:
        return
    names, sums = layer_checksums(model)
    names_digest = hashlib.blake2b("|".join(names).encode(), digest_size=8).digest()
    header = torch.tensor([len(names), int.from_bytes(names_digest, "little", signed=True)])
    headers = _gather(header)
    suffix = f" {where}" if where else ""
    if any(not torch.equal(h, headers[0]) for h in headers):
        ranks = [r for r, h in enumerate(headers) if not torch.equal(h, headers[0])]
        raise RankMismatchError(f"ranks {ranks} hold a model with other layers than rank 0"
                                f"{suffix}; every rank must build and prepare the same model")
    gathered = _gather(sums)
    problems = []
    for index, name in enumerate(names):
        for part, label in enumerate(PARTS):
            first = gathered[0][index, part]
            ranks = [r for r, g in enumerate(gathered) if g[index, part] != first]
            if ranks:
                problems.append(f"layer {name!r} {label}: rank{'s' * (len(ranks) > 1)} "
                                f"{', '.join(map(str, ranks))} differ{'s' * (len(ranks) == 1)} "
                                "from rank 0")
    if problems:
        raise RankMismatchError(f"ranks disagree{suffix}: " + "; ".join(problems) + ". Every "
                                "rank must prepare the model alike and run the same steps "
                                "(quantize_step and surgery_step on every rank)")

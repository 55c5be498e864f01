"""Training checkpoints: one safetensors file each, written atomically, no pickle.

A checkpoint holds the model's ``state_dict`` (masks, counters and INQ codes included), the
optimizer's tensors, torch's CPU generator state, and a JSON header with everything else: where
the run stands (stage, INQ step, iteration), the optimizer's non-tensor state and the running
loss. Tensor keys are namespaced: ``model.<key>``, ``optimizer.<param index>.<name>``,
``rng.<name>``. The JSON lives in the safetensors metadata under ``nncompress``, so a file is
either complete or absent: it is written to a temporary name and moved into place.

Every checkpoint also carries a SHA-256 checksum (metadata key ``nncompress_sha256``) of its
JSON header text and of each tensor's name, dtype, shape and bytes; :func:`load_checkpoint`
recomputes it, so a flipped bit anywhere is a :class:`~nncompress.errors.FormatError`.
Checkpoints written before checksums existed have none: they load, with
:attr:`Checkpoint.verified` False (the run folder says so when it resumes from one).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save as save_tensors

from nncompress._io import atomic_write_bytes
from nncompress.errors import FormatError

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "Checkpoint",
    "checksum",
    "default_rng_states",
    "list_checkpoints",
    "load_checkpoint",
    "optimizer_tensors",
    "restore_optimizer",
    "save_checkpoint",
]

CHECKPOINT_FORMAT = "nncompress-checkpoint"
CHECKPOINT_VERSION = 1
_HEADER_KEY = "nncompress"
_CHECKSUM_KEY = "nncompress_sha256"


@dataclass
class Checkpoint:
    """A loaded checkpoint: tensors by namespace and the JSON metadata."""

    path: Path
    metadata: dict[str, Any]
    model_state: dict[str, torch.Tensor] = field(default_factory=dict)
    optimizer_state: dict[str, torch.Tensor] = field(default_factory=dict)
    rng_state: dict[str, torch.Tensor] = field(default_factory=dict)
    verified: bool = True  # False: an old checkpoint without a checksum


def checksum(header: str, tensors: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 of a checkpoint's header text and its tensors (names, dtypes, shapes, bytes).

    Example:
        >>> len(checksum("{}", {"model.w": torch.zeros(2)}))
        64
    """
    digest = hashlib.sha256(header.encode("utf-8"))
    for key in sorted(tensors):
        value = tensors[key].detach().cpu().contiguous()
        digest.update(json.dumps([key, str(value.dtype), list(value.shape)]).encode("utf-8"))
        digest.update(value.reshape(-1).view(torch.uint8).numpy().data)
    return digest.hexdigest()


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor],
                                                                  dict[str, Any]]:
    """Split ``optimizer.state_dict()["state"]`` into tensors and JSON-ready other values.

    Example:
        >>> p = torch.nn.Parameter(torch.ones(2))
        >>> opt = torch.optim.SGD([p], lr=0.1, momentum=0.9)
        >>> p.grad = torch.ones(2); opt.step()
        >>> sorted(optimizer_tensors(opt)[0])
        ['0.momentum_buffer']
    """
    tensors: dict[str, torch.Tensor] = {}
    others: dict[str, Any] = {}
    for index, state in optimizer.state_dict()["state"].items():
        for name, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{name}"] = value.detach().to("cpu", copy=True).contiguous()
            else:
                others[f"{index}.{name}"] = value
    return tensors, others


def restore_optimizer(optimizer: torch.optim.Optimizer, checkpoint: Checkpoint) -> None:
    """Load the optimizer state of ``checkpoint`` into a freshly built ``optimizer``.

    The optimizer must be built exactly as when the checkpoint was saved (same parameters and
    groups); the hyperparameters come from that construction, the state from the file.

    Example:
        >>> # see save_checkpoint
    """
    state: dict[int, dict[str, Any]] = {}
    items = [*checkpoint.optimizer_state.items(),
             *checkpoint.metadata.get("optimizer_values", {}).items()]
    for key, value in items:
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    current = optimizer.state_dict()
    optimizer.load_state_dict({"state": state, "param_groups": current["param_groups"]})


def save_checkpoint(path: str | Path, *, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer | None, metadata: Mapping[str, Any],
                    rng: Mapping[str, torch.Tensor] | None = None) -> None:
    """Write one checkpoint file atomically.

    Args:
        path: the ``.safetensors`` file to write.
        model: its ``state_dict`` is saved (buffers included).
        optimizer: its state is saved; None between stages.
        metadata: JSON-serialisable data stored in the header (position, losses...).
        rng: generator states to save; by default :func:`default_rng_states`.

    Example:
        >>> import tempfile, pathlib
        >>> net = torch.nn.Linear(2, 2)
        >>> file = pathlib.Path(tempfile.mkdtemp()) / "c.safetensors"
        >>> save_checkpoint(file, model=net, optimizer=None, metadata={"iteration": 3})
        >>> load_checkpoint(file).metadata["iteration"]
        3
    """
    tensors = {f"model.{k}": v.detach().to("cpu", copy=True).contiguous()
               for k, v in model.state_dict().items()}
    header = dict(metadata)
    header.update(format=CHECKPOINT_FORMAT, version=CHECKPOINT_VERSION)
    if optimizer is not None:
        opt_tensors, opt_values = optimizer_tensors(optimizer)
        tensors.update({f"optimizer.{k}": v for k, v in opt_tensors.items()})
        header["optimizer_values"] = opt_values
    states = default_rng_states() if rng is None else dict(rng)
    tensors.update({f"rng.{k}": v.to("cpu", copy=True).contiguous() for k, v in states.items()})
    text = json.dumps(header, allow_nan=True)
    meta = {_HEADER_KEY: text, _CHECKSUM_KEY: checksum(text, tensors)}
    atomic_write_bytes(path, save_tensors(tensors, metadata=meta))


def default_rng_states() -> dict[str, torch.Tensor]:
    """Torch's CPU generator state, and the current GPU's (``cuda``) once CUDA is in use.

    Tensors are saved on the CPU whatever device they live on, so a checkpoint written on a
    GPU loads on a machine without one (and the other way round).

    Example:
        >>> sorted(default_rng_states())[0]
        'torch'
    """
    states = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
        states["cuda"] = torch.cuda.get_rng_state()
    return states


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint` (no pickle involved).

    Raises:
        FormatError: the file is not a readable nncompress checkpoint of a known version, or
            its checksum does not match its contents.

    Example:
        >>> # see save_checkpoint
    """
    file = Path(path)
    if file.is_dir():
        raise FormatError(f"{file}: a directory where a checkpoint file should be")
    try:
        with safe_open(str(file), framework="pt") as handle:
            extra = handle.metadata() or {}
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
    except Exception as exc:  # safetensors raises several types for damaged files
        raise FormatError(f"{file}: not a readable checkpoint ({exc})") from None
    header, expected = extra.get(_HEADER_KEY), extra.get(_CHECKSUM_KEY)
    if header is None:
        raise FormatError(f"{file}: not an nncompress checkpoint (no {_HEADER_KEY!r} header)")
    if expected is not None and checksum(header, tensors) != expected:
        raise FormatError(f"{file}: checksum mismatch: the file was changed or damaged after "
                          "it was written")
    try:
        metadata = json.loads(header)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise FormatError(f"{file}: damaged checkpoint header ({exc})") from None
    if not isinstance(metadata, dict):
        raise FormatError(f"{file}: damaged checkpoint header (not a JSON object)")
    if metadata.get("format") != CHECKPOINT_FORMAT or metadata.get("version") != CHECKPOINT_VERSION:
        raise FormatError(f"{file}: checkpoint format {metadata.get('format')!r} version "
                          f"{metadata.get('version')!r} is not {CHECKPOINT_FORMAT!r} version "
                          f"{CHECKPOINT_VERSION}")
    out = Checkpoint(path=file, metadata=metadata, verified=expected is not None)
    for key, value in tensors.items():
        space, _, rest = key.partition(".")
        target = {"model": out.model_state, "optimizer": out.optimizer_state,
                  "rng": out.rng_state}.get(space)
        if target is None:
            raise FormatError(f"{file}: unexpected tensor {key!r}")
        target[rest] = value
    return out


def list_checkpoints(folder: str | Path) -> list[Path]:
    """Checkpoint files in ``folder`` (temporary files excluded), sorted by name.

    Example:
        >>> list_checkpoints("/nonexistent")
        []
    """
    base = Path(folder)
    if not base.is_dir():
        return []
    return sorted(p for p in base.glob("*.safetensors") if not p.name.startswith("."))

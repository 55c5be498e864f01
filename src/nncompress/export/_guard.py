"""Memory bounds for reading a .ncz file: the budget a file of a given size may claim.

A compact file is small, the model it describes may not be: a few hundred bytes can name an
architecture of billions of parameters. Everything a load allocates is bounded by
:func:`budget` of the file's size, in three places:

- the metadata may declare tensors of at most that many bytes in all (checked before decoding);
- the model is first built on the ``meta`` device, where nothing is allocated, and its tensors
  are checked against the declared ones;
- the real build runs under :class:`AllocationGuard`, which works out the size of every new
  tensor on the ``meta`` device before the real call runs and stops the build before the live
  tensors pass the budget: this covers builders that cannot run on the ``meta`` device and
  those that allocate more than their parameters (a Caffe net infers its blob shapes by
  running its layers).
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_map

from nncompress.errors import FormatError

__all__ = ["BYTES_PER_FILE_BYTE", "FLOOR_BYTES", "AllocationGuard", "budget"]

FLOOR_BYTES = 16 << 20
BYTES_PER_FILE_BYTE = 1024

# Calls that return sizes, flags or views of their input, never new storage: not planned on
# the meta device (planning one costs as much as the call; a ResNet-20 build made ~500 of them).
_NO_NEW_STORAGE = frozenset({
    "__get__", "__set__", "_set_grad_enabled", "size", "dim", "numel", "stride",
    "element_size", "is_floating_point", "is_complex", "data_ptr", "storage_offset",
    "is_contiguous", "requires_grad_", "__len__"})


def budget(file_bytes: int) -> int:
    """Tensor bytes a .ncz file of ``file_bytes`` bytes may declare (and a load may allocate).

    16 MiB plus 1024 bytes per byte of the file: a model pruned to 0.1% and quantized to a
    few levels compresses about 500-fold, a realistic one 20- to 100-fold.

    Example:
        >>> budget(1000) == (16 << 20) + 1024 * 1000
        True
    """
    return FLOOR_BYTES + BYTES_PER_FILE_BYTE * file_bytes


def describe_budget(file_bytes: int) -> str:
    """The budget as a phrase for error messages.

    Example:
        >>> describe_budget(10)
        'at most 16787456 bytes for a file of 10 bytes (16 MiB + 1024 per file byte)'
    """
    return (f"at most {budget(file_bytes)} bytes for a file of {file_bytes} bytes "
            f"({FLOOR_BYTES >> 20} MiB + {BYTES_PER_FILE_BYTE} per file byte)")


def _to_meta(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to("meta")
    if isinstance(value, torch.device):
        return torch.device("meta")
    return value


def _tensors(out: Any) -> list[torch.Tensor]:
    items = out if isinstance(out, (tuple, list)) else [out]
    return [t for t in items if isinstance(t, torch.Tensor)]


class AllocationGuard(TorchFunctionMode):
    """Refuses, before it runs, the torch call that would take live tensor memory past ``limit``.

    Each call is first run on the ``meta`` device (factories with ``device="meta"``), which
    allocates nothing and gives the sizes of its results; results that are not one of its
    inputs count as new. After the real call, each new storage is tracked until it is freed,
    so the count is the live memory the build holds (parameters, and the activations a Caffe
    net computes to infer its shapes while they live). Calls the ``meta`` device cannot run
    (``.item()``, data-dependent sizes) are counted once they ran. In-place calls (``uniform_``,
    ``zero_``, ...: their result is their input) and reads of sizes and attributes are not
    planned: they return no new tensor (a ``resize_`` that grows a storage is counted once it
    ran, as before).

    Args:
        limit: the most bytes the tensors made inside the block may hold at once.
        what: what is being built, for the error message.

    Example:
        >>> with AllocationGuard(1 << 20, "test"):
        ...     small = torch.zeros(10)
        >>> try:
        ...     with AllocationGuard(1 << 20, "test"):
        ...         big = torch.zeros(1 << 30)
        ... except FormatError as exc:
        ...     print(str(exc)[:59])
        test: building the model would take more than 1048576 bytes
    """

    def __init__(self, limit: int, what: str) -> None:
        super().__init__()
        self.limit = limit
        self.what = what
        self.live = 0
        self.refused: FormatError | None = None  # the error raised, even if a caller wraps it
        self._storages: dict[int, int] = {}  # data pointer -> bytes, while alive
        self._finalizers: list[weakref.finalize[Any, Any]] = []

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)  # type: ignore[no-untyped-call]
        for finalizer in self._finalizers:
            finalizer.detach()

    def __torch_function__(self, func: Any, types: Any, args: Any = (),
                           kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        planned = self._plan(func, args, kwargs)
        if self.live + planned > self.limit:
            self.refused = FormatError(
                f"{self.what}: building the model would take more than {self.limit} bytes "
                f"({getattr(func, '__name__', func)} asks for {planned} more, {self.live} are "
                "in use): the file's architecture describes a far bigger model than its size "
                "allows")
            raise self.refused
        out = func(*args, **kwargs)
        for tensor in _tensors(out):
            self._track(tensor)
        return out

    @staticmethod
    def _plan(func: Any, args: Any, kwargs: Any) -> int:
        """Bytes of the new tensors ``func`` returns, worked out on the meta device (0 if it
        cannot run there, or returns no new tensor by its kind: see the class docstring)."""
        name = getattr(func, "__name__", "")
        if name in _NO_NEW_STORAGE or (name.endswith("_") and not name.endswith("__")):
            return 0
        meta_args, meta_kwargs = tree_map(_to_meta, args), tree_map(_to_meta, kwargs)
        inputs = _tensors(list(meta_args) + list(meta_kwargs.values()))
        if not inputs:
            meta_kwargs = {**meta_kwargs, "device": torch.device("meta")}
        try:
            out = func(*meta_args, **meta_kwargs)
        except Exception:  # counted once it ran
            return 0
        return sum(t.numel() * t.element_size() for t in _tensors(out)
                   if not any(t is i for i in inputs))

    def _track(self, tensor: torch.Tensor) -> None:
        if tensor.device.type == "meta":
            return
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        if key == 0 or key in self._storages:
            return
        self._storages[key] = storage.nbytes()
        self.live += storage.nbytes()
        self._finalizers.append(weakref.finalize(storage, self._release, key))

    def _release(self, key: int) -> None:
        self.live -= self._storages.pop(key, 0)

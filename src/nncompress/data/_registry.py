"""Dataset registry, the :class:`Splits` container and :func:`load_data`.

A loader is registered under a name and receives the text after the first ``:`` of the spec
(``"idx:/data/mnist"`` -> loader ``idx`` gets ``"/data/mnist"``; ``"mnist"`` -> ``""``). It
returns :class:`RawData`; :func:`load_data` then scales the pixels and carves out the
validation split, so every data set gets the same treatment.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from nncompress._registry import registrar
from nncompress.errors import ConfigError, NNCompressError, did_you_mean

__all__ = [
    "DatasetError",
    "DatasetNotFoundError",
    "Loader",
    "RawData",
    "Splits",
    "list_datasets",
    "load_data",
    "register_dataset",
]


class DatasetError(NNCompressError, ValueError):
    """A data set spec, option or file is invalid."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """A data set's files or package are not installed or not where the spec says."""


@dataclass(frozen=True, eq=False)  # tensors: compare fields explicitly
class RawData:
    """What a loader returns: images ``(N, C, H, W)`` and int64 labels ``(N,)``.

    ``uint8`` images are pixels and get multiplied by ``load_data``'s ``scale``;
    floating-point images are taken as already scaled.
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int


@dataclass(frozen=True, eq=False)  # tensors: compare fields explicitly
class Splits:
    """Train, validation and test tensors on the CPU.

    ``*_x`` are float32 ``(N, C, H, W)`` already scaled; ``*_y`` are int64 ``(N,)``.
    ``val_x``/``val_y`` have zero rows when no validation split was asked for.
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    name: str
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one example, e.g. ``(1, 28, 28)``."""
        return tuple(self.train_x.shape[1:])


Loader = Callable[[str], RawData]
_LOADERS: dict[str, Loader] = {}


def register_dataset(name: str) -> Callable[[Loader], Loader]:
    """Register a loader ``fn(option: str) -> RawData`` under ``name``.

    Args:
        name: the spec name, without ``:``.

    Returns:
        A decorator that registers the loader and returns it unchanged.

    Raises:
        ConfigError: if the name is empty, contains ``:`` or is already taken.

    Example:
        >>> @register_dataset("ones")
        ... def _ones(option: str) -> RawData:
        ...     x = torch.ones(4, 1, 2, 2, dtype=torch.uint8)
        ...     y = torch.zeros(4, dtype=torch.int64)
        ...     return RawData(x, y, x, y, num_classes=1)
        >>> load_data("ones").train_x.shape
        torch.Size([4, 1, 2, 2])
    """
    return registrar(_LOADERS, "dataset", name)


def list_datasets() -> list[str]:
    """Return the registered data set names, sorted.

    Example:
        >>> "synthetic" in list_datasets()
        True
    """
    return sorted(_LOADERS)


def load_data(spec: str, *, scale: float = 1 / 256, validation: int = 0, seed: int = 0) -> Splits:
    """Load a data set by spec.

    Specs: ``mnist``, ``fashion-mnist``, ``idx:<dir>``, ``synthetic`` or
    ``synthetic:n=4096,test=512`` (see :mod:`nncompress.data.synthetic`).

    Args:
        spec: ``name`` or ``name:option``.
        scale: factor applied to uint8 pixels; Caffe's LeNet uses 1/256 (the default).
        validation: number of training examples held out (seeded) as the validation split.
        seed: seed of the permutation that picks the validation examples.

    Returns:
        The splits, float32 images and int64 labels on the CPU.

    Raises:
        ConfigError: unknown spec name, or bad ``scale``/``validation``.
        DatasetError: the data set's files are missing or malformed.

    Example:
        >>> splits = load_data("synthetic:n=64,test=32", validation=16)
        >>> splits.train_x.shape, splits.val_x.shape, splits.input_shape
        (torch.Size([48, 1, 28, 28]), torch.Size([16, 1, 28, 28]), (1, 28, 28))
    """
    name, _, option = spec.partition(":")
    if name in ("folder", "lmdb"):
        raise ConfigError(f"{spec!r} is streamed from disk, not held in memory; open it with "
                          "nncompress.data.open_stream")
    if name not in _LOADERS:
        known = ", ".join(list_datasets())
        raise ConfigError(
            f"unknown dataset {spec!r}{did_you_mean(name, _LOADERS)}; known: {known} "
            "(idx takes a directory, e.g. 'idx:/data/mnist')"
        )
    if not (isinstance(scale, (int, float)) and scale > 0):
        raise ConfigError(f"scale={scale!r} must be a positive number, e.g. 1/256")
    raw = _LOADERS[name](option)
    return _split(raw, name=spec, scale=float(scale), validation=validation, seed=seed)


def _check_raw(raw: RawData, name: str) -> None:
    for what, x, y in (("train", raw.train_x, raw.train_y), ("test", raw.test_x, raw.test_y)):
        if x.dim() != 4 or y.dim() != 1 or x.shape[0] != y.shape[0]:
            raise DatasetError(
                f"dataset {name!r}: {what} images must be (N, C, H, W) with N labels; "
                f"got images {tuple(x.shape)} and labels {tuple(y.shape)}"
            )
    if raw.train_x.shape[1:] != raw.test_x.shape[1:]:
        raise DatasetError(
            f"dataset {name!r}: train images are {tuple(raw.train_x.shape[1:])} "
            f"but test images are {tuple(raw.test_x.shape[1:])}"
        )


def _split(raw: RawData, *, name: str, scale: float, validation: int, seed: int) -> Splits:
    _check_raw(raw, name)
    n_train = raw.train_x.shape[0]
    if not (isinstance(validation, int) and 0 <= validation < n_train):
        raise ConfigError(
            f"validation={validation!r} must be an integer in [0, {n_train}) "
            f"for {name!r}, which has {n_train} training examples"
        )
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n_train, generator=gen)
    # Sorted indices keep the original order inside each split.
    val_idx, train_idx = perm[:validation].sort().values, perm[validation:].sort().values
    train_x, test_x = _scaled(raw.train_x, scale), _scaled(raw.test_x, scale)
    train_y = raw.train_y.to(torch.int64, copy=True)
    test_y = raw.test_y.to(torch.int64, copy=True)
    return Splits(
        train_x=train_x[train_idx],
        train_y=train_y[train_idx],
        val_x=train_x[val_idx],
        val_y=train_y[val_idx],
        test_x=test_x,
        test_y=test_y,
        name=name,
        num_classes=raw.num_classes,
    )


def _scaled(x: torch.Tensor, scale: float) -> torch.Tensor:
    # Always a fresh tensor, so loaders may cache what they return.
    if x.dtype == torch.uint8:
        return x.to(torch.float32) * scale
    return x.to(torch.float32, copy=True)

"""Streaming image data: examples read from disk batch by batch through a DataLoader.

Specs: ``folder:DIR`` (see :mod:`nncompress.data.folder`), ``lmdb:TRAIN[,TEST]`` (see
:mod:`nncompress.data.caffe_lmdb`; without ``TEST`` the training database is also the test set)
and ``package.module:callable``, a function of no arguments returning ``(train, test)``
``torch.utils.data.Dataset`` s whose items are ``(image (C, H, W), label)``; their ``num_classes``
(or ``len(classes)``) attribute gives the class count. Such datasets must not draw random numbers
themselves if batches are to repeat exactly (use the ``transform`` here instead).

The batch of training iteration ``i`` holds the examples ``BatchOrder(n, batch_size,
seed).indices(i)``, transformed with randomness seeded from ``(seed, i, position)``; so it is
the same with any number of workers and when training resumes at ``i``.

Example:
    >>> stream = open_stream("folder:/data/imagenet", workers=8)  # doctest: +SKIP
    >>> for x, y in stream.train_batches(256, start=0, stop=10): ...  # doctest: +SKIP
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import BatchSampler, DataLoader, Sampler

from nncompress.data._feed import Failure, ImageSource, IterationSampler, SampleFeed, collate
from nncompress.data._registry import DatasetError
from nncompress.data.transforms import ImageTransform, TransformConfig
from nncompress.errors import ConfigError

if TYPE_CHECKING:
    from nncompress.train.loop import BatchOrder

__all__ = ["StreamSplits", "is_stream_spec", "open_stream"]

_SCHEMES = ("folder", "lmdb")


def is_stream_spec(spec: str) -> bool:
    """True for ``folder:``, ``lmdb:`` and ``package.module:callable`` specs.

    Example:
        >>> [is_stream_spec(s) for s in ("folder:/d", "mnist", "idx:/d", "my.data:make")]
        [True, False, False, True]
    """
    from nncompress.data._registry import list_datasets

    name, sep, rest = spec.partition(":")
    if name in _SCHEMES:
        return True
    return bool(sep) and name not in list_datasets() and rest.isidentifier() and all(
        part.isidentifier() for part in name.split("."))


@dataclass(eq=False)
class StreamSplits:
    """Training and test examples read from disk; batches come from a DataLoader.

    Attributes:
        train: the training examples.
        test: the test examples.
        name: the spec.
        num_classes: the number of classes.
        input_shape: the shape of one transformed example, e.g. ``(3, 224, 224)``.
        transform: what is done to each image.
        val: training examples held out for evaluation during training (None: none).
        seed: seeds the batch order and the random transforms.
        workers: DataLoader worker processes (0: load in the main process).
        skip_bad_images: skip unreadable images instead of stopping (see ``bad_images``).
        pin_memory: pin batches in page-locked memory (for fast copies to a GPU).
        prefetch: batches each worker loads ahead.
        bad_images: the unreadable images met so far (filled while batches are read).
    """

    train: ImageSource
    test: ImageSource
    name: str
    num_classes: int
    input_shape: tuple[int, ...]
    transform: TransformConfig
    val: ImageSource | None = None
    seed: int = 0
    workers: int = 0
    skip_bad_images: bool = False
    pin_memory: bool = False
    prefetch: int = 2
    bad_images: set[str] = field(default_factory=set)

    def train_batches(self, batch_size: int, start: int, stop: int,
                      order: BatchOrder | None = None, device: torch.device | None = None
                      ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of iterations ``start`` to ``stop - 1``, in order.

        Args:
            batch_size: examples per batch.
            start: the first iteration (the one to resume at).
            stop: the iteration after the last.
            order: the training loop's batch order; None: ``BatchOrder(len(train),
                batch_size, seed)``. Its seed also seeds the random transforms.
            device: where the batches go (copied without blocking); None: stay on the CPU.

        Returns:
            An iterator of ``(images, labels)``; workers start at its first ``next``.

        Raises:
            DatasetError: an image cannot be read (and ``skip_bad_images`` is off).
            ConfigError: the transform does not fit an image.

        Example:
            >>> # see the module docstring
        """
        if order is None:
            from nncompress.train.loop import BatchOrder

            order = BatchOrder(len(self.train), batch_size, self.seed)
        if (order.num_examples, order.batch_size) != (len(self.train), batch_size):
            raise ConfigError(f"the batch order is for {order.num_examples} examples in batches "
                              f"of {order.batch_size}, but {self.name!r} has {len(self.train)} "
                              f"training examples and the batch size is {batch_size}")
        # The order's seed also seeds the random transforms: a run seeds each stage's order
        # differently, so stages do not repeat each other's crops.
        feed = SampleFeed(self.train, ImageTransform(self.transform, train=True),
                          seed=order.seed, skip_bad_images=self.skip_bad_images)
        return self._batches(feed, IterationSampler(order, start, stop), device)

    def eval_batches(self, batch_size: int, split: str = "test",
                     device: torch.device | None = None
                     ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """All examples of a split in order (unreadable ones left out with ``skip_bad_images``).

        Args:
            batch_size: examples per batch (the last batch may be smaller).
            split: ``"test"``, ``"val"`` (the held-out training examples) or ``"train"``.
            device: where the batches go; None: stay on the CPU.

        Returns:
            An iterator of ``(images, labels)``.

        Raises:
            DatasetError: an image cannot be read (and ``skip_bad_images`` is off).
            ConfigError: the transform does not fit an image.

        Example:
            >>> # see the module docstring
        """
        sources = {"test": self.test, "val": self.val, "train": self.train}
        source = sources.get(split)
        if source is None:
            raise ConfigError(f"split={split!r} must be 'test', 'train' or, with a validation "
                              "size, 'val'")
        feed = SampleFeed(source, ImageTransform(self.transform, train=False), seed=self.seed,
                          skip_bad_images=self.skip_bad_images)
        sampler = BatchSampler(range(len(source)), batch_size, drop_last=False)
        return self._batches(feed, sampler, device)

    def _batches(self, feed: SampleFeed, sampler: Sampler[Any],
                 device: torch.device | None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.workers and "nncompress.data.caffe_lmdb" in sys.modules:
            sys.modules["nncompress.data.caffe_lmdb"].close_environments()
        loader = DataLoader(feed, batch_sampler=sampler, num_workers=self.workers,
                            collate_fn=collate, pin_memory=self.pin_memory,
                            prefetch_factor=self.prefetch if self.workers else None,
                            worker_init_fn=_one_thread if self.workers else None)
        for item in loader:
            if isinstance(item, Failure):
                raise item.error
            x, y, bad = item
            self.bad_images.update(bad)
            if x is None or y is None:
                continue
            if device is not None and x.device != device:
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            yield x, y


def _one_thread(worker_id: int) -> None:
    torch.set_num_threads(1)  # workers decode in parallel already; avoid oversubscription


def open_stream(spec: str, *, transform: TransformConfig | None = None, workers: int = 0,
                seed: int = 0, skip_bad_images: bool = False, grey: bool = False,
                num_classes: int | None = None, pin_memory: bool | None = None,
                prefetch: int = 2, validation: int = 0) -> StreamSplits:
    """Open a streaming data set.

    Args:
        spec: ``folder:DIR``, ``lmdb:TRAIN[,TEST]`` or ``package.module:callable``.
        transform: what to do to each image; None: stored size, pixels scaled by 1/256.
        workers: DataLoader worker processes.
        seed: seeds the batch order and the random transforms.
        skip_bad_images: skip unreadable images (counted in ``bad_images``) instead of stopping.
        grey: decode image files to one grey channel instead of RGB.
        num_classes: the class count of an LMDB or user data set; None: from the labels (the
            LMDB is read once) or the datasets' ``num_classes``/``classes``. Folders count
            their class folders.
        pin_memory: pin batches; None: when CUDA is available.
        prefetch: batches each worker loads ahead.
        validation: training examples held out (seeded, as :func:`load_data` picks them).

    Returns:
        The splits; ``input_shape`` is that of the first test example after the transform.

    Raises:
        ConfigError: a malformed spec or bad option.
        DatasetNotFoundError: a path or module does not exist.
        DatasetError: no class folders, no images, or unusable datasets.
        FormatError: an LMDB database that is not a Caffe one.

    Example:
        >>> open_stream("folder:/nonexistent")
        Traceback (most recent call last):
        ...
        nncompress.data._registry.DatasetNotFoundError: image folder '/nonexistent' does not exist
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ConfigError(f"workers={workers!r} must be an integer >= 0")
    if isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < 1:
        raise ConfigError(f"prefetch={prefetch!r} must be an integer >= 1")
    train, test = _open_sources(spec, grey=grey, num_classes=num_classes)
    val = None
    if validation:
        train, val = _hold_out(train, validation, seed, spec)
    config = transform or TransformConfig()
    splits = StreamSplits(train=train, test=test, name=spec, num_classes=train.num_classes,
                          input_shape=(), transform=config, val=val, seed=seed, workers=workers,
                          skip_bad_images=skip_bad_images, prefetch=prefetch,
                          pin_memory=torch.cuda.is_available() if pin_memory is None
                          else pin_memory)
    splits.input_shape = _first_shape(splits)
    return splits


def _open_sources(spec: str, *, grey: bool,
                  num_classes: int | None) -> tuple[ImageSource, ImageSource]:
    name, _, option = spec.partition(":")
    if name == "folder":
        from nncompress.data.folder import open_folder

        if not option:
            raise ConfigError(
                "folder needs a directory: 'folder:DIR', e.g. 'folder:/data/imagenet'")
        return open_folder(option, grey=grey)
    if name == "lmdb":
        from nncompress.data.caffe_lmdb import open_lmdb

        paths = [p for p in option.split(",") if p]
        if len(paths) not in (1, 2):
            raise ConfigError(f"lmdb spec {spec!r} must be 'lmdb:TRAIN' or 'lmdb:TRAIN,TEST'")
        train = open_lmdb(paths[0], grey=grey, num_classes=num_classes)
        test = open_lmdb(paths[-1], grey=grey, num_classes=num_classes or train.num_classes)
        test.num_classes = train.num_classes = max(train.num_classes, test.num_classes)
        return train, test
    if is_stream_spec(spec):
        from nncompress.data._user import user_datasets

        return user_datasets(spec, num_classes)
    raise ConfigError(f"{spec!r} is not a streaming data spec; use 'folder:DIR', "
                      "'lmdb:TRAIN[,TEST]' or 'package.module:callable'")


class SubsetImages:
    """Some examples of another source, by position in ``indices``."""

    def __init__(self, source: ImageSource, indices: list[int]) -> None:
        self.source, self.indices = source, indices

    @property
    def num_classes(self) -> int:
        """The source's class count."""
        return self.source.num_classes

    def __len__(self) -> int:
        return len(self.indices)

    def load(self, index: int) -> tuple[torch.Tensor, int]:
        """The source's example ``indices[index]``."""
        return self.source.load(self.indices[index])

    def where(self, index: int) -> str:
        """The source's name for it."""
        return self.source.where(self.indices[index])


def _hold_out(train: ImageSource, validation: int, seed: int,
              spec: str) -> tuple[ImageSource, ImageSource]:
    n = len(train)
    if isinstance(validation, bool) or not isinstance(validation, int) or \
            not 0 <= validation < n:
        raise ConfigError(f"validation={validation!r} must be an integer in [0, {n}) for "
                          f"{spec!r}, which has {n} training examples")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val_idx, train_idx = perm[:validation].sort().values, perm[validation:].sort().values
    return SubsetImages(train, train_idx.tolist()), SubsetImages(train, val_idx.tolist())


def _first_shape(splits: StreamSplits) -> tuple[int, ...]:
    feed = SampleFeed(splits.test, ImageTransform(splits.transform, train=False),
                      seed=splits.seed, skip_bad_images=splits.skip_bad_images)
    for index in range(min(len(splits.test), 64)):
        sample = feed[index]
        if isinstance(sample, Failure):
            raise sample.error
        if sample[0] is not None:
            return tuple(sample[0].shape)
    if not len(splits.test):
        raise DatasetError(f"{splits.name}: the test set is empty")
    raise DatasetError(f"{splits.name}: none of the first test images can be read")


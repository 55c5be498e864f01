"""The pieces of a streaming feed: batch sampler, per-sample work, collation.

Training keys are ``(index, iteration, position)``: the sampler takes ``index`` for each position
of iteration ``i``'s batch from :class:`~nncompress.train.loop.BatchOrder`, and the sample's random
transform is seeded from ``(seed, iteration, position)`` alone. Nothing depends on which worker
decodes what, so ``workers: 2`` gives the batches of ``workers: 0``, bit for bit.

An unreadable image is an error naming it. With ``skip_bad_images`` a training sample whose
image cannot be read is replaced by the next readable example in data set order (wrapping
around) -- a pure function of the index, so the batch stays a pure function of ``(seed, i)`` --
and a test sample is left out. Batches carry the names of the images they skipped, which the
main process collects. Errors travel as values (:class:`Failure`) so the message a user sees is
the same with and without workers.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch.utils.data import Dataset, Sampler

from nncompress.data._registry import DatasetError
from nncompress.data.transforms import ImageTransform
from nncompress.errors import ConfigError, FormatError, NNCompressError

if TYPE_CHECKING:
    from nncompress.train.loop import BatchOrder

__all__ = ["Failure", "ImageSource", "IterationSampler", "SampleFeed", "collate", "sample_seed"]

_MASK64 = (1 << 64) - 1
SKIP_HINT = "fix or remove it, or set skip_bad_images: true to skip unreadable images"

Batch = tuple[torch.Tensor | None, torch.Tensor | None, tuple[str, ...]]
Sample = tuple[torch.Tensor | None, int | None, tuple[str, ...]]  # one example; collated: Batch


class ImageSource(Protocol):
    """Examples by position: ``load(i)`` gives ``(image (C, H, W), label)``."""

    @property
    def num_classes(self) -> int: ...

    def __len__(self) -> int: ...

    def load(self, index: int) -> tuple[torch.Tensor, int]: ...

    def where(self, index: int) -> str: ...


class Failure:
    """An error raised while making a batch, carried to the main process to be raised there."""

    def __init__(self, error: NNCompressError) -> None:
        self.error = error


def sample_seed(seed: int, iteration: int, position: int) -> int:
    """A 64-bit seed for one sample's random transform (splitmix64 of the three numbers).

    Example:
        >>> sample_seed(0, 5, 1) == sample_seed(0, 5, 1) != sample_seed(0, 1, 5)
        True
    """
    z = (seed * 0x9E3779B97F4A7C15 + iteration * 0xD1B54A32D192ED03
         + position * 0x8CB92BA72F3D8DD7 + 0x5851F42D4C957F2D) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


class IterationSampler(Sampler[list[tuple[int, int, int]]]):
    """Yields, for each iteration in ``[start, stop)``, the keys of its batch."""

    def __init__(self, order: BatchOrder, start: int, stop: int) -> None:
        self.order, self.start, self.stop = order, start, stop

    def __len__(self) -> int:
        return max(self.stop - self.start, 0)

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        for iteration in range(self.start, self.stop):
            indices = self.order.indices(iteration).tolist()
            yield [(index, iteration, pos) for pos, index in enumerate(indices)]


class SampleFeed(Dataset[Any]):
    """Loads and transforms one sample per key (see the module docstring for the keys)."""

    def __init__(self, source: ImageSource, transform: ImageTransform, *, seed: int,
                 skip_bad_images: bool) -> None:
        self.source, self.transform, self.seed = source, transform, seed
        self.skip_bad_images = skip_bad_images
        self.draws = transform.config.kind != "none"  # else no generator is made per sample

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key: int | tuple[int, int, int]) -> Sample | Failure:
        try:
            if isinstance(key, tuple):
                return self._train_sample(*key)
            return self._test_sample(key)
        except NNCompressError as exc:
            return Failure(exc)

    def _load(self, index: int) -> tuple[torch.Tensor, int] | None:
        try:
            return self.source.load(index)
        except FormatError as exc:
            if not self.skip_bad_images:
                raise DatasetError(f"{self.source.where(index)} cannot be read: {exc}; "
                                   f"{SKIP_HINT}") from None
            return None

    def _transformed(self, x: torch.Tensor, index: int, rng: random.Random | None) -> torch.Tensor:
        try:
            return self.transform(x, rng)
        except ConfigError as exc:
            raise ConfigError(f"{self.source.where(index)}: {exc}") from None

    def _train_sample(self, index: int, iteration: int, position: int) -> Sample:
        bad: list[str] = []
        n = len(self.source)
        for step in range(n):
            current = (index + step) % n
            loaded = self._load(current)
            if loaded is None:
                bad.append(self.source.where(current))
                continue
            rng = random.Random(sample_seed(self.seed, iteration, position)) if self.draws \
                else None
            return self._transformed(loaded[0], current, rng), loaded[1], tuple(bad)
        raise DatasetError(f"none of the {n} training images can be read; the first is "
                           f"{self.source.where(0)}")

    def _test_sample(self, index: int) -> Sample:
        loaded = self._load(index)
        if loaded is None:
            return None, None, (self.source.where(index),)
        return self._transformed(loaded[0], index, None), loaded[1], ()


def collate(samples: Sequence[Sample | Failure]) -> Batch | Failure:
    """Stack samples into ``(images, labels, skipped image names)``, or pass on a failure.

    The labels (ints) become one int64 tensor.

    Example:
        >>> x, y, bad = collate([(torch.zeros(1, 2, 2), 3, ()),
        ...                      (None, None, ("image 'b.jpg'",))])
        >>> tuple(x.shape), y.tolist(), bad
        ((1, 1, 2, 2), [3], ("image 'b.jpg'",))
    """
    for sample in samples:
        if isinstance(sample, Failure):
            return sample
    ok = [s for s in samples if not isinstance(s, Failure)]
    bad = tuple(name for s in ok for name in s[2])
    kept = [(x, y) for x, y, _ in ok if x is not None and y is not None]
    if not kept:
        return None, None, bad
    shapes = {tuple(x.shape) for x, _ in kept}
    if len(shapes) > 1:
        return Failure(DatasetError(
            f"images of different sizes in one batch: {', '.join(map(str, sorted(shapes)))}; "
            "give a transform that makes one size (kind caffe with crop_size, or kind imagenet)"))
    labels = torch.tensor([y for _, y in kept], dtype=torch.int64)
    return torch.stack([x for x, _ in kept]), labels, bad

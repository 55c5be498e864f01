"""One entry point for a recipe's ``data:`` section: in-memory sets or streamed ones."""

from __future__ import annotations

from nncompress.data._registry import Splits, load_data
from nncompress.data.stream import StreamSplits, is_stream_spec, open_stream
from nncompress.data.transforms import TransformConfig
from nncompress.errors import ConfigError

__all__ = ["open_data"]


def open_data(spec: str, *, scale: float = 1 / 256, validation: int = 0, seed: int = 0,
              workers: int = 0, transform: TransformConfig | None = None,
              skip_bad_images: bool = False, num_classes: int | None = None,
              grey: bool = False) -> Splits | StreamSplits:
    """Load ``spec`` into memory, or open it for streaming when it is a streamed spec.

    Args:
        spec: a registered data set (``mnist``, ``idx:DIR``, ``synthetic``...) or a streamed one
            (``folder:DIR``, ``lmdb:TRAIN[,TEST]``, ``package.module:callable``).
        scale: pixel scale of in-memory sets, and of streamed ones without a ``transform``.
        validation: training examples held out for evaluation during training.
        seed: seeds the validation choice (and, streamed, the batch order and transforms).
        workers: DataLoader workers of a streamed set.
        transform: per-image transform of a streamed set.
        skip_bad_images: skip unreadable images of a streamed set instead of stopping.
        num_classes: class count of a streamed LMDB or user set (e.g. the model's), which
            spares reading every LMDB record's label at the start.
        grey: decode a streamed set's image files to one grey channel instead of RGB.

    Returns:
        :class:`Splits` (tensors) or :class:`StreamSplits` (read batch by batch).

    Raises:
        ConfigError: ``workers``, ``transform``, ``skip_bad_images`` or ``grey`` given for an
            in-memory set.

    Example:
        >>> type(open_data("synthetic:n=32,test=8")).__name__
        'Splits'
        >>> open_data("synthetic", workers=2)
        Traceback (most recent call last):
        ...
        nncompress.errors.ConfigError: data 'synthetic' is held in memory: workers, transform, \
skip_bad_images and grey apply to streamed data (folder:, lmdb:, package.module:callable)
    """
    if is_stream_spec(spec):
        if transform is None and scale != 1 / 256:
            transform = TransformConfig(scale=scale)
        return open_stream(spec, transform=transform, workers=workers, seed=seed,
                           skip_bad_images=skip_bad_images, validation=validation,
                           num_classes=num_classes, grey=grey)
    if workers or transform is not None or skip_bad_images or grey:
        raise ConfigError(f"data {spec!r} is held in memory: workers, transform, "
                          "skip_bad_images and grey apply to streamed data (folder:, lmdb:, "
                          "package.module:callable)")
    return load_data(spec, scale=scale, validation=validation, seed=seed)

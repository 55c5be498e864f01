"""Read and write Caffe's ``.binaryproto`` mean files (one serialized ``BlobProto``).

A mean file holds the per-pixel mean image of a data set, shape (channels, height, width), in
the channel order of the stored images (BGR for Caffe's image tools). Caffe's own tool writes it
with the legacy ``num``/``channels``/``height``/``width`` fields and ``num`` = 1; a ``shape`` of 3
dims, or 4 dims with a leading 1, is read too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from google.protobuf.message import DecodeError

from nncompress._io import atomic_write_bytes
from nncompress.errors import FormatError
from nncompress.interop.caffemodel import _blob_to_array, _classes

__all__ = ["read_mean_file", "write_mean_file"]


def read_mean_file(path: str | Path) -> torch.Tensor:
    """Read a Caffe mean file as a float32 tensor of shape (C, H, W).

    Args:
        path: the ``.binaryproto`` file.

    Returns:
        The mean image, float32, (channels, height, width).

    Raises:
        FormatError: the file is missing, not a BlobProto, empty, or not one 3-D image.

    Example:
        >>> mean = read_mean_file("imagenet_mean.binaryproto")  # doctest: +SKIP
        >>> mean.shape  # doctest: +SKIP
        torch.Size([3, 256, 256])
    """
    p = Path(path)
    if not p.is_file():
        raise FormatError(f"mean file not found: {p}")
    blob = _classes()["BlobProto"]()
    try:
        blob.ParseFromString(p.read_bytes())
    except DecodeError as exc:
        raise FormatError(f"{p}: not a Caffe mean file (binary BlobProto): {exc}") from exc
    array, _ = _blob_to_array(blob, f"{p}")
    shape = tuple(array.shape)
    if len(shape) == 4 and shape[0] == 1:
        shape = shape[1:]
    if len(shape) != 3 or 0 in shape:
        raise FormatError(f"{p}: a mean file holds one image of shape (1, C, H, W) or (C, H, W); "
                          f"this one has shape {list(array.shape)}")
    values = array.reshape(shape)
    if not np.isfinite(values).all():
        raise FormatError(f"{p}: the mean image holds NaN or infinite values")
    return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))


def write_mean_file(path: str | Path, mean: torch.Tensor) -> None:
    """Write a (C, H, W) mean image as a Caffe ``.binaryproto``, atomically.

    The blob is written as Caffe's own tool writes it: legacy 4-D fields with ``num`` = 1.

    Args:
        path: the file to write.
        mean: the mean image, (channels, height, width); stored as float32.

    Raises:
        FormatError: ``mean`` is not 3-D.

    Example:
        >>> write_mean_file("mean.binaryproto", torch.full((3, 4, 4), 120.0))  # doctest: +SKIP
    """
    if mean.dim() != 3:
        raise FormatError(f"a mean image is (C, H, W); got shape {list(mean.shape)}")
    values = mean.detach().to(device="cpu", dtype=torch.float32).contiguous().numpy()
    channels, height, width = (int(d) for d in values.shape)
    blob = _classes()["BlobProto"](num=1, channels=channels, height=height, width=width)
    blob.data.extend(values.ravel().tolist())
    atomic_write_bytes(Path(path), blob.SerializeToString())

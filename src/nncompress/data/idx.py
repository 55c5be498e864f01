"""IDX files (the MNIST distribution format) and the ``idx:<dir>`` / ``fashion-mnist`` data sets.

An IDX file is: two zero bytes, a dtype code, the number of dimensions ``d``, then ``d``
big-endian uint32 sizes, then the values in row-major big-endian order. Files may be gzipped
(detected by content, not by name).
"""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import numpy as np
import torch

from nncompress.data._registry import (
    DatasetError,
    DatasetNotFoundError,
    RawData,
    register_dataset,
)
from nncompress.errors import FormatError

__all__ = ["FASHION_MNIST_DIR", "IDX_FILES", "find_idx_file", "load_idx_dir", "read_idx"]

# dtype code -> big-endian numpy dtype, from the IDX format description.
_DTYPES: dict[int, str] = {
    0x08: ">u1",
    0x09: ">i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}
_GZIP_MAGIC = b"\x1f\x8b"

#: The four files of an MNIST-style directory: train images, train labels, test images, labels.
IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


class _NotIdx(FormatError):
    """Raised with the reason; re-raised with the file name by :func:`read_idx`."""


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file, gzipped or not, into a native-endian numpy array.

    Args:
        path: the file.

    Returns:
        The array with the shape stored in the header.

    Raises:
        FormatError: bad magic, unknown dtype code, or a size that does not match the header.
        DatasetNotFoundError: the file does not exist.

    Example:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "x-idx1-ubyte")
        >>> _ = open(p, "wb").write(bytes([0, 0, 8, 1, 0, 0, 0, 2, 7, 9]))
        >>> read_idx(p).tolist()
        [7, 9]
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetNotFoundError(f"IDX file {str(path)!r} does not exist")
    data = path.read_bytes()
    if data[:2] == _GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise FormatError(f"{str(path)!r} is a corrupt gzip file: {exc}") from exc
    try:
        return _parse_idx(data)
    except _NotIdx as exc:
        raise FormatError(f"{str(path)!r} is not a valid IDX file: {exc}") from None


def _parse_idx(data: bytes) -> np.ndarray:
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise _NotIdx(f"magic must start with two zero bytes, got {data[:4].hex() or 'empty'}")
    code, ndim = data[2], data[3]
    if code not in _DTYPES:
        allowed = ", ".join(f"0x{c:02X}" for c in _DTYPES)
        raise _NotIdx(f"unknown dtype code 0x{code:02X} (allowed: {allowed})")
    if ndim == 0:
        raise _NotIdx("header declares 0 dimensions")
    header_end = 4 + 4 * ndim
    if len(data) < header_end:
        raise _NotIdx(f"header declares {ndim} dimensions but the file has {len(data)} bytes")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_DTYPES[code])
    expected = math.prod(dims) * dtype.itemsize
    if len(data) - header_end != expected:
        raise _NotIdx(
            f"dimensions {dims} need {expected} data bytes, found {len(data) - header_end}"
        )
    values = np.frombuffer(data, dtype=dtype, offset=header_end).reshape(dims)
    return values.astype(dtype.newbyteorder("="))


def find_idx_file(directory: Path, name: str) -> Path:
    """Return ``directory/name`` or ``directory/name.gz``, whichever exists.

    Raises:
        DatasetNotFoundError: neither file exists.

    Example:
        >>> find_idx_file(Path("/data/mnist"), "t10k-labels-idx1-ubyte")  # doctest: +SKIP
        PosixPath('/data/mnist/t10k-labels-idx1-ubyte.gz')
    """
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise DatasetNotFoundError(
        f"{str(directory)!r} has neither {name!r} nor {name + '.gz'!r}; an IDX directory needs "
        f"the four files {', '.join(IDX_FILES)} (each may be gzipped)"
    )


def load_idx_dir(directory: str | Path) -> RawData:
    """Load the four standard IDX files of an MNIST-style directory.

    Args:
        directory: folder holding ``train-images-idx3-ubyte`` etc., gzipped or not.

    Returns:
        uint8 images ``(N, 1, H, W)`` and int64 labels; ``num_classes`` = largest label + 1.

    Raises:
        DatasetNotFoundError: the directory or one of the files is missing.
        FormatError: a file is malformed, or images and labels disagree.

    Example:
        >>> load_idx_dir("/nonexistent")
        Traceback (most recent call last):
        ...
        nncompress.data._registry.DatasetNotFoundError: IDX directory '/nonexistent' does not exist
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise DatasetNotFoundError(f"IDX directory {str(directory)!r} does not exist")
    arrays = [read_idx(find_idx_file(directory, name)) for name in IDX_FILES]
    train_x, test_x = (_images(arrays[i], IDX_FILES[i]) for i in (0, 2))
    train_y, test_y = (_labels(arrays[i], IDX_FILES[i]) for i in (1, 3))
    for x, y, what in ((train_x, train_y, "train"), (test_x, test_y, "t10k")):
        if x.shape[0] != y.shape[0]:
            raise FormatError(
                f"{str(directory)!r}: {what} has {x.shape[0]} images but {y.shape[0]} labels"
            )
    if train_x.shape[1:] != test_x.shape[1:]:
        raise FormatError(
            f"{str(directory)!r}: train images are {tuple(train_x.shape[1:])} "
            f"but test images are {tuple(test_x.shape[1:])}"
        )
    num_classes = int(max(train_y.max(), test_y.max())) + 1 if len(train_y) else 0
    return RawData(train_x, train_y, test_x, test_y, num_classes=num_classes)


def _images(array: np.ndarray, name: str) -> torch.Tensor:
    if array.dtype != np.uint8 or array.ndim not in (3, 4):
        raise FormatError(
            f"{name}: images must be unsigned bytes with 3 dimensions (N, H, W) or 4 (N, C, H, W); "
            f"got {array.dtype} with shape {array.shape}"
        )
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    return tensor.unsqueeze(1) if array.ndim == 3 else tensor


def _labels(array: np.ndarray, name: str) -> torch.Tensor:
    if array.ndim != 1 or array.dtype.kind not in "iu" or (array.size and array.min() < 0):
        raise FormatError(
            f"{name}: labels must be non-negative integers with 1 dimension; "
            f"got {array.dtype} with shape {array.shape}"
        )
    return torch.from_numpy(array.astype(np.int64))


@register_dataset("idx")
def _load_idx(option: str) -> RawData:
    if not option:
        raise DatasetError("the idx dataset needs a directory: 'idx:<dir>', e.g. 'idx:/data/mnist'")
    return load_idx_dir(Path(option).expanduser())


@register_dataset("fashion-mnist")
def _load_fashion(option: str) -> RawData:
    if option:
        raise DatasetError(f"fashion-mnist takes no option, got {option!r}")
    if not FASHION_MNIST_DIR.is_dir():
        raise DatasetNotFoundError(
            f"Fashion-MNIST is not installed ({str(FASHION_MNIST_DIR)!r} is missing); "
            "install it with `apt-get install dataset-fashion-mnist`, or point 'idx:<dir>' "
            "at a folder with its four IDX files"
        )
    return load_idx_dir(FASHION_MNIST_DIR)

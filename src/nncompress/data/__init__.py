"""Data sets by spec: ``mnist``, ``fashion-mnist``, ``idx:<dir>``, ``synthetic[:options]``.

Held in memory by :func:`load_data`; image folders, Caffe LMDBs and a user's datasets are
streamed from disk by :func:`open_stream` (``folder:DIR``, ``lmdb:TRAIN[,TEST]``,
``package.module:callable``).

Example:
    >>> from nncompress.data import load_data
    >>> splits = load_data("synthetic", validation=256)
    >>> splits.train_x.shape, splits.num_classes
    (torch.Size([1792, 1, 28, 28]), 10)
"""

from __future__ import annotations

from nncompress.data._registry import (
    DatasetError,
    DatasetNotFoundError,
    RawData,
    Splits,
    list_datasets,
    load_data,
    register_dataset,
)

# Importing the loader modules (idx, mnist, synthetic) registers their data sets.
from nncompress.data.idx import read_idx
from nncompress.data.mnist import UnsafePickleError, load_array_pickle
from nncompress.data.opening import open_data
from nncompress.data.stream import StreamSplits, is_stream_spec, open_stream
from nncompress.data.synthetic import SyntheticOptions, make_synthetic
from nncompress.data.transforms import TransformConfig

__all__ = [
    "DatasetError",
    "DatasetNotFoundError",
    "RawData",
    "Splits",
    "StreamSplits",
    "SyntheticOptions",
    "TransformConfig",
    "UnsafePickleError",
    "is_stream_spec",
    "list_datasets",
    "load_array_pickle",
    "load_data",
    "make_synthetic",
    "open_data",
    "open_stream",
    "read_idx",
    "register_dataset",
]

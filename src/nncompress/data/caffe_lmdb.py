"""Caffe LMDB databases: one ``Datum`` per record (see :mod:`nncompress.data._datum`).

Records are taken in the database's key order. A record holds raw uint8 pixels ``(C, H, W)``,
an encoded image (``encoded: true``; decoded with Pillow in Caffe's blue-green-red channel
order, the order its tools store raw records in, so Caffe ``mean_value``s apply unchanged) or
``float_data`` (float32 values, transformed like pixels). The environment is opened read-only
and lazily in each process, so DataLoader workers never share a handle across a fork.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nncompress.data._datum import Datum, decode_datum
from nncompress.data._decode import decode_image, import_lmdb
from nncompress.data._registry import DatasetError, DatasetNotFoundError
from nncompress.errors import FormatError

__all__ = ["LmdbImages", "close_environments", "datum_pixels", "open_lmdb"]


def datum_pixels(datum: Datum, *, grey: bool = False) -> torch.Tensor:
    """The image of a record: uint8 ``(C, H, W)``, or float32 for ``float_data`` records.

    Raises:
        FormatError: the record's sizes do not match its data.

    Example:
        >>> datum_pixels(Datum(1, 1, 2, b"\\x07\\x09")).tolist()
        [[[7, 9]]]
    """
    if datum.encoded:
        return decode_image(datum.data, grey=grey, bgr=True)
    shape = (datum.channels, datum.height, datum.width)
    count = shape[0] * shape[1] * shape[2]
    if min(shape) <= 0:
        raise FormatError(f"channels/height/width {shape} must be positive for a raw record")
    if datum.data:
        if len(datum.data) != count:
            raise FormatError(f"{len(datum.data)} data bytes do not match channels x height x "
                              f"width = {shape}")
        return torch.frombuffer(bytearray(datum.data), dtype=torch.uint8).view(shape)
    if len(datum.float_data) != count:
        raise FormatError(f"{len(datum.float_data)} float_data values do not match channels x "
                          f"height x width = {shape}")
    return torch.tensor(np.asarray(datum.float_data, dtype=np.float32)).view(shape)


class LmdbImages:
    """The records of one Caffe LMDB database, by position in key order.

    Args:
        path: the database (a directory holding ``data.mdb``, or the file itself).
        keys: the record keys, in database order.
        num_classes: largest label + 1 (or as given).
        grey: decode encoded records to one grey channel (Caffe's ``is_color: false``).
    """

    def __init__(self, path: str, keys: list[bytes], num_classes: int, grey: bool = False) -> None:
        self.path, self.keys, self.num_classes, self.grey = path, keys, num_classes, grey

    def __len__(self) -> int:
        return len(self.keys)

    def where(self, index: int) -> str:
        """The record of example ``index``, as errors name it."""
        key = self.keys[index].decode(errors="replace")
        return f"record {key!r} of LMDB {self.path!r}"

    def load(self, index: int) -> tuple[torch.Tensor, int]:
        """Decode example ``index``: its pixels and label.

        Raises:
            FormatError: the record is missing, not a ``Datum`` or not a readable image.
        """
        with _environment(self.path).begin(buffers=False) as txn:
            value = txn.get(self.keys[index])
        if value is None:
            raise FormatError("the record is gone (was the database changed?)")
        datum = decode_datum(value)
        return datum_pixels(datum, grey=self.grey), datum.label


# path -> (pid, environment). lmdb allows one environment per database and process, and a
# child cannot open a database its parent had open when it forked: so environments are
# shared within a process and closed (close_environments) before DataLoader workers start.
_ENVIRONMENTS: dict[str, tuple[int, Any]] = {}


def _environment(path: str) -> Any:
    cached = _ENVIRONMENTS.get(path)
    if cached is not None and cached[0] == os.getpid():
        return cached[1]
    lmdb = import_lmdb()
    try:
        env = lmdb.open(path, readonly=True, lock=False, readahead=False, meminit=False,
                        subdir=os.path.isdir(path), max_readers=1024)
    except lmdb.Error as exc:
        raise FormatError(f"{path!r} is not an LMDB database: {exc}") from exc
    _ENVIRONMENTS[path] = (os.getpid(), env)
    return env


def close_environments() -> None:
    """Close the databases this process has open (they reopen when next read).

    Called before DataLoader workers fork, so each worker can open its own.

    Example:
        >>> close_environments()
    """
    for path, (pid, env) in list(_ENVIRONMENTS.items()):
        if pid == os.getpid():
            env.close()
        del _ENVIRONMENTS[path]


def open_lmdb(path: str | Path, *, grey: bool = False,
              num_classes: int | None = None) -> LmdbImages:
    """Open a Caffe LMDB database and check that its first record is a ``Datum``.

    Args:
        path: the database directory (or its ``data.mdb`` file).
        grey: decode encoded records to one grey channel.
        num_classes: the number of classes; when None, every record's label is read once
            (the whole database) to find the largest.

    Returns:
        The database's examples.

    Raises:
        DatasetNotFoundError: the path does not exist.
        DatasetError: the database is empty.
        FormatError: it is not an LMDB database, or its records are not Caffe ``Datum`` s.

    Example:
        >>> open_lmdb("/nonexistent")
        Traceback (most recent call last):
        ...
        nncompress.data._registry.DatasetNotFoundError: LMDB database '/nonexistent' does not exist
    """
    path = str(Path(path).expanduser())
    if not os.path.exists(path):
        raise DatasetNotFoundError(f"LMDB database {path!r} does not exist")
    with _environment(path).begin() as txn:
        keys = list(txn.cursor().iternext(keys=True, values=False))
        if not keys:
            raise DatasetError(f"LMDB database {path!r} has no records")
        images = LmdbImages(path, keys, 0, grey)
        _check_first(images, txn.get(keys[0]))
        if num_classes is None:
            labels = (decode_datum(v).label for v in txn.cursor().iternext(keys=False))
            num_classes = max(labels) + 1
    images.num_classes = num_classes
    return images


def _check_first(images: LmdbImages, value: bytes) -> None:
    try:
        datum_pixels(decode_datum(value), grey=images.grey)
    except FormatError as exc:
        key = images.keys[0].decode(errors="replace")
        raise FormatError(f"{images.path!r} is not a Caffe LMDB of Datum records: its first "
                          f"record {key!r} is not one ({exc})") from exc

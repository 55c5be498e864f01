"""Caffe mean files (.binaryproto): round trips, Caffe's legacy layout, and bad input."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from nncompress.errors import FormatError
from nncompress.interop.binaryproto import read_mean_file, write_mean_file
from nncompress.interop.caffemodel import _classes


def test_round_trip_is_bit_exact(tmp_path: Path) -> None:
    mean = torch.randn(3, 5, 4, generator=torch.Generator().manual_seed(0)) * 50 + 110
    path = tmp_path / "mean.binaryproto"
    write_mean_file(path, mean)
    back = read_mean_file(path)
    assert back.dtype == torch.float32
    assert back.shape == (3, 5, 4)
    assert torch.equal(back, mean)


def test_written_file_uses_caffes_legacy_layout(tmp_path: Path) -> None:
    path = tmp_path / "mean.binaryproto"
    write_mean_file(path, torch.arange(12, dtype=torch.float32).reshape(1, 3, 4))
    blob = _classes()["BlobProto"]()
    blob.ParseFromString(path.read_bytes())
    assert (blob.num, blob.channels, blob.height, blob.width) == (1, 1, 3, 4)
    assert not blob.HasField("shape")
    assert list(blob.data) == list(range(12))
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~_umask()


def _umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old


def test_shape_field_and_double_data_are_read(tmp_path: Path) -> None:
    blob = _classes()["BlobProto"]()
    blob.shape.dim.extend([2, 1, 3])
    blob.double_data.extend([0.5, 1.5, 2.5, 3.5, 4.5, 5.5])
    path = tmp_path / "m.binaryproto"
    path.write_bytes(blob.SerializeToString())
    mean = read_mean_file(path)
    assert mean.tolist() == [[[0.5, 1.5, 2.5]], [[3.5, 4.5, 5.5]]]


@pytest.mark.parametrize("dims", [[2, 3], [2, 1, 2, 2], [1, 2, 3, 4, 5]])
def test_not_one_image_is_refused_naming_the_file(tmp_path: Path, dims: list[int]) -> None:
    blob = _classes()["BlobProto"]()
    blob.shape.dim.extend(dims)
    count = 1
    for d in dims:
        count *= d
    blob.data.extend([1.0] * count)
    path = tmp_path / "odd.binaryproto"
    path.write_bytes(blob.SerializeToString())
    with pytest.raises(FormatError, match=r"odd\.binaryproto.*one image.*shape"):
        read_mean_file(path)


def test_empty_missing_and_garbage_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="mean file not found"):
        read_mean_file(tmp_path / "nope.binaryproto")
    empty = tmp_path / "empty.binaryproto"
    empty.write_bytes(b"")
    with pytest.raises(FormatError, match=r"empty\.binaryproto"):
        read_mean_file(empty)
    junk = tmp_path / "junk.binaryproto"
    junk.write_bytes(b"\xff\xff\xff\xff\x0f")
    with pytest.raises(FormatError, match=r"junk\.binaryproto: not a Caffe mean file"):
        read_mean_file(junk)
    short = _classes()["BlobProto"](num=1, channels=1, height=2, width=2)
    short.data.extend([1.0, 2.0])
    bad = tmp_path / "short.binaryproto"
    bad.write_bytes(short.SerializeToString())
    with pytest.raises(FormatError, match="needs 4 values, the file holds 2"):
        read_mean_file(bad)


def test_non_finite_mean_and_wrong_rank_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "nan.binaryproto"
    write_mean_file(path, torch.tensor([[[1.0, float("nan")]]]))
    with pytest.raises(FormatError, match="NaN"):
        read_mean_file(path)
    with pytest.raises(FormatError, match=r"\(C, H, W\)"):
        write_mean_file(tmp_path / "x.binaryproto", torch.ones(2, 2))
    assert not (tmp_path / "x.binaryproto").exists()

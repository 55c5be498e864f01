"""Caffe LMDB databases: the Datum wire format, raw and encoded records, and bad databases."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import lmdb
import numpy as np
import pytest
import torch
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from PIL import Image

from nncompress.data import DatasetError, DatasetNotFoundError
from nncompress.data._datum import Datum, decode_datum, encode_datum
from nncompress.data.caffe_lmdb import open_lmdb
from nncompress.errors import FormatError


def write_lmdb(path: Path, records: list[bytes]) -> None:
    """Write records under Caffe-style keys ``00000000``, ``00000001``, ..."""
    env = lmdb.open(str(path), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for i, value in enumerate(records):
            txn.put(f"{i:08d}".encode(), value)
    env.close()


def raw_records(count: int, shape: tuple[int, int, int] = (3, 4, 5),
                seed: int = 0) -> tuple[list[bytes], np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (count, *shape), dtype=np.uint8)
    labels = [i % 3 for i in range(count)]
    records = [encode_datum(Datum(*shape, data=pixels[i].tobytes(), label=labels[i]))
               for i in range(count)]
    return records, pixels, labels


def png_bytes(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def _reference_datum_class() -> Any:
    """Caffe's Datum declared with the protobuf library: an independent encoder to check against."""
    f = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(name="datum_ref.proto", package="ref", syntax="proto2")
    msg = fdp.message_type.add(name="Datum")
    for name, number, kind in (("channels", 1, f.TYPE_INT32), ("height", 2, f.TYPE_INT32),
                               ("width", 3, f.TYPE_INT32), ("data", 4, f.TYPE_BYTES),
                               ("label", 5, f.TYPE_INT32), ("encoded", 7, f.TYPE_BOOL)):
        msg.field.add(name=name, number=number, type=kind, label=f.LABEL_OPTIONAL)
    msg.field.add(name="float_data", number=6, type=f.TYPE_FLOAT, label=f.LABEL_REPEATED)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("ref.Datum"))


def test_decode_matches_the_protobuf_library() -> None:
    ref = _reference_datum_class()
    blob = ref(channels=2, height=1, width=3, data=bytes(range(6)), label=-7, encoded=True,
               float_data=[0.5, -2.0]).SerializeToString()
    d = decode_datum(blob)
    assert (d.channels, d.height, d.width, d.data, d.label, d.encoded, d.float_data) == \
        (2, 1, 3, bytes(range(6)), -7, True, (0.5, -2.0))
    ours = encode_datum(Datum(2, 1, 3, bytes(range(6)), label=-7, float_data=(0.5, -2.0)))
    parsed = ref.FromString(ours)
    assert (parsed.channels, parsed.label, list(parsed.float_data)) == (2, -7, [0.5, -2.0])


def test_packed_float_data() -> None:
    packed = bytes([0x32, 8]) + np.array([1.5, 3.0], dtype="<f4").tobytes()
    assert decode_datum(packed).float_data == (1.5, 3.0)


@pytest.mark.parametrize(("blob", "reason"), [
    (b"\x48\x01", "field number 9 is not one of Datum's"),
    (b"\x0a\x01\x00", "field channels (1) has wire type 2, not 0"),
    (b"\x22\x09ab", "a field of 9 bytes runs past the end"),
    (b"\x08\xff", "truncated varint"),
])
def test_not_a_datum(blob: bytes, reason: str) -> None:
    with pytest.raises(FormatError, match=re.escape(reason)):
        decode_datum(blob)


def test_raw_records_in_key_order(tmp_path: Path) -> None:
    records, pixels, labels = raw_records(5)
    write_lmdb(tmp_path / "db", records)
    images = open_lmdb(tmp_path / "db")
    assert len(images) == 5 and images.num_classes == 3
    for i in range(5):
        x, label = images.load(i)
        assert torch.equal(x, torch.from_numpy(pixels[i])) and label == labels[i]


def test_encoded_records_decode_in_caffe_channel_order(tmp_path: Path) -> None:
    rgb = np.random.default_rng(1).integers(0, 256, (4, 6, 3), dtype=np.uint8)
    write_lmdb(tmp_path / "db", [encode_datum(Datum(data=png_bytes(rgb), label=4, encoded=True))])
    images = open_lmdb(tmp_path / "db")
    x, label = images.load(0)
    assert label == 4 and images.num_classes == 5
    assert torch.equal(x, torch.from_numpy(rgb[:, :, ::-1].copy()).permute(2, 0, 1))


def test_float_data_records(tmp_path: Path) -> None:
    write_lmdb(tmp_path / "db", [encode_datum(Datum(1, 1, 2, float_data=(0.25, -1.0)))])
    x, _ = open_lmdb(tmp_path / "db").load(0)
    assert x.dtype == torch.float32 and x.tolist() == [[[0.25, -1.0]]]


def test_missing_database(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match=r"LMDB database '.*nope' does not exist"):
        open_lmdb(tmp_path / "nope")


def test_not_an_lmdb(tmp_path: Path) -> None:
    (tmp_path / "db").mkdir()
    (tmp_path / "db" / "data.mdb").write_bytes(b"hello, not a database" * 100)
    with pytest.raises(FormatError, match="is not an LMDB database"):
        open_lmdb(tmp_path / "db")


def test_lmdb_that_is_not_caffes(tmp_path: Path) -> None:
    write_lmdb(tmp_path / "db", [b'{"image": "cat.jpg", "label": 3}'])
    with pytest.raises(FormatError, match=r"is not a Caffe LMDB of Datum records: its first "
                                          r"record '00000000' is not one \(field number 15"):
        open_lmdb(tmp_path / "db")


def test_raw_record_with_wrong_size(tmp_path: Path) -> None:
    write_lmdb(tmp_path / "db", [encode_datum(Datum(3, 2, 2, data=b"\x00" * 5))])
    with pytest.raises(FormatError, match=r"5 data bytes do not match channels x height x width "
                                          r"= \(3, 2, 2\)"):
        open_lmdb(tmp_path / "db")


def test_empty_database(tmp_path: Path) -> None:
    write_lmdb(tmp_path / "db", [])
    with pytest.raises(DatasetError, match="has no records"):
        open_lmdb(tmp_path / "db")

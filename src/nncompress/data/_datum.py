"""Caffe's ``Datum`` record (the values of its LMDB databases), decoded and encoded by hand.

Field numbers (from Caffe's ``caffe.proto``): channels 1, height 2, width 3 (int32), data 4
(bytes: raw uint8 pixels in C x H x W order, or an encoded JPEG/PNG file when ``encoded``),
label 5 (int32), float_data 6 (repeated float, packed or not), encoded 7 (bool).

The decoder is strict on purpose: a field number Caffe does not define, a wrong wire type or a
truncated record means the database is not a Caffe one, which the caller reports with the key.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from nncompress.errors import FormatError

__all__ = ["Datum", "decode_datum", "encode_datum"]

_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5
# field number -> (name, wire type); float_data (6) may also come packed (wire type 2).
_FIELDS: dict[int, tuple[str, int]] = {
    1: ("channels", _VARINT), 2: ("height", _VARINT), 3: ("width", _VARINT),
    4: ("data", _BYTES), 5: ("label", _VARINT), 6: ("float_data", _FIXED32),
    7: ("encoded", _VARINT),
}


@dataclass(frozen=True)
class Datum:
    """One decoded record; ``data`` holds raw pixels or an encoded image file."""

    channels: int = 0
    height: int = 0
    width: int = 0
    data: bytes = b""
    label: int = 0
    float_data: tuple[float, ...] = ()
    encoded: bool = False


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(buf):
            raise FormatError("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift >= 70:
            raise FormatError("varint longer than 10 bytes")


def _int32(value: int) -> int:
    """A varint as a signed int32 (negative int32s are sign-extended to 64 bits on the wire)."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def _take(buf: bytes, pos: int, size: int) -> tuple[bytes, int]:
    if size < 0 or pos + size > len(buf):
        raise FormatError(f"a field of {size} bytes runs past the end of the record")
    return buf[pos:pos + size], pos + size


def decode_datum(buf: bytes) -> Datum:
    """Decode one serialized ``Datum``.

    Args:
        buf: the record's bytes (an LMDB value).

    Returns:
        The decoded record.

    Raises:
        FormatError: the bytes are not a ``Datum`` (the message says why).

    Example:
        >>> d = decode_datum(encode_datum(Datum(1, 1, 2, b"\\x07\\x09", label=3)))
        >>> d.channels, d.height, d.width, d.data, d.label
        (1, 1, 2, b'\\x07\\t', 3)
    """
    values: dict[str, object] = {}
    floats: list[float] = []
    pos = 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if number not in _FIELDS:
            raise FormatError(f"field number {number} is not one of Datum's (1-7)")
        name, expected = _FIELDS[number]
        if number == 6 and wire == _BYTES:  # packed float_data
            size, pos = _varint(buf, pos)
            chunk, pos = _take(buf, pos, size)
            if size % 4:
                raise FormatError(f"packed float_data of {size} bytes is not a multiple of 4")
            floats.extend(struct.unpack(f"<{size // 4}f", chunk))
        elif wire != expected:
            raise FormatError(f"field {name} ({number}) has wire type {wire}, not {expected}")
        elif wire == _FIXED32:
            chunk, pos = _take(buf, pos, 4)
            floats.append(struct.unpack("<f", chunk)[0])
        elif wire == _BYTES:
            size, pos = _varint(buf, pos)
            values[name], pos = _take(buf, pos, size)
        else:
            raw, pos = _varint(buf, pos)
            values[name] = bool(raw) if name == "encoded" else _int32(raw)
    return Datum(float_data=tuple(floats), **values)  # type: ignore[arg-type]


def _key(number: int, wire: int) -> bytes:
    return _write_varint((number << 3) | wire)


def _write_varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int32s: two's complement over 64 bits, as protobuf does
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_datum(datum: Datum) -> bytes:
    """Serialize a ``Datum`` as Caffe writes it (fields in number order, float_data unpacked).

    Args:
        datum: the record.

    Returns:
        Its protobuf wire bytes.

    Example:
        >>> encode_datum(Datum(channels=1, height=1, width=1, data=b"\\x05", label=2)).hex()
        '0801100118012201052802'
    """
    out = bytearray()
    for number, name in ((1, "channels"), (2, "height"), (3, "width")):
        out += _key(number, _VARINT) + _write_varint(getattr(datum, name))
    if datum.data:
        out += _key(4, _BYTES) + _write_varint(len(datum.data)) + datum.data
    out += _key(5, _VARINT) + _write_varint(datum.label)
    for value in datum.float_data:
        out += _key(6, _FIXED32) + struct.pack("<f", value)
    if datum.encoded:
        out += _key(7, _VARINT) + b"\x01"
    return bytes(out)

"""Format version 3's metadata: version 2's JSON fields as a few bytes of varints.

A small model's JSON metadata, even compressed with a dictionary, costs more than a tenth of
its file (LeNet-5 at 1,773 bytes: 166 bytes). Version 3 stores the same fields in binary and
may leave out each tensor's name, dtype and shape when the architecture is a registered model:
the reader builds it on the ``meta`` device (nothing allocated) and takes them from its
``state_dict``, checked against a CRC-32 of them that the writer stores (``implied``)::

    meta    = float dtype (byte: 0 float32, 1 float16), writer (string), arch ref (string),
              arch kwargs (string: JSON text, empty for {}), coded (varint),
              flags (byte: bit 0 = implied), [implied: CRC-32 (4 bytes, little-endian)],
              tensor count (varint), entries
    entry   = [not implied: name (string), dtype (byte, DTYPE_CODES), rank (byte),
              sizes (varints)], values (byte), flags (byte), then as the flags say:
              exp_min (zigzag varint) and levels (varint) for "pow2" values, mantissa, kept,
              rows, cols (varints), value stream length (varint, all but "pow2")
    values  = 0 "pow2", 1 "raw", 2 + i: the float dtype DTYPE_CODES[i]
    flags   = bit 0 sparse layout, 1 kept, 2 rows, 3 cols, 4 cols_ctx, 5 mantissa
    string  = varint byte length + UTF-8

A varint is LEB128 (7 bits a byte, low first, at most 10 bytes). The decoded object is the
version 2 dictionary (``bytes`` is ``[0, value stream length]``, 0 for "pow2"), so the same
schema checks every field; decoding itself checks only that the bytes are well formed.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Sequence
from typing import Any

from nncompress.errors import FormatError

__all__ = ["DTYPE_CODES", "decode_meta", "encode_meta", "layout_digest", "read_varint",
           "varint"]

# Part of format version 3: never reorder, only append.
DTYPE_CODES = ("float32", "float16", "bfloat16", "float64", "int8", "uint8", "int16", "int32",
               "int64", "bool")
_FLOAT_DTYPES = ("float32", "float16")
_POW2, _RAW, _FLOAT0 = 0, 1, 2
_SPARSE, _KEPT, _ROWS, _COLS, _CTX, _MANTISSA = (1 << i for i in range(6))
_IMPLIED = 1
# the order in which the writer builds the fields (a version 2 file rewritten from the decoded
# object is then byte for byte what version 2 wrote)
_META_ORDER = ("arch", "float_dtype", "writer", "coded", "tensors", "implied")
_ENTRY_ORDER = ("name", "dtype", "shape", "values", "exp_min", "levels", "kept", "mantissa",
                "rows", "cols", "layout", "cols_ctx", "bytes")
_MAX_INT = 2**64 - 1  # what a 10-byte varint holds; the schema bounds each field further


def layout_digest(tensors: Sequence[tuple[str, str, Sequence[int]]]) -> int:
    """CRC-32 of the tensors' names, dtypes and shapes, in order.

    Example:
        >>> layout_digest([("fc.weight", "float32", [10, 4])]) == layout_digest(
        ...     [("fc.weight", "float32", [4, 10])])
        False
    """
    text = "\n".join(f"{name} {dtype} {'x'.join(map(str, shape))}"
                     for name, dtype, shape in tensors)
    return zlib.crc32(text.encode("utf-8"))


# ----------------------------------------------------------------------------- writing
def varint(value: int) -> bytes:
    """LEB128: 7 bits a byte, low bits first, the high bit set on all but the last byte.

    Example:
        >>> varint(300).hex()
        'ac02'
    """
    if not 0 <= value <= _MAX_INT:
        raise ValueError(f"{value} does not fit a metadata varint")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def read_varint(data: bytes, start: int = 0) -> tuple[int, int] | None:
    """``(value, bytes read)`` of the varint at ``data[start:]``; None when it runs past the
    data or past 10 bytes, or holds more than 64 bits.

    Example:
        >>> read_varint(bytes([0xAC, 0x02, 0x07])), read_varint(bytes([0x80]))
        ((300, 2), None)
    """
    value = 0
    for i, byte in enumerate(data[start:start + 10]):
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return (value, i + 1) if value <= _MAX_INT else None
    return None


def _zigzag(value: int) -> bytes:
    return varint(2 * value if value >= 0 else -2 * value - 1)


def _string(text: str) -> bytes:
    data = text.encode("utf-8")
    return varint(len(data)) + data


def encode_meta(meta: dict[str, Any]) -> bytes:
    """Version 3 bytes of a version 2 metadata object (``implied``: leave out the layout).

    Example:
        >>> meta = {"arch": {"ref": "tiny_mlp", "kwargs": {}}, "float_dtype": "float32",
        ...         "writer": "w", "coded": 5, "tensors": [{"name": "b", "dtype": "float32",
        ...         "shape": [3], "values": "pow2", "exp_min": -2, "levels": 3, "kept": 2,
        ...         "layout": "dense", "bytes": [0, 0]}]}
        >>> encode_meta(meta).hex(" ")
        '00 01 77 08 74 69 6e 79 5f 6d 6c 70 00 05 00 01 01 62 00 01 03 00 02 03 03 02'
    """
    implied = "implied" in meta
    arch = meta["arch"]
    kwargs = json.dumps(arch["kwargs"], separators=(",", ":"), allow_nan=False)
    out = bytearray([_FLOAT_DTYPES.index(meta["float_dtype"])])
    out += _string(meta.get("writer", "")) + _string(arch["ref"])
    out += _string(kwargs if arch["kwargs"] else "") + varint(meta["coded"])
    out.append(_IMPLIED if implied else 0)
    if implied:
        out += meta["implied"].to_bytes(4, "little")
    out += varint(len(meta["tensors"]))
    for t in meta["tensors"]:
        if not implied:
            out += _string(t["name"]) + bytes([DTYPE_CODES.index(t["dtype"]), len(t["shape"])])
            out += b"".join(map(varint, t["shape"]))
        values = t["values"]
        out.append(_POW2 if values == "pow2" else _RAW if values == "raw"
                   else _FLOAT0 + DTYPE_CODES.index(values))
        flags = (_SPARSE * (t["layout"] == "sparse") | _KEPT * ("kept" in t)
                 | _ROWS * ("rows" in t) | _COLS * ("cols" in t) | _CTX * ("cols_ctx" in t)
                 | _MANTISSA * ("mantissa" in t))
        out.append(flags)
        if values == "pow2":
            out += _zigzag(t["exp_min"]) + varint(t["levels"])
        for key in ("mantissa", "kept", "rows", "cols"):
            if key in t:
                out += varint(t[key])
        if values != "pow2":
            out += varint(t["bytes"][1])
    return bytes(out)


# ----------------------------------------------------------------------------- reading
class _Reader:
    """Bounded reads from the metadata bytes; every overrun is a FormatError."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data, self.pos, self.what = data, 0, what

    def fail(self, message: str) -> FormatError:
        return FormatError(f"{self.what}: metadata {message} (at byte {self.pos} of "
                           f"{len(self.data)})")

    def byte(self, field: str) -> int:
        if self.pos >= len(self.data):
            raise self.fail(f"ends inside {field}")
        self.pos += 1
        return self.data[self.pos - 1]

    def varint(self, field: str) -> int:
        got = read_varint(self.data, self.pos)
        if got is None:
            left = len(self.data) - self.pos
            if left < 10 and all(b & 0x80 for b in self.data[self.pos:]):
                self.pos = len(self.data)
                raise self.fail(f"ends inside {field}")
            raise self.fail(f"has a bad number in {field}")
        self.pos += got[1]
        return got[0]

    def zigzag(self, field: str) -> int:
        value = self.varint(field)
        return value >> 1 if not value & 1 else -(value >> 1) - 1

    def take(self, n: int, field: str) -> bytes:
        if n > len(self.data) - self.pos:
            raise self.fail(f"ends inside {field}: {n} bytes announced")
        self.pos += n
        return self.data[self.pos - n:self.pos]

    def string(self, field: str) -> str:
        raw = self.take(self.varint(f"the length of {field}"), field)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail(f"field {field} is not UTF-8 text") from None

    def code(self, table: Sequence[str], field: str, offset: int = 0) -> str:
        value = self.byte(field) - offset
        if not 0 <= value < len(table):
            raise self.fail(f"field {field} has the unknown code {value + offset}")
        return table[value]


def decode_meta(data: bytes, what: str, load_json: Callable[[bytes, str], Any]
                ) -> dict[str, Any]:
    """The version 2 metadata object from version 3 bytes (without ``format``).

    ``load_json`` parses the architecture's kwargs (bounded nesting, no NaN). Implied entries
    have no name, dtype or shape: :func:`nncompress.export.compact` fills them in.

    Raises:
        FormatError: the bytes end early, run on, or hold an unknown code or flag.
    """
    r = _Reader(data, what)
    meta: dict[str, Any] = {"float_dtype": r.code(_FLOAT_DTYPES, "float_dtype"),
                            "writer": r.string("writer")}
    ref = r.string("arch.ref")
    text = r.string("arch.kwargs")
    meta["arch"] = {"ref": ref, "kwargs": load_json(text.encode("utf-8"), "arch.kwargs")
                    if text else {}}
    meta["coded"] = r.varint("coded")
    flags = r.byte("flags")
    if flags & ~_IMPLIED:
        raise r.fail(f"flags {flags:#x} has unknown bits")
    implied = bool(flags & _IMPLIED)
    if implied:
        meta["implied"] = int.from_bytes(r.take(4, "implied"), "little")
    count = r.varint("the tensor count")
    if count > len(data) - r.pos:  # every entry takes at least 2 bytes
        raise r.fail(f"announces {count} tensors, more than its bytes can hold")
    meta["tensors"] = [_entry(r, f"tensors[{i}]", implied) for i in range(count)]
    if r.pos != len(data):
        raise r.fail("has bytes after its last tensor entry")
    return {key: meta[key] for key in _META_ORDER if key in meta}


def _entry(r: _Reader, field: str, implied: bool) -> dict[str, Any]:
    t: dict[str, Any] = {}
    if not implied:
        t["name"] = r.string(f"{field}.name")
        t["dtype"] = r.code(DTYPE_CODES, f"{field}.dtype")
        rank = r.byte(f"{field}.shape")
        t["shape"] = [r.varint(f"{field}.shape[{j}]") for j in range(rank)]
    values = r.byte(f"{field}.values")
    if values - _FLOAT0 >= len(DTYPE_CODES):
        raise r.fail(f"field {field}.values has the unknown code {values}")
    t["values"] = "pow2" if values == _POW2 else "raw" if values == _RAW else DTYPE_CODES[
        values - _FLOAT0]
    flags = r.byte(f"{field} flags")
    if flags >> 6:
        raise r.fail(f"field {field} flags {flags:#x} has unknown bits")
    t["layout"] = "sparse" if flags & _SPARSE else "dense"
    if values == _POW2:
        t["exp_min"] = r.zigzag(f"{field}.exp_min")
        t["levels"] = r.varint(f"{field}.levels")
    for key, bit in (("mantissa", _MANTISSA), ("kept", _KEPT), ("rows", _ROWS), ("cols", _COLS)):
        if flags & bit:
            t[key] = r.varint(f"{field}.{key}")
    if flags & _CTX:
        t["cols_ctx"] = True
    t["bytes"] = [0, 0 if values == _POW2 else r.varint(f"{field}.bytes")]
    return {key: t[key] for key in _ENTRY_ORDER if key in t}

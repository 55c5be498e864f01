"""The .ncz container: fixed header, checksummed body, JSON metadata, tensor streams.

Format versions 1 and 2 (all integers little-endian)::

    offset  size  field
    0       4     magic b"\\x89NCZ" (the high byte catches 7-bit and text-mode damage)
    4       2     format version (2; 1 still read)
    6       2     flags (0; readers reject others)
    8       8     body length in bytes (must be exactly the rest of the file)
    16      4     CRC-32 (zlib) of the body
    20      ...   body

    body = varint(len(meta stream)) + meta stream + tensor streams
    meta stream = method byte (raw, or zstd with a built-in dictionary) + UTF-8 JSON object

The JSON object: ``format`` ("nncompress-compact"), ``arch`` ({"ref", "kwargs"}),
``float_dtype``, ``writer`` and ``tensors``, a list in ``state_dict`` order of::

    name, dtype, shape      the tensor
    values                  "pow2" (codes 1 + 2 (e - exp_min) + sign, 0 = zero; with
                            exp_min and levels), a float dtype name (byte planes of that
                            dtype), or "raw" (the tensor's bytes, dense only)
    kept                    number of non-zero entries (checked after decoding)
    layout                  "dense": values of every entry of the live sub-matrix;
                            "sparse": positions of the kept entries in it, then their values
    rows, cols (optional)   the tensor as a (shape[0], rest) matrix: its live rows / columns
                            are coded as index sets at the head of the position stream
    bytes                   [position stream length, value stream length]

Version 1: each stream is a method byte (0 raw, 1 zstd without its magic, 2 rANS) and its
payload; the streams follow in tensor order and their lengths must add up to the rest of the
body. Index sets are gap codes (see ``_positions``).

Version 2: the metadata has ``coded``, the length of one shared coded stream that comes first
(every tensor's positions and INQ level codes, see ``_shared``); each tensor's ``bytes`` is
``[0, value stream length]``, 0 for ``pow2`` tensors (their codes are in the shared stream),
and the value streams follow in tensor order. Every length is checked against the bytes actually
present before anything is allocated, and zstd output is bounded by what the metadata allows.
The metadata itself decompresses to at most 1 MiB + 64 bytes per stored byte, nests at most
``MAX_JSON_DEPTH`` levels (counted before parsing) and holds no NaN or Infinity.
"""

from __future__ import annotations

import json
import os
import re
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from nncompress.errors import FormatError
from nncompress.export._streams import RAW, unwrap, zstd_stream

__all__ = ["FORMAT_NAME", "HEADER_SIZE", "MAGIC", "MAX_JSON_DEPTH", "VERSION", "json_depth",
           "pack", "parse", "unpack"]

MAGIC = b"\x89NCZ"
VERSION = 2
FORMAT_NAME = "nncompress-compact"
_HEADER = struct.Struct("<4sHHQI")
HEADER_SIZE = _HEADER.size
_MAX_META_BYTES = 64 << 20  # decompressed metadata bound: far above any real model's table
MAX_JSON_DEPTH = 32
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_OPEN = np.frombuffer(b"[{", dtype=np.uint8)
_CLOSE = np.frombuffer(b"]}", dtype=np.uint8)
# zstd codes the metadata with this fixed raw-content dictionary: the JSON keys and typical
# values cost almost nothing. Part of format version 1: never change it.
_META_DICTIONARY = (
    b'{"format":"nncompress-compact","arch":{"ref":"lenet5","kwargs":{}},"float_dtype":'
    b'"float32","writer":"nncompress 0.1.0","tensors":[{"name":"conv1.weight","dtype":"float32",'
    b'"shape":[20,1,5,5],"values":"pow2","exp_min":-8,"levels":8,"kept":72,"layout":"sparse",'
    b'"rows":20,"cols":25,"bytes":[0,87]},{"name":"conv1.bias","dtype":"float32","shape":[20],'
    b'"values":"float32","kept":0,"layout":"dense","bytes":[2,1]},{"name":"features.0.weight",'
    b'"dtype":"float16","shape":[64,3,3,3],"values":"raw","layout":"dense","bytes":[0,1]},'
    b'{"name":"fc.running_mean","dtype":"int64","shape":[],"values":"bfloat16","kept":0,'
    b'"layout":"dense","bytes":[0,1]},{"name":"num_batches_tracked","dtype":"float64","shape":'
    b'[500,800],"values":"pow2","exp_min":-8,"levels":7,"kept":72,"layout":"dense","bytes":[0,87]}'
    b']}')
# Version 2's dictionary: the keys and values of version 2 entries (positions and level codes
# in the shared stream, "bytes" [0, n]) and common layer names. Never change it either.
_META_DICTIONARY_V2 = (
    b'{"format":"nncompress-compact","arch":{"ref":"lenet300_100","kwargs":{}},"float_dtype":'
    b'"float32","writer":"nncompress 0.1.0","coded":3257,"tensors":[{"name":"conv1.weight",'
    b'"dtype":"float32","shape":[20,1,5,5],"values":"pow2","exp_min":-7,"levels":7,"kept":716,'
    b'"rows":21,"cols":189,"layout":"sparse","bytes":[0,0]},{"name":"conv1.bias","dtype":'
    b'"float32","shape":[50],"values":"pow2","exp_min":-5,"levels":4,"kept":8,"layout":"dense",'
    b'"bytes":[0,0]},{"name":"fc1.weight","dtype":"float32","shape":[500,800],"values":"pow2",'
    b'"exp_min":-8,"levels":8,"kept":3011,"cols":256,"cols_ctx":true,"layout":"dense","bytes":'
    b'[0,0]},{"name":'
    b'"fc.bias","dtype":"float32","shape":[10],"values":"float32","kept":10,"layout":"dense",'
    b'"bytes":[0,41]},{"name":"features.0.weight","dtype":"float16","shape":[64,3,3,3],'
    b'"values":"raw","layout":"dense","bytes":[0,1]},{"name":"bn1.running_mean","dtype":"int64",'
    b'"shape":[],"values":"bfloat16","kept":0,"layout":"sparse","bytes":[0,3]},{"name":'
    b'"ip1.weight","dtype":"float64","shape":[300,784],"values":"pow2","exp_min":-9,"levels":6,'
    b'"kept":4089,"rows":47,"cols":473,"cols_ctx":true,"layout":"sparse","bytes":[0,0]},'
    b'{"name":"ip2.bias",'
    b'"dtype":"float32","shape":[100],"values":"pow2","exp_min":-6,"levels":3,"kept":11,'
    b'"layout":"dense","bytes":[0,0]},{"name":"num_batches_tracked","dtype":"int64","shape":[],'
    b'"values":"raw","layout":"dense","bytes":[0,9]}]}')


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _read_varint(data: bytes, what: str) -> tuple[int, int]:
    value = 0
    for i, byte in enumerate(data[:10]):
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, i + 1
    raise FormatError(f"{what}: bad length field")


def pack(meta: dict[str, Any], streams: list[bytes]) -> bytes:
    """Serialise metadata and streams into the bytes of a .ncz file.

    The file is format version 2 when the metadata has ``coded``, else version 1.

    Example:
        >>> data = pack({"tensors": []}, [])
        >>> data[:4], len(data) > 20
        (b'\\x89NCZ', True)
    """
    text = json.dumps(meta, separators=(",", ":"), allow_nan=False).encode("utf-8")
    version = VERSION if "coded" in meta else 1
    dictionary = _META_DICTIONARY_V2 if version >= 2 else _META_DICTIONARY
    meta_stream = min(bytes([RAW]) + text, zstd_stream(text, dictionary), key=len)
    body = _varint(len(meta_stream)) + meta_stream + b"".join(streams)
    return _HEADER.pack(MAGIC, version, 0, len(body), zlib.crc32(body)) + body


def unpack(path: str | Path) -> tuple[tuple[dict[str, Any], bytes], int]:
    """Read and verify a .ncz file.

    Returns:
        ((metadata, the tensor-stream bytes), the file size).

    Raises:
        FormatError: not a .ncz file, a newer version, truncated, corrupted, or bad metadata.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.ncz"
        >>> _ = p.write_bytes(pack({"tensors": []}, []))
        >>> unpack(p)
        (({'tensors': []}, b''), 36)
    """
    what = str(path)
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            header = handle.read(HEADER_SIZE)
            _check_header(header, what)
            _, version, _, body_len, crc = _HEADER.unpack(header)
            # compared with the real size before reading: a corrupted length allocates nothing
            _check_length(body_len, size - HEADER_SIZE, what)
            body = handle.read(body_len)
    except OSError as exc:
        raise FormatError(f"{what}: cannot read the file: {exc.strerror or exc}") from None
    return _parse_body(body, crc, version, what), HEADER_SIZE + body_len


def parse(data: bytes, what: str = "data") -> tuple[dict[str, Any], bytes]:
    """Verify the bytes of a whole .ncz file; returns (metadata, tensor-stream bytes).

    Example:
        >>> parse(pack({"tensors": []}, []))
        ({'tensors': []}, b'')
    """
    _check_header(data[:HEADER_SIZE], what)
    _, version, _, body_len, crc = _HEADER.unpack(data[:HEADER_SIZE])
    _check_length(body_len, len(data) - HEADER_SIZE, what)
    return _parse_body(data[HEADER_SIZE:], crc, version, what)


def _check_length(body_len: int, available: int, what: str) -> None:
    if body_len > available:
        raise FormatError(f"{what}: file is truncated: the header announces {body_len} bytes "
                          f"of data after it, the file has {available}")
    if body_len < available:
        raise FormatError(f"{what}: unexpected bytes after the end of the data")


def _parse_body(body: bytes, crc: int, version: int,
                what: str) -> tuple[dict[str, Any], bytes]:
    if zlib.crc32(body) != crc:
        raise FormatError(f"{what}: file is corrupted (checksum mismatch)")
    meta_len, offset = _read_varint(body, what)
    if meta_len > len(body) - offset:
        raise FormatError(f"{what}: metadata length {meta_len} exceeds the file")
    # JSON (keys, Caffe net text) compresses about tenfold, far less than 64-fold
    bound = min(_MAX_META_BYTES, (1 << 20) + 64 * meta_len)
    _, text = unwrap(body[offset:offset + meta_len], bound, f"{what}: metadata",
                     _META_DICTIONARY_V2 if version >= 2 else _META_DICTIONARY)
    depth = json_depth(text)
    if depth > MAX_JSON_DEPTH:
        raise FormatError(f"{what}: metadata nests {depth} levels deep, at most "
                          f"{MAX_JSON_DEPTH} are allowed")
    try:
        meta = json.loads(text.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise FormatError(f"{what}: metadata is not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise FormatError(f"{what}: metadata is not a JSON object")
    if ("coded" in meta) != (version >= 2):
        raise FormatError(f"{what}: a format version {version} file "
                          f"{'without' if version >= 2 else 'with'} the metadata field 'coded'")
    return meta, body[offset + meta_len:]


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def json_depth(text: bytes) -> int:
    """How deeply the arrays and objects of a JSON text nest, found without parsing it.

    Strings are removed first (brackets inside them do not count); the depth is the highest
    running count of opening minus closing brackets.

    Example:
        >>> json_depth(b'{"a": [[1], "]]]["], "b": {}}')
        3
    """
    bare = _JSON_STRING.sub(b"", text)
    codes = np.frombuffer(bare, dtype=np.uint8)
    steps = np.isin(codes, _OPEN).astype(np.int64) - np.isin(codes, _CLOSE)
    return int(np.cumsum(steps).max(initial=0))


def _check_header(header: bytes, what: str) -> None:
    if len(header) < 4 or header[:4] != MAGIC:
        raise FormatError(f"{what}: not an nncompress compact (.ncz) file (wrong magic bytes)")
    if len(header) < HEADER_SIZE:
        raise FormatError(f"{what}: file is truncated inside its {HEADER_SIZE}-byte header")
    _, version, flags, _, _ = _HEADER.unpack(header)
    if version > VERSION:
        raise FormatError(f"{what}: format version {version} is newer than this nncompress "
                          f"reads (up to {VERSION}); upgrade nncompress")
    if version < 1 or flags != 0:
        raise FormatError(f"{what}: unknown format version {version} / flags {flags:#x}")

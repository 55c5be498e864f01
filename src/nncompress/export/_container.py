"""The .ncz container: header, checksummed body, metadata, tensor streams.

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

Version 3 has the body of version 2 with binary metadata (:mod:`._meta_binary`: the same
fields, the tensors' names, dtypes and shapes left out for a registered architecture) behind
a shorter header::

    offset  size  field
    0       4     magic b"\\x89NCZ"
    4       2     format version (3; older readers stop here: "newer than this nncompress")
    6       4     CRC-32 (zlib) of the body
    10      1-10  body length in bytes (varint; must be exactly the rest of the file)

The metadata stream is raw or zstd with the version 3 dictionary.
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
from nncompress.export._meta_binary import decode_meta, encode_meta, read_varint, varint
from nncompress.export._streams import RAW, unwrap, zstd_stream

__all__ = ["FORMAT_NAME", "HEADER_SIZE", "MAGIC", "MAX_JSON_DEPTH", "VERSION", "json_depth",
           "pack", "parse", "unpack", "unpack_versioned"]

MAGIC = b"\x89NCZ"
VERSION = 3
FORMAT_NAME = "nncompress-compact"
_HEADER = struct.Struct("<4sHHQI")  # versions 1 and 2
HEADER_SIZE = _HEADER.size  # the most any header takes before its body
_HEADER_V3 = struct.Struct("<4sHI")  # then the body length as a varint
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


# Version 3's dictionary: common tensor names (for files that name their tensors), then the
# start of a version 3 metadata (float dtype, writer) and the registered models' names as
# strings (length byte first). Never change it either.
_META_DICTIONARY_V3 = (
    b"\x14torch.nn:BatchNorm1d\x00\x06weight\x04bias\x0crunning_mean\x0brunning_var"
    b"\x13num_batches_trackedfeatures.0.weight.bias.classifier.1.downsample.layer1.0.conv1."
    b"weight.bn1.running_mean.fc.weight"
    b"\x00\x10nncompress 0.1.0\x10nncompress 0.2.0\x06lenet5\x0clenet300_100\x07alexnet"
    b"\x0dsqueezenet1_1\x05vgg16\x08resnet18\x08resnet50\x08resnet20\x0cmobilenet_v2"
    b"\x08tiny_mlp\x08tiny_cnn\x0btiny_conv1d\x00\x00")
_DICTIONARIES = {1: _META_DICTIONARY, 2: _META_DICTIONARY_V2, 3: _META_DICTIONARY_V3}


def _read_length(data: bytes, what: str) -> tuple[int, int]:
    got = read_varint(data)
    if got is None:
        raise FormatError(f"{what}: bad length field")
    return got


def pack(meta: dict[str, Any], streams: list[bytes], version: int | None = None) -> bytes:
    """Serialise metadata and streams into the bytes of a .ncz file.

    ``version`` defaults to 3 when the metadata has ``implied``, else 2 when it has ``coded``,
    else 1.

    Example:
        >>> data = pack({"tensors": []}, [])
        >>> data[:4], len(data) > 20
        (b'\\x89NCZ', True)
    """
    if version is None:
        version = 3 if "implied" in meta else 2 if "coded" in meta else 1
    if version not in _DICTIONARIES or (version >= 2) != ("coded" in meta) or (
            version < 3 and "implied" in meta):
        raise ValueError(f"format version {version} cannot hold this metadata")
    if version == 3:
        text = encode_meta(meta)
    else:
        text = json.dumps(meta, separators=(",", ":"), allow_nan=False).encode("utf-8")
    meta_stream = min(bytes([RAW]) + text, zstd_stream(text, _DICTIONARIES[version]), key=len)
    body = varint(len(meta_stream)) + meta_stream + b"".join(streams)
    if version == 3:
        return _HEADER_V3.pack(MAGIC, version, zlib.crc32(body)) + varint(len(body)) + body
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
    meta, data, size, _ = unpack_versioned(path)
    return (meta, data), size


def unpack_versioned(path: str | Path) -> tuple[dict[str, Any], bytes, int, int]:
    """Like :func:`unpack`; returns (metadata, tensor-stream bytes, file size, format version)."""
    what = str(path)
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            header = handle.read(HEADER_SIZE)
            version, start, body_len, crc = _read_header(header, what)
            # compared with the real size before reading: a corrupted length allocates nothing
            _check_length(body_len, size - start, what)
            handle.seek(start)
            body = handle.read(body_len)
    except OSError as exc:
        raise FormatError(f"{what}: cannot read the file: {exc.strerror or exc}") from None
    meta, data = _parse_body(body, crc, version, what)
    return meta, data, size, version


def parse(data: bytes, what: str = "data") -> tuple[dict[str, Any], bytes]:
    """Verify the bytes of a whole .ncz file; returns (metadata, tensor-stream bytes).

    Example:
        >>> parse(pack({"tensors": []}, []))
        ({'tensors': []}, b'')
    """
    version, start, body_len, crc = _read_header(data[:HEADER_SIZE], what)
    _check_length(body_len, len(data) - start, what)
    return _parse_body(data[start:], crc, version, what)


def _read_header(header: bytes, what: str) -> tuple[int, int, int, int]:
    """(version, where the body starts, body length, body CRC) from the first bytes."""
    if len(header) < 4 or header[:4] != MAGIC:
        raise FormatError(f"{what}: not an nncompress compact (.ncz) file (wrong magic bytes)")
    if len(header) < 6:
        raise FormatError(f"{what}: file is truncated inside its header")
    version = int.from_bytes(header[4:6], "little")
    if version > VERSION:
        raise FormatError(f"{what}: format version {version} is newer than this nncompress "
                          f"reads (up to {VERSION}); upgrade nncompress")
    if version == 3:
        if len(header) < _HEADER_V3.size + 1:
            raise FormatError(f"{what}: file is truncated inside its header")
        _, _, crc = _HEADER_V3.unpack(header[:_HEADER_V3.size])
        body_len, n = _read_length(header[_HEADER_V3.size:], what)
        return version, _HEADER_V3.size + n, body_len, crc
    if len(header) < HEADER_SIZE:
        raise FormatError(f"{what}: file is truncated inside its {HEADER_SIZE}-byte header")
    _, _, flags, body_len, crc = _HEADER.unpack(header)
    if version < 1 or flags != 0:
        raise FormatError(f"{what}: unknown format version {version} / flags {flags:#x}")
    return version, HEADER_SIZE, body_len, crc


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
    meta_len, offset = _read_length(body, what)
    if meta_len > len(body) - offset:
        raise FormatError(f"{what}: metadata length {meta_len} exceeds the file")
    # JSON (keys, Caffe net text) compresses about tenfold, far less than 64-fold
    bound = min(_MAX_META_BYTES, (1 << 20) + 64 * meta_len)
    _, text = unwrap(body[offset:offset + meta_len], bound, f"{what}: metadata",
                     _DICTIONARIES[version])
    if version == 3:
        meta = {"format": FORMAT_NAME} | decode_meta(
            text, what, lambda kwargs, field: _load_json(kwargs, field, what))
    else:
        meta = _load_json(text, "metadata", what)
        if not isinstance(meta, dict):
            raise FormatError(f"{what}: metadata is not a JSON object")
    if version < 3 and "implied" in meta:
        raise FormatError(f"{what}: a format version {version} file with the metadata field "
                          "'implied' (only version 3 leaves tensor layouts out)")
    if ("coded" in meta) != (version >= 2):
        raise FormatError(f"{what}: a format version {version} file "
                          f"{'without' if version >= 2 else 'with'} the metadata field 'coded'")
    return meta, body[offset + meta_len:]


def _load_json(text: bytes, field: str, what: str = "") -> Any:
    """Parse JSON text whose nesting is counted first; NaN and Infinity are refused."""
    depth = json_depth(text)
    if depth > MAX_JSON_DEPTH:
        raise FormatError(f"{what}: {field} nests {depth} levels deep, at most "
                          f"{MAX_JSON_DEPTH} are allowed")
    try:
        return json.loads(text.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise FormatError(f"{what}: {field} is not valid JSON ({exc})") from None


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

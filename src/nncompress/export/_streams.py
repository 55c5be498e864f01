"""Stream framing: a method byte (raw, zstd or rANS) before each payload, and bounded reads."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import zstandard

from nncompress.errors import FormatError

__all__ = ["METHOD_NAMES", "RANS", "RANS_MAX_SYMBOLS", "RAW", "ZSTD", "read_int",
           "restrict_methods", "smallest", "unwrap", "zstd_stream"]

RAW, ZSTD, RANS = 0, 1, 2
METHOD_NAMES = {RAW: "raw", ZSTD: "zstd", RANS: "rans"}
_ZSTD_LEVEL = 22
# Streams longer than this skip the pure-Python rANS coder (too slow) and use zstd only.
RANS_MAX_SYMBOLS = 1 << 21


# Frames without the 4-byte zstd magic (the method byte says what follows), always with the
# content size (checked before decompressing), no checksum (the file has one).
_FORMAT = zstandard.FORMAT_ZSTD1_MAGICLESS


def _dictionary(content: bytes | None) -> zstandard.ZstdCompressionDict | None:
    if content is None:
        return None
    return zstandard.ZstdCompressionDict(content, dict_type=zstandard.DICT_TYPE_RAWCONTENT)


def zstd_stream(data: bytes, dictionary: bytes | None = None) -> bytes:
    """``data`` compressed with zstd at its maximum level, behind the zstd method byte.

    Example:
        >>> unwrap(zstd_stream(b"abc" * 100), 300, "x") == (ZSTD, b"abc" * 100)
        True
    """
    params = zstandard.ZstdCompressionParameters.from_level(
        _ZSTD_LEVEL, source_size=len(data), format=_FORMAT, write_content_size=1,
        write_checksum=0, write_dict_id=0)
    ctx = zstandard.ZstdCompressor(compression_params=params, dict_data=_dictionary(dictionary))
    return bytes([ZSTD]) + ctx.compress(data)


_allowed_methods = {RAW, ZSTD, RANS}


@contextmanager
def restrict_methods(*methods: int) -> Iterator[None]:
    """Within the block, :func:`smallest` prefers only ``methods`` (to measure coders apart).

    Example:
        >>> with restrict_methods(RAW, ZSTD):
        ...     smallest(bytes([RANS, 1]), bytes([RAW, 1, 2]))
        b'\\x00\\x01\\x02'
    """
    global _allowed_methods
    saved, _allowed_methods = _allowed_methods, set(methods)
    try:
        yield
    finally:
        _allowed_methods = saved


def smallest(*candidates: bytes) -> bytes:
    """The shortest of several encodings of the same stream (among the allowed methods)."""
    allowed = [c for c in candidates if c[0] in _allowed_methods]
    return min(allowed or candidates, key=len)


def unwrap(stream: bytes, max_size: int, what: str,
           dictionary: bytes | None = None) -> tuple[int, bytes]:
    """Return (method, payload); zstd payloads are decompressed, at most ``max_size`` bytes."""
    if not stream:
        raise FormatError(f"{what}: empty stream")
    method, body = stream[0], stream[1:]
    if method in (RAW, RANS):
        return method, body
    if method == ZSTD:
        try:
            # the frame's declared size is checked first: decompress() allocates that much
            size = zstandard.get_frame_parameters(body, format=_FORMAT).content_size
            if size > max_size:
                raise FormatError(f"{what}: zstd data declares {size} bytes, more than the "
                                  f"{max_size} possible")
            ctx = zstandard.ZstdDecompressor(dict_data=_dictionary(dictionary), format=_FORMAT)
            out = ctx.decompress(body, max_output_size=max_size)
        except zstandard.ZstdError as exc:
            raise FormatError(f"{what}: zstd data is corrupted or too large ({exc})") from None
        return method, out
    raise FormatError(f"{what}: unknown stream method {method}")


def read_int(meta: dict[str, Any], key: str, what: str, low: int, high: int,
             default: int | None = None) -> int:
    """``meta[key]`` checked to be an integer in ``[low, high]`` (``default`` when absent)."""
    value = meta.get(key, default)
    if type(value) is not int or not low <= value <= high:
        raise FormatError(f"{what}: field {key!r} is {value!r}, expected an integer in "
                          f"[{low}, {high}]")
    return value

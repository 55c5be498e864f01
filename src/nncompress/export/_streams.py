"""Stream framing: a method byte (raw, zstd or rANS) before each payload, and bounded reads."""

from __future__ import annotations

from typing import Any

import zstandard

from nncompress.errors import FormatError

__all__ = ["METHOD_NAMES", "RANS", "RANS_MAX_SYMBOLS", "RAW", "ZSTD", "read_int", "smallest",
           "unwrap", "zstd_stream"]

RAW, ZSTD, RANS = 0, 1, 2
METHOD_NAMES = {RAW: "raw", ZSTD: "zstd", RANS: "rans"}
_ZSTD_LEVEL = 22
# Streams longer than this skip the pure-Python rANS coder (too slow) and use zstd only.
RANS_MAX_SYMBOLS = 1 << 21


def zstd_stream(data: bytes) -> bytes:
    """``data`` compressed with zstd at its maximum level, behind the zstd method byte."""
    return bytes([ZSTD]) + zstandard.ZstdCompressor(level=_ZSTD_LEVEL).compress(data)


def smallest(*candidates: bytes) -> bytes:
    """The shortest of several encodings of the same stream."""
    return min(candidates, key=len)


def unwrap(stream: bytes, max_size: int, what: str) -> tuple[int, bytes]:
    """Return (method, payload); zstd payloads are decompressed with an output bound."""
    if not stream:
        raise FormatError(f"{what}: empty stream")
    method, body = stream[0], stream[1:]
    if method in (RAW, RANS):
        return method, body
    if method == ZSTD:
        try:
            out = zstandard.ZstdDecompressor().decompress(body, max_output_size=max_size)
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

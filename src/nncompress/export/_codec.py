"""Format version 1: encode one tensor into a position stream and a value stream, and back.

Files of version 2 (what ``save_compact`` writes) code positions and level codes in one shared
stream (:mod:`._tensors`, :mod:`._shared`) and reuse the value helpers here; this encoder
stays to read, test and measure version 1 files.

Values whose non-zeros are all ``±2**e`` (INQ levels) become codes ``1 + 2*(e - e_min) + sign``
(0 is zero, used by dense layouts). INQ levels with ``M`` mantissa bits, ``±(1 + j/2^M) 2^e``,
take the magnitude index ``L = (e - e_min) 2^M + j`` in place of ``e - e_min`` and record
``mantissa: M`` (absent for powers of two, so those files are byte for byte as before).
Other floating values are byte planes of float16/float32 (or the tensor's own precision).
Integer and bool tensors are stored whole as raw bytes.

Layouts (see :mod:`._positions`): ``dense`` codes every entry of the live sub-matrix,
``sparse`` codes the positions of the non-zeros in it and their values. The encoder estimates
the size of each choice and keeps the smallest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from nncompress.errors import ConfigError, FormatError
from nncompress.export._entropy import RansDecoder, RansEncoder, StaticModel
from nncompress.export._positions import (
    Factoring,
    GapCode,
    best_gaps,
    factorings,
    positions_stream,
    read_layout,
)
from nncompress.export._streams import (
    RANS,
    RANS_MAX_SYMBOLS,
    RAW,
    read_int,
    smallest,
    unwrap,
    zstd_stream,
)
from nncompress.inq import MAX_MANTISSA_BITS, level_grid

__all__ = ["DTYPES", "EncodedTensor", "decode_tensor", "encode_tensor"]

DTYPES: dict[str, torch.dtype] = {
    "float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32,
    "float64": torch.float64, "int8": torch.int8, "uint8": torch.uint8, "int16": torch.int16,
    "int32": torch.int32, "int64": torch.int64, "bool": torch.bool,
}
_DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
_MAX_LEVELS = 127  # codes 1 + 2 * 127 levels still fit in a byte


@dataclass
class EncodedTensor:
    """A tensor's metadata (JSON-ready) and its two streams (method byte first)."""

    meta: dict[str, Any]
    positions: bytes = b""
    values: bytes = b""


# ----------------------------------------------------------------------------- values
def pow2_codes(values: np.ndarray) -> tuple[int, int, np.ndarray] | None:
    """Return ``(e_min, levels, codes)`` if every non-zero value is ``±2**e``, else None.

    Example:
        >>> pow2_codes(np.array([0.0, 0.5, -2.0]))[:2]
        (-1, 3)
    """
    found = level_codes(values, 0)
    return None if found is None else (found[0], found[1], found[3])


def level_codes(values: np.ndarray, max_mantissa: int = MAX_MANTISSA_BITS
                ) -> tuple[int, int, int, np.ndarray] | None:
    """``(e_min, levels, mantissa, codes)`` for the fewest mantissa bits ``M <= max_mantissa``
    with every non-zero value ``±(1 + j/2^M) 2^e``; None if there is none or the magnitude
    indices would need more than 127 levels.

    Example:
        >>> e_min, levels, m, codes = level_codes(np.array([0.0, 0.75, -1.0, 1.5]))
        >>> e_min, levels, m, codes.tolist()
        (-1, 4, 1, [0, 3, 6, 7])
    """
    grid = level_grid(torch.from_numpy(values), max_mantissa)  # None when empty or all zero
    if grid is None:
        return None
    e_min, _, bits = grid
    nonzero = values != 0
    mantissa, exponent = np.frexp(values[nonzero])
    steps = np.abs(mantissa) * (1 << (bits + 1))  # whole, in [2^M, 2^(M+1))
    index = (exponent - 1 - e_min) * (1 << bits) + steps.astype(np.int64) - (1 << bits)
    levels = int(index.max()) + 1
    if levels > _MAX_LEVELS:
        return None
    codes = np.zeros(values.shape, dtype=np.int64)
    codes[nonzero] = 1 + 2 * index + (mantissa < 0)
    return e_min, levels, bits, codes


def level_table(e_min: int, levels: int, mantissa: int = 0) -> np.ndarray:
    """Values of codes ``0 ... 2 levels``: 0, then ``+m, -m`` for each magnitude index.

    Example:
        >>> level_table(-1, 4, 1).tolist()
        [0.0, 0.5, -0.5, 0.75, -0.75, 1.0, -1.0, 1.5, -1.5]
    """
    index = np.arange(levels)
    step = 1 << mantissa
    magnitudes = np.ldexp(1.0 + (index % step) / step, e_min + index // step)
    table = np.zeros(1 + 2 * levels)
    table[1::2], table[2::2] = magnitudes, -magnitudes  # exact in the tensor's dtype
    return table


def _codes_stream(codes: np.ndarray, alphabet: int) -> bytes:
    candidates = [bytes([RAW]) + codes.astype(np.uint8).tobytes(),
                  zstd_stream(codes.astype(np.uint8).tobytes())]
    if codes.size <= RANS_MAX_SYMBOLS:
        enc = RansEncoder()
        model = StaticModel.fit(codes, alphabet)
        enc.put_model(model)
        enc.put_symbols(codes, model)
        candidates.append(bytes([RANS]) + enc.finish())
    return smallest(*candidates)


def _read_codes(stream: bytes, count: int, alphabet: int, what: str) -> np.ndarray:
    """The ``count`` value codes of a stream, as uint8 (the alphabet fits in a byte)."""
    method, body = unwrap(stream, count, what)
    if method == RANS:
        if count > RANS_MAX_SYMBOLS:  # the writer codes longer streams with zstd
            raise FormatError(f"{what}: {count} entropy-coded values, more than the "
                              f"{RANS_MAX_SYMBOLS} a stream may hold")
        dec = RansDecoder(body, what)
        model = dec.get_model()
        codes = np.array(dec.get_symbols(count, model), dtype=np.int64)
        dec.finish()
    elif len(body) != count:
        raise FormatError(f"{what}: expected {count} value codes, found {len(body)}")
    else:
        codes = np.frombuffer(body, dtype=np.uint8)
    if codes.size and int(codes.max()) >= alphabet:
        raise FormatError(f"{what}: value code {int(codes.max())} outside the level set")
    return codes.astype(np.uint8)


def _levels(codes: np.ndarray, table: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    """Codes to values through :func:`level_table` (exact in ``dtype``)."""
    index = torch.from_numpy(codes.astype(np.int32))
    return torch.index_select(torch.from_numpy(table).to(dtype), 0, index)


def _bytes_stream(data: bytes, itemsize: int) -> bytes:
    """Byte-plane shuffle (all first bytes, then all second bytes ...) then raw or zstd."""
    planes = np.frombuffer(data, np.uint8).reshape(-1, itemsize).T.tobytes()
    return smallest(bytes([RAW]) + planes, zstd_stream(planes))


def _read_values(stream: bytes, count: int, store: torch.dtype, what: str) -> torch.Tensor:
    """``count`` values of dtype ``store`` from a byte-plane stream (one copy of the bytes)."""
    itemsize = store.itemsize
    _, body = unwrap(stream, count * itemsize, what)
    if len(body) != count * itemsize:
        raise FormatError(f"{what}: expected {count * itemsize} value bytes, found {len(body)}")
    if count == 0:
        return torch.zeros(0, dtype=store)
    planes = np.frombuffer(body, np.uint8).reshape(itemsize, count)
    return torch.from_numpy(np.array(planes.T, order="C").reshape(-1)).view(store)


def _to_bytes(t: torch.Tensor) -> bytes:
    return t.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


# ----------------------------------------------------------------------------- tensors
@dataclass
class TensorValues:
    """A tensor's values as both format versions store them, before a layout is chosen."""

    meta: dict[str, Any]  # name, dtype, shape, values and (floating tensors) kept
    shape: tuple[int, ...]
    whole: bytes = b""  # raw and float values: the value stream of every entry
    nonzero: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    codes: np.ndarray | None = None  # pow2 values: the level code of every entry
    stored: torch.Tensor | None = None  # float values: flat, in their stored dtype


def tensor_values(name: str, tensor: Any, float_dtype: str) -> TensorValues:
    """How a tensor's values are stored: whole as raw bytes (integer and bool tensors), as INQ
    level codes (``pow2``), or as floats in their own precision or float16.

    Raises:
        ConfigError: ``tensor`` is not a tensor of a dtype the compact format stores, or holds
            a value float16 cannot hold (with ``"float16"``).

    Example:
        >>> v = tensor_values("w", torch.tensor([0.0, 0.5, 0.0, -2.0]), "float32")
        >>> v.meta["values"], v.meta["levels"], v.codes.tolist()
        ('pow2', 3, [0, 1, 0, 6])
    """
    if not isinstance(tensor, torch.Tensor) or tensor.dtype not in _DTYPE_NAMES:
        kind = tensor.dtype if isinstance(tensor, torch.Tensor) else type(tensor).__name__
        raise ConfigError(f"state_dict entry {name!r} is {kind}, which the compact format "
                          f"does not store (allowed: {', '.join(DTYPES)})")
    t = tensor.detach().cpu().contiguous()
    meta: dict[str, Any] = {"name": name, "dtype": _DTYPE_NAMES[t.dtype], "shape": list(t.shape)}
    shape = tuple(t.shape)
    if not t.is_floating_point():
        return TensorValues(meta | {"values": "raw"}, shape,
                            _bytes_stream(_to_bytes(t), t.element_size()))
    found = level_codes(t.double().reshape(-1).numpy())
    if found is not None:
        e_min, levels, mantissa, codes = found
        nonzero = np.flatnonzero(codes)
        meta |= {"values": "pow2", "exp_min": e_min, "levels": levels, "kept": int(nonzero.size)}
        if mantissa:
            meta["mantissa"] = mantissa
        return TensorValues(meta, shape, nonzero=nonzero, codes=codes)
    store = torch.float16 if float_dtype == "float16" else t.dtype
    stored = t.reshape(-1).to(store)
    _check_no_overflow(name, t.reshape(-1), stored)
    nonzero = np.flatnonzero((stored != 0).numpy())  # after rounding: tiny values may vanish
    meta |= {"values": _DTYPE_NAMES[store], "kept": int(nonzero.size)}
    return TensorValues(meta, shape, _bytes_stream(_to_bytes(stored), stored.element_size()),
                        nonzero, stored=stored)


def sparse_floats(v: TensorValues) -> tuple[Factoring, GapCode, bytes]:
    """The sparse layout of float values: the factoring whose live rows and columns and kept
    entries' gaps cost least, the gap code of its kept entries, and their value stream."""
    assert v.stored is not None
    options = [(f, best_gaps(f.kept_sub)) for f in factorings(v.nonzero, v.shape)]
    best, kept_code = min(options, key=lambda o: o[0].sets_bits + o[1].bits)
    kept = v.stored[torch.from_numpy(v.nonzero)]
    return best, kept_code, _bytes_stream(_to_bytes(kept), v.stored.element_size())


def encode_tensor(name: str, tensor: torch.Tensor, float_dtype: str) -> EncodedTensor:
    """Encode a tensor, choosing dense or sparse layout and the value coding by size.

    Args:
        name: the state-dict key (kept in the metadata).
        tensor: any tensor of a dtype in :data:`DTYPES`.
        float_dtype: ``"float32"`` (floats kept in their own precision) or ``"float16"``.

    Returns:
        The metadata and streams.

    Raises:
        ConfigError: the entry is not a tensor, or of a dtype the format does not store.

    Example:
        >>> enc = encode_tensor("w", torch.tensor([0.0, 0.5, 0.0, -2.0]), "float32")
        >>> enc.meta["values"], enc.meta["layout"]
        ('pow2', 'dense')
    """
    v = tensor_values(name, tensor, float_dtype)
    if v.codes is not None:
        return _encode_pow2(v.meta, v.codes, 1 + 2 * v.meta["levels"], v.nonzero, v.shape)
    dense = EncodedTensor(v.meta | {"layout": "dense"}, b"", v.whole)
    if v.stored is None or v.nonzero.size == v.stored.numel():
        return dense
    best, kept_code, values = sparse_floats(v)
    sparse = EncodedTensor(v.meta | {"layout": "sparse"} | best.extra,
                           positions_stream([*best.sets, kept_code]), values)
    return min((dense, sparse), key=lambda e: len(e.positions) + len(e.values))


def _check_no_overflow(name: str, original: torch.Tensor, stored: torch.Tensor) -> None:
    """Refuse finite values that rounding to a narrower dtype would turn into infinities."""
    overflow = torch.isinf(stored) & torch.isfinite(original)
    if bool(overflow.any()):
        value = float(original[overflow][0])
        limit = torch.finfo(stored.dtype).max
        raise ConfigError(
            f"tensor {name!r} holds {value:g}, beyond {str(stored.dtype).removeprefix('torch.')}"
            f"'s range (±{limit:g}): stored so it would become {'-' if value < 0 else ''}inf; "
            "save with float_dtype='float32' (lossless)")


def _encode_pow2(meta: dict[str, Any], codes: np.ndarray, alphabet: int, nonzero: np.ndarray,
                 shape: tuple[int, ...]) -> EncodedTensor:
    """Pick the cheapest (factoring, dense or sparse) by estimated size, then code it."""
    options: list[tuple[float, dict[str, Any], list[GapCode], np.ndarray]] = []
    kept_codes = codes[nonzero]
    kept_bits = StaticModel.fit(kept_codes, alphabet).cost_bits(kept_codes)
    for f in factorings(nonzero, shape):
        sub_codes = codes[f.sub_flat]
        dense_bits = f.sets_bits + StaticModel.fit(sub_codes, alphabet).cost_bits(sub_codes)
        options.append((dense_bits, f.extra | {"layout": "dense"}, f.sets, sub_codes))
        kept_code = best_gaps(f.kept_sub)
        options.append((f.sets_bits + kept_code.bits + kept_bits, f.extra | {"layout": "sparse"},
                        [*f.sets, kept_code], kept_codes))
    _, extra, sets, values = min(options, key=lambda o: o[0])
    positions = positions_stream(sets) if sets else b""
    return EncodedTensor(meta | extra, positions, _codes_stream(values, alphabet))


def decode_tensor(meta: dict[str, Any], positions: bytes, values: bytes,
                  source: str = "") -> torch.Tensor:
    """Rebuild a tensor from :func:`encode_tensor`'s metadata and streams.

    The metadata must already be checked for types and a bounded shape; every count and
    stream is checked here. ``source`` (the file name) starts error messages.

    Raises:
        FormatError: the streams do not decode to what the metadata describes.

    Example:
        >>> enc = encode_tensor("w", torch.tensor([0.0, 0.5, 0.0, -2.0]), "float32")
        >>> decode_tensor(enc.meta, enc.positions, enc.values)
        tensor([ 0.0000,  0.5000,  0.0000, -2.0000])
    """
    what = f"{source}: tensor {meta.get('name')!r}" if source else f"tensor {meta.get('name')!r}"
    dtype = DTYPES[meta["dtype"]]
    shape = tuple(meta["shape"])
    numel = math.prod(shape)
    layout, kind = meta.get("layout"), meta.get("values")
    if layout not in ("dense", "sparse"):
        raise FormatError(f"{what}: unknown layout {layout!r}")
    if kind == "raw":
        if layout != "dense" or positions or "rows" in meta or "cols" in meta:
            raise FormatError(f"{what}: raw values are stored dense and whole")
        raw = _read_values(values, numel, dtype, what)
        if dtype == torch.bool and bool((raw.view(torch.uint8) > 1).any()):
            raise FormatError(f"{what}: a bool tensor holds bytes other than 0 and 1")
        return raw.reshape(shape)
    if not dtype.is_floating_point:
        raise FormatError(f"{what}: value coding {kind!r} needs a floating dtype")
    whole = layout == "dense" and "rows" not in meta and "cols" not in meta
    if whole:  # every entry in order: no positions to place them at
        if positions:
            raise FormatError(f"{what}: a dense tensor has no position stream")
        sub_flat, kept_sub, count = None, None, numel
    else:
        sub_flat, kept_sub = read_layout(positions, meta, shape, layout == "sparse", what)
        count = sub_flat.size if kept_sub is None else kept_sub.size
    if kind == "pow2":
        e_min = read_int(meta, "exp_min", what, -1100, 1100)
        levels = read_int(meta, "levels", what, 1, _MAX_LEVELS)
        mantissa = read_int(meta, "mantissa", what, 0, MAX_MANTISSA_BITS, 0)
        kept_tensor = _levels(_read_codes(values, count, 1 + 2 * levels, what),
                              level_table(e_min, levels, mantissa), dtype)
    elif kind in DTYPES and DTYPES[kind].is_floating_point:
        kept_tensor = _read_values(values, count, DTYPES[kind], what).to(dtype)
    else:
        raise FormatError(f"{what}: unknown value coding {kind!r}")
    if sub_flat is None:
        out = kept_tensor
    else:
        where = sub_flat if kept_sub is None else sub_flat[kept_sub]
        out = torch.zeros(numel, dtype=dtype)
        out[torch.from_numpy(where)] = kept_tensor
    if int(torch.count_nonzero(out)) != read_int(meta, "kept", what, 0, numel):
        raise FormatError(f"{what}: decodes to another number of non-zero entries than recorded")
    return out.reshape(shape)

"""The schema of a .ncz file's metadata, checked field by field before anything is built.

Every field is checked for its type and bounds, and the fields against each other: value
codings against dtypes, level exponents against what the dtype can hold, row/column/kept
counts against the shape, stream lengths against the bytes present, and the declared tensor
bytes against the budget of the file's size (:mod:`._guard`). A bad field is one
:class:`~nncompress.errors.FormatError` naming the field and its value. Unknown top-level keys
are ignored (a later writer may add some); unknown keys inside a tensor entry are refused.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from nncompress.errors import FormatError
from nncompress.export._codec import DTYPES
from nncompress.export._container import FORMAT_NAME
from nncompress.export._guard import budget, describe_budget
from nncompress.inq import MAX_MANTISSA_BITS

__all__ = ["FLOAT_DTYPES", "MAX_DIM", "MAX_DIMS", "TRUSTED_REFS", "check_arch", "check_matches",
           "check_meta", "is_builtin"]

FLOAT_DTYPES = ("float32", "float16")
# Import paths inside nncompress that build a model from data alone (a Caffe net's text);
# loading them runs none of the file's code, so they need no allow_import.
TRUSTED_REFS = frozenset({"nncompress.interop.caffe_net:from_text"})
MAX_DIMS = 8
MAX_DIM = 2**31 - 1
_MAX_NAME = 1000
_MAX_REF = 300
_MAX_WRITER = 200
_BUILTIN_INT = 2**31 - 1  # numbers given to nncompress's own builders
_JSON_INT = 2**53  # numbers given to other callables (exact in JSON readers)
# smallest (subnormal) and largest power-of-two exponent of each floating dtype
_EXPONENTS = {"float16": (-24, 15), "bfloat16": (-133, 127), "float32": (-149, 127),
              "float64": (-1074, 1023)}
_REQUIRED = ("name", "dtype", "shape", "values", "layout", "bytes")
_OPTIONAL = ("kept", "exp_min", "levels", "rows", "cols", "mantissa", "cols_ctx")


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:76] + " ..."


def _fail(what: str, field: str, value: Any, expected: str) -> FormatError:
    return FormatError(f"{what}: metadata field {field} is {_show(value)}, expected {expected}")


def _int_in(value: Any, low: int, high: int) -> bool:
    return type(value) is int and low <= value <= high


def is_builtin(ref: str) -> bool:
    """Whether ``ref`` names one of nncompress's own builders (a registered name or a trusted ref).

    Example:
        >>> is_builtin("lenet5"), is_builtin("os:system")
        (True, False)
    """
    return ":" not in ref or ref in TRUSTED_REFS


def check_meta(meta: dict[str, Any], data_len: int, file_bytes: int,
               what: str) -> list[dict[str, Any]]:
    """Check every field of the metadata; return its tensor entries.

    Args:
        meta: the parsed metadata object.
        data_len: bytes of tensor streams in the file.
        file_bytes: size of the whole file (sets the budget of declared tensor bytes).
        what: the file name, to start messages.

    Returns:
        The tensor entries, in file order.

    Raises:
        FormatError: naming the first bad field and its value.
    """
    if meta.get("format") != FORMAT_NAME:
        raise _fail(what, "'format'", meta.get("format"), repr(FORMAT_NAME))
    float_dtype = meta.get("float_dtype")
    if not isinstance(float_dtype, str) or float_dtype not in FLOAT_DTYPES:
        raise _fail(what, "'float_dtype'", float_dtype, "'float32' or 'float16'")
    writer = meta.get("writer", "")
    if not isinstance(writer, str) or len(writer) > _MAX_WRITER:
        raise _fail(what, "'writer'", writer, f"a string of at most {_MAX_WRITER} characters")
    check_arch(meta.get("arch"), what)
    tensors = meta.get("tensors")
    if not isinstance(tensors, list):
        raise _fail(what, "'tensors'", tensors, "a list of tensor entries")
    coded = meta.get("coded", 0)
    if not _int_in(coded, 0, 2**62):
        raise _fail(what, "'coded'", coded, "the shared coded stream's length in bytes")
    names: set[str] = set()
    streams, total = coded, 0
    for i, t in enumerate(tensors):
        numel = _check_tensor(t, f"tensors[{i}]", float_dtype, "coded" in meta, what)
        if t["name"] in names:
            raise _fail(what, f"tensors[{i}].name", t["name"], "a name no other tensor has")
        names.add(t["name"])
        streams += sum(t["bytes"])
        total += numel * DTYPES[t["dtype"]].itemsize
    if streams != data_len:
        raise FormatError(f"{what}: tensor streams take {data_len} bytes, the metadata lists "
                          f"{streams}")
    if total > budget(file_bytes):
        big = max(tensors, key=lambda t: math.prod(t["shape"]) * DTYPES[t["dtype"]].itemsize)
        raise FormatError(
            f"{what}: the metadata declares tensors of {total} bytes in all (the largest, "
            f"{_show(big['name'])}, of shape {big['shape']}), {describe_budget(file_bytes)}")
    return tensors


def check_arch(arch: Any, what: str) -> None:
    """Check ``arch`` ({"ref", "kwargs"}): types, and every number in the kwargs bounded.

    Example:
        >>> try:
        ...     check_arch({"ref": "tiny_mlp", "kwargs": {"hidden": 2**40}}, "f.ncz")
        ... except FormatError as exc:
        ...     print(str(exc)[:67])
        f.ncz: metadata field arch.kwargs.hidden is 1099511627776, expected
    """
    if not isinstance(arch, dict) or set(arch) != {"ref", "kwargs"}:
        raise _fail(what, "'arch'", arch, "an object with the keys 'ref' and 'kwargs'")
    ref, kwargs = arch["ref"], arch["kwargs"]
    if not isinstance(ref, str) or not 0 < len(ref) <= _MAX_REF:
        raise _fail(what, "arch.ref", ref, "a model name or 'package.module:callable'")
    if not isinstance(kwargs, dict):
        raise _fail(what, "arch.kwargs", kwargs, "an object of keyword arguments")
    bound = _BUILTIN_INT if is_builtin(ref) else _JSON_INT
    for key, value in kwargs.items():
        _check_value(value, f"arch.kwargs{_key(key)}", bound, what)


def _key(key: str) -> str:
    return f".{key}" if key.isidentifier() and len(key) <= 40 else f"[{_show(key)}]"


def _check_value(value: Any, field: str, bound: int, what: str) -> None:
    """JSON values (nesting already bounded by the container): numbers finite and bounded."""
    if isinstance(value, list):
        for i, item in enumerate(value):
            _check_value(item, f"{field}[{i}]", bound, what)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_value(item, f"{field}{_key(key)}", bound, what)
    elif type(value) is int and not -bound <= value <= bound:
        raise _fail(what, field, value, f"an integer in [{-bound}, {bound}]")
    elif type(value) is float and not (math.isfinite(value) and abs(value) <= bound):
        raise _fail(what, field, value, f"a finite number in [{-bound}, {bound}]")


def _check_tensor(t: Any, field: str, float_dtype: str, shared: bool, what: str) -> int:
    """Check one tensor entry; return its number of entries."""
    if not isinstance(t, dict):
        raise _fail(what, field, t, "a tensor entry (an object)")
    missing = [k for k in _REQUIRED if k not in t]
    unknown = sorted(k for k in t if k not in _REQUIRED and k not in _OPTIONAL)
    if missing or unknown:
        raise _fail(what, field, sorted(t), f"the keys {', '.join(_REQUIRED)} and some of "
                    f"{', '.join(_OPTIONAL)} (missing {missing}, unknown {unknown})")
    name = t["name"]
    if not isinstance(name, str) or not 0 < len(name) <= _MAX_NAME:
        raise _fail(what, f"{field}.name", name, f"a string of 1 to {_MAX_NAME} characters")
    field = f"{field}.{{}} (tensor {_show(name)})"
    dtype, shape, kind = t["dtype"], t["shape"], t["values"]
    if not (isinstance(dtype, str) and dtype in DTYPES):
        raise _fail(what, field.format("dtype"), dtype, f"one of {', '.join(DTYPES)}")
    if not isinstance(shape, list) or len(shape) > MAX_DIMS:
        raise _fail(what, field.format("shape"), shape, f"a list of at most {MAX_DIMS} sizes")
    for j, size in enumerate(shape):
        if not _int_in(size, 0, MAX_DIM):
            raise _fail(what, field.format(f"shape[{j}]"), size, f"an integer in [0, {MAX_DIM}]")
    floating = DTYPES[dtype].is_floating_point
    kinds = ("pow2", "float16" if float_dtype == "float16" else dtype) if floating else ("raw",)
    if not isinstance(kind, str) or kind not in kinds:
        raise _fail(what, field.format("values"), kind, f"{' or '.join(map(repr, kinds))} for a "
                    f"{dtype} tensor in a {float_dtype} file")
    numel = math.prod(shape)
    _check_layout(t, field, numel, shared, what)
    return numel


def _check_layout(t: dict[str, Any], field: str, numel: int, shared: bool, what: str) -> None:
    """Layout, counts and stream lengths of a tensor entry whose dtype and shape are valid
    (``shared``: a version 2 file, whose positions and level codes are in the coded stream)."""
    layout, lengths, shape = t["layout"], t["bytes"], t["shape"]
    layouts = ("dense",) if t["values"] == "raw" else ("dense", "sparse")
    if not isinstance(layout, str) or layout not in layouts:
        raise _fail(what, field.format("layout"), layout, " or ".join(map(repr, layouts)))
    if not (isinstance(lengths, list) and len(lengths) == 2 and _int_in(lengths[0], 0, 2**62)
            and _int_in(lengths[1], 0 if shared else 1, 2**62)):
        raise _fail(what, field.format("bytes"), lengths,
                    "[position stream bytes >= 0, value stream bytes >= 1]")
    raw, pow2 = t["values"] == "raw", t["values"] == "pow2"
    if shared and (lengths[0] != 0 or (lengths[1] == 0) != pow2):
        raise _fail(what, field.format("bytes"), lengths, "[0, value stream bytes] (0 for "
                    "'pow2' values: positions and level codes are in the coded stream)")
    if "mantissa" in t and not (pow2 and _int_in(t["mantissa"], 1, MAX_MANTISSA_BITS)):
        raise _fail(what, field.format("mantissa"), t["mantissa"], "an integer in [1, "
                    f"{MAX_MANTISSA_BITS}] for 'pow2' values (absent for powers of two)")
    if "cols_ctx" in t and not (shared and t["cols_ctx"] is True and "cols" in t):
        raise _fail(what, field.format("cols_ctx"), t["cols_ctx"], "true, with 'cols', in a "
                    "format version 2 file")
    for key in _OPTIONAL[:-2]:
        needed = not raw if key == "kept" else (pow2 if key in ("exp_min", "levels") else None)
        if needed is not None and needed != (key in t):
            raise _fail(what, field.format(key), t.get(key, "absent"),
                        f"{'a value' if needed else 'no value'} for {t['values']!r} values")
    if raw:
        if _has_sets(t) or lengths[0]:
            raise _fail(what, field.format("bytes"), lengths, "raw values: no position "
                        "stream, no rows or cols")
        return
    nrows = shape[0] if len(shape) >= 2 else 1
    ncols = numel // nrows if nrows else 0
    for key, high in (("kept", numel), ("rows", nrows), ("cols", ncols)):
        if not _int_in(t.get(key, 0), 0, high):
            raise _fail(what, field.format(key), t.get(key), f"an integer in [0, {high}]")
    if layout == "sparse" and t["kept"] > t.get("rows", nrows) * t.get("cols", ncols):
        raise _fail(what, field.format("kept"), t["kept"], "at most rows x cols of the layout")
    if pow2:
        _check_levels(t, field, what)
    has_sets = layout == "sparse" or _has_sets(t)
    if not shared and has_sets != (lengths[0] > 0):
        raise _fail(what, field.format("bytes"), lengths, "a position stream exactly when "
                    "the layout is sparse or has rows / cols")


def _has_sets(t: dict[str, Any]) -> bool:
    """Whether a tensor entry codes its live rows or columns."""
    return "rows" in t or "cols" in t


def _check_levels(t: dict[str, Any], field: str, what: str) -> None:
    low, high = _EXPONENTS[t["dtype"]]
    levels, exp_min, mantissa = t["levels"], t["exp_min"], t.get("mantissa", 0)
    if not _int_in(levels, 1, 127):
        raise _fail(what, field.format("levels"), levels, "an integer in [1, 127]")
    # with M mantissa bits, levels span (levels - 1) // 2^M + 1 exponents, each needing M
    # bits below it that the dtype holds
    low, high = low + mantissa, high - (levels - 1) // (1 << mantissa)
    if not _int_in(exp_min, low, high):
        grid = "powers of two" if not mantissa else f"levels with {mantissa} mantissa bits"
        raise _fail(what, field.format("exp_min"), exp_min, f"an integer in [{low}, {high}] "
                    f"({levels} {grid} a {t['dtype']} holds)")


def check_matches(tensors: list[dict[str, Any]], expected: dict[str, torch.Tensor],
                  what: str) -> None:
    """Check the file's tensors against the state of the model built from its architecture.

    Names and shapes must be equal. Dtypes must be equal too, except in a file whose floating
    tensors all share one dtype (a model converted as a whole, say with ``.double()``).

    Raises:
        FormatError: naming the first tensor that differs.
    """
    names = [t["name"] for t in tensors]
    if set(names) != set(expected) or len(names) != len(expected):
        missing = sorted(set(expected) - set(names))
        extra = sorted(set(names) - set(expected))
        raise FormatError(f"{what}: the file's tensors do not match the model built from its "
                          f"architecture (missing {_show(missing)}, unexpected {_show(extra)})")
    floats = {t["dtype"] for t in tensors if DTYPES[t["dtype"]].is_floating_point}
    for t in tensors:
        want = expected[t["name"]]
        if tuple(t["shape"]) != tuple(want.shape):
            raise FormatError(f"{what}: tensor {t['name']!r} has shape {tuple(t['shape'])} in "
                              f"the file, {tuple(want.shape)} in the model")
        dtype = DTYPES[t["dtype"]]
        converted = len(floats) == 1 and dtype.is_floating_point and want.is_floating_point()
        if dtype != want.dtype and not converted:
            raise FormatError(f"{what}: tensor {t['name']!r} is {t['dtype']} in the file, "
                              f"{str(want.dtype).removeprefix('torch.')} in the model built "
                              "from its architecture (and the file's other tensors)")

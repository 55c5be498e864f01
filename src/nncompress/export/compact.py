"""save_compact / load_compact / inspect_compact: the .ncz compact model file.

A .ncz file holds how to rebuild the model (a registry name or ``package.module:callable`` with
its keyword arguments) and every tensor of its ``state_dict``, each coded by
:mod:`nncompress.export._codec`: INQ tensors (all non-zeros ``±2**e``) as level codes, other
floats as float32 (their own precision) or float16, positions of zeros as gaps, all entropy
coded. The container (:mod:`._container`) is versioned and checksummed.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from nncompress.errors import ConfigError, FormatError, NNCompressError
from nncompress.export._codec import DTYPES, decode_tensor, encode_tensor
from nncompress.export._container import FORMAT_NAME, VERSION, pack, unpack

__all__ = ["CompactInfo", "TensorInfo", "inspect_compact", "load_compact", "save_compact"]

FLOAT_DTYPES = ("float32", "float16")
_MAX_DIMS = 8
_MAX_NUMEL = 1 << 40


@dataclass(frozen=True)
class TensorInfo:
    """Sizes of one tensor in a .ncz file."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    values: str  # "pow2" (INQ level codes), a float dtype name, or "raw"
    layout: str  # "dense" or "sparse"
    entries: int
    kept: int
    position_bytes: int
    value_bytes: int

    @property
    def bytes(self) -> int:
        """Position plus value bytes."""
        return self.position_bytes + self.value_bytes

    @property
    def position_bits_per_kept(self) -> float:
        """Bits of the position stream per non-zero entry."""
        return 8 * self.position_bytes / self.kept if self.kept else 0.0

    @property
    def value_bits_per_kept(self) -> float:
        """Bits of the value stream per non-zero entry."""
        return 8 * self.value_bytes / self.kept if self.kept else 0.0


@dataclass(frozen=True)
class CompactInfo:
    """What :func:`inspect_compact` reports about a .ncz file."""

    path: str
    version: int
    file_bytes: int
    arch: dict[str, Any]
    float_dtype: str
    tensors: list[TensorInfo] = field(default_factory=list)

    @property
    def fp32_bytes(self) -> int:
        """Size of the floating tensors as plain float32 (4 bytes per entry)."""
        return 4 * sum(t.entries for t in self.tensors if DTYPES[t.dtype].is_floating_point)

    @property
    def ratio(self) -> float:
        """fp32 bytes over file bytes."""
        return self.fp32_bytes / self.file_bytes

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary, with totals and per-tensor bits per kept entry."""
        out = asdict(self)
        out["tensors"] = [asdict(t) | {
            "bytes": t.bytes, "position_bits_per_kept": round(t.position_bits_per_kept, 3),
            "value_bits_per_kept": round(t.value_bits_per_kept, 3)} for t in self.tensors]
        out |= {"entries": sum(t.entries for t in self.tensors),
                "kept": sum(t.kept for t in self.tensors),
                "fp32_bytes": self.fp32_bytes, "ratio": round(self.ratio, 2)}
        return out


def save_compact(model: nn.Module, path: str | Path, *, arch: dict[str, Any] | None = None,
                 float_dtype: str = "float32") -> CompactInfo:
    """Write a finalized model to a compact .ncz file (atomically).

    A prepared model (DNS/INQ layers) is finalized on a copy first. Float tensors that are not
    INQ levels are stored in their own precision with ``float_dtype="float32"`` (lossless), or
    rounded to float16 with ``"float16"``: the loaded model then equals the saved one with
    those tensors rounded to float16 (INQ levels and integer buffers stay exact). Zeros are
    stored without their sign.

    Args:
        model: the model; its architecture comes from ``arch`` or from
            :func:`nncompress.models.architecture` (models made by ``build_model``).
        path: the file to write.
        arch: ``{"ref": "name" or "package.module:callable", "kwargs": {...}}``.
        float_dtype: ``"float32"`` or ``"float16"``.

    Returns:
        The file's :class:`CompactInfo`.

    Raises:
        ConfigError: no architecture, an architecture that does not rebuild this model, or a
            bad ``float_dtype``.

    Example:
        >>> from nncompress.models import build_model
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "m.ncz"
        >>> info = save_compact(build_model("tiny_mlp"), target)
        >>> info.file_bytes < info.fp32_bytes
        True
    """
    if float_dtype not in FLOAT_DTYPES:
        raise ConfigError(f"float_dtype={float_dtype!r} is not supported; use 'float32' "
                          "(lossless) or 'float16' (half the size, rounded)")
    model = _finalized(model)
    arch = _architecture(model, arch)
    state = model.state_dict()
    _check_rebuilds(arch, state)
    metas, streams = [], []
    for name, tensor in state.items():
        enc = encode_tensor(name, tensor, float_dtype)
        metas.append(enc.meta | {"bytes": [len(enc.positions), len(enc.values)]})
        streams += [enc.positions, enc.values]
    from nncompress import __version__
    from nncompress._io import atomic_write_bytes

    meta = {"format": FORMAT_NAME, "arch": arch, "float_dtype": float_dtype,
            "writer": f"nncompress {__version__}", "tensors": metas}
    data = pack(meta, streams)
    atomic_write_bytes(path, data)
    return _info(str(path), meta, len(data))


def load_compact(path: str | Path, *, allow_import: bool = False) -> nn.Module:
    """Rebuild the model stored in a .ncz file, in eval mode.

    Args:
        path: the .ncz file.
        allow_import: the file names its architecture; a registered name (``"lenet5"``) is
            always allowed, a ``package.module:callable`` ref imports and runs that code and
            needs ``allow_import=True``: pass it only for files you trust.

    Returns:
        The model with the stored weights; its eval outputs equal the saved model's.

    Raises:
        FormatError: the file is not a valid .ncz file, or does not match its architecture.
        ConfigError: the architecture is an import path and ``allow_import`` is False.

    Example:
        >>> from nncompress.models import build_model
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "m.ncz"
        >>> _ = save_compact(build_model("tiny_mlp"), target)
        >>> type(load_compact(target)).__name__
        'TinyMLP'
    """
    (meta, data), _ = unpack(path)
    return _load(meta, data, str(path), allow_import)


def _load(meta: dict[str, Any], data: bytes, what: str, allow_import: bool) -> nn.Module:
    tensors = _check_meta(meta, len(data), what)
    # Build a storage-free skeleton first: a corrupted or crafted architecture (say, a huge
    # hidden size) is caught by the shape check before anything is allocated.
    try:
        with torch.device("meta"):
            skeleton = _rebuild(meta["arch"], allow_import, what)
    except NNCompressError:
        raise
    except Exception:  # a builder that cannot run on the meta device: check after building
        skeleton = None
    if skeleton is not None:
        _check_matches(tensors, skeleton.state_dict(), what)
    model = _rebuild(meta["arch"], allow_import, what)
    expected = model.state_dict()
    _check_matches(tensors, expected, what)
    state, offset = {}, 0
    for t in tensors:
        pos_len, val_len = t["bytes"]
        positions = data[offset:offset + pos_len]
        values = data[offset + pos_len:offset + pos_len + val_len]
        offset += pos_len + val_len
        state[t["name"]] = decode_tensor(t, positions, values, what)
    # assign=True keeps each stored tensor as it is, dtype included (a float64 model stays
    # float64), while the module's Parameters keep their requires_grad.
    model.load_state_dict(state, assign=True)
    return model.eval()


def inspect_compact(path: str | Path) -> CompactInfo:
    """Per-tensor sizes of a .ncz file, without building the model.

    Example:
        >>> from nncompress.models import build_model
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "m.ncz"
        >>> _ = save_compact(build_model("tiny_mlp"), target)
        >>> inspect_compact(target).tensors[0].name
        'fc1.weight'
    """
    (meta, data), size = unpack(path)
    _check_meta(meta, len(data), str(path))
    return _info(str(path), meta, size)


# ----------------------------------------------------------------------------- helpers
def _info(path: str, meta: dict[str, Any], size: int) -> CompactInfo:
    tensors = []
    for t in meta["tensors"]:
        entries = int(np.prod(t["shape"], dtype=np.int64))
        tensors.append(TensorInfo(
            t["name"], tuple(t["shape"]), t["dtype"], t["values"], t["layout"], entries,
            int(t.get("kept", entries)), t["bytes"][0], t["bytes"][1]))
    return CompactInfo(path, VERSION, size, meta["arch"], meta["float_dtype"], tensors)


def _finalized(model: nn.Module) -> nn.Module:
    from nncompress.prepare import finalize, is_prepared

    return finalize(copy.deepcopy(model)) if is_prepared(model) else model


def _architecture(model: nn.Module, arch: dict[str, Any] | None) -> dict[str, Any]:
    if arch is None:
        from nncompress.models import architecture

        arch = architecture(model)
    if arch is None:
        raise ConfigError(
            f"the {type(model).__name__} model has no architecture reference, so the file could "
            "not rebuild it: build it with nncompress.models.build_model(...), or pass "
            "arch={'ref': 'package.module:callable', 'kwargs': {...}} to save_compact")
    if (not isinstance(arch, dict) or set(arch) != {"ref", "kwargs"}
            or not isinstance(arch["ref"], str) or not isinstance(arch["kwargs"], dict)):
        raise ConfigError(f"arch={arch!r} must be a dict with exactly the keys 'ref' (a string) "
                          "and 'kwargs' (a dict)")
    try:
        return dict(json.loads(json.dumps(arch, allow_nan=False)))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"arch kwargs must be JSON-serialisable: {exc}") from None


def _check_rebuilds(arch: dict[str, Any], state: dict[str, torch.Tensor]) -> None:
    from nncompress.models import build_model

    rebuilt = build_model(arch["ref"], **arch["kwargs"]).state_dict()
    if list(rebuilt) != list(state) or any(rebuilt[k].shape != v.shape for k, v in state.items()):
        raise ConfigError(
            f"architecture {arch['ref']!r} with kwargs {arch['kwargs']} builds a model whose "
            "tensors differ from this model's (names or shapes); pass the matching arch=")


# Import paths inside nncompress that build a model from data alone (a Caffe net's text);
# loading them runs none of the file's code, so they need no allow_import.
_TRUSTED_REFS = frozenset({"nncompress.interop.caffe_net:from_text"})


def _rebuild(arch: dict[str, Any], allow_import: bool, what: str) -> nn.Module:
    from nncompress.models import build_model

    ref = arch["ref"]
    if ":" in ref and ref not in _TRUSTED_REFS and not allow_import:
        raise ConfigError(
            f"{what}: the architecture {ref!r} is an import path; loading it imports and runs "
            "that code. If you trust the file, pass allow_import=True (CLI: --allow-import)")
    try:
        return build_model(ref, **arch["kwargs"])
    except NNCompressError as exc:
        raise FormatError(f"{what}: cannot rebuild the model: {exc}") from None


def _check_meta(meta: dict[str, Any], data_len: int, what: str) -> list[dict[str, Any]]:
    """Check the metadata's structure and that the stream lengths add up."""
    arch, tensors = meta.get("arch"), meta.get("tensors")
    if meta.get("format") != FORMAT_NAME or meta.get("float_dtype") not in FLOAT_DTYPES:
        raise FormatError(f"{what}: metadata is not that of a compact model file")
    if not (isinstance(arch, dict) and isinstance(arch.get("ref"), str)
            and isinstance(arch.get("kwargs"), dict)):
        raise FormatError(f"{what}: metadata has no valid architecture reference")
    if not isinstance(tensors, list) or not all(isinstance(t, dict) for t in tensors):
        raise FormatError(f"{what}: metadata has no valid tensor list")
    total = 0
    for t in tensors:
        _check_tensor_meta(t, what)
        total += sum(t["bytes"])
    if total != data_len:
        raise FormatError(f"{what}: tensor streams take {data_len} bytes, the metadata lists "
                          f"{total}")
    return tensors


def _check_tensor_meta(t: dict[str, Any], what: str) -> None:
    shape: Any = t.get("shape")
    lengths, kept = t.get("bytes"), t.get("kept", 0)
    ok = (isinstance(t.get("name"), str) and t.get("dtype") in DTYPES
          and isinstance(t.get("values"), str) and t.get("layout") in ("dense", "sparse")
          and isinstance(shape, list) and len(shape) <= _MAX_DIMS
          and all(type(d) is int and d >= 0 for d in shape)
          and isinstance(lengths, list) and len(lengths) == 2
          and all(type(n) is int and n >= 0 for n in lengths) and type(kept) is int)
    if not ok or int(np.prod(shape, dtype=np.float64)) > _MAX_NUMEL:
        raise FormatError(f"{what}: bad metadata for tensor {t.get('name')!r}")
    if not 0 <= kept <= int(np.prod(shape, dtype=np.int64)):
        raise FormatError(f"{what}: tensor {t['name']!r} lists {kept} kept entries")


def _check_matches(tensors: list[dict[str, Any]], expected: dict[str, torch.Tensor],
                   what: str) -> None:
    names = [t["name"] for t in tensors]
    if set(names) != set(expected) or len(names) != len(expected):
        missing = sorted(set(expected) - set(names))
        extra = sorted(set(names) - set(expected))
        raise FormatError(f"{what}: the file's tensors do not match the model built from its "
                          f"architecture (missing {missing}, unexpected {extra})")
    for t in tensors:
        if tuple(t["shape"]) != tuple(expected[t["name"]].shape):
            raise FormatError(f"{what}: tensor {t['name']!r} has shape {tuple(t['shape'])} in "
                              f"the file, {tuple(expected[t['name']].shape)} in the model")

"""save_compact / load_compact / inspect_compact: the .ncz compact model file.

A .ncz file holds how to rebuild the model (a registry name or ``package.module:callable`` with
its keyword arguments) and every tensor of its ``state_dict``, each coded by
:mod:`nncompress.export._codec`: INQ tensors (all non-zeros ``±2**e``) as level codes, other
floats as float32 (their own precision) or float16, positions of zeros as gaps, all entropy
coded. The container (:mod:`._container`) is versioned and checksummed.

Loading trusts nothing in the file: every metadata field is checked against its schema
(:mod:`._schema`), the declared tensors against a budget of the file's size, the model built on
the ``meta`` device against the declared tensors, and the real build runs under an allocation
guard of the same budget (:mod:`._guard`); anything else is one ``FormatError``.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nncompress._version import __version__
from nncompress.errors import ConfigError, FormatError
from nncompress.export._codec import DTYPES
from nncompress.export._container import (
    FORMAT_NAME,
    HEADER_SIZE,
    VERSION,
    pack,
    parse,
    unpack_versioned,
)
from nncompress.export._guard import AllocationGuard, budget
from nncompress.export._meta_binary import layout_digest
from nncompress.export._schema import (
    FLOAT_DTYPES,
    _show,
    check_arch,
    check_matches,
    check_meta,
    is_builtin,
)
from nncompress.export._tensors import decode_state, encode_state, stream_sizes

__all__ = ["CompactInfo", "TensorInfo", "inspect_compact", "load_compact", "save_compact"]



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
    mantissa: int = 0  # "pow2" values: the mantissa bits of the levels (0: powers of two)

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
        ConfigError: no architecture, an architecture that does not rebuild this model, a
            bad ``float_dtype``, a value float16 cannot hold (with ``"float16"``), or a model
            that compresses beyond the reader's budget (16 MiB + 1024 bytes per file byte).

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
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}  # from any device
    rebuilt = _check_rebuilds(arch, state)
    metas, coded, streams = encode_state(state, float_dtype)
    from nncompress._io import atomic_write_bytes
    meta = {"format": FORMAT_NAME, "arch": arch, "float_dtype": float_dtype,
            "writer": f"nncompress {__version__}", "coded": coded, "tensors": metas}
    if ":" not in arch["ref"] and _layout(metas) == _layout_of(rebuilt):
        # a registered model rebuilds these very names, dtypes and shapes: leave them out
        meta["implied"] = layout_digest(_layout(metas))
    data = pack(meta, streams, VERSION)
    _check_loads_back(meta, streams, len(data), rebuilt, str(path))
    atomic_write_bytes(path, data)
    return _info(str(path), meta, len(data),
                 stream_sizes(meta, metas, b"".join(streams), str(path)), VERSION)


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
        FormatError: the file is not a valid .ncz file (naming the field and its value), does
            not match its architecture, or describes more than its size allows.
        ConfigError: the architecture is an import path and ``allow_import`` is False.

    Example:
        >>> from nncompress.models import build_model
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "m.ncz"
        >>> _ = save_compact(build_model("tiny_mlp"), target)
        >>> type(load_compact(target)).__name__
        'TinyMLP'
    """
    meta, data, size, _ = unpack_versioned(path)
    return _load(meta, data, str(path), allow_import, size)


def _load(meta: dict[str, Any], data: bytes, what: str, allow_import: bool,
          file_bytes: int | None = None) -> nn.Module:
    """Check the metadata, build the model within the file's budget, decode, assign."""
    if file_bytes is None:  # bytes given without their file: about what the file would take
        file_bytes = HEADER_SIZE + len(json.dumps(meta)) + len(data)
    skeleton = fill_layout(meta, what)
    tensors = check_meta(meta, len(data), file_bytes, what)
    _check_allowed(meta["arch"]["ref"], allow_import, what)
    model = _build(meta["arch"], tensors, budget(file_bytes), what, skeleton)
    state = decode_state(meta, tensors, data, what)
    # assign=True keeps each stored tensor as it is, dtype included (a float64 model stays
    # float64), while the module's Parameters keep their requires_grad.
    model.load_state_dict(state, assign=True)
    return model.eval()


def _build(arch: dict[str, Any], tensors: list[dict[str, Any]], limit: int,
           what: str, skeleton: nn.Module | None = None) -> nn.Module:
    """Build on the meta device and check it against the file first; then for real, guarded.

    A registered model must build on the meta device: a crafted architecture (a huge hidden
    size) fails there, or differs from the file's checked tensors, before anything is
    allocated. When all its tensors are stored, that skeleton is the model: the caller's
    ``load_state_dict(assign=True)`` gives it the decoded tensors. Other builders may need real
    tensors (a Caffe net runs its layers to infer shapes): their real build runs under an
    :class:`AllocationGuard` of the file's budget.
    """
    if skeleton is None:  # (fill_layout builds it for a file that leaves its layout out)
        try:
            with torch.device("meta"):
                skeleton = _call_builder(arch)
        except Exception as exc:  # any failure of the builder is the file's
            if ":" not in arch["ref"]:
                raise _cannot_build(arch, exc, what) from None
    if skeleton is not None:
        check_matches(tensors, skeleton.state_dict(), what)
        if ":" not in arch["ref"] and _all_stored(skeleton):
            # Every tensor of a registered model comes from the file: the skeleton takes the
            # decoded ones as they are (no random init, no second, guarded build).
            return skeleton
    guard = AllocationGuard(limit, what)
    try:
        with guard:
            model = _call_builder(arch)
    except Exception as exc:
        if guard.refused is not None:  # said plainly, even where the builder wrapped it
            raise guard.refused from None
        raise _cannot_build(arch, exc, what) from None
    check_matches(tensors, model.state_dict(), what)
    return model


def _all_stored(model: nn.Module) -> bool:
    """Whether every parameter and buffer of ``model`` is in its state_dict (none is
    non-persistent, so loading the file replaces them all)."""
    stored = set(model.state_dict())
    return all(name in stored for name, _ in
               [*model.named_parameters(remove_duplicate=False),
                *model.named_buffers(remove_duplicate=False)])


def inspect_compact(path: str | Path) -> CompactInfo:
    """Per-tensor sizes of a .ncz file, without decoding the tensors or building the model
    (a registered one, whose tensor names the file leaves out, is built on the meta device).

    Example:
        >>> from nncompress.models import build_model
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "m.ncz"
        >>> _ = save_compact(build_model("tiny_mlp"), target)
        >>> inspect_compact(target).tensors[0].name
        'fc1.weight'
    """
    meta, data, size, version = unpack_versioned(path)
    fill_layout(meta, str(path))
    tensors = check_meta(meta, len(data), size, str(path))
    return _info(str(path), meta, size, stream_sizes(meta, tensors, data, str(path)), version)


def fill_layout(meta: dict[str, Any], what: str) -> nn.Module | None:
    """Give the tensor entries of a file that leaves them out (``implied``) their names,
    dtypes and shapes: those of its registered model, built on the ``meta`` device.

    Returns:
        That model on the meta device (None for a file that names its tensors).

    Raises:
        FormatError: the architecture is not a registered model, does not build, or builds
            tensors other than those the file was written for (their CRC-32 differs).
    """
    if "implied" not in meta:
        return None
    check_arch(meta.get("arch"), what)
    arch: dict[str, Any] = meta["arch"]
    if ":" in arch["ref"]:
        raise FormatError(f"{what}: the file leaves out its tensors' names and shapes, which "
                          f"only a registered architecture may do, not {arch['ref']!r}")
    try:
        with torch.device("meta"):
            skeleton = _call_builder(arch)
    except Exception as exc:  # any failure of the builder is the file's
        raise _cannot_build(arch, exc, what) from None
    tensors, layout = meta["tensors"], _layout_of(skeleton.state_dict())
    if len(tensors) != len(layout) or layout_digest(layout) != meta["implied"]:
        raise FormatError(
            f"{what}: architecture {arch['ref']!r} with kwargs {_show(arch['kwargs'])} builds "
            f"{len(layout)} tensors whose names, dtypes and shapes differ from the "
            f"{len(tensors)} the file was written for (written by "
            f"{_show(meta.get('writer'))}; this is nncompress {__version__})")
    # first in each entry, as version 2 writes them
    tensors[:] = [{"name": name, "dtype": dtype, "shape": shape} | t
                  for t, (name, dtype, shape) in zip(tensors, layout, strict=True)]
    return skeleton


def as_version2(data: bytes, what: str = "data") -> bytes:
    """The bytes of a .ncz file rewritten in format version 2, for readers older than version
    3: the same tensor streams, with JSON metadata that names every tensor. A version 2 file
    comes back unchanged, byte for byte.

    Example:
        >>> from nncompress.models import build_model
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "m.ncz"
        >>> _ = save_compact(build_model("tiny_mlp", input_size=4, hidden=3), target)
        >>> data = target.read_bytes()
        >>> data[4], as_version2(data)[4], as_version2(as_version2(data)) == as_version2(data)
        (3, 2, True)
    """
    meta, body = parse(data, what)
    fill_layout(meta, what)
    meta.pop("implied", None)
    return pack(meta, [body], version=2)


def _layout(entries: list[dict[str, Any]]) -> list[tuple[str, str, list[int]]]:
    return [(t["name"], t["dtype"], list(t["shape"])) for t in entries]


def _layout_of(state: dict[str, torch.Tensor]) -> list[tuple[str, str, list[int]]]:
    return [(name, str(v.dtype).removeprefix("torch."), list(v.shape))
            for name, v in state.items()]


# ----------------------------------------------------------------------------- helpers
def _info(path: str, meta: dict[str, Any], size: int, sizes: list[tuple[int, int]],
          version: int) -> CompactInfo:
    tensors = []
    for t, (pos, val) in zip(meta["tensors"], sizes, strict=True):
        entries = math.prod(t["shape"])
        tensors.append(TensorInfo(
            t["name"], tuple(t["shape"]), t["dtype"], t["values"], t["layout"], entries,
            int(t.get("kept", entries)), pos, val, t.get("mantissa", 0)))
    return CompactInfo(path, version, size, meta["arch"], meta["float_dtype"], tensors)


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


def _check_rebuilds(arch: dict[str, Any], state: dict[str, torch.Tensor]
                    ) -> dict[str, torch.Tensor]:
    rebuilt = _call_builder(arch).state_dict()
    if list(rebuilt) != list(state) or any(rebuilt[k].shape != v.shape for k, v in state.items()):
        raise ConfigError(
            f"architecture {arch['ref']!r} with kwargs {arch['kwargs']} builds a model whose "
            "tensors differ from this model's (names or shapes); pass the matching arch=")
    return rebuilt


def _check_allowed(ref: str, allow_import: bool, what: str) -> None:
    if not is_builtin(ref) and not allow_import:
        raise ConfigError(
            f"{what}: the architecture {ref!r} is an import path; loading it imports and runs "
            "that code. If you trust the file, pass allow_import=True (CLI: --allow-import)")


def _call_builder(arch: dict[str, Any]) -> nn.Module:
    from nncompress.models import build_model

    return build_model(arch["ref"], **arch["kwargs"])


def _cannot_build(arch: dict[str, Any], exc: Exception, what: str) -> FormatError:
    kwargs = json.dumps(arch["kwargs"])
    shown = kwargs if len(kwargs) <= 200 else kwargs[:196] + " ..."
    reason = str(exc) if isinstance(exc, ConfigError | FormatError) else (
        f"{type(exc).__name__}: {exc}")
    return FormatError(f"{what}: cannot rebuild the model: {reason} (architecture "
                       f"{arch['ref']!r} with kwargs {shown})")


def _check_loads_back(meta: dict[str, Any], streams: list[bytes], file_bytes: int,
                      rebuilt: dict[str, torch.Tensor], path: str) -> None:
    """What the reader checks, checked by the writer: it never writes a file it refuses."""
    try:
        tensors = check_meta(meta, sum(map(len, streams)), file_bytes, path)
        check_matches(tensors, rebuilt, path)
    except FormatError as exc:
        raise ConfigError(f"this model cannot be stored in a compact file that loads back: "
                          f"{exc}") from None

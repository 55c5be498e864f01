"""The seed's compact weight files (``.binary``), both variants, read and written (SPEC §7).

For every parameter layer of the net, in the net's order (the seed's scripts took the layers whose
names contain ``conv``, ``ip`` or ``fc``), the weight blob then the bias blob, with no header::

    int32 n              stored entries (non-zeros plus zero-valued fillers), little-endian
    float32[16]          codebook: code 0 is 0.0, the others the blob's non-zero values
    uint8[ceil(n/2)]     4-bit codes, two per byte, high nibble first
    gaps                 4-bit: uint8[ceil(n/2)], two per byte, high nibble first;
                         8-bit: uint8[2 ceil(n/2)], one per byte (a padding byte when n is odd)

Entry ``j`` sits at flat index ``cumsum(gap + 1)[j] - 1``; a gap too large for its field is
bridged by filler entries of code 0. The file does not say which variant it is: the reader takes
the one that consumes the file exactly.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from nncompress._io import atomic_write_bytes
from nncompress.errors import ConfigError, FormatError
from nncompress.interop.caffe_net import CaffeNet
from nncompress.interop.prototxt import parse_text

__all__ = ["decode_blobs", "encode_blob", "load_seed_compact", "save_seed_compact", "seed_blobs"]

LAYER_WORDS = ("conv", "ip", "fc")
_CODEBOOK = 16


def seed_blobs(net: CaffeNet) -> list[tuple[str, str, torch.Tensor]]:
    """``(layer, blob, tensor)`` in the order the seed's files hold them.

    Parameter layers whose names lack ``conv``, ``ip`` and ``fc`` are not in the seed's files.
    """
    out, seen = [], set()
    for step in net.steps:
        if step.key is None or step.key in seen or step.spec.type not in (
                "Convolution", "InnerProduct"):
            continue
        seen.add(step.key)
        if not any(word in step.spec.name for word in LAYER_WORDS):
            continue
        module = net.get_submodule(step.key)
        for blob in ("weight", "bias"):
            value = getattr(module, blob, None)
            if isinstance(value, torch.Tensor):
                out.append((step.spec.name, blob, value))
    return out


def _skipped(net: CaffeNet) -> list[str]:
    return [s.spec.name for s in net.steps if s.key is not None
            and s.spec.type in ("Convolution", "InnerProduct")
            and not any(word in s.spec.name for word in LAYER_WORDS)]


def _pack4(values: np.ndarray) -> bytes:
    padded = np.zeros(2 * ((len(values) + 1) // 2), np.uint8)
    padded[:len(values)] = values
    return ((padded[0::2] << 4) | padded[1::2]).astype(np.uint8).tobytes()


def _unpack4(data: bytes, n: int) -> np.ndarray:
    raw = np.frombuffer(data, np.uint8)
    return np.stack([raw >> 4, raw & 15], axis=1).reshape(-1)[:n]


def encode_blob(values: np.ndarray, gap_bits: int, where: str = "blob") -> bytes:
    """One blob in the seed's layout.

    Raises:
        ConfigError: the blob has more than 15 distinct non-zero values (it is not quantized
            with ``num_quantum_values`` <= 7).

    Example:
        >>> len(encode_blob(np.array([0, 0.5, 0, 0], np.float32), 4))  # 4 + 64 + 1 + 1
        70
    """
    flat = np.ascontiguousarray(values, dtype=np.float32).reshape(-1)
    where_nz = np.flatnonzero(flat)
    levels = np.unique(flat[where_nz])
    if levels.size > _CODEBOOK - 1:
        raise ConfigError(f"{where} has {levels.size} distinct non-zero values; the seed's format "
                          "holds at most 15 (INQ with num_quantum_values <= 7)")
    codebook = np.zeros(_CODEBOOK, np.float32)
    codebook[1:1 + levels.size] = levels
    step = 1 << gap_bits
    advance = np.diff(np.concatenate([[-1], where_nz]))
    fillers = (advance - 1) // step
    n = int((fillers + 1).sum())
    gaps = np.full(n, step - 1, np.int64)
    codes = np.zeros(n, np.int64)
    ends = np.cumsum(fillers + 1) - 1
    gaps[ends] = advance - 1 - fillers * step
    codes[ends] = np.searchsorted(levels, flat[where_nz]) + 1
    if gap_bits == 4:
        gap_bytes = _pack4(gaps.astype(np.uint8))
    else:
        wide = np.zeros(2 * ((n + 1) // 2), np.uint8)
        wide[:n] = gaps
        gap_bytes = wide.tobytes()
    header = np.array([n], "<i4").tobytes() + codebook.astype("<f4").tobytes()
    return header + _pack4(codes.astype(np.uint8)) + gap_bytes


def _decode_one(data: bytes, offset: int, numel: int, gap_bits: int,
                where: str) -> tuple[np.ndarray, int]:
    if offset + 4 + 4 * _CODEBOOK > len(data):
        raise FormatError(f"{where}: the file ends at byte {len(data):,} before its header")
    n = int(np.frombuffer(data, "<i4", 1, offset)[0])
    if not 0 <= n <= numel:
        raise FormatError(f"{where}: {n} entries for a blob of {numel}")
    codebook = np.frombuffer(data, "<f4", _CODEBOOK, offset + 4)
    if not np.isfinite(codebook).all():
        raise FormatError(f"{where}: the codebook holds NaN or infinite values")
    half = (n + 1) // 2
    gap_len = half if gap_bits == 4 else 2 * half
    start, end = offset + 4 + 4 * _CODEBOOK, offset + 4 + 4 * _CODEBOOK + half + gap_len
    if end > len(data):
        raise FormatError(f"{where}: needs {end - len(data):,} bytes more than the file has")
    codes = _unpack4(data[start:start + half], n)
    raw_gaps = data[start + half:end]
    gaps = _unpack4(raw_gaps, n) if gap_bits == 4 else np.frombuffer(raw_gaps, np.uint8)[:n]
    positions = np.cumsum(gaps.astype(np.int64) + 1) - 1
    if n and positions[-1] >= numel:
        raise FormatError(f"{where}: an entry at index {int(positions[-1])} is past the blob's "
                          f"{numel} entries")
    out = np.zeros(numel, np.float32)
    out[positions] = codebook[codes]
    return out, end


def decode_blobs(data: bytes, sizes: Sequence[tuple[str, int]],
                 gap_bits: int | None = None) -> tuple[list[np.ndarray], int]:
    """Decode a whole file: one flat array per ``(name, number of entries)``, and the variant.

    Args:
        data: the file's bytes.
        sizes: the blobs in file order, e.g. ``[("conv1 weight", 500), ("conv1 bias", 20)]``.
        gap_bits: 4 or 8; None tries both and takes the one that reads the file exactly.

    Raises:
        FormatError: no variant (or both) reads the file exactly; the message says why each
            failed.
    """
    failures, found = [], []
    for bits in (4, 8) if gap_bits is None else (gap_bits,):
        try:
            arrays, offset = [], 0
            for name, numel in sizes:
                arr, offset = _decode_one(data, offset, numel, bits, f"{name} ({bits}-bit gaps)")
                arrays.append(arr)
            if offset != len(data):
                raise FormatError(f"{bits}-bit gaps: {len(data) - offset:,} bytes are left over "
                                  f"after the net's {len(sizes)} blobs")
            found.append((arrays, bits))
        except FormatError as exc:
            failures.append(str(exc))
    if len(found) == 1:
        return found[0]
    if found:
        raise FormatError("the file reads exactly with 4-bit and with 8-bit gaps; choose one "
                          "with --gap-bits")
    raise FormatError("not a seed compact file for this net: " + "; ".join(failures))


def save_seed_compact(net: CaffeNet, path: str | Path, gap_bits: int = 4) -> int:
    """Write the weights of ``net`` (masks baked in) as the seed's compact file; returns its size.

    Raises:
        ConfigError: a blob is not quantized to at most 15 non-zero values, ``gap_bits`` is not
            4 or 8, or a parameter layer's name would keep it out of the file.
    """
    if gap_bits not in (4, 8):
        raise ConfigError(f"gap_bits {gap_bits} must be 4 or 8")
    if _skipped(net):
        raise ConfigError(f"layers {', '.join(_skipped(net))} hold weights but their names "
                          "contain none of conv, ip, fc, so the seed's decoder would skip them")
    parts = [encode_blob(t.detach().cpu().numpy(), gap_bits, f"layer '{layer}' {blob}")
             for layer, blob, t in seed_blobs(net)]
    data = b"".join(parts)
    atomic_write_bytes(Path(path), data)
    return len(data)


def load_seed_compact(net_path: str | Path, file: str | Path,
                      input_shape: Sequence[int] | None = None,
                      gap_bits: int | None = None) -> tuple[CaffeNet, str, int]:
    """The net of ``net_path`` with the weights of the seed's compact ``file``.

    Returns:
        The net (eval mode), its prototxt text and the variant read (4 or 8).

    Raises:
        FormatError: a file is missing, or the compact file does not fit the net.

    Example:
        >>> net, text, bits = load_seed_compact("lenet.prototxt", "lenet.binary")  # doctest: +SKIP
    """
    net_file, data_file = Path(net_path), Path(file)
    for p in (net_file, data_file):
        if not p.is_file():
            raise FormatError(f"file not found: {p}")
    text = net_file.read_text(encoding="utf-8")
    net = CaffeNet(parse_text(text, str(net_file)), input_shape=input_shape)
    blobs = seed_blobs(net)
    if _skipped(net):
        warnings.warn(f"layers {', '.join(_skipped(net))} are not in the seed's compact files "
                      "(names without conv, ip, fc); they keep their filler values", stacklevel=2)
    sizes = [(f"{data_file}: layer '{layer}' {blob}", t.numel()) for layer, blob, t in blobs]
    arrays, bits = decode_blobs(data_file.read_bytes(), sizes, gap_bits)
    with torch.no_grad():
        for (_, _, tensor), arr in zip(blobs, arrays):
            tensor.copy_(torch.from_numpy(arr).reshape(tensor.shape))
    return net.eval(), text, bits

"""A generator of crafted .ncz files: checksum-valid, with edited metadata or streams.

It decodes a real file, edits its metadata (any field, to any JSON value, huge numbers, deep
nesting, the net text of a converted Caffe net) or its streams, and packs it again with a valid
checksum, as any tool could. Used by ``test_compact_crafted``, ``test_compact_fuzz`` and
``test_compact_limits``; a script can drive it for long runs (``crafted_cases``).
"""

from __future__ import annotations

import copy
import json
import random
import re
import struct
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

import nncompress as nnc
from nncompress.export import save_compact
from nncompress.export._container import MAGIC, pack, parse
from nncompress.export._meta_binary import encode_meta, read_varint, varint
from nncompress.export.compact import as_version2
from nncompress.models import build_model

CAFFE_REF = "nncompress.interop.caffe_net:from_text"
CAFFE_TEXT = ('name: "tiny" input: "data" input_shape { dim: 1 dim: 1 dim: 6 dim: 6 } '
              'layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" '
              'convolution_param { num_output: 4 kernel_size: 3 stride: 1 pad: 1 } } '
              'layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" '
              'pooling_param { pool: MAX kernel_size: 2 stride: 2 } } '
              'layer { name: "ip1" type: "InnerProduct" bottom: "pool1" top: "ip1" '
              'inner_product_param { num_output: 3 } }')


# ----------------------------------------------------------------------------- base files
def base_files(folder: Path, version: int = 2) -> list[bytes]:
    """Small real files: INQ + DNS CNN, float16 MLP, pruned float MLP, a converted Caffe net.

    ``version`` 2 (JSON metadata, which the edits below change field by field): those four
    rewritten as format version 2, then the CNN and float16 MLP as version 1 files. ``version``
    3: the four files as ``save_compact`` writes them.
    """
    from nncompress.interop.caffe_net import from_text

    torch.manual_seed(0)
    cnn = build_model("tiny_cnn", width=4)
    with torch.no_grad():
        for p in cnn.parameters():
            p.mul_(torch.rand_like(p) < 0.3)
    nnc.prepare(cnn, nnc.INQConfig(num_quantum_values=4))
    nnc.quantize_step(cnn, 1.0)
    mlp = build_model("tiny_mlp", input_size=4, hidden=6)
    with torch.no_grad():
        mlp.fc1.weight.mul_(torch.rand_like(mlp.fc1.weight) < 0.2)
    net = from_text(CAFFE_TEXT)
    caffe_arch = {"ref": CAFFE_REF, "kwargs": {"text": CAFFE_TEXT, "input_shape": None}}
    folder.mkdir(parents=True, exist_ok=True)
    saves: list[tuple[torch.nn.Module, dict[str, Any] | None, str]] = [
        (cnn, None, "float32"), (mlp, None, "float16"), (mlp, None, "float32"),
        (net, caffe_arch, "float32")]
    out = []
    for i, (model, arch, float_dtype) in enumerate(saves):
        save_compact(model, folder / f"base{i}.ncz", arch=arch, float_dtype=float_dtype)
        data = (folder / f"base{i}.ncz").read_bytes()
        out.append(data if version == 3 else as_version2(data))
        (folder / f"base{i}.ncz").write_bytes(out[-1])
    if version == 3:
        return out
    # the same CNN and float16 MLP as format version 1 files (still read)
    for i, (model, float_dtype) in enumerate([(cnn, "float32"), (mlp, "float16")], len(out)):
        out.append(v1_file(model, float_dtype))
        (folder / f"base{i}.ncz").write_bytes(out[-1])
    return out


def v1_file(model: torch.nn.Module, float_dtype: str = "float32") -> bytes:
    """A format version 1 file of a registered model (two streams per tensor)."""
    from nncompress.export._codec import encode_tensor
    from nncompress.models import architecture
    from nncompress.prepare import finalize, is_prepared

    if is_prepared(model):
        model = finalize(copy.deepcopy(model))
    metas, streams = [], []
    for name, tensor in model.state_dict().items():
        enc = encode_tensor(name, tensor, float_dtype)
        metas.append(enc.meta | {"bytes": [len(enc.positions), len(enc.values)]})
        streams += [enc.positions, enc.values]
    meta = {"format": "nncompress-compact", "arch": architecture(model),
            "float_dtype": float_dtype, "writer": "nncompress 0.1.0", "tensors": metas}
    return pack(meta, streams)


def split(data: bytes) -> tuple[dict[str, Any], list[bytes]]:
    """A file's metadata and its streams: the shared coded stream (format version 2), then
    two per tensor (positions, values)."""
    meta, body = parse(data, "base")
    streams, offset = [], 0
    if "coded" in meta:
        streams, offset = [body[:meta["coded"]]], meta["coded"]
    for t in meta["tensors"]:
        for n in t["bytes"]:
            streams.append(body[offset:offset + n])
            offset += n
    return meta, streams


def body_start(data: bytes) -> int:
    """Where the body of a .ncz file starts: after 20 bytes (versions 1 and 2), or after 10
    bytes and the body length as a varint (version 3)."""
    if data[4] != 3:
        return 20
    got = read_varint(data, 10)
    assert got is not None
    return 10 + got[1]


def pack_text(text: bytes, streams: list[bytes]) -> bytes:
    """A file whose metadata is ``text`` as it is (raw method byte), with a valid checksum."""
    meta_stream = b"\x00" + text
    body = varint(len(meta_stream)) + meta_stream + b"".join(streams)
    version = 2 if b'"coded"' in text else 1
    return struct.pack("<4sHHQI", MAGIC, version, 0, len(body), zlib.crc32(body)) + body


# ----------------------------------------------------------------------------- edits
HUGE = [2**31 - 1, 2**31, 2**32 + 1, 2**40, 2**53 + 1, 2**63, 2**64 + 5, 10**20, 10**40]
VALUES: list[Any] = [*HUGE, -1, -(2**63), 0, 1, 2, 3, 7, 127, 128, 255, 1e308, 0.5, -0.0,
                     float("inf"), "", "x", "float16", "float64", "bfloat16", "int64", "bool",
                     "pow2", "raw", "sparse", "dense", "lenet5", "os:system", "y" * 5000, None,
                     True, False, [], {}, [1, 2], [2**40, 2**40], [0], [-1], {"a": 1}]


def _nodes(obj: Any, out: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    """Every (container, key) of a JSON tree."""
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(
        obj, list) else []
    for key, value in items:
        out.append((obj, key))
        _nodes(value, out)
    return out


def _set_any_field(meta: dict[str, Any], rng: random.Random) -> None:
    container, key = rng.choice(_nodes(meta, []))
    container[key] = copy.deepcopy(rng.choice(VALUES))


def _scale_a_number(meta: dict[str, Any], rng: random.Random) -> None:
    numbers = [(c, k) for c, k in _nodes(meta, []) if type(c[k]) is int]
    if numbers:
        c, k = rng.choice(numbers)
        c[k] = rng.choice([c[k] * rng.choice(HUGE), c[k] + rng.choice([-2, -1, 1, 2]), 0,
                           -c[k], c[k] ** 2])


def _drop_or_add_key(meta: dict[str, Any], rng: random.Random) -> None:
    dicts = [c[k] for c, k in _nodes(meta, []) if isinstance(c[k], dict)] + [meta]
    target = rng.choice(dicts)
    if target and rng.random() < 0.6:
        del target[rng.choice(list(target))]
    else:
        target[rng.choice(["kept", "rows", "cols", "levels", "exp_min", "extra", "layout"])] = (
            rng.choice(VALUES))


def _edit_tensor_list(meta: dict[str, Any], rng: random.Random) -> None:
    tensors = meta.get("tensors")
    if not (isinstance(tensors, list) and tensors and all(isinstance(t, dict) for t in tensors)):
        _set_any_field(meta, rng)  # an earlier edit broke the list
        return
    i, j = rng.randrange(len(tensors)), rng.randrange(len(tensors))
    choice = rng.randrange(5)
    if choice == 0:
        tensors.insert(j, copy.deepcopy(tensors[i]))
    elif choice == 1:
        del tensors[i]
    elif choice == 2:
        tensors[i], tensors[j] = tensors[j], tensors[i]
    else:
        key = rng.choice(["shape", "dtype", "values", "layout", "bytes", "name", "kept"])
        tensors[i][key] = copy.deepcopy(tensors[j].get(key))


def _edit_arch(meta: dict[str, Any], rng: random.Random) -> None:
    arch = meta.get("arch")
    if not (isinstance(arch, dict) and isinstance(arch.get("kwargs"), dict)):
        _set_any_field(meta, rng)  # an earlier edit broke the architecture
        return
    kwargs = arch["kwargs"]
    if arch.get("ref") == CAFFE_REF and isinstance(kwargs.get("text"), str):
        numbers = re.findall(r"(?:num_output|dim|kernel_size|pad|stride): (\d+)", kwargs["text"])
        new = str(rng.choice([*HUGE, 0, 100, 10**6, 65536]))
        spot = rng.randrange(max(len(numbers), 1))
        counter = iter(range(10**6))
        kwargs["text"] = re.sub(
            r"((?:num_output|dim|kernel_size|pad|stride): )(\d+)",
            lambda m: m.group(1) + (new if next(counter) == spot else m.group(2)),
            kwargs["text"])
        return
    key = rng.choice(["input_size", "hidden", "width", "num_classes", "in_channels", "bogus"])
    kwargs[key] = rng.choice([*HUGE, 0, -3, 5, 1000, 100000, 3.5, "8", None, [4]])
    if rng.random() < 0.2:
        arch["ref"] = rng.choice(["lenet5", "lenet300_100", "tiny_conv1d", "tiny_mlp"])


MetaEdit = Callable[[dict[str, Any], random.Random], None]
META_EDITS: list[MetaEdit] = [_set_any_field, _set_any_field, _scale_a_number, _scale_a_number,
                              _drop_or_add_key, _edit_tensor_list, _edit_arch, _edit_arch]


def _edit_stream(streams: list[bytes], rng: random.Random) -> list[bytes]:
    """Edit one stream (the metadata's lengths are fixed up by the caller)."""
    live = [i for i, s in enumerate(streams) if s]
    i = rng.choice(live)
    s = bytearray(streams[i])
    choice = rng.randrange(4)
    if choice == 0:
        for _ in range(rng.randint(1, 3)):
            s[rng.randrange(len(s))] = rng.randrange(256)
    elif choice == 1:
        s[0] = rng.choice([0, 1, 2, 3, 255])
    elif choice == 2:
        from nncompress.export._streams import zstd_stream

        s = bytearray(zstd_stream(bytes(rng.choice([0, 1, 255]) for _ in range(
            rng.choice([1, 100, 5000, 200000])))))
    else:
        s = s[:rng.randrange(1, len(s) + 1)] + bytearray(rng.randbytes(rng.randint(0, 4)))
    return [*streams[:i], bytes(s), *streams[i + 1:]]


def _deep_json(streams: list[bytes], meta: dict[str, Any], rng: random.Random) -> bytes:
    depth = rng.choice([40, 1000, 100000])
    text = json.dumps(meta).encode()
    nest = b"[" * depth + b"1" + b"]" * depth
    where = rng.choice([b'"kwargs": {', b'"tensors": ['])
    return pack_text(text.replace(where, where + b'"deep": ' + nest + b", "
                                  if where.endswith(b"{") else where + nest + b", ", 1), streams)


def crafted(base: bytes, rng: random.Random) -> bytes:
    """One checksum-valid edit of ``base``: metadata fields, streams, or raw metadata text."""
    meta, streams = split(base)
    kind = rng.random()
    if kind < 0.04:
        return _deep_json(streams, meta, rng)
    if kind < 0.08:
        text = json.dumps(meta).encode()
        return pack_text(text.replace(b'"float_dtype"', rng.choice(
            [b'"n": NaN, "float_dtype"', b'"n": 1e999, "float_dtype"',
             b'"n": ' + b"9" * 5000 + b', "float_dtype"', b'"float_dtype": 1, "float_dtype"'])),
            streams)
    if kind < 0.25:
        streams = _edit_stream(streams, rng)
        shared = "coded" in meta
        if shared:
            meta["coded"] = len(streams[0])
        pairs = streams[1:] if shared else streams
        for t, pos, val in zip(meta["tensors"], pairs[::2], pairs[1::2], strict=True):
            t["bytes"] = [len(pos), len(val)]
    else:
        for _ in range(rng.choice([1, 1, 1, 2, 3])):
            rng.choice(META_EDITS)(meta, rng)
    try:
        return pack(meta, streams)
    except (TypeError, ValueError):  # a value json cannot write (inf): write the text
        return pack_text(json.dumps(meta).encode(), streams)


V3_NUMBERS = [0, 1, 2, 3, 7, 127, 128, 255, 2**31 - 1, 2**32 + 1, 2**40, 2**63, 2**64 - 1]


def _edit_v3(meta: dict[str, Any], rng: random.Random) -> None:
    """One edit of a version 3 metadata object that its binary form can still hold."""
    tensors = meta["tensors"]
    t = rng.choice(tensors) if tensors else {}
    choice = rng.randrange(9)
    if choice == 0 and t:
        key = rng.choice(["kept", "rows", "cols", "levels", "mantissa", "exp_min"])
        if key in t or key in ("kept", "rows", "cols", "mantissa"):
            t[key] = rng.choice([*V3_NUMBERS, t.get(key, 1) + 1, max(t.get(key, 1) - 1, 0)])
            if key == "exp_min":
                t[key] = rng.choice([t[key], -t[key], -(2**40), -150, 200])
    elif choice == 1 and t:
        for key in ("rows", "cols", "cols_ctx", "mantissa", "kept"):
            if key in t and rng.random() < 0.3:
                del t[key]
        if rng.random() < 0.3:
            t["cols_ctx"] = True
    elif choice == 2 and t:
        t["values"] = rng.choice(["pow2", "raw", "float32", "float16", "bfloat16", "int64"])
        if t["values"] == "pow2":
            t |= {"exp_min": t.get("exp_min", -3), "levels": t.get("levels", 4), "bytes": [0, 0]}
        else:
            t.pop("exp_min", None)
            t.pop("levels", None)
            t["bytes"] = [0, max(t["bytes"][1], 1)]
    elif choice == 3 and t:
        t["layout"] = "dense" if t["layout"] == "sparse" else "sparse"
    elif choice == 4 and t and t["values"] != "pow2":
        t["bytes"] = [0, rng.choice([1, t["bytes"][1] + 1, 2**40])]
    elif choice == 5:
        meta["implied"] = rng.randrange(2**32)
    elif choice == 6 and tensors:
        if rng.random() < 0.5:
            del tensors[rng.randrange(len(tensors))]
        else:
            tensors.insert(rng.randrange(len(tensors)), copy.deepcopy(t))
    elif choice == 7:
        meta["coded"] = rng.choice([0, meta["coded"] + 1, max(meta["coded"] - 1, 0), 2**62])
    else:
        meta["arch"] = {"ref": rng.choice(["tiny_mlp", "tiny_cnn", "lenet5", "nothing"]),
                        "kwargs": rng.choice([{}, {"hidden": rng.choice(V3_NUMBERS)},
                                              meta["arch"]["kwargs"]])}


def crafted_v3_cases(bases: list[bytes], seed: int, count: int) -> Iterator[bytes]:
    """``count`` checksum-valid version 3 files whose binary metadata was edited (registered
    models: the layout left out) or, one in five, whose metadata bytes were changed."""
    rng = random.Random(seed)
    implied = [b for b in bases if "implied" in parse(b, "base")[0]]
    for i in range(count):
        meta, streams = split(implied[i % len(implied)])
        if rng.random() < 0.2:
            raw = bytearray(encode_meta(meta))
            for _ in range(rng.randint(1, 3)):
                raw[rng.randrange(len(raw))] = rng.randrange(256)
            body = varint(len(raw) + 1) + b"\x00" + raw + b"".join(streams)
            yield (MAGIC + (3).to_bytes(2, "little") + zlib.crc32(body).to_bytes(4, "little")
                   + varint(len(body)) + body)
            continue
        for _ in range(rng.choice([1, 1, 2, 3])):
            _edit_v3(meta, rng)
        try:
            yield pack(meta, streams, 3)
        except ValueError:  # a number beyond what a varint holds
            continue


def crafted_cases(bases: list[bytes], seed: int, count: int) -> Iterator[bytes]:
    """``count`` crafted files, reproducible from ``seed``."""
    rng = random.Random(seed)
    for i in range(count):
        yield crafted(bases[i % len(bases)], rng)


def edited(base: bytes, edit: Callable[[dict[str, Any]], None]) -> bytes:
    meta, streams = split(base)
    edit(meta)
    return pack(meta, streams)


def _set_shape(meta: dict[str, Any]) -> None:
    meta["tensors"][0]["shape"] = [2**31 - 1] * 4


def _half_one(meta: dict[str, Any]) -> None:
    meta["tensors"][2]["dtype"] = "float16"


BIG_IP = CAFFE_TEXT.replace("dim: 6 dim: 6", "dim: 256 dim: 256").replace(
    "num_output: 3", "num_output: 131072")  # 4 x 128 x 128 inputs: 8 GiB of ip1 weights
# the same parameters (conv1 4x1x3x3, ip1 3x36), but 2 x 4 x 1998^2 floats (128 MB) of conv1
# output while the net infers its shapes: within what the Caffe builder allows, beyond the budget
BIG_ACTIVATIONS = CAFFE_TEXT.replace("pad: 1", "pad: 997").replace(
    "kernel_size: 2 stride: 2", "kernel_size: 666 stride: 666")
# 2 x 4 x 60006^2 floats (115 GB) of conv1 output
HUGE_BLOB = CAFFE_TEXT.replace("pad: 1", "pad: 30001").replace(
    "kernel_size: 2 stride: 2", "kernel_size: 20002 stride: 20002")


def reported_cases(bases: list[bytes]) -> dict[str, bytes]:
    """The crafted files of the bug report, by name (``bases`` from :func:`base_files`)."""
    meta, streams = split(bases[0])
    deep = json.dumps(meta).encode().replace(
        b'"kwargs": {', b'"kwargs": {"deep": ' + b"[" * 100000 + b"]" * 100000 + b", ", 1)
    return {
        "input_size": edited(bases[1], lambda m: m["arch"]["kwargs"].update(
            input_size=1099511627776)),
        "shape_product": edited(bases[1], _set_shape),
        "kwargs_product": edited(bases[1], lambda m: m["arch"]["kwargs"].update(
            input_size=2**31 - 1, hidden=2**31 - 1)),
        "deep_json": pack_text(deep, streams),
        "float16_dtype": edited(bases[1], _half_one),
        "caffe_8gb": edited(bases[3], lambda m: m["arch"]["kwargs"].update(text=BIG_IP)),
        "caffe_activations": edited(bases[3], lambda m: m["arch"]["kwargs"].update(
            text=BIG_ACTIVATIONS)),
        "caffe_huge_blob": edited(bases[3], lambda m: m["arch"]["kwargs"].update(
            text=HUGE_BLOB)),
    }

"""Crafted .ncz files: checksum-valid, with edited metadata or streams, each one FormatError.

Also the generator of such files that the fuzz and resource-limit tests use: it decodes a
real file, edits its metadata (any field, to any JSON value, huge numbers, deep nesting, the
net text of a converted Caffe net) or its streams, and packs it again with a valid checksum.
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

import pytest
import torch

import nncompress as nnc
from nncompress.errors import ConfigError, FormatError
from nncompress.export import load_compact, save_compact
from nncompress.export._container import MAGIC, VERSION, pack, parse
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
def base_files(folder: Path) -> list[bytes]:
    """Small real files: INQ + DNS CNN, float16 MLP, pruned float MLP, a converted Caffe net."""
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
    saves: list[tuple[torch.nn.Module, dict[str, Any] | None, str]] = [
        (cnn, None, "float32"), (mlp, None, "float16"), (mlp, None, "float32"),
        (net, caffe_arch, "float32")]
    out = []
    for i, (model, arch, float_dtype) in enumerate(saves):
        save_compact(model, folder / f"base{i}.ncz", arch=arch, float_dtype=float_dtype)
        out.append((folder / f"base{i}.ncz").read_bytes())
    return out


def split(data: bytes) -> tuple[dict[str, Any], list[bytes]]:
    """A file's metadata and its streams, two per tensor (positions, values)."""
    meta, body = parse(data, "base")
    streams, offset = [], 0
    for t in meta["tensors"]:
        for n in t["bytes"]:
            streams.append(body[offset:offset + n])
            offset += n
    return meta, streams


def pack_text(text: bytes, streams: list[bytes]) -> bytes:
    """A file whose metadata is ``text`` as it is (raw method byte), with a valid checksum."""
    meta_stream = b"\x00" + text
    length, n = bytearray(), len(meta_stream)
    while True:
        length.append((n & 0x7F) | (0x80 if n >> 7 else 0))
        n >>= 7
        if not n:
            break
    body = bytes(length) + meta_stream + b"".join(streams)
    return struct.pack("<4sHHQI", MAGIC, VERSION, 0, len(body), zlib.crc32(body)) + body


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
        for t, pos, val in zip(meta["tensors"], streams[::2], streams[1::2], strict=True):
            t["bytes"] = [len(pos), len(val)]
    else:
        for _ in range(rng.choice([1, 1, 1, 2, 3])):
            rng.choice(META_EDITS)(meta, rng)
    try:
        return pack(meta, streams)
    except (TypeError, ValueError):  # a value json cannot write (inf): write the text
        return pack_text(json.dumps(meta).encode(), streams)


def crafted_cases(bases: list[bytes], seed: int, count: int) -> Iterator[bytes]:
    """``count`` crafted files, reproducible from ``seed``."""
    rng = random.Random(seed)
    for i in range(count):
        yield crafted(bases[i % len(bases)], rng)


def _edited(base: bytes, edit: Callable[[dict[str, Any]], None]) -> bytes:
    meta, streams = split(base)
    edit(meta)
    return pack(meta, streams)


def _set_shape(meta: dict[str, Any]) -> None:
    meta["tensors"][0]["shape"] = [2**31 - 1] * 4


def _half_one(meta: dict[str, Any]) -> None:
    meta["tensors"][2]["dtype"] = "float16"


BIG_IP = CAFFE_TEXT.replace("dim: 6 dim: 6", "dim: 256 dim: 256").replace(
    "num_output: 3", "num_output: 131072")  # 4 x 128 x 128 inputs: 8 GiB of ip1 weights
# the same parameters (conv1 4x1x3x3, ip1 3x36), but 2 x 4 x 60006^2 floats of conv1 output
# while the net infers its shapes
BIG_ACTIVATIONS = CAFFE_TEXT.replace("pad: 1", "pad: 30001").replace(
    "kernel_size: 2 stride: 2", "kernel_size: 20002 stride: 20002")


def reported_cases(bases: list[bytes]) -> dict[str, bytes]:
    """The crafted files of the bug report, by name (``bases`` from :func:`base_files`)."""
    meta, streams = split(bases[0])
    deep = json.dumps(meta).encode().replace(
        b'"kwargs": {', b'"kwargs": {"deep": ' + b"[" * 100000 + b"]" * 100000 + b", ", 1)
    return {
        "input_size": _edited(bases[1], lambda m: m["arch"]["kwargs"].update(
            input_size=1099511627776)),
        "shape_product": _edited(bases[1], _set_shape),
        "kwargs_product": _edited(bases[1], lambda m: m["arch"]["kwargs"].update(
            input_size=2**31 - 1, hidden=2**31 - 1)),
        "deep_json": pack_text(deep, streams),
        "float16_dtype": _edited(bases[1], _half_one),
        "caffe_8gb": _edited(bases[3], lambda m: m["arch"]["kwargs"].update(text=BIG_IP)),
        "caffe_activations": _edited(bases[3], lambda m: m["arch"]["kwargs"].update(
            text=BIG_ACTIVATIONS)),
    }


# ----------------------------------------------------------------------------- the cases
@pytest.fixture(scope="module")
def inq_mlp(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """tiny_mlp (4x4 inputs, 6 hidden), all INQ levels: fc1.weight is 6 x 16, 'pow2'."""
    torch.manual_seed(1)
    model = build_model("tiny_mlp", input_size=4, hidden=6)
    nnc.prepare(model, nnc.INQConfig(num_quantum_values=4))
    nnc.quantize_step(model, 1.0)
    path = tmp_path_factory.mktemp("inq") / "inq.ncz"
    save_compact(model, path)
    return path.read_bytes()


@pytest.fixture(scope="module")
def bases(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    return base_files(tmp_path_factory.mktemp("bases"))


def _error(tmp_path: Path, data: bytes) -> str:
    path = tmp_path / "crafted.ncz"
    path.write_bytes(data)
    with pytest.raises(FormatError) as err:
        load_compact(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ")
    assert "\n" not in message
    return message.removeprefix(f"{path}: ")


def test_every_base_file_loads(tmp_path: Path, bases: list[bytes]) -> None:
    for i, data in enumerate(bases):
        (tmp_path / f"{i}.ncz").write_bytes(data)
        model = load_compact(tmp_path / f"{i}.ncz")
        assert sum(p.numel() for p in model.parameters()) > 20


def test_huge_input_size_names_the_field(tmp_path: Path, bases: list[bytes]) -> None:
    assert _error(tmp_path, reported_cases(bases)["input_size"]) == (
        "metadata field arch.kwargs.input_size is 1099511627776, expected an integer in "
        "[-2147483647, 2147483647]")


def test_sizes_whose_product_overflows(tmp_path: Path, bases: list[bytes]) -> None:
    cases = reported_cases(bases)
    message = _error(tmp_path, cases["shape_product"])
    assert message.startswith(f"the metadata declares tensors of {4 * (2**31 - 1) ** 4 + 304} "
                              "bytes in all (the largest, 'fc1.weight', of shape [2147483647, ")
    assert re.search(r"at most \d+ bytes for a file of \d+ bytes \(16 MiB \+ 1024 per file "
                     r"byte\)$", message), message
    data = _edited(bases[1], lambda m: m["tensors"][0]["shape"].__setitem__(0, 2**63))
    assert _error(tmp_path, data) == (
        "metadata field tensors[0].shape[0] (tensor 'fc1.weight') is 9223372036854775808, "
        "expected an integer in [0, 2147483647]")
    # within each bound, but the model the kwargs build overflows torch's sizes
    assert _error(tmp_path, cases["kwargs_product"]).startswith("cannot rebuild the model: ")


@pytest.mark.parametrize("depth", [33, 5000, 200000])
def test_deeply_nested_json(tmp_path: Path, bases: list[bytes], depth: int) -> None:
    meta, streams = split(bases[0])
    text = json.dumps(meta).encode().replace(
        b'"kwargs": {', b'"kwargs": {"deep": ' + b"[" * depth + b"]" * depth + b", ", 1)
    assert _error(tmp_path, pack_text(text, streams)) == (
        f"metadata nests {depth + 3} levels deep, at most 32 are allowed")


def test_float16_file_whose_dtype_field_disagrees(tmp_path: Path, bases: list[bytes]) -> None:
    assert _error(tmp_path, reported_cases(bases)["float16_dtype"]) == (
        "tensor 'fc2.weight' is float16 in the file, float32 in the model built from its "
        "architecture (and the file's other tensors)")

    def all_half(meta: dict[str, Any]) -> None:  # a model converted as a whole: loads
        for t in meta["tensors"]:
            t["dtype"] = "float16"

    (tmp_path / "half.ncz").write_bytes(_edited(bases[1], all_half))
    model = load_compact(tmp_path / "half.ncz")
    assert {p.dtype for p in model.parameters()} == {torch.float16}


def test_caffe_net_asking_for_8_gb_in_a_tiny_file(tmp_path: Path, bases: list[bytes]) -> None:
    data = reported_cases(bases)["caffe_8gb"]
    assert len(data) < 1000
    assert _error(tmp_path, data) == (
        "tensor 'ip1.weight' has shape (3, 36) in the file, (131072, 65536) in the model")


def test_caffe_net_whose_activations_are_huge(tmp_path: Path, bases: list[bytes]) -> None:
    # the guarded build stops before allocating the activations
    message = _error(tmp_path, reported_cases(bases)["caffe_activations"])
    assert re.search(r"building the model would take more than \d+ bytes \(\w+ asks for "
                     r"115\d{9} more", message), message


@pytest.mark.parametrize(("field", "value", "expected"), [
    ("dtype", "complex64", "one of float16, bfloat16"),
    ("values", "float64", "'pow2' or 'float32' for a float32 tensor in a float32 file"),
    ("layout", "diagonal", "'dense' or 'sparse'"),
    ("kept", 10**6, "an integer in [0, 96]"),
    ("bytes", [-1, 3], "[position stream bytes >= 0, value stream bytes >= 1]"),
    ("levels", 500, "an integer in [1, 127]"),
    ("exp_min", 200, "an integer in [-149, "),
    ("rows", 7, "an integer in [0, 6]"),
])
def test_tensor_fields_are_named(tmp_path: Path, inq_mlp: bytes, field: str, value: Any,
                                 expected: str) -> None:
    meta, _ = split(inq_mlp)
    assert meta["tensors"][0]["values"] == "pow2"
    message = _error(tmp_path, _edited(inq_mlp, lambda m: m["tensors"][0].update(
        {field: value})))
    assert message.startswith(f"metadata field tensors[0].{field} (tensor 'fc1.weight') is "
                              f"{value!r}, expected {expected}")


def test_duplicate_names_unknown_keys_and_non_numbers(tmp_path: Path,
                                                      bases: list[bytes]) -> None:
    data = _edited(bases[1], lambda m: m["tensors"][1].update(name="fc1.weight"))
    assert _error(tmp_path, data) == ("metadata field tensors[1].name is 'fc1.weight', "
                                      "expected a name no other tensor has")
    data = _edited(bases[1], lambda m: m["tensors"][1].update(scale=2))
    assert "unknown ['scale']" in _error(tmp_path, data)
    meta, streams = split(bases[1])
    text = json.dumps(meta).encode().replace(b'"hidden": 6', b'"hidden": NaN')
    assert _error(tmp_path, pack_text(text, streams)).startswith(
        "metadata is not valid JSON (NaN is not a number JSON allows")
    text = json.dumps(meta).encode().replace(b'"hidden": 6', b'"hidden": 1e999')
    assert _error(tmp_path, pack_text(text, streams)) == (
        "metadata field arch.kwargs.hidden is inf, expected a finite number in "
        "[-2147483647, 2147483647]")


def test_streams_must_decode_to_the_declared_counts(tmp_path: Path, inq_mlp: bytes) -> None:
    from nncompress.export._streams import RANS_MAX_SYMBOLS, zstd_stream

    meta, streams = split(inq_mlp)
    assert (meta["tensors"][0]["layout"], meta["tensors"][0].get("rows")) == ("dense", None)
    streams[1] = zstd_stream(bytes(10**5))  # fc1.weight codes: 100000 bytes for 96 entries
    meta["tensors"][0]["bytes"][1] = len(streams[1])
    assert _error(tmp_path, pack(meta, streams)).startswith(
        "tensor 'fc1.weight': zstd data declares 100000 bytes, more than the 96 possible")
    from nncompress.export._codec import decode_tensor

    entry = {"name": "w", "dtype": "float32", "shape": [RANS_MAX_SYMBOLS + 1],
             "values": "pow2", "exp_min": 0, "levels": 1, "kept": 0, "layout": "dense"}
    with pytest.raises(FormatError, match=f"{RANS_MAX_SYMBOLS + 1} entropy-coded values, more "
                                          f"than the {RANS_MAX_SYMBOLS} a stream may hold"):
        decode_tensor(entry, b"", b"\x02" + bytes(8))


def test_decoded_values_must_be_valid_for_their_dtype() -> None:
    from nncompress.export._codec import decode_tensor, encode_tensor

    enc = encode_tensor("flags", torch.tensor([True, False, True]), "float32")
    assert torch.equal(decode_tensor(enc.meta, enc.positions, enc.values),
                       torch.tensor([True, False, True]))
    with pytest.raises(FormatError, match="'flags': a bool tensor holds bytes other than 0 and 1"):
        decode_tensor(enc.meta, enc.positions, b"\x00\x01\x07\x01")


def test_guard_counts_the_live_tensors() -> None:
    from nncompress.export._guard import AllocationGuard

    with AllocationGuard(10 << 20, "t") as guard:
        for _ in range(10):
            x = torch.zeros(1 << 20)  # 4 MiB, the previous one freed each time
        keep = torch.zeros(1 << 20)
        assert guard.live == 8 << 20
    assert x.numel() == keep.numel()
    with pytest.raises(FormatError) as err, AllocationGuard(10 << 20, "t"):
        held = [torch.zeros(1 << 20) for _ in range(3)]
    assert str(err.value) == (
        "t: building the model would take more than 10485760 bytes (zeros asks for 4194304 "
        "more, 8388608 are in use): the file's architecture describes a far bigger model than "
        "its size allows")
    assert "held" not in locals()


def test_writer_refuses_a_file_the_reader_would_refuse(tmp_path: Path) -> None:
    model = torch.nn.Linear(4096, 1100)  # 18 MB of zeros: a file of a few hundred bytes
    torch.nn.init.zeros_(model.weight)
    torch.nn.init.zeros_(model.bias)
    arch = {"ref": "torch.nn:Linear", "kwargs": {"in_features": 4096, "out_features": 1100}}
    with pytest.raises(ConfigError) as err:
        save_compact(model, tmp_path / "zeros.ncz", arch=arch)
    assert str(err.value).startswith(
        "this model cannot be stored in a compact file that loads back: "
        f"{tmp_path / 'zeros.ncz'}: the metadata declares tensors of 18026800 bytes in all")
    assert not (tmp_path / "zeros.ncz").exists()


def test_float16_save_refuses_values_that_would_become_inf(tmp_path: Path) -> None:
    model = build_model("tiny_mlp", input_size=4, hidden=6)
    with torch.no_grad():
        model.fc2.bias[3] = -1e6  # not a power of two: stored as a float
    with pytest.raises(ConfigError) as err:
        save_compact(model, tmp_path / "m.ncz", float_dtype="float16")
    assert str(err.value) == (
        "tensor 'fc2.bias' holds -1e+06, beyond float16's range (±65504): stored so it would "
        "become -inf; save with float_dtype='float32' (lossless)")
    assert not (tmp_path / "m.ncz").exists()
    save_compact(model, tmp_path / "m.ncz")  # float32 keeps it
    assert load_compact(tmp_path / "m.ncz").fc2.bias[3].item() == -1e6
    with torch.no_grad():  # an infinity already in the model is stored as it is
        model.fc2.bias[3] = float("inf")
    save_compact(model, tmp_path / "inf.ncz", float_dtype="float16")
    assert load_compact(tmp_path / "inf.ncz").fc2.bias[3].item() == float("inf")


def test_a_few_hundred_crafted_files_raise_only_format_errors(tmp_path: Path,
                                                              bases: list[bytes]) -> None:
    from nncompress.errors import NNCompressError
    from nncompress.export.compact import _load

    outcomes: dict[str, int] = {}
    for data in crafted_cases(bases, seed=7, count=300):
        try:
            meta, streams = parse(data, "fuzz")
            _load(meta, streams, "fuzz", False, len(data))
            outcome = "loaded"
        except NNCompressError as exc:
            assert str(exc).startswith("fuzz")
            outcome = type(exc).__name__
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    assert outcomes["FormatError"] > 200, outcomes
    assert set(outcomes) <= {"FormatError", "ConfigError", "loaded"}, outcomes

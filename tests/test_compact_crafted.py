"""Crafted .ncz files: checksum-valid, with edited metadata or streams, each one FormatError.

One test per reported case, one per field check, and a seeded run of a few hundred generated
files (the generator is ``tests/compact_crafting.py``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch

import nncompress as nnc
from nncompress.errors import ConfigError, FormatError
from nncompress.export import load_compact, save_compact
from nncompress.export._container import pack, parse
from nncompress.models import build_model
from tests.compact_crafting import (
    as_version2,
    base_files,
    crafted_cases,
    edited,
    pack_text,
    reported_cases,
    split,
    v1_file,
)


def load_compact_bytes(tmp_path: Path, data: bytes) -> torch.nn.Module:
    (tmp_path / "loaded.ncz").write_bytes(data)
    return load_compact(tmp_path / "loaded.ncz")


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
    return as_version2(path.read_bytes())


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
    data = edited(bases[1], lambda m: m["tensors"][0]["shape"].__setitem__(0, 2**63))
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

    (tmp_path / "half.ncz").write_bytes(edited(bases[1], all_half))
    model = load_compact(tmp_path / "half.ncz")
    assert {p.dtype for p in model.parameters()} == {torch.float16}


def test_caffe_net_asking_for_8_gb_in_a_tiny_file(tmp_path: Path, bases: list[bytes]) -> None:
    data = reported_cases(bases)["caffe_8gb"]
    assert len(data) < 1000
    message = _error(tmp_path, data)
    # refused on the meta device: by the Caffe builder's own bound, or as another shape
    assert "ip1" in message and "131072" in message, message


def test_caffe_net_whose_activations_are_huge(tmp_path: Path, bases: list[bytes]) -> None:
    # the guarded build stops before allocating the activations
    message = _error(tmp_path, reported_cases(bases)["caffe_activations"])
    assert re.search(r"^building the model would take more than \d+ bytes \(\w+ asks for "
                     r"127\d{6} more", message), message
    message = _error(tmp_path, reported_cases(bases)["caffe_huge_blob"])
    assert "conv1" in message or "would take more than" in message, message


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
    message = _error(tmp_path, edited(inq_mlp, lambda m: m["tensors"][0].update(
        {field: value})))
    assert message.startswith(f"metadata field tensors[0].{field} (tensor 'fc1.weight') is "
                              f"{value!r}, expected {expected}")


def test_duplicate_names_unknown_keys_and_non_numbers(tmp_path: Path,
                                                      bases: list[bytes]) -> None:
    data = edited(bases[1], lambda m: m["tensors"][1].update(name="fc1.weight"))
    assert _error(tmp_path, data) == ("metadata field tensors[1].name is 'fc1.weight', "
                                      "expected a name no other tensor has")
    data = edited(bases[1], lambda m: m["tensors"][1].update(scale=2))
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

    meta, streams = split(v1_file(load_compact_bytes(tmp_path, inq_mlp)))  # format version 1
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

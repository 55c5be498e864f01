"""Format version 3's binary metadata: exact bytes, round trips, and every malformed input."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import torch

import nncompress as nnc
from nncompress.errors import FormatError
from nncompress.export import inspect_compact, load_compact, save_compact
from nncompress.export._container import _load_json, pack, parse
from nncompress.export._meta_binary import decode_meta, encode_meta, layout_digest
from nncompress.export.compact import fill_layout
from nncompress.models import build_model
from tests.compact_crafting import as_version2


def _json(text: bytes, field: str) -> Any:
    return _load_json(text, field, "x")


def _meta(**changes: Any) -> dict[str, Any]:
    meta = {"arch": {"ref": "m:f", "kwargs": {"n": 2}}, "float_dtype": "float16",
            "writer": "", "coded": 300, "tensors": [
                {"name": "w", "dtype": "float32", "shape": [2, 3], "values": "pow2",
                 "exp_min": -5, "levels": 7, "mantissa": 1, "kept": 4, "rows": 2, "cols": 3,
                 "cols_ctx": True, "layout": "sparse", "bytes": [0, 0]},
                {"name": "b", "dtype": "int64", "shape": [], "values": "raw",
                 "layout": "dense", "bytes": [0, 130]}]}
    meta.update(changes)
    return meta


def test_bytes_of_a_hand_written_metadata() -> None:
    data = encode_meta(_meta())
    assert data.hex(" ") == " ".join([
        "01",                         # float16 file
        "00",                         # writer: empty string
        "03 6d 3a 66",                # arch ref "m:f"
        "07", *(f"{c:02x}" for c in b'{"n":2}'),  # kwargs as JSON text
        "ac 02",                      # coded 300 (LEB128)
        "00",                         # flags: names, dtypes and shapes stored
        "02",                         # two tensors
        "01 77 00 02 02 03",          # "w", float32, rank 2: 2 x 3
        "00 3f",                      # pow2; sparse, kept, rows, cols, cols_ctx, mantissa
        "09 07",                      # exp_min -5 (zigzag 9), 7 levels
        "01 04 02 03",                # mantissa 1, kept 4, rows 2, cols 3
        "01 62 08 00",                # "b", int64, rank 0
        "01 00",                      # raw values, dense, no optional field
        "82 01",                      # value stream of 130 bytes
    ])
    assert decode_meta(data, "x", _json) == _meta()


def test_implied_layout_leaves_names_dtypes_and_shapes_out() -> None:
    meta = _meta(implied=0x01020304)
    data = encode_meta(meta)
    assert data[16:21] == bytes([1, 4, 3, 2, 1])  # the flag, then the CRC-32 little-endian
    decoded = decode_meta(data, "x", _json)
    assert decoded["implied"] == 0x01020304
    for t, want in zip(decoded["tensors"], meta["tensors"], strict=True):
        assert t == {k: v for k, v in want.items() if k not in ("name", "dtype", "shape")}
    assert len(data) == len(encode_meta(_meta())) - 10 + 4  # 10 bytes of layout, a CRC


def test_layout_digest_is_a_crc_of_the_layout_text() -> None:
    import zlib

    layout = [("a.weight", "float32", [3, 4]), ("a.bias", "float16", []),
              ("n", "int64", [1])]
    text = "a.weight float32 3x4\na.bias float16 \nn int64 1"
    assert layout_digest(layout) == zlib.crc32(text.encode())
    assert layout_digest(layout) != layout_digest(layout[::-1])


def test_every_truncation_and_trailing_byte_is_refused() -> None:
    data = encode_meta(_meta())
    for n in range(len(data)):
        with pytest.raises(FormatError, match=r"^x: metadata (ends inside .*|announces 2 "
                           rf"tensors, more than its bytes can hold) \(at byte \d+ of {n}\)$"):
            decode_meta(data[:n], "x", _json)
    with pytest.raises(FormatError, match="has bytes after its last tensor entry"):
        decode_meta(data + b"\x00", "x", _json)


@pytest.mark.parametrize(("at", "value", "message"), [
    (0, 2, "field float_dtype has the unknown code 2"),
    (16, 2, r"flags 0x2 has unknown bits"),
    (20, 10, r"field tensors\[0\].dtype has the unknown code 10"),
    (24, 12, r"field tensors\[0\].values has the unknown code 12"),
    (25, 0x7F, r"field tensors\[0\] flags 0x7f has unknown bits"),
    (17, 100, "announces 100 tensors, more than its bytes can hold"),
    (2, 0xFF, "ends inside arch.ref"),
])
def test_bad_codes_are_named(at: int, value: int, message: str) -> None:
    data = bytearray(encode_meta(_meta()))
    data[at] = value
    with pytest.raises(FormatError, match=message):
        decode_meta(bytes(data), "x", _json)


def test_bad_numbers_and_text_are_refused() -> None:
    data = encode_meta(_meta())
    # coded (bytes 14-15) as an 11-byte varint, then as one above 2**64 - 1
    for number in (b"\xff" * 10 + b"\x01", b"\xff" * 9 + b"\x7f"):
        with pytest.raises(FormatError, match="has a bad number in coded"):
            decode_meta(data[:14] + number + data[16:], "x", _json)
    with pytest.raises(FormatError, match=r"field arch\.ref is not UTF-8 text"):
        decode_meta(data[:2] + b"\x03\xff\xfe\xfd" + data[6:], "x", _json)
    with pytest.raises(ValueError, match="does not fit a metadata varint"):
        encode_meta(_meta(coded=2**64))


def test_bad_kwargs_json_is_a_format_error(tmp_path: Path) -> None:
    model = build_model("tiny_mlp", input_size=4, hidden=8)
    save_compact(model, tmp_path / "m.ncz")
    meta, _ = parse((tmp_path / "m.ncz").read_bytes())
    for kwargs, message in (("[" * 40 + "]" * 40, "arch.kwargs nests 40 levels deep"),
                            ("{nan}", "arch.kwargs is not valid JSON"),
                            ('{"hidden": NaN}', "NaN is not a number JSON allows")):
        raw = bytearray(encode_meta(meta))
        old = json.dumps(meta["arch"]["kwargs"], separators=(",", ":")).encode()
        new = kwargs.encode()
        start = raw.index(old)
        raw[start - 1:start + len(old)] = bytes([len(new)]) + new
        with pytest.raises(FormatError) as err:
            decode_meta(bytes(raw), "f.ncz", lambda text, field: _load_json(text, field, "f"))
        assert str(err.value).startswith("f: ") and message in str(err.value), str(err.value)


def test_round_trip_through_the_container(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("lenet5")
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(torch.rand_like(p) < 0.01)
    nnc.prepare(model, nnc.INQConfig(num_quantum_values=4, mantissa_bits=1))
    nnc.quantize_step(model, 1.0)
    info = save_compact(model, tmp_path / "m.ncz")
    data = (tmp_path / "m.ncz").read_bytes()
    meta, body = parse(data)
    assert pack(copy.deepcopy(meta), [body]) == data  # decode then encode: the same bytes
    assert "implied" in meta and "name" not in meta["tensors"][0]
    # the same streams with version 2's JSON metadata take 60 to 140 bytes more
    v2 = as_version2(data)
    assert parse(v2)[1] == body
    assert 60 <= len(v2) - len(data) <= 140, (len(v2), len(data))
    assert info.version == 3 and info.file_bytes == len(data)
    loaded = load_compact(tmp_path / "m.ncz")
    for (name, want), got in zip(nnc.finalize(model).state_dict().items(),
                                 loaded.state_dict().values(), strict=True):
        assert torch.equal(torch.where(want == 0, 0.0, want), got), name


def test_files_name_their_tensors_when_the_model_is_not_rebuilt_as_saved(
        tmp_path: Path) -> None:
    # a float64 copy of a registered model: the registry builds float32 tensors
    model = build_model("tiny_mlp", input_size=4, hidden=8).double()
    save_compact(model, tmp_path / "d.ncz")
    meta, _ = parse((tmp_path / "d.ncz").read_bytes())
    assert "implied" not in meta and meta["tensors"][0]["dtype"] == "float64"
    assert load_compact(tmp_path / "d.ncz").fc1.weight.dtype == torch.float64
    assert inspect_compact(tmp_path / "d.ncz").version == 3


def test_an_implied_layout_needs_a_registered_model_that_builds_it(tmp_path: Path) -> None:
    save_compact(build_model("tiny_mlp", input_size=4, hidden=8), tmp_path / "m.ncz")
    meta, body = parse((tmp_path / "m.ncz").read_bytes())
    bad = copy.deepcopy(meta)
    bad["arch"]["ref"] = "torch.nn:Linear"
    with pytest.raises(FormatError, match=r"leaves out its tensors' names and shapes, which "
                       r"only a registered architecture may do, not 'torch\.nn:Linear'"):
        fill_layout(bad, "f.ncz")
    bad = copy.deepcopy(meta)
    del bad["tensors"][0]
    with pytest.raises(FormatError, match="builds 4 tensors whose names, dtypes and shapes "
                       "differ from the 3 the file was written for"):
        fill_layout(bad, "f.ncz")
    bad = copy.deepcopy(meta)
    bad["arch"]["kwargs"] = {"hidden": 2**40}
    with pytest.raises(FormatError, match=r"arch.kwargs.hidden is 1099511627776"):
        fill_layout(bad, "f.ncz")
    # version 2 files never leave the layout out
    v2 = json.loads(json.dumps(meta)) | {"tensors": []}
    with pytest.raises(ValueError, match="format version 2 cannot hold this metadata"):
        pack(v2, [body], 2)

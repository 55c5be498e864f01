"""save_compact / load_compact / inspect_compact on tiny models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import nncompress as nnc
from nncompress.errors import ConfigError, FormatError
from nncompress.export import inspect_compact, load_compact, save_compact
from nncompress.models import build_model
from tests.compact_crafting import as_version2, body_start


def make_bn_net(width: int = 6) -> nn.Module:
    """A model with batch norm buffers (int64 counter included), used via its import path."""
    return nn.Sequential(nn.Conv2d(1, width, 3), nn.BatchNorm2d(width), nn.ReLU(),
                         nn.Flatten(), nn.Linear(width * 4, 3))


def _dns_inq_tiny_cnn() -> nn.Module:
    """tiny_cnn with most weights zeroed (as after DNS) then fully INQ-quantized, finalized."""
    torch.manual_seed(0)
    model = build_model("tiny_cnn")
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(torch.rand_like(p) < 0.2)
            p.add_(torch.randn_like(p) * 0.01 * (p != 0))
    nnc.prepare(model, nnc.INQConfig(num_quantum_values=8))
    nnc.quantize_step(model, 1.0)
    return nnc.finalize(model)


def _outputs(model: nn.Module, shape: tuple[int, ...] = (5, 1, 12, 12)) -> torch.Tensor:
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return model.eval()(x)


def test_inq_model_round_trip_is_bit_identical_and_small(tmp_path: Path) -> None:
    model = _dns_inq_tiny_cnn()
    info = save_compact(model, tmp_path / "m.ncz")
    loaded = load_compact(tmp_path / "m.ncz")
    assert torch.equal(_outputs(loaded), _outputs(model))
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(),
                                 strict=True):
        assert torch.equal(a, b), name
    assert info.file_bytes == (tmp_path / "m.ncz").stat().st_size
    assert {t.values for t in info.tensors if t.name.endswith("weight")} == {"pow2"}
    assert info.fp32_bytes / info.file_bytes > 5  # 778 parameters: the metadata dominates


def test_float32_is_lossless_on_a_pruned_float_model(tmp_path: Path) -> None:
    torch.manual_seed(3)
    model = build_model("tiny_mlp", input_size=8, hidden=16)
    with torch.no_grad():
        model.fc1.weight.mul_(torch.rand_like(model.fc1.weight) < 0.1)
    save_compact(model, tmp_path / "m.ncz")
    loaded = load_compact(tmp_path / "m.ncz")
    assert torch.equal(_outputs(loaded, (4, 1, 8, 8)), _outputs(model, (4, 1, 8, 8)))
    assert torch.equal(loaded.fc1.weight, model.fc1.weight)


def test_float16_equals_the_model_with_float_tensors_rounded(tmp_path: Path) -> None:
    model = _dns_inq_tiny_cnn()
    with torch.no_grad():  # make one tensor non-INQ so it is stored as float16
        model.fc.bias.copy_(torch.linspace(-0.3, 0.7, model.fc.bias.numel()))
    info = save_compact(model, tmp_path / "m.ncz", float_dtype="float16")
    reference = build_model("tiny_cnn")
    reference.load_state_dict(model.state_dict())
    with torch.no_grad():
        reference.fc.bias.copy_(reference.fc.bias.half().float())
    loaded = load_compact(tmp_path / "m.ncz")
    assert torch.equal(_outputs(loaded), _outputs(reference))
    assert not torch.equal(loaded.fc.bias, model.fc.bias)
    assert {t.name: t.values for t in info.tensors}["fc.bias"] == "float16"


def test_batch_norm_buffers_and_import_path_architecture(tmp_path: Path) -> None:
    model = make_bn_net()
    model.train()
    model(torch.randn(8, 1, 4, 4))  # running stats and the batch counter move
    arch = {"ref": "tests.test_compact:make_bn_net", "kwargs": {"width": 6}}
    save_compact(model, tmp_path / "bn.ncz", arch=arch)
    with pytest.raises(ConfigError) as err:
        load_compact(tmp_path / "bn.ncz")
    assert str(err.value) == (
        f"{tmp_path / 'bn.ncz'}: the architecture 'tests.test_compact:make_bn_net' is an import "
        "path; loading it imports and runs that code. If you trust the file, pass "
        "allow_import=True (CLI: --allow-import)")
    loaded = load_compact(tmp_path / "bn.ncz", allow_import=True)
    assert int(loaded[1].num_batches_tracked) == 1
    assert torch.equal(loaded[1].running_var, model[1].running_var)
    assert torch.equal(_outputs(loaded, (3, 1, 4, 4)), _outputs(model, (3, 1, 4, 4)))


def test_prepared_model_is_finalized_on_a_copy(tmp_path: Path) -> None:
    model = build_model("tiny_mlp", input_size=4, hidden=8)
    nnc.prepare(model, nnc.INQConfig())
    nnc.quantize_step(model, 1.0)
    save_compact(model, tmp_path / "m.ncz")
    assert nnc.is_prepared(model)
    loaded = load_compact(tmp_path / "m.ncz")
    assert torch.equal(_outputs(loaded, (2, 1, 4, 4)), _outputs(model, (2, 1, 4, 4)))


def test_model_without_architecture_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        save_compact(nn.Linear(3, 2), tmp_path / "m.ncz")
    assert str(err.value) == (
        "the Linear model has no architecture reference, so the file could not rebuild it: "
        "build it with nncompress.models.build_model(...), or pass arch={'ref': "
        "'package.module:callable', 'kwargs': {...}} to save_compact")
    assert not (tmp_path / "m.ncz").exists()


def test_wrong_architecture_and_float_dtype_are_rejected(tmp_path: Path) -> None:
    model = build_model("tiny_mlp", input_size=4, hidden=8)
    with pytest.raises(ConfigError, match="builds a model whose tensors differ"):
        save_compact(model, tmp_path / "m.ncz", arch={"ref": "tiny_mlp", "kwargs": {}})
    with pytest.raises(ConfigError) as err:
        save_compact(model, tmp_path / "m.ncz", float_dtype="bfloat16")
    assert str(err.value) == ("float_dtype='bfloat16' is not supported; use 'float32' "
                              "(lossless) or 'float16' (half the size, rounded)")


def test_inspect_reports_kept_entries_and_sizes(tmp_path: Path) -> None:
    model = _dns_inq_tiny_cnn()
    saved = save_compact(model, tmp_path / "m.ncz")
    info = inspect_compact(tmp_path / "m.ncz")
    assert info == saved
    state = model.state_dict()
    for t in info.tensors:
        assert t.entries == state[t.name].numel()
        assert t.kept == int(torch.count_nonzero(state[t.name]))
    assert info.fp32_bytes == 4 * sum(p.numel() for p in model.parameters())
    header_and_meta = info.file_bytes - sum(t.bytes for t in info.tensors)
    assert 20 < header_and_meta < 400
    as_json = json.loads(json.dumps(info.to_dict()))
    assert as_json["kept"] == sum(t.kept for t in info.tensors)
    assert as_json["arch"] == {"ref": "tiny_cnn", "kwargs": {}}


def test_write_is_atomic_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    target = tmp_path / "m.ncz"
    target.write_bytes(b"old")
    save_compact(build_model("tiny_mlp", input_size=4, hidden=8), target)
    assert [p.name for p in tmp_path.iterdir()] == ["m.ncz"]
    assert target.read_bytes()[:4] == b"\x89NCZ"


@pytest.fixture
def good_file(tmp_path: Path) -> bytes:
    save_compact(build_model("tiny_mlp", input_size=4, hidden=8), tmp_path / "good.ncz")
    return (tmp_path / "good.ncz").read_bytes()


def _load_bytes(tmp_path: Path, data: bytes) -> str:
    path = tmp_path / "bad.ncz"
    path.write_bytes(data)
    with pytest.raises(FormatError) as err:
        load_compact(path)
    return str(err.value).replace(f"{path}: ", "")


def test_bad_files_raise_one_clear_error(tmp_path: Path, good_file: bytes) -> None:
    assert good_file[4:6] == (3).to_bytes(2, "little")
    flipped = bytearray(good_file)
    flipped[len(good_file) // 2] ^= 0x10
    newer = bytearray(good_file)
    newer[4] = 4
    body = len(good_file) - body_start(good_file)
    cases = {
        b"": "not an nncompress compact (.ncz) file (wrong magic bytes)",
        b"PK\x03\x04 zip file": "not an nncompress compact (.ncz) file (wrong magic bytes)",
        good_file[:5]: "file is truncated inside its header",
        good_file[:10]: "file is truncated inside its header",
        good_file[:-5]: f"file is truncated: the header announces {body} bytes of data after "
                        f"it, the file has {body - 5}",
        good_file + b"\x00": "unexpected bytes after the end of the data",
        bytes(flipped): "file is corrupted (checksum mismatch)",
        bytes(newer): "format version 4 is newer than this nncompress reads (up to 3); "
                      "upgrade nncompress",
    }
    for data, message in cases.items():
        assert _load_bytes(tmp_path, data) == message


def test_bad_version_2_files_raise_one_clear_error(tmp_path: Path, good_file: bytes) -> None:
    good = as_version2(good_file)
    assert good[4:6] == (2).to_bytes(2, "little")
    body = len(good) - 20
    flagged = bytearray(good)
    flagged[6] = 1
    cases = {
        good[:12]: "file is truncated inside its 20-byte header",
        good[:-5]: f"file is truncated: the header announces {body} bytes of data after "
                   f"it, the file has {body - 5}",
        good + b"\x00": "unexpected bytes after the end of the data",
        bytes(flagged): "unknown format version 2 / flags 0x1",
    }
    for data, message in cases.items():
        assert _load_bytes(tmp_path, data) == message


def test_huge_length_field_allocates_nothing(tmp_path: Path, good_file: bytes) -> None:
    start = body_start(good_file)
    huge = bytes([0xFF] * 9 + [0x01])  # 2**64 - 1 as a varint
    data = good_file[:10] + huge + good_file[start:]
    assert _load_bytes(tmp_path, data).startswith(
        f"file is truncated: the header announces {2**64 - 1} bytes")
    data = bytearray(as_version2(good_file))
    data[8:16] = (2**63).to_bytes(8, "little")
    assert _load_bytes(tmp_path, bytes(data)).startswith("file is truncated: the header "
                                                         f"announces {2**63} bytes")


def test_valid_checksum_but_mismatched_tensors_is_a_format_error(tmp_path: Path) -> None:
    model = build_model("tiny_mlp", input_size=4, hidden=8)
    save_compact(model, tmp_path / "m.ncz")
    from nncompress.export._container import pack, parse, unpack

    (meta, data), _ = unpack(tmp_path / "m.ncz")
    meta["arch"]["kwargs"] = {"input_size": 4, "hidden": 9}
    (tmp_path / "m.ncz").write_bytes(pack(meta, [data]))
    # format version 3 leaves the layout out: its CRC-32 no longer matches
    with pytest.raises(FormatError, match=r"architecture 'tiny_mlp' with kwargs \{'input_size'"
                       r": 4, 'hidden': 9\} builds 4 tensors whose names, dtypes and shapes "
                       r"differ from the 4 the file was written for \(written by 'nncompress "):
        load_compact(tmp_path / "m.ncz")
    meta["arch"] = {"ref": "no_such_model", "kwargs": {}}
    (tmp_path / "m.ncz").write_bytes(pack(meta, [data]))
    with pytest.raises(FormatError, match="cannot rebuild the model: unknown model"):
        load_compact(tmp_path / "m.ncz")
    # a version 2 file names its tensors: the first that differs is named
    save_compact(model, tmp_path / "m.ncz")
    meta, data = parse(as_version2((tmp_path / "m.ncz").read_bytes()))
    meta["arch"]["kwargs"] = {"input_size": 4, "hidden": 9}
    (tmp_path / "m.ncz").write_bytes(pack(meta, [data]))
    with pytest.raises(FormatError, match=r"tensor 'fc1.weight' has shape \(8, 16\) in the "
                                          r"file, \(9, 16\) in the model"):
        load_compact(tmp_path / "m.ncz")


def test_unsupported_state_entries_are_named(tmp_path: Path) -> None:
    model = build_model("tiny_mlp", input_size=4, hidden=8)
    model.register_buffer("phase", torch.zeros(2, dtype=torch.complex64))
    arch = {"ref": "tiny_mlp", "kwargs": {"input_size": 4, "hidden": 8}}
    with pytest.raises(ConfigError, match="builds a model whose tensors differ"):
        save_compact(model, tmp_path / "m.ncz", arch=arch)
    from nncompress.export._codec import encode_tensor

    with pytest.raises(ConfigError) as err:
        encode_tensor("phase", model.phase, "float32")
    assert str(err.value).startswith("state_dict entry 'phase' is torch.complex64, which the "
                                     "compact format does not store (allowed: float16, ")


def test_float64_model_comes_back_float64(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("tiny_mlp").double()
    save_compact(model, tmp_path / "m.ncz")
    loaded = load_compact(tmp_path / "m.ncz")
    for (name, want), got in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert got.dtype == torch.float64, name
        assert torch.equal(got, want), name
    assert all(p.requires_grad for p in loaded.parameters())


def test_huge_architecture_is_rejected_before_it_is_built(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from nncompress.export._container import FORMAT_NAME, pack

    path = tmp_path / "bomb.ncz"
    path.write_bytes(pack({"format": FORMAT_NAME, "writer": "test", "float_dtype": "float32",
                           "arch": {"ref": "tiny_mlp", "kwargs": {"hidden": 1 << 22}},
                           "tensors": []}, []))
    real_devices = []
    original = torch.nn.Linear.__init__

    def spy(self: nn.Linear, *args: object, **kwargs: object) -> None:
        original(self, *args, **kwargs)  # type: ignore[arg-type]
        real_devices.append(self.weight.device.type)

    monkeypatch.setattr(torch.nn.Linear, "__init__", spy)
    with pytest.raises(FormatError, match="do not match the model built from its architecture"):
        load_compact(path)
    assert real_devices and set(real_devices) == {"meta"}  # never allocated for real

"""Format version 1, 2 and 3 files committed under tests/data keep loading, bit for bit."""
# golden_v2_mantissa.ncz (INQ levels with mantissa bits): make_golden_v2.py FOLDER mantissa;
# golden_v3_*.ncz: make_golden_v3.py FOLDER

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from nncompress.export import inspect_compact, load_compact
from tests.data._golden_common import tensor_digest

DATA = Path(__file__).parent / "data"
# every golden file (format versions 1 to 3) and the digests of the state it loads to
EXPECTED = {name: digests for version in ("1", "2", "2_mantissa", "3")
            for name, digests in json.loads(
                (DATA / f"golden_v{version}_expected.json").read_text()).items()}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_golden_file_loads_bit_exact(name: str) -> None:
    model = load_compact(DATA / name, allow_import=True)
    state = model.state_dict()
    assert list(state) == list(EXPECTED[name])
    for key, digest in EXPECTED[name].items():
        assert tensor_digest(state[key]) == digest, key


def test_golden_v1_inspect() -> None:
    info = inspect_compact(DATA / "golden_v1_mlp.ncz")
    assert info.version == 1
    assert info.arch == {"ref": "tiny_mlp", "kwargs": {"input_size": 8, "hidden": 24}}
    fc1 = info.tensors[0]
    assert (fc1.name, fc1.values, fc1.layout, fc1.entries, fc1.kept) == (
        "fc1.weight", "pow2", "dense", 1536, 45)
    assert info.file_bytes == (DATA / "golden_v1_mlp.ncz").stat().st_size


def test_golden_v2_inspect_shares_out_the_coded_stream() -> None:
    info = inspect_compact(DATA / "golden_v2_ternary.ncz")
    assert (info.version, info.file_bytes) == (2, 603)
    fc1 = info.tensors[0]
    assert (fc1.name, fc1.values, fc1.layout, fc1.entries, fc1.kept) == (
        "fc1.weight", "pow2", "sparse", 2048, 56)
    # ternary: one sign bit per kept entry and a share of the table and lane states
    assert 56 / 8 <= fc1.value_bytes <= 56 / 8 + 3
    assert sum(t.bytes for t in info.tensors) < info.file_bytes


def test_golden_v2_mantissa_inspect_and_levels() -> None:
    info = inspect_compact(DATA / "golden_v2_mantissa.ncz")
    fc1, fc2 = info.tensors[0], info.tensors[2]
    assert (fc1.values, fc1.mantissa, fc1.kept, fc2.values, fc2.mantissa) == (
        "pow2", 1, 194, "pow2", 3)
    model = load_compact(DATA / "golden_v2_mantissa.ncz")
    for layer, bits in ((model.fc1, 1), (model.fc2, 3)):
        values = layer.weight.detach().double()
        mantissa, _ = torch.frexp(values[values != 0].abs())
        steps = mantissa * 2 ** (bits + 1)  # whole exactly on the grid of ``bits`` bits
        assert torch.equal(steps, steps.floor())
        assert not torch.equal(2 * mantissa, (2 * mantissa).floor())  # not all powers of two


def test_golden_v3_files_leave_out_the_layout_of_registered_models() -> None:
    from nncompress.export._container import parse

    for name in sorted(n for n in EXPECTED if n.startswith("golden_v3_")):
        data = (DATA / name).read_bytes()
        meta, _ = parse(data, name)
        registered = name != "golden_v3_bn.ncz"  # saved by its import path, torch.nn:BatchNorm1d
        assert ("implied" in meta) == registered, name
        assert all(("name" in t) != registered for t in meta["tensors"]), name
        info = inspect_compact(DATA / name)
        assert info.version == 3
        assert [t.name for t in info.tensors] == list(EXPECTED[name]), name
    # the same model as version 2 and 3 files: only the header and metadata differ in size
    v2, v3 = (inspect_compact(DATA / f"golden_v{v}_cnn.ncz") for v in (2, 3))
    assert [(t.name, t.shape, t.kept) for t in v2.tensors] == [
        (t.name, t.shape, t.kept) for t in v3.tensors]
    assert (v2.file_bytes, v3.file_bytes) == (284, 207)

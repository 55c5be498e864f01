"""Format version 1 files committed under tests/data keep loading, bit for bit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from nncompress.export import inspect_compact, load_compact

DATA = Path(__file__).parent / "data"
EXPECTED = json.loads((DATA / "golden_v1_expected.json").read_text())


def _digest(t: torch.Tensor) -> str:
    import hashlib

    return hashlib.sha256(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
                          ).hexdigest()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_golden_v1_file_loads_bit_exact(name: str) -> None:
    model = load_compact(DATA / name, allow_import=True)
    state = model.state_dict()
    assert list(state) == list(EXPECTED[name])
    for key, digest in EXPECTED[name].items():
        assert _digest(state[key]) == digest, key


def test_golden_v1_inspect() -> None:
    info = inspect_compact(DATA / "golden_v1_mlp.ncz")
    assert info.version == 1
    assert info.arch == {"ref": "tiny_mlp", "kwargs": {"input_size": 8, "hidden": 24}}
    fc1 = info.tensors[0]
    assert (fc1.name, fc1.values, fc1.layout, fc1.entries, fc1.kept) == (
        "fc1.weight", "pow2", "dense", 1536, 45)
    assert info.file_bytes == (DATA / "golden_v1_mlp.ncz").stat().st_size

"""tests/data/make_golden_v1.py still writes the committed format version 1 files, byte for byte."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
sys.path.insert(0, str(DATA))

import make_golden_v1  # noqa: E402

from nncompress.export import inspect_compact  # noqa: E402

V1_FILES = ["golden_v1_bn.ncz", "golden_v1_cnn.ncz", "golden_v1_expected.json",
            "golden_v1_mlp.ncz"]


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("golden")
    make_golden_v1.main(folder)
    return folder


@pytest.mark.parametrize("name", V1_FILES)
def test_make_golden_v1_reproduces_the_committed_file(written: Path, name: str) -> None:
    assert (written / name).read_bytes() == (DATA / name).read_bytes()


def test_make_golden_v1_writes_version_1(written: Path) -> None:
    assert sorted(p.name for p in written.iterdir()) == V1_FILES
    assert {inspect_compact(written / n).version for n in V1_FILES if n.endswith(".ncz")} == {1}

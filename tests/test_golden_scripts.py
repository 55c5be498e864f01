"""tests/data/make_golden_v1.py, _v2.py and _v3.py still write the committed golden files, byte
for byte (version 2's from version 3's output rewritten with JSON metadata)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
sys.path.insert(0, str(DATA))

import make_golden_v1  # noqa: E402
import make_golden_v2  # noqa: E402
import make_golden_v3  # noqa: E402

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


@pytest.mark.parametrize("version", [2, 3])
def test_make_golden_v2_and_v3_reproduce_the_committed_files(tmp_path: Path,
                                                            version: int) -> None:
    if version == 2:
        make_golden_v2.main(tmp_path)
        make_golden_v2.main(tmp_path, "mantissa")
    else:
        make_golden_v3.main(tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len(names) == (8 if version == 2 else 7)
    for name in names:
        assert (tmp_path / name).read_bytes() == (DATA / name).read_bytes(), name
    assert {inspect_compact(tmp_path / n).version for n in names if n.endswith(".ncz")} == {
        version}

"""``nncompress bench``: the table and JSON it prints, and its user errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from nncompress.cli import main
from nncompress.export import save_compact
from nncompress.models import build_model

FAST = ["--rounds", "1", "--seconds", "0.005"]


@pytest.fixture
def sparse_file(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = build_model("tiny_mlp", input_size=8, hidden=64)
    with torch.no_grad():
        model.fc1.weight.mul_((torch.rand(64, 64) < 0.05).float())
        model.fc2.weight.mul_((torch.rand(10, 64) < 0.2).float())
    path = tmp_path / "run" / "model.ncz"
    path.parent.mkdir()
    save_compact(model, path)
    return path


def test_json_has_every_batch_and_the_bytes(sparse_file: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", str(sparse_file), "--batch", "1,3", *FAST, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [t["batch"] for t in result["batches"]] == [1, 3]
    assert result["threads"] == 1
    # dense: fc1 64x64 + 64 bias, fc2 10x64 + 10 bias, all float32
    assert result["dense_bytes"] == 4 * (64 * 64 + 64 + 10 * 64 + 10)
    assert 0 < result["runtime_bytes"] < result["dense_bytes"] / 2
    for timing in result["batches"]:
        assert timing["dense_ms"] > 0 and timing["runtime_ms"] > 0 and timing["ratio"] > 0
    assert result["runtime_load_ms"] > 0


def test_table_from_a_run_folder(sparse_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", str(sparse_file.parent), "--batch", "2", *FAST]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(str(sparse_file)) and "(1 thread)" in lines[0]
    assert lines[1].split()[:4] == ["batch", "dense", "ms", "runtime"]
    row = lines[2].split()
    assert row[0] == "2" and row[3].endswith("x")
    assert row[4] == f"{4 * (64 * 64 + 64 + 10 * 64 + 10):,}"
    assert lines[3].startswith("runtime weights: ")


@pytest.mark.parametrize(("args", "message"), [
    (["--batch", "0"], "--batch '0': give positive integers"),
    (["--batch", "a,2"], "--batch 'a,2'"),
    (["--input-shape", "3,5"], "does not take inputs of shape (3, 5)"),
    (["--rounds", "0"], "--rounds 0"),
    (["--seconds", "0"], "--seconds 0.0"),
    (["--threads", "0"], "--threads 0"),
])
def test_user_errors_exit_1(sparse_file: Path, capsys: pytest.CaptureFixture[str],
                            args: list[str], message: str) -> None:
    assert main(["bench", str(sparse_file), *FAST, *args]) == 1
    assert message in capsys.readouterr().err


def test_missing_and_bad_files_exit_1(tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", str(tmp_path)]) == 1
    assert "no model.ncz in this folder" in capsys.readouterr().err
    assert main(["bench", str(tmp_path / "nothing.ncz")]) == 1
    assert "no such file" in capsys.readouterr().err
    bad = tmp_path / "bad.ncz"
    bad.write_bytes(b"not a model")
    assert main(["bench", str(bad)]) == 1
    assert str(bad) in capsys.readouterr().err

"""benchmarks/inq_levels.py: argument mistakes stop before anything loads, with one message."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

import inq_levels  # noqa: E402


def test_defaults() -> None:
    args = inq_levels._parser().parse_args([])
    assert (args.run, args.k, args.threads) == (Path("runs/lenet5_reference"), [1, 2, 4, 8], 1)
    assert args.mantissa_bits == [0]


def test_missing_run_folder_names_it_and_the_recipe(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "nowhere"
    assert inq_levels.main(["--run", str(run)]) == 1
    err = capsys.readouterr().err
    assert err == (f"inq_levels: error: {run}: no run folder there; make it first with "
                   f"`nncompress run recipes/lenet5_reference.yaml --out {run} --threads 1`\n")


def test_run_without_its_model_names_the_file(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "checkpoints").mkdir()
    assert inq_levels.main(["--run", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"inq_levels: error: {tmp_path / 'model.safetensors'} is missing")
    assert f"--out {tmp_path} --threads 1 --resume`" in err


@pytest.mark.parametrize(("argv", "message"), [
    (["--k", "1", "0"], "--k 0: use integers from 1 to 64"),
    (["--k", "65"], "--k 65: use integers from 1 to 64"),
    (["--threads", "0"], "--threads 0: use 1 or more"),
    (["--mantissa-bits", "0", "4"], "--mantissa-bits 4: use integers from 0 (powers of two) "
                                    "to 3"),
    (["--k", "two"], "argument --k: invalid int value: 'two'"),
    (["--levels", "mse"], "unrecognized arguments: --levels mse"),
])
def test_bad_argument_is_exit_1_before_the_run_is_read(
        argv: list[str], message: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    # the run folder does not exist either: the argument is checked first
    assert inq_levels.main([*argv, "--run", str(tmp_path / "none")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"inq_levels: error: {message}")
    assert err.count("\n") == 1

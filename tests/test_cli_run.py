"""The command line end to end on synthetic data: run, report, eval, demo."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from nncompress.cli import main

TINY = {
    "version": 1, "name": "tiny_cli",
    "model": {"ref": "tiny_mlp", "kwargs": {"input_size": 8, "hidden": 12}},
    "data": {"spec": "synthetic:n=192,test=64,size=8", "validation": 32}, "seed": 1,
    "stages": [
        {"stage": "train", "name": "reference", "iterations": 8, "batch_size": 16,
         "eval_interval": 4, "lr": {"base_lr": 0.05}},
        {"stage": "dns", "iterations": 6, "batch_size": 16, "defaults": {"c_rate": 0.5}},
        {"stage": "inq", "portions": [0.5, 1.0], "iterations_per_step": [3, 0],
         "batch_size": 16, "defaults": {"num_quantum_values": 4}},
        {"stage": "finalize"},
        {"stage": "export"},
    ],
}


@pytest.fixture
def recipe_file(tmp_path: Path) -> Path:
    file = tmp_path / "tiny.yaml"
    file.write_text(yaml.safe_dump(TINY))
    return file


@pytest.fixture
def finished_run(tmp_path: Path, recipe_file: Path) -> Path:
    out = tmp_path / "run"
    assert main(["run", str(recipe_file), "--out", str(out), "--quiet", "--set",
                 "stages.reference.iterations=10"]) == 0
    return out


def test_run_writes_report_and_compact_file(finished_run: Path) -> None:
    report = json.loads((finished_run / "report.json").read_text())
    assert [row["name"] for row in report["layers"]] == ["fc1", "fc2"]
    assert report["compact"]["bytes"] == (finished_run / "model.ncz").stat().st_size
    assert report["stages"][0] == {"stage": "train", "name": "reference", "iteration": 10,
                                   **{k: report["stages"][0][k]
                                      for k in ("accuracy", "kept_fraction")}}
    assert report["stages"][0]["kept_fraction"] == 1.0
    assert report["totals"]["kept"] < report["totals"]["entries"]
    saved = yaml.safe_load((finished_run / "recipe.yaml").read_text())
    assert saved["stages"][0]["iterations"] == 10  # the --set value is what ran


def test_report_json_prints_the_file(finished_run: Path, capsys: pytest.CaptureFixture[str],
                                     ) -> None:
    capsys.readouterr()
    assert main(["report", str(finished_run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(
        (finished_run / "report.json").read_text())
    assert main(["report", str(finished_run)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["layer", "type", "entries", "kept", "kept", "%", "sparsity",
                                "%", "levels", "bits", "fixed", "%"]


def test_eval_matches_the_report(finished_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = json.loads((finished_run / "report.json").read_text())
    capsys.readouterr()
    assert main(["eval", str(finished_run), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["accuracy"] == report["test"]["accuracy"]
    assert result["loss"] == pytest.approx(report["test"]["loss"], rel=1e-6)
    assert result["examples"] == 64
    assert main(["eval", str(finished_run / "model.ncz"), "--data",
                 "synthetic:n=192,test=64,size=8", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == report["test"]["accuracy"]


def test_user_errors_exit_1_with_one_message(tmp_path: Path, recipe_file: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "never"
    assert main(["run", str(recipe_file), "--out", str(out), "--set",
                 "stages.dns.defaults.c_rat=1"]) == 1
    err = capsys.readouterr().err
    assert err == (f"nncompress: error: {recipe_file}: stages[1].defaults.c_rat: unknown key "
                   "(did you mean 'c_rate'?); allowed keys: c_rate, gamma, power, iter_stop, "
                   "alpha_low, alpha_high, include_bias, seed, advance, ramp\n")
    assert not out.exists()
    assert main(["report", str(tmp_path)]) == 1
    assert capsys.readouterr().err == (f"nncompress: error: {tmp_path / 'report.json'}: no "
                                       "report here; is this a finished run folder?\n")
    assert main(["eval", str(recipe_file)]) == 1
    assert capsys.readouterr().err == (f"nncompress: error: {str(recipe_file)!r} is neither a "
                                       "run folder nor a .safetensors or .ncz file\n")


def test_resume_of_a_finished_run_is_a_no_op(finished_run: Path, recipe_file: Path) -> None:
    before = (finished_run / "model.safetensors").read_bytes()
    assert main(["run", str(recipe_file), "--out", str(finished_run), "--quiet", "--resume",
                 "--set", "stages.reference.iterations=10"]) == 0
    assert (finished_run / "model.safetensors").read_bytes() == before


def test_demo_runs_its_recipe_end_to_end(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--quiet", "--set", "data.spec=synthetic:n=192,test=64",
            "--set", "data.validation=32", "--set", "stages.reference.iterations=3",
            "--set", "stages.dns.iterations=3", "--set", "stages.inq.iterations_per_step=1"]
    assert main(args) == 0
    report = json.loads((out / "report.json").read_text())
    assert [row["name"] for row in report["layers"]] == ["ip1", "ip2", "ip3"]
    assert report["totals"]["entries"] == 266_610
    assert report["recipe"] == "demo_lenet300_100"
    printed = capsys.readouterr().out
    assert f"kept:        {report['totals']['kept']:,} of 266,610" in printed
    assert f"plots:       {out / 'plots'} (" in printed  # matplotlib is in the dev set-up
    assert sorted(p.name for p in (out / "plots").iterdir()) == [
        "bits.png", "curves.png", "histograms.png", "kept.png"]


def test_demo_without_mnist_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    import nncompress.run_inputs
    from nncompress.data import DatasetNotFoundError

    def missing(*args: object, **kwargs: object) -> None:
        raise DatasetNotFoundError("mnist is not installed")

    monkeypatch.setattr(nncompress.run_inputs, "open_data", missing)
    assert main(["demo", "--out", str(tmp_path / "d"), "--quiet"]) == 1
    assert capsys.readouterr().err == ("nncompress: error: the demo needs MNIST: mnist is not "
                                       "installed\n")
    assert not (tmp_path / "d").exists()

"""Resuming a damaged run folder: fall back past bad checkpoints, clean up, or stop clearly."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml

from nncompress.cli import main
from nncompress.errors import ConfigError, FormatError
from nncompress.pipeline import RunInterrupted, run_recipe
from nncompress.recipe import parse_recipe, recipe_to_dict
from nncompress.run_resume import read_rows
from tests.test_pipeline import tiny_recipe
from tests.test_run_folder_checkpoints import DNS_END, INQ_MID, rewrite

RECIPE = parse_recipe(tiny_recipe())


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A finished run and the same run killed at iteration 4 of INQ step 0."""
    torch.set_num_threads(1)
    base = tmp_path_factory.mktemp("runs")
    run_recipe(RECIPE, base / "straight", progress="none")
    with pytest.raises(RunInterrupted):
        run_recipe(RECIPE, base / "stopped", progress="none", stop_after=28)
    return base / "straight", base / "stopped"


@pytest.fixture
def run(runs: tuple[Path, Path], tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(runs[1], copy)
    return copy


def _same_final_weights(a: Path, b: Path) -> None:
    from safetensors.torch import load_file

    first, second = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert list(first) == list(second)
    for key in first:
        assert torch.equal(first[key], second[key]), key


def test_a_damaged_newest_checkpoint_is_named_and_the_one_before_is_used(
        runs: tuple[Path, Path], run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    newest = run / "checkpoints" / INQ_MID
    data = bytearray(newest.read_bytes())
    data[-3] ^= 0x01  # a bit of the last tensor
    newest.write_bytes(bytes(data))
    run_recipe(RECIPE, run, progress="none", resume=True)
    err = capsys.readouterr().err
    assert f"nncompress: checkpoint not usable: {newest}: checksum mismatch" in err
    assert f"moved to {INQ_MID}.damaged" in err
    assert f"resuming from the one before: {DNS_END}" in err
    assert (run / "checkpoints" / f"{INQ_MID}.damaged").is_file()
    _same_final_weights(runs[0], run)


def test_a_crafted_checkpoint_is_refused_and_the_run_falls_back(
        run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rewrite(run / "checkpoints" / INQ_MID, lambda meta, _: meta["position"].update(done=True))
    with pytest.raises(RunInterrupted):
        run_recipe(RECIPE, run, progress="none", resume=True, stop_after=1)
    err = capsys.readouterr().err
    assert "position.done is true at iteration 4 of step 0, before the end of stage 'inq'" in err
    assert f"resuming from the one before: {DNS_END}" in err


def test_a_directory_in_place_of_a_checkpoint_is_passed_over(
        run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    newest = run / "checkpoints" / INQ_MID
    newest.unlink()
    newest.mkdir()
    with pytest.raises(RunInterrupted):
        run_recipe(RECIPE, run, progress="none", resume=True, stop_after=1)
    err = capsys.readouterr().err
    assert f"{newest}: a directory where a checkpoint file should be" in err
    assert newest.is_dir()  # not renamed: only files are moved aside


def test_no_usable_checkpoint_stops_and_renames_nothing(
        run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    for name in names:
        rewrite(run / "checkpoints" / name, lambda meta, _: meta.update(metrics_rows=-1))
    recipe_file = run.parent / "tiny.yaml"
    recipe_file.write_text(yaml.safe_dump(recipe_to_dict(RECIPE)))
    assert main(["run", str(recipe_file), "--out", str(run), "--resume", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"nncompress: error: {run}: no usable checkpoint to resume from (")
    assert err.rstrip().endswith("start a new run with another --out")
    assert err.count("metrics_rows -1 is not a count") == 4 and "Traceback" not in err
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == names


def test_a_cut_last_metrics_line_is_dropped_and_the_run_completes(
        runs: tuple[Path, Path], run: Path) -> None:
    metrics = run / "metrics.jsonl"
    rows = read_rows(metrics)
    metrics.write_text(metrics.read_text() + '{"stage": "inq", "ite')
    assert read_rows(metrics) == rows
    run_recipe(RECIPE, run, progress="none", resume=True)
    assert len(read_rows(metrics)) == len(read_rows(runs[0] / "metrics.jsonl"))
    _same_final_weights(runs[0], run)


@pytest.mark.parametrize(("text", "message"), [
    ("not json\n{}\n", r"metrics.jsonl: line 1 is not JSON; the metrics file was edited"),
    ("[1, 2]\n", r"metrics.jsonl: line 1 is not a JSON object"),
])
def test_a_corrupt_metrics_line_is_an_error(run: Path, text: str, message: str) -> None:
    (run / "metrics.jsonl").write_text(text)
    with pytest.raises(FormatError, match=message):
        run_recipe(RECIPE, run, progress="none", resume=True)


def test_metrics_shorter_than_the_checkpoint_says_is_an_error(run: Path) -> None:
    metrics = run / "metrics.jsonl"
    metrics.write_text("".join(line + "\n" for line in metrics.read_text().splitlines()[:2]))
    with pytest.raises(FormatError, match=r"metrics.jsonl: holds 2 records, but "
                       rf"{INQ_MID} was written after 6; the file was cut or edited"):
        run_recipe(RECIPE, run, progress="none", resume=True)


def test_stale_temporary_files_are_removed_on_resume(run: Path) -> None:
    stale = [run / "checkpoints" / f".{INQ_MID}.abc123.tmp", run / ".metrics.jsonl.x1.tmp"]
    for file in stale:
        file.write_bytes(b"\0" * 10)
    keep = run / "checkpoints" / "notes.tmp"
    keep.write_text("mine")
    with pytest.raises(RunInterrupted):
        run_recipe(RECIPE, run, progress="none", resume=True, stop_after=1)
    assert not any(f.exists() for f in stale)
    assert keep.read_text() == "mine"


@pytest.mark.parametrize(("text", "message"), [
    ("version: 1\nname: [unclosed\n", r"recipe.yaml: the run's recipe is damaged \("),
    ("\x00\x01garbage", r"recipe.yaml: the run's recipe is damaged \("),
    ("- a list\n", r"recipe.yaml: the run's recipe is damaged \(not a mapping\)"),
])
def test_a_damaged_run_recipe_is_an_error(run: Path, text: str, message: str) -> None:
    (run / "recipe.yaml").write_text(text)
    with pytest.raises(FormatError, match=message):
        run_recipe(RECIPE, run, progress="none", resume=True)


def test_a_truncated_run_recipe_is_a_different_recipe(run: Path) -> None:
    saved = run / "recipe.yaml"
    saved.write_text(saved.read_text()[:150].rsplit("\n", 1)[0] + "\n")
    with pytest.raises(ConfigError, match=r"the run was started with a different recipe"):
        run_recipe(RECIPE, run, progress="none", resume=True)


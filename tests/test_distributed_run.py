"""The recipe runner on 2 gloo processes: equal to 1 process, rank 0 writes alone, resumable.

One spawned 2-process job (loopback TCP only) runs every 2-process case in turn; the tests
read its folders. A last test starts the real command under torchrun.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import load_file

from nncompress.pipeline import RunInterrupted, run_recipe
from nncompress.recipe import parse_recipe
from nncompress.train import distributed as nd
from tests.ports import free_port
from tests.test_folder import make_folder
from tests.test_pipeline import tiny_recipe

# (run folder of rank 0, run folder of rank 1, resume, stop after so many iterations)
PLAN = [
    ("a", "a-rank1", False, None),  # rank 1 is given a folder of its own: it must stay absent
    ("b", "b", False, 18),  # killed in DNS at its iteration 6 (checkpoint at 4)
    ("b", "b", True, 9),  # killed again, in INQ's first step
    ("b", "b", True, None),
    ("d", "d", False, 18),  # resumed by one process in a test
    ("s", "s-rank1", False, None),  # streamed from an image folder
]


def _recipe(name: str, root: Path) -> Any:
    if name != "s":
        return parse_recipe(tiny_recipe())
    train = {"batch_size": 4, "eval_interval": 3, "checkpoint_interval": 4}
    return parse_recipe({
        "version": 1, "name": "folder", "seed": 1, "data": {"spec": f"folder:{root / 'images'}"},
        "model": {"ref": "tiny_mlp", "kwargs": {"num_classes": 2, "in_channels": 3,
                                                "input_size": 4, "hidden": 6}},
        "stages": [{"stage": "train", "iterations": 6, "lr": {"base_lr": 0.05}, **train},
                   {"stage": "dns", "iterations": 6, "defaults": {"c_rate": 0.3, "gamma": 0.01},
                    **train}]})


def _worker(process: int, port: int, root: str) -> None:
    os.environ.update(RANK=str(process), WORLD_SIZE="2", LOCAL_RANK=str(process),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    nd.init_distributed("gloo")
    here = Path(root) / f"cwd{process}"
    here.mkdir()
    os.chdir(here)  # anything written to the working directory would show here
    for first, second, resume, stop in PLAN:
        out = Path(root) / (first if process == 0 else second)
        with contextlib.suppress(RunInterrupted):
            run_recipe(_recipe(first, Path(root)), out, progress="none", resume=resume,
                       stop_after=stop)
    nd.shutdown()


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ddp-run")
    make_folder(folder / "images", classes=("a", "b"), per_class=8, size=(4, 4))
    torch.multiprocessing.spawn(_worker, args=(free_port(), str(folder)), nprocs=2, join=True)
    return folder


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("one") / "run"
    run_recipe(parse_recipe(tiny_recipe()), out, progress="none")
    return out


def _rows(out: Path) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k != "elapsed_s"} for row in rows]


@pytest.mark.slow
def test_rank_1_writes_nothing(root: Path) -> None:
    assert not (root / "a-rank1").exists()
    assert list((root / "cwd0").iterdir()) == [] and list((root / "cwd1").iterdir()) == []
    assert sorted(p.name for p in (root / "a").iterdir()) == [
        "checkpoints", "metrics.jsonl", "model.safetensors", "recipe.yaml", "report.json"]


@pytest.mark.slow
def test_two_processes_match_one(root: Path, single: Path) -> None:
    two, one = load_file(root / "a" / "model.safetensors"), load_file(single / "model.safetensors")
    assert two.keys() == one.keys()
    for key in one:
        assert torch.equal(two[key] != 0, one[key] != 0), key  # the same entries kept
        torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-5)
    report_two = json.loads((root / "a" / "report.json").read_text())
    report_one = json.loads((single / "report.json").read_text())
    assert [r["kept"] for r in report_two["layers"]] == [r["kept"] for r in report_one["layers"]]
    assert report_two["test"]["accuracy"] == report_one["test"]["accuracy"]
    assert report_two["test"]["loss"] == pytest.approx(report_one["test"]["loss"], rel=1e-4)
    rows_two, rows_one = _rows(root / "a"), _rows(single)
    assert [(r["stage"], r["iteration"]) for r in rows_two] == \
        [(r["stage"], r["iteration"]) for r in rows_one]
    for a, b in zip(rows_two, rows_one):
        assert (a["loss"] is None) == (b["loss"] is None)
        if b["loss"] is not None:
            assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)  # mean over both ranks
        assert a["accuracy"] == b["accuracy"] and a["kept_fraction"] == b["kept_fraction"]


@pytest.mark.slow
def test_killed_and_resumed_run_has_the_same_bytes(root: Path) -> None:
    assert any((root / "b" / "checkpoints").iterdir())
    assert (root / "a" / "model.safetensors").read_bytes() == \
        (root / "b" / "model.safetensors").read_bytes()
    assert _rows(root / "a") == _rows(root / "b")


@pytest.mark.slow
def test_resume_with_another_process_count_is_allowed_and_said(
        root: Path, single: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = root / "d"
    assert not (out / "model.safetensors").exists()
    run_recipe(parse_recipe(tiny_recipe()), out, progress="none", resume=True)
    assert "resuming a run of 2 process(es) with 1" in capsys.readouterr().err
    finished = load_file(out / "model.safetensors")
    reference = load_file(single / "model.safetensors")
    for key in reference:
        torch.testing.assert_close(finished[key], reference[key], rtol=1e-3, atol=1e-4)


@pytest.mark.slow
def test_the_command_runs_under_torchrun(tmp_path: Path) -> None:
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe()))
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1",
               "--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port",
               str(free_port()), "-m", "nncompress", "run", str(recipe), "--out",
               str(tmp_path / "run"), "-q", "--json", "--threads", "1", "--verify-ranks"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-8000:]  # the ranks speak before torchrun
    report = json.loads(done.stdout)  # printed once, by rank 0
    assert done.stderr.count("train: iteration 5/12 ") == 1  # progress from rank 0 alone
    assert report == json.loads((tmp_path / "run" / "report.json").read_text())


@pytest.mark.slow
def test_streamed_run_on_two_processes_matches_one(root: Path, tmp_path: Path) -> None:
    assert not (root / "s-rank1").exists()
    one = run_recipe(_recipe("s", root), tmp_path / "one", progress="none")
    two = load_file(root / "s" / "model.safetensors")
    reference = load_file(tmp_path / "one" / "model.safetensors")
    for key in reference:
        assert torch.equal(two[key] != 0, reference[key] != 0), key
        torch.testing.assert_close(two[key], reference[key], rtol=1e-4, atol=1e-5)
    report = json.loads((root / "s" / "report.json").read_text())
    assert report["test"]["accuracy"] == one.report["test"]["accuracy"]
    kept = _rows(root / "s")[-1]["kept_fraction"]
    assert kept == _rows(tmp_path / "one")[-1]["kept_fraction"] and kept < 1.0  # DNS pruned


def _torchrun(recipe: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node",
            "2", "--master-addr", "127.0.0.1", "--master-port", str(free_port()), "-m",
            "nncompress", "run", str(recipe), "--out", str(out), "-q", "--threads", "1", *extra]


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (torchrun starts its ranks in sessions of their own)."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the ranks through /proc")
def test_a_torchrun_job_killed_mid_stage_resumes_to_the_same_bytes(tmp_path: Path) -> None:
    import signal
    import time

    raw = tiny_recipe()
    raw["stages"][0]["iterations"] = 400  # long enough to be killed in the middle
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(raw))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    whole = subprocess.run(_torchrun(recipe, tmp_path / "whole"), capture_output=True,
                           text=True, timeout=300, cwd=tmp_path, env=env)
    assert whole.returncode == 0, whole.stderr[-8000:]  # the ranks speak before torchrun
    cut = tmp_path / "cut"
    job = subprocess.Popen(_torchrun(recipe, cut), cwd=tmp_path, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not list((cut / "checkpoints").glob("s00-*.safetensors")):
        assert job.poll() is None and time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.005)
    for pid in [*_descendants(job.pid), job.pid]:  # both ranks and torchrun, at once
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    job.wait(timeout=60)
    assert not (cut / "model.safetensors").exists()  # killed in the middle of the reference
    resumed = subprocess.run(_torchrun(recipe, cut, "--resume"), capture_output=True,
                             text=True, timeout=300, cwd=tmp_path, env=env)
    assert resumed.returncode == 0, resumed.stderr[-6000:]
    assert (cut / "model.safetensors").read_bytes() == \
        (tmp_path / "whole" / "model.safetensors").read_bytes()
    assert _rows(cut) == _rows(tmp_path / "whole")

"""caffe train on 2 gloo processes (loopback TCP only) against 1 process: the seed's LeNet DNS
solver for a few iterations on synthetic data; rank 0 alone writes the snapshots."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from nncompress.interop.caffemodel import read_caffemodel
from nncompress.interop.solver_train import train_from_solver
from nncompress.train import distributed as nd
from tests.ports import free_port
from tests.test_caffe_train import DATA, _solver, needs_fixtures

SNAPSHOT = "lenet_DNS_iter_4.masks.caffemodel"


def _solver_file(folder: Path) -> Path:
    return _solver(folder, "lenet_solver_DNS.prototxt", "lenet_train_test_DNS.prototxt",
                   max_iter=4, test_iter=1, test_interval=4, snapshot=4, random_seed=1)


def _worker(process: int, port: int, root: str) -> None:
    os.environ.update(RANK=str(process), WORLD_SIZE="2", LOCAL_RANK=str(process),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    nd.init_distributed("gloo")
    folder = Path(root)
    lines: list[str] = []
    train_from_solver(_solver_file(folder / f"solver{process}"), data=DATA,
                      out_dir=folder / f"out{process}", log=lines.append)
    (folder / f"log{process}.txt").write_text("\n".join(lines))
    nd.shutdown()


def _blobs(path: Path) -> dict[str, list[np.ndarray]]:
    return {e.name: list(e.blobs) for e in read_caffemodel(path) if e.blobs}


@needs_fixtures
@pytest.mark.slow
def test_two_processes_train_like_one_and_rank_1_writes_nothing(tmp_path: Path) -> None:
    for process in range(2):
        (tmp_path / f"solver{process}").mkdir()
    torch.multiprocessing.spawn(_worker, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    assert not (tmp_path / "out1").exists()
    assert (tmp_path / "log1.txt").read_text() == ""
    assert "Snapshotting" in (tmp_path / "log0.txt").read_text()
    (tmp_path / "one").mkdir()
    train_from_solver(_solver_file(tmp_path / "one"), data=DATA, out_dir=tmp_path / "one-out",
                      log=lambda line: None)
    two, one = _blobs(tmp_path / "out0" / SNAPSHOT), _blobs(tmp_path / "one-out" / SNAPSHOT)
    assert two.keys() == one.keys() and {"conv1", "conv2", "ip1", "ip2"} <= set(one)
    for name, blobs in one.items():
        weight, bias, weight_mask, bias_mask = blobs  # DNS layers: four blobs
        assert np.array_equal(two[name][2], weight_mask) and np.array_equal(two[name][3], bias_mask)
        np.testing.assert_allclose(two[name][0], weight, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(two[name][1], bias, rtol=1e-4, atol=1e-6)

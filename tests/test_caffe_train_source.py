"""caffe train reads the Data layers' own source LMDBs; --data still replaces them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nncompress.cli import main
from nncompress.errors import ConfigError
from nncompress.interop.solver_train import train_from_solver
from tests.test_lmdb import raw_records, write_lmdb

NET = """name: "tiny"
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TRAIN }
  transform_param { scale: 0.00390625 } data_param { source: "%(train)s" batch_size: 4
  backend: LMDB } }
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TEST }
  transform_param { scale: 0.00390625 } data_param { source: "%(test)s" batch_size: 3
  backend: LMDB } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
layer { name: "accuracy" type: "Accuracy" bottom: "ip" bottom: "label" top: "accuracy"
  include { phase: TEST } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""


def _files(tmp_path: Path, max_iter: int = 0, train: str = "train_lmdb",
           test: str = "test_lmdb") -> tuple[Path, np.ndarray, list[int]]:
    records, _, _ = raw_records(8, shape=(1, 4, 5), seed=1)
    write_lmdb(tmp_path / "train_lmdb", records)
    test_records, pixels, labels = raw_records(6, shape=(1, 4, 5), seed=2)
    write_lmdb(tmp_path / "test_lmdb", test_records)
    (tmp_path / "net.prototxt").write_text(NET % {"train": train, "test": test})
    solver = tmp_path / "solver.prototxt"
    solver.write_text(f'net: "{tmp_path / "net.prototxt"}"\nbase_lr: 0.1\nlr_policy: "fixed"\n'
                      f"max_iter: {max_iter}\ntest_iter: 2\ntest_interval: 1\nsnapshot: 0\n"
                      "snapshot_after_train: false\nrandom_seed: 3\n")
    return solver, pixels, labels


def test_the_data_layers_sources_are_read_from_the_nets_folder(tmp_path: Path) -> None:
    solver, pixels, labels = _files(tmp_path)
    result = train_from_solver(solver, out_dir=tmp_path / "out", log=lambda line: None)
    (iteration, outputs), = result.tests
    # reference: the untrained net on the 6 test images (2 batches of 3), pixels / 256
    x = torch.from_numpy(pixels).float().flatten(1) / 256
    ip = result.net.get_submodule("ip")
    with torch.no_grad():
        logits = F.linear(x, ip.weight, ip.bias)
    target = torch.tensor(labels)
    assert iteration == 0
    assert outputs["loss"] == pytest.approx(float(F.cross_entropy(logits, target)), rel=1e-5)
    assert outputs["accuracy"] == pytest.approx(
        float((logits.argmax(1) == target).float().mean()), abs=1e-6)


def test_caffe_train_command_reads_the_sources_and_data_overrides_them(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    solver, _, _ = _files(tmp_path, max_iter=2, train=str(tmp_path / "train_lmdb"),
                          test=str(tmp_path / "test_lmdb"))
    assert main(["caffe", "train", "--solver", str(solver), "--out", str(tmp_path / "a")]) == 0
    own = capsys.readouterr().out
    assert "done: 2 iterations" in own
    assert main(["caffe", "train", "--solver", str(solver), "--out", str(tmp_path / "b"), "--data",
                 "synthetic:n=16,test=6,size=4,channels=1,classes=3"]) == 0
    other = capsys.readouterr().out
    assert "done: 2 iterations" in other
    assert own.splitlines()[-1] != other.splitlines()[-1]  # another data set, other scores


def test_a_missing_source_asks_for_data(tmp_path: Path) -> None:
    solver, _, _ = _files(tmp_path, train="nowhere_lmdb")
    with pytest.raises(ConfigError) as info:
        train_from_solver(solver, out_dir=tmp_path / "out", log=lambda line: None)
    assert str(info.value) == (
        f"{tmp_path / 'net.prototxt'}:2:1: Data layer 'data' reads source 'nowhere_lmdb', which "
        f"is not on disk (looked from the working directory and from {tmp_path}); give a data "
        "set instead: --data mnist, idx:DIR or synthetic")
    assert not (tmp_path / "out").exists()

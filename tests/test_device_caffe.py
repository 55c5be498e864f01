"""``--device`` on ``nncompress caffe train`` and ``caffe eval``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from nncompress.cli import main
from nncompress.interop.caffe_net import from_text
from nncompress.interop.caffemodel import write_caffemodel
from nncompress.interop.solver_train import train_from_solver
from nncompress.interop.weights import net_blobs

DATA = "synthetic:n=64,test=40,size=8,seed=3"
NET = """name: "tiny"
input: "data"
input_dim: 1 input_dim: 1 input_dim: 8 input_dim: 8
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
        inner_product_param { num_output: 10 } }
"""
TRAIN_NET = """name: "tiny"
layer { name: "data" type: "Data" top: "data" top: "label"
        transform_param { scale: 0.00390625 } data_param { source: "x" batch_size: 16 } }
layer { name: "ip1" type: "DNSInnerProduct" bottom: "data" top: "ip1"
        inner_product_param { num_output: 10 weight_filler { type: "xavier" } }
        dns_inner_product_param { c_rate: 0.5 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip1" bottom: "label" top: "loss" }
"""
SOLVER = """net: "{net}"
base_lr: 0.01 momentum: 0.9 lr_policy: "fixed" max_iter: 4 display: 0
snapshot: 0 snapshot_prefix: "tiny" random_seed: 1
"""
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="the machine has CUDA")


def _eval_files(tmp_path: Path) -> list[str]:
    torch.manual_seed(0)
    (tmp_path / "net.prototxt").write_text(NET)
    write_caffemodel(tmp_path / "w.caffemodel", net_blobs(from_text(NET)), "tiny")
    return ["caffe", "eval", str(tmp_path / "net.prototxt"), str(tmp_path / "w.caffemodel"),
            "--data", DATA]


def _solver(tmp_path: Path) -> Path:
    (tmp_path / "train.prototxt").write_text(TRAIN_NET)
    solver = tmp_path / "solver.prototxt"
    solver.write_text(SOLVER.format(net=tmp_path / "train.prototxt"))
    return solver


def _accuracy(out: str) -> float:
    found = re.search(r"accuracy ([0-9.]+)%", out)
    assert found is not None, out
    return float(found.group(1))


def test_caffe_eval_on_the_cpu_device(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = _eval_files(tmp_path)
    assert main(args) == 0
    default = _accuracy(capsys.readouterr().out)
    assert main([*args, "--device", "cpu"]) == 0
    assert _accuracy(capsys.readouterr().out) == default


@NO_CUDA
def test_caffe_commands_refuse_a_missing_gpu(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*_eval_files(tmp_path), "--device", "cuda"]) == 1
    assert "device 'cuda': " in capsys.readouterr().err
    out = tmp_path / "out"
    assert main(["caffe", "train", "--solver", str(_solver(tmp_path)), "--data", DATA,
                 "--out", str(out), "--device", "cuda:1"]) == 1
    assert "device 'cuda:1'" in capsys.readouterr().err
    assert not out.exists()


def test_caffe_train_takes_a_device(tmp_path: Path) -> None:
    result = train_from_solver(_solver(tmp_path), data=DATA, out_dir=tmp_path / "out",
                               log=lambda _: None, device=torch.device("cpu"))
    assert result.iterations == 4
    assert int(result.net.get_submodule("ip1").dns_iteration) == 4


@CUDA
def test_caffe_train_and_eval_on_cuda(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = train_from_solver(_solver(tmp_path), data=DATA, out_dir=tmp_path / "out",
                               log=lambda _: None, device=torch.device("cuda"))
    layer = result.net.get_submodule("ip1")
    assert layer.weight.device.type == "cuda" and layer.weight_mask.device.type == "cuda"
    assert int(layer.dns_iteration) == 4
    args = _eval_files(tmp_path)
    assert main(args) == 0
    on_cpu = _accuracy(capsys.readouterr().out)
    assert main([*args, "--device", "cuda"]) == 0
    assert _accuracy(capsys.readouterr().out) == pytest.approx(on_cpu, abs=2.5)

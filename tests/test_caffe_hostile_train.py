"""``caffe train --weights`` with a caffemodel that lacks a layer of the net or holds NaN."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from nncompress.cli import main
from nncompress.interop.caffe_net import from_text
from nncompress.interop.caffemodel import write_caffemodel
from nncompress.interop.weights import net_blobs
from tests.test_caffe_hostile import LABELLED

SOLVER = """net: "net.prototxt"
base_lr: 0.01
lr_policy: "fixed"
max_iter: 1
snapshot: 0
test_interval: 0
"""
DATA = "synthetic:n=20,test=10,size=4,seed=1"


def _files(tmp_path: Path, edit: str) -> list[str]:
    (tmp_path / "net.prototxt").write_text(LABELLED)
    (tmp_path / "solver.prototxt").write_text(SOLVER)
    layers = net_blobs(from_text(LABELLED, input_shape=(1, 4, 4)))
    if edit == "rename":
        layers[0].name = "iq"
    else:
        layers[0].blobs[1][0] = np.inf
    write_caffemodel(tmp_path / "w.caffemodel", layers)
    return ["caffe", "train", "--solver", str(tmp_path / "solver.prototxt"), "--weights",
            str(tmp_path / "w.caffemodel"), "--data", DATA, "--out", str(tmp_path / "out")]


@pytest.mark.parametrize(("edit", "flag", "said"), [
    ("rename", "--allow-missing", "the net's layer(s) 'ip' have no weights in the file"),
    ("inf", "--allow-nonfinite", "layer 'ip' blob 1 holds 1 NaN or infinite value(s) of 10"),
])
def test_caffe_train_refuses_then_allows(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         edit: str, flag: str, said: str) -> None:
    args = _files(tmp_path, edit)
    assert main(args) == 1
    err = capsys.readouterr().err
    assert said in err and "Traceback" not in err
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main([*args, flag]) == 0
    assert any(said in str(w.message) for w in caught)
    assert "solver_iter_1.caffemodel" in capsys.readouterr().out


def test_labels_beyond_the_classes_are_a_clear_error(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    text = LABELLED.replace("num_output: 10", "num_output: 3")
    (tmp_path / "net.prototxt").write_text(text)
    (tmp_path / "solver.prototxt").write_text(SOLVER)
    args = ["caffe", "train", "--solver", str(tmp_path / "solver.prototxt"), "--data", DATA,
            "--out", str(tmp_path / "out")]
    assert main(args) == 1  # was an IndexError-like RuntimeError from gather (exit 3)
    err = capsys.readouterr().err
    assert "is outside the 3 classes of its scores" in err and "Traceback" not in err

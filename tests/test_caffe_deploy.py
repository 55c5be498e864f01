"""Deploy nets from the command line: transform flags, the scored output, checks, 4-D scores,
and the transform travelling with converted files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from nncompress.cli import main
from nncompress.data import load_data
from nncompress.interop.binaryproto import write_mean_file
from nncompress.interop.caffe_net import from_text
from nncompress.interop.caffemodel import write_caffemodel
from nncompress.interop.weights import net_blobs

DATA = "synthetic:n=300,test=200,size=8,seed=3,shift=0"

# legacy net-level inputs; the Softmax reads the auxiliary 'aux' (4 classes), as in Guo's
# LeNet-300-100 file whose Softmax reads the wrong layer
DEPLOY = """name: "tiny"
input: "data"
input_dim: 1 input_dim: 1 input_dim: 8 input_dim: 8
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
        inner_product_param { num_output: 10 } }
layer { name: "aux" type: "InnerProduct" bottom: "data" top: "aux"
        inner_product_param { num_output: 4 } }
layer { name: "prob" type: "Softmax" bottom: "aux" top: "prob" }
"""


def _centroids(scale: float, mean: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """A nearest-centroid classifier of the data as seen through (x - mean) * scale."""
    splits = load_data(DATA, scale=1.0)
    x = (splits.train_x.flatten(1) - mean) * scale
    means = torch.stack([x[splits.train_y == c].mean(0) for c in range(10)])
    return means, -(means * means).sum(1) / 2


def _reference_accuracy(weight: torch.Tensor, bias: torch.Tensor, scale: float,
                        mean: float = 0.0) -> float:
    splits = load_data(DATA, scale=1.0)
    x = (splits.test_x.flatten(1) - mean) * scale
    return float(((x @ weight.T + bias).argmax(1) == splits.test_y).float().mean())


def _files(tmp_path: Path, text: str = DEPLOY, scale: float = 1 / 256,
           mean: float = 0.0) -> tuple[Path, Path]:
    net = from_text(text)
    weight, bias = _centroids(scale, mean)
    with torch.no_grad():
        net.get_submodule("ip1").weight.copy_(weight.reshape(net.get_submodule("ip1").weight
                                                             .shape))
        net.get_submodule("ip1").bias.copy_(bias)
    (tmp_path / "net.prototxt").write_text(text)
    write_caffemodel(tmp_path / "w.caffemodel", net_blobs(net), "tiny")
    return tmp_path / "net.prototxt", tmp_path / "w.caffemodel"


def _accuracy(out: str) -> float:
    return float(out.split("accuracy ")[1].split("%")[0])


def test_deploy_net_scale_and_output_flags_give_the_reference_accuracy(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    net, weights = _files(tmp_path)
    args = ["caffe", "eval", str(net), str(weights), "--data", DATA]
    assert main(args) == 1  # the Softmax reads the 4-class head
    err = capsys.readouterr().err
    assert "output 'prob' scores 4 classes but the data has 10" in err
    assert "(blobs with 10: ip1)" in err
    assert main([*args, "--output", "ip1", "--scale", "1/256"]) == 0
    out = capsys.readouterr().out
    want = _reference_accuracy(*_centroids(1 / 256), 1 / 256)
    assert want > 0.5
    assert _accuracy(out) == pytest.approx(100 * want, abs=0.006)
    assert "output 'ip1', scale 0.00390625" in out and "kept 650 of 910" in out  # aux: zeros
    assert main([*args, "--output", "ip1"]) == 0  # without the scale: a different number
    assert _accuracy(capsys.readouterr().out) != pytest.approx(100 * want, abs=0.006)


def test_unknown_output_blob_is_named_with_a_suggestion(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    net, weights = _files(tmp_path)
    assert main(["caffe", "eval", str(net), str(weights), "--data", DATA, "--output", "ip"]) == 1
    err = capsys.readouterr().err
    assert "--output 'ip': the net has no blob of that name" in err
    assert "did you mean 'ip1'" in err


def test_mean_value_and_mean_file_flags(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    net, weights = _files(tmp_path, scale=1 / 256, mean=100.0)
    want = 100 * _reference_accuracy(*_centroids(1 / 256, 100.0), 1 / 256, 100.0)
    base = ["caffe", "eval", str(net), str(weights), "--data", DATA, "--output", "ip1",
            "--scale", "0.00390625"]
    assert main([*base, "--mean-value", "100"]) == 0
    assert _accuracy(capsys.readouterr().out) == pytest.approx(want, abs=0.006)
    mean_file = tmp_path / "mean.binaryproto"
    write_mean_file(mean_file, torch.full((1, 8, 8), 100.0))
    assert main([*base, "--mean-file", str(mean_file)]) == 0
    assert _accuracy(capsys.readouterr().out) == pytest.approx(want, abs=0.006)
    write_mean_file(mean_file, torch.full((1, 6, 6), 100.0))
    assert main([*base, "--mean-file", str(mean_file)]) == 1
    assert "mean image has shape [1, 6, 6] but the images have shape [1, 8, 8]" in \
        capsys.readouterr().err


def test_converted_files_carry_the_transform_and_output(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    net, weights = _files(tmp_path, scale=1 / 128, mean=20.0)
    flags = ["--output", "ip1", "--scale", "1/128", "--mean-value", "20"]
    assert main(["caffe", "eval", str(net), str(weights), "--data", DATA, *flags]) == 0
    caffe_accuracy = _accuracy(capsys.readouterr().out)
    ncz, st = tmp_path / "m.ncz", tmp_path / "m.safetensors"
    for out in (ncz, st):
        assert main(["caffe", "convert", str(net), str(weights), "-o", str(out), *flags]) == 0
    capsys.readouterr()
    assert main(["eval", str(ncz), "--data", DATA]) == 0
    assert _accuracy(capsys.readouterr().out) == caffe_accuracy
    with safe_open(str(st), "pt") as f:
        meta = f.metadata()
    assert json.loads(meta["transform"]) == {"scale": 1 / 128, "mean_values": [20.0],
                                             "crop": 0, "mirror": False}
    assert meta["output"] == "ip1"
    assert main(["eval", str(st), "--data", DATA, "--allow-import"]) == 0
    assert _accuracy(capsys.readouterr().out) == caffe_accuracy
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(st).st_mode & 0o777 == 0o666 & ~umask
    assert main(["inspect", str(ncz)]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert '"text": "<' in header and "InnerProduct" not in header


TRAIN_VAL = """name: "tv"
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TRAIN }
        transform_param { scale: 0.00390625 mirror: true } data_param { batch_size: 50 } }
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TEST }
        transform_param { scale: 0.00390625 mean_file: "" } data_param { batch_size: 50 } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 10 kernel_size: 8 } }
layer { name: "acc" type: "Accuracy" bottom: "conv" bottom: "label" top: "acc" }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "conv" bottom: "label" top: "loss" }
"""


def test_four_d_scores_and_a_loss_layer_net_converted_to_ncz(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    net = from_text(TRAIN_VAL, input_shape=(1, 8, 8))
    weight, bias = _centroids(1 / 256)
    with torch.no_grad():
        net.get_submodule("conv").weight.copy_(weight.reshape(10, 1, 8, 8))
        net.get_submodule("conv").bias.copy_(bias)
    (tmp_path / "tv.prototxt").write_text(TRAIN_VAL)
    write_caffemodel(tmp_path / "w.caffemodel", net_blobs(net), "tv")
    args = [str(tmp_path / "tv.prototxt"), str(tmp_path / "w.caffemodel"), "--data", DATA]
    assert main(["caffe", "eval", *args]) == 0  # N x 10 x 1 x 1 scores, the Data transform
    got = _accuracy(capsys.readouterr().out)
    assert got == pytest.approx(100 * _reference_accuracy(weight, bias, 1 / 256), abs=0.006)
    assert main(["caffe", "convert", *args, "-o", str(tmp_path / "tv.ncz")]) == 0
    from nncompress.export import load_compact

    model = load_compact(tmp_path / "tv.ncz")
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)  # scores, as nncompress eval takes
    assert main(["eval", str(tmp_path / "tv.ncz"), "--data", DATA]) == 0
    assert _accuracy(capsys.readouterr().out) == got


def test_input_shape_that_disagrees_with_the_data_names_both(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = TRAIN_VAL.replace('type: "Convolution"', 'type: "InnerProduct"').replace(
        "convolution_param { num_output: 10 kernel_size: 8 }",
        "inner_product_param { num_output: 10 }")
    (tmp_path / "tv.prototxt").write_text(text)
    write_caffemodel(tmp_path / "w.caffemodel", net_blobs(from_text(text, (1, 10, 10))), "tv")
    assert main(["caffe", "eval", str(tmp_path / "tv.prototxt"), str(tmp_path / "w.caffemodel"),
                 "--data", DATA, "--input-shape", "1,10,10"]) == 1
    err = capsys.readouterr().err
    assert "takes examples of shape [1, 10, 10] (--input-shape), the data gives [1, 8, 8]" in err


def test_the_deepest_head_scoring_the_labels_is_the_output() -> None:
    text = """
    input: "data" input: "label" input_shape { dim: 1 dim: 4 } input_shape { dim: 1 }
    layer { name: "a" type: "InnerProduct" bottom: "data" top: "a"
            inner_product_param { num_output: 3 } }
    layer { name: "aux_loss" type: "SoftmaxWithLoss" bottom: "a" bottom: "label" top: "l1"
            loss_weight: 0.3 }
    layer { name: "b" type: "InnerProduct" bottom: "a" top: "b"
            inner_product_param { num_output: 3 } }
    layer { name: "loss" type: "SoftmaxWithLoss" bottom: "b" bottom: "label" top: "l2" }
    """
    net = from_text(text)
    assert net.outputs == {"TRAIN": "b", "TEST": "b"}


def test_a_mean_image_travels_in_the_ncz_file(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    net, weights = _files(tmp_path, scale=1 / 256, mean=0.0)
    mean = torch.linspace(0, 120, 64).reshape(1, 8, 8)
    write_mean_file(tmp_path / "mean.binaryproto", mean)
    flags = ["--output", "ip1", "--scale", "1/256", "--mean-file",
             str(tmp_path / "mean.binaryproto")]
    assert main(["caffe", "eval", str(net), str(weights), "--data", DATA, *flags]) == 0
    caffe_accuracy = _accuracy(capsys.readouterr().out)
    assert main(["caffe", "convert", str(net), str(weights), "-o", str(tmp_path / "m.ncz"),
                 *flags]) == 0
    (tmp_path / "mean.binaryproto").unlink()  # the file needs nothing beside it
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "m.ncz"), "--data", DATA]) == 0
    assert _accuracy(capsys.readouterr().out) == caffe_accuracy
    from nncompress.export import load_compact

    model = load_compact(tmp_path / "m.ncz")
    assert torch.equal(model.input_transform.mean_image, mean)

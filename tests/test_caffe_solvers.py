"""AdaGrad, RMSProp and AdaDelta against Caffe's rules written out by hand; the solver's net
forms (train_net/test_net, net_param), refused settings, and INQ's portion 0.0 0.0."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import nncompress as nnc
from nncompress.errors import FormatError
from nncompress.interop.solver import CaffeSolver, read_solver
from nncompress.interop.solver_train import train_from_solver


def _steps(kind: str, grads: list[list[float]], **options: float) -> list[float]:
    w = torch.nn.Parameter(torch.tensor([0.5, -1.0]))
    opt = CaffeSolver([w], kind=kind, **options)  # type: ignore[arg-type]
    for g in grads:
        w.grad = torch.tensor(g)
        opt.step()
    return w.detach().tolist()


GRADS = [[0.1, -0.2], [0.3, 0.05], [-0.2, 0.4]]


def test_adagrad_matches_the_hand_formula() -> None:
    lr, wd, delta = 0.1, 0.01, 1e-8
    for i, w in enumerate([0.5, -1.0]):
        h = 0.0
        for g in (row[i] for row in GRADS):
            g = g + wd * w
            h += g * g
            w -= lr * g / (math.sqrt(h) + delta)
        got = _steps("AdaGrad", GRADS, lr=lr, weight_decay=wd, delta=delta)[i]
        assert got == pytest.approx(w, rel=1e-6)


def test_rmsprop_matches_the_hand_formula() -> None:
    lr, decay, delta = 0.01, 0.9, 1e-6
    for i, w in enumerate([0.5, -1.0]):
        h = 0.0
        for g in (row[i] for row in GRADS):
            h = decay * h + (1 - decay) * g * g
            w -= lr * g / (math.sqrt(h) + delta)
        got = _steps("RMSProp", GRADS, lr=lr, rms_decay=decay, delta=delta)[i]
        assert got == pytest.approx(w, rel=1e-6)


def test_adadelta_matches_the_hand_formula() -> None:
    lr, m, delta = 1.0, 0.95, 1e-6
    for i, w in enumerate([0.5, -1.0]):
        h = h2 = 0.0
        for g in (row[i] for row in GRADS):
            h = m * h + (1 - m) * g * g
            u = g * math.sqrt((h2 + delta) / (h + delta))
            h2 = m * h2 + (1 - m) * u * u
            w -= lr * u
        got = _steps("AdaDelta", GRADS, lr=lr, momentum=m, delta=delta)[i]
        assert got == pytest.approx(w, rel=1e-5)


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(("line", "message"), [
    ('type: "AdaGrad" momentum: 0.9', "AdaGrad takes no momentum"),
    ("snapshot_format: HDF5", "snapshot_format: HDF5 is not supported"),
    ('test_state { stage: "test-on-train" }', "test_state with a stage or a level"),
    ("rms_decay: 1.5", "rms_decay 1.5 must be in"),
    ('net: "a.prototxt" test_net: "b.prototxt"', "gives 'net' and also a train or test net"),
])
def test_settings_that_would_be_ignored_are_refused(tmp_path: Path, line: str,
                                                    message: str) -> None:
    _write(tmp_path, "a.prototxt", "")
    _write(tmp_path, "b.prototxt", "")
    solver = _write(tmp_path, "s.prototxt", f"base_lr: 0.1 max_iter: 1 {line}\n")
    with pytest.raises(FormatError, match=message):
        train_from_solver(solver, out_dir=tmp_path, log=lambda s: None)


def test_plain_states_and_binaryproto_snapshots_are_accepted(tmp_path: Path) -> None:
    solver = _write(tmp_path, "s.prototxt", "base_lr: 0.1 snapshot_format: BINARYPROTO "
                    "test_state { level: 0 } train_state { }\n")
    assert read_solver(solver).base_lr == 0.1


DATA_LAYER = """layer {{ name: "data" type: "Data" top: "data" top: "label"
        transform_param {{ scale: 0.00390625 mean_file: "" }}
        data_param {{ batch_size: {batch} }} {rule} }}
"""
BODY = """layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 10 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""
DATA = "synthetic:n=64,test=20,size=6"


def test_train_net_with_test_net_trains_and_tests(tmp_path: Path) -> None:
    train = _write(tmp_path, "train.prototxt", 'name: "t"\n' + DATA_LAYER.format(
        batch=8, rule="include { phase: TRAIN }") + BODY)
    test = _write(tmp_path, "test.prototxt", DATA_LAYER.format(batch=5, rule="") + BODY +
                  'layer { name: "acc" type: "Accuracy" bottom: "ip" bottom: "label" '
                  'top: "acc" }')
    solver = _write(tmp_path, "s.prototxt", f'train_net: "{train.name}" test_net: "{test.name}" '
                    'base_lr: 0.1 lr_policy: "fixed" max_iter: 2 test_iter: 4 '
                    'test_interval: 2 test_initialization: false snapshot_after_train: false\n')
    result = train_from_solver(solver, data=DATA, out_dir=tmp_path, log=lambda s: None)
    assert [it for it, _ in result.tests] == [2]
    assert set(result.tests[0][1]) == {"acc", "loss"}  # the test net's outputs
    steps = {(s.spec.name, s.phases) for s in result.net.steps}
    assert ("acc", ("TEST",)) in steps and ("data", ("TRAIN",)) in steps
    assert ("ip", ("TRAIN",)) in steps and ("ip", ("TEST",)) in steps
    assert len([k for k, _ in result.net.named_children() if k == "ip"]) == 1  # shared blobs


def test_inline_net_param_and_inq_portion_zero_is_a_no_op(tmp_path: Path) -> None:
    body = BODY.replace('type: "InnerProduct"', 'type: "INQInnerProduct"').replace(
        "num_output: 10 weight_filler", "num_output: 10 weight_filler").replace(
        "} }\nlayer { name: \"loss\"",
        "} inq_inner_product_param { portion: 0.0 portion: 0.0 num_quantum_values: 7 } }\n"
        "layer { name: \"loss\"")
    net = DATA_LAYER.format(batch=8, rule="") + body
    solver = _write(tmp_path, "s.prototxt", f"net_param {{ {net} }} base_lr: 0.1 max_iter: 2 "
                    "snapshot_after_train: false\n")
    result = train_from_solver(solver, data=DATA, out_dir=tmp_path, log=lambda s: None)
    layers = dict(nnc.compressed_layers(result.net))
    assert set(layers) == {"ip"}
    assert bool(layers["ip"].free_entries("weight").all())  # nothing quantized
    assert float(layers["ip"].inq_portion) == 0.0


def test_mean_file_of_a_data_layer_is_read_beside_the_net_and_cropped(tmp_path: Path) -> None:
    from nncompress.interop.binaryproto import write_mean_file
    from nncompress.interop.caffe_spec import layer_specs
    from nncompress.interop.prototxt import parse_text
    from nncompress.interop.solver_train import DataFeed

    mean = torch.arange(36, dtype=torch.float32).reshape(1, 6, 6)
    write_mean_file(tmp_path / "mean.binaryproto", mean)
    text = ('layer { name: "d" type: "Data" top: "data" top: "label" transform_param { '
            'mean_file: "mean.binaryproto" crop_size: 4 scale: 0.5 } '
            'data_param { batch_size: 2 } }')
    spec = layer_specs(parse_text(text))[0]
    x = torch.full((3, 1, 6, 6), 100.0)
    feed = DataFeed(x, torch.tensor([1, 2, 3]), spec, train=False, seed=0, base=tmp_path)
    batch = feed.next()
    want = (100.0 - mean[:, 1:5, 1:5]) * 0.5  # the center crop of image and mean together
    assert batch["data"].shape == (2, 1, 4, 4)
    assert torch.equal(batch["data"][1], want)
    assert batch["label"].tolist() == [1, 2]
    with pytest.raises(FormatError, match="mean file not found"):
        DataFeed(x, torch.tensor([1, 2, 3]), spec, train=False, seed=0, base=None)

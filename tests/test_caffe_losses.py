"""Caffe's SigmoidCrossEntropyLoss and EuclideanLoss against hand-computed values, in a net."""

from __future__ import annotations

import math

import pytest
import torch

from nncompress.errors import ConfigError
from nncompress.interop.caffe_losses import euclidean_loss, sigmoid_cross_entropy_loss
from nncompress.interop.caffe_net import from_text


def _bce(x: float, t: float) -> float:
    p = 1.0 / (1.0 + math.exp(-x))
    return -(t * math.log(p) + (1 - t) * math.log(1 - p))


def test_sigmoid_cross_entropy_matches_the_hand_formula() -> None:
    x = torch.tensor([[2.0, -1.0], [0.5, -3.0]])
    t = torch.tensor([[1.0, 0.0], [0.25, 1.0]])
    total = _bce(2.0, 1.0) + _bce(-1.0, 0.0) + _bce(0.5, 0.25) + _bce(-3.0, 1.0)
    assert float(sigmoid_cross_entropy_loss(x, t, None, "VALID")) == pytest.approx(total / 4)
    assert float(sigmoid_cross_entropy_loss(x, t, None, "BATCH_SIZE")) == pytest.approx(total / 2)
    assert float(sigmoid_cross_entropy_loss(x, t, None, "NONE")) == pytest.approx(total)


def test_sigmoid_cross_entropy_ignores_the_ignore_label_and_is_stable() -> None:
    x = torch.tensor([[2.0, -1.0, 1000.0]])
    t = torch.tensor([[1.0, -1.0, 1.0]])  # -1 ignored; a large score gives 0, not NaN
    got = float(sigmoid_cross_entropy_loss(x, t, -1, "VALID"))
    assert got == pytest.approx(_bce(2.0, 1.0) / 2)
    assert float(sigmoid_cross_entropy_loss(x, t, -1, "FULL")) == pytest.approx(_bce(2.0, 1.0) / 3)
    with pytest.raises(ConfigError, match="3 entries for 2 scores"):
        sigmoid_cross_entropy_loss(torch.zeros(1, 2), torch.zeros(3), None, "VALID")


def test_euclidean_loss_is_half_the_squared_distance_per_example() -> None:
    a = torch.tensor([[1.0, 2.0], [3.0, -1.0]])
    b = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    # (1 + 4 + 4 + 4) / (2 * 2)
    assert float(euclidean_loss(a, b)) == pytest.approx(13 / 4)
    with pytest.raises(ConfigError, match="4 and 3 entries"):
        euclidean_loss(a, torch.zeros(3))


NET = """
input: "x" input_shape { dim: 2 dim: 3 }
input: "t" input_shape { dim: 2 dim: 2 }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y"
        inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "bce" type: "SigmoidCrossEntropyLoss" bottom: "y" bottom: "t" top: "bce" }
layer { name: "l2" type: "EuclideanLoss" bottom: "y" bottom: "t" top: "l2"
        loss_weight: 0.5 }
"""


def test_new_loss_layers_run_in_a_net_with_their_weights_and_gradients() -> None:
    net = from_text(NET, seed=1)
    x = torch.randn(2, 3, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    values = net.run({"x": x, "t": t})
    y = values["y"].detach()
    want_bce = sum(_bce(float(y[i, j]), float(t[i, j])) for i in range(2) for j in range(2)) / 4
    want_l2 = float(((y - t) ** 2).sum()) / 4
    losses = net.losses(values)
    assert losses["bce"][0] == 1.0 and losses["l2"][0] == 0.5
    assert float(losses["bce"][1].detach()) == pytest.approx(want_bce)
    assert float(losses["l2"][1].detach()) == pytest.approx(want_l2)
    (losses["bce"][1] + 0.5 * losses["l2"][1]).backward()
    weight = net.get_submodule("ip").weight
    assert weight.grad is not None and float(weight.grad.abs().sum()) > 0

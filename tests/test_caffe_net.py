"""CaffeNet: Caffe's pooling rule against a per-element reference, LeNet from the seed's files,
phases, and the errors for unknown types and dangling bottoms."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from nncompress.errors import ConfigError
from nncompress.interop.caffe_net import CaffeNet, from_prototxt, from_text, supported_types
from nncompress.interop.caffe_ops import caffe_pool2d, pool_output_size
from nncompress.interop.prototxt import parse_text

FIXTURES = Path(__file__).parents[1].parent / "shared" / "fixtures" / "caffe" / "mnist"
needs_fixtures = pytest.mark.skipif(not FIXTURES.is_dir(), reason="shared Caffe fixtures absent")


def _reference_pool(x: torch.Tensor, k: int, s: int, p: int, mode: str) -> torch.Tensor:
    """Caffe's pooling loops, element by element (square kernels)."""
    h, w = x.shape[-2:]
    oh = math.ceil((h + 2 * p - k) / s) + 1
    ow = math.ceil((w + 2 * p - k) / s) + 1
    if p and (oh - 1) * s >= h + p:
        oh -= 1
    if p and (ow - 1) * s >= w + p:
        ow -= 1
    out = torch.empty(*x.shape[:-2], oh, ow)
    for i in range(oh):
        for j in range(ow):
            hs, ws = i * s - p, j * s - p
            he, we = min(hs + k, h + p), min(ws + k, w + p)
            size = (he - hs) * (we - ws)
            hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
            window = x[..., hs:he, ws:we]
            if mode == "MAX":
                out[..., i, j] = window.amax(dim=(-1, -2))
            else:
                out[..., i, j] = window.sum(dim=(-1, -2)) / size
    return out


@pytest.mark.parametrize("mode", ["MAX", "AVE"])
@pytest.mark.parametrize(("size", "k", "s", "p"), [(24, 2, 2, 0), (13, 3, 2, 0), (7, 3, 2, 1),
                                                   (6, 3, 2, 1), (5, 2, 2, 1), (9, 3, 3, 2)])
def test_pooling_matches_caffe_loops(mode: str, size: int, k: int, s: int, p: int) -> None:
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(size + k))
    got = caffe_pool2d(x, (k, k), (s, s), (p, p), mode)
    want = _reference_pool(x, k, s, p, mode)
    assert got.shape == want.shape
    assert got.shape[-1] == pool_output_size(size, k, s, p)
    torch.testing.assert_close(got, want)


def test_pool_size_rule_rounds_up_and_drops_a_window_in_the_padding() -> None:
    assert pool_output_size(13, 3, 2, 0) == 6  # AlexNet: ceil(10/2) + 1
    assert pool_output_size(14, 3, 2, 0) == 7  # rounds up where floor would give 6
    assert pool_output_size(5, 2, 2, 1) == 3  # ceil(5/2) + 1 = 4, the 4th starts at 6 = 5 + 1


@needs_fixtures
def test_seed_lenet_dns_net_builds_with_its_layer_parameters() -> None:
    net = from_prototxt(FIXTURES / "lenet_train_test_DNS.prototxt", input_shape=(1, 28, 28))
    assert sum(p.numel() for p in net.parameters()) == 431_080
    comp = net.compression()
    assert {k: c.values["c_rate"] for k, c in comp.items()} == \
        {"conv1": 0.4, "conv2": 2.5, "ip1": 2.5, "ip2": 3.0}
    assert {c.values["gamma"] for c in comp.values()} == {1e-5}
    assert {c.values["iter_stop"] for c in comp.values()} == {140000}
    assert (comp["ip1"].values["alpha_low"], comp["ip1"].values["alpha_high"]) == (0.95, 1.05)
    ip = net.specs[-3]
    assert (ip.name, ip.param(1).lr_mult, ip.param(1).decay_mult) == ("ip2", 2.0, 1.0)
    x, y = torch.randn(3, 1, 28, 28), torch.tensor([1, 2, 3])
    blobs = net.run({"data": x, "label": y})
    assert "accuracy" not in blobs and set(net.losses(blobs)) == {"loss"}
    net.eval()
    blobs = net.run({"data": x, "label": y})
    assert blobs["pool2"].shape == (3, 50, 4, 4) and "accuracy" in blobs
    torch.testing.assert_close(net(x), blobs["ip2"])


@needs_fixtures
def test_seed_inq_net_reads_portion_pair_and_quantum_values() -> None:
    net = from_prototxt(FIXTURES / "lenet_train_test_inq_60.prototxt", input_shape=(1, 28, 28))
    comp = net.compression()
    assert {k: (c.kind, c.portions, c.values["num_quantum_values"]) for k, c in comp.items()} \
        == {k: ("inq", (0.3, 0.6), 7) for k in ("conv1", "conv2", "ip1", "ip2")}


def test_layers_match_torch_references() -> None:
    text = """
    input: "x" input_shape { dim: 1 dim: 2 dim: 6 dim: 6 }
    layer { name: "c" type: "Convolution" bottom: "x" top: "c"
            convolution_param { num_output: 4 kernel_h: 3 kernel_w: 1 pad_w: 1 group: 2
                                weight_filler { type: "gaussian" std: 0.5 } } }
    layer { name: "r" type: "ReLU" bottom: "c" top: "c" relu_param { negative_slope: 0.1 } }
    layer { name: "s" type: "Split" bottom: "c" top: "c1" top: "c2" }
    layer { name: "e" type: "Eltwise" bottom: "c1" bottom: "c2" top: "e"
            eltwise_param { operation: SUM coeff: 2 coeff: -0.5 } }
    layer { name: "cat" type: "Concat" bottom: "e" bottom: "c1" top: "cat" }
    layer { name: "f" type: "Flatten" bottom: "cat" top: "f" }
    layer { name: "ip" type: "InnerProduct" bottom: "f" top: "y"
            inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
    """
    net = from_text(text)
    x = torch.randn(2, 2, 6, 6)
    conv, ip = net.get_submodule("c"), net.get_submodule("ip")
    assert conv.weight.shape == (4, 1, 3, 1) and conv.padding == (0, 1)
    assert float(conv.bias.detach().abs().sum()) == 0.0  # Caffe's default bias filler: constant 0
    c = torch.nn.functional.leaky_relu(conv(x), 0.1)
    want = ip(torch.cat([1.5 * c, c], 1).flatten(1))
    torch.testing.assert_close(net(x), want)


def test_unknown_layer_type_names_layer_type_and_supported_types() -> None:
    text = 'input: "x" input_dim: 1 input_dim: 3\n' \
           'layer { name: "odd" type: "Deconv" bottom: "x" top: "y" }'
    with pytest.raises(ConfigError) as info:
        CaffeNet(parse_text(text, "n.prototxt"))
    assert str(info.value) == (
        "n.prototxt:2:1: layer 'odd' has type 'Deconv', which is not supported; supported "
        f"types: {', '.join(supported_types())}")
    assert "DNSInnerProduct" in str(info.value) and "Pooling" in str(info.value)


def test_bottom_without_producer_is_an_error() -> None:
    text = 'layer { name: "r" type: "ReLU" bottom: "nothing" top: "y" }'
    with pytest.raises(ConfigError, match="layer 'r' \\(ReLU\\) reads bottom 'nothing', which no "
                                          "earlier layer of the TRAIN phase produces"):
        CaffeNet(parse_text(text, "n.prototxt"))


def test_data_layer_needs_an_input_shape() -> None:
    text = 'layer { name: "d" type: "Data" top: "data" top: "label" }'
    with pytest.raises(ConfigError, match="the Data layer 'd' reads a database; give the shape"):
        CaffeNet(parse_text(text, "n.prototxt"))

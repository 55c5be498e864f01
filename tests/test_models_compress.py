"""DNS and INQ on every new model (tiny inputs), and AlexNet against Caffe's own definition.

Each model is prepared whole: plain, grouped, depthwise, 1x1 and bias-free convolutions and
Linear layers all become compressed layers, train a step, and finalize to plain layers that
compute what the prepared model computed. The models of 10M parameters and more (ResNet-18,
ResNet-50, AlexNet, VGG-16) are marked slow: building and quantizing them costs seconds on a
CPU. VGG-16 (plain 3x3 convolutions and Linear layers, nothing the others lack) runs DNS only,
and leaves out its two big Linear layers (119M of its 138M entries). Inputs are the smallest
that leave every BatchNorm at least 2x2 pixels: one pixel per image makes a batch of 2 too small
for the training statistics.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

import nncompress as nnc
from nncompress.models import build_model, load_state_dict_file

# (model, input size, kwargs, layers left out); small inputs keep the forward passes cheap
SMALL = [("resnet20", 8, {}, ()), ("squeezenet1_1", 25, {}, ()), ("mobilenet_v2", 64, {}, ())]
LARGE = [("resnet18", 64, {}, ()), ("alexnet", 67, {"input_size": 67}, ()),
         ("vgg16", 32, {}, ("classifier.0", "classifier.3")), ("resnet50", 64, {}, ())]
CASES = SMALL + [pytest.param(*case, marks=pytest.mark.slow) for case in LARGE]
INQ_CASES = SMALL + [pytest.param(*case, marks=pytest.mark.slow) for case in LARGE
                     if case[0] != "vgg16"]
FIELDS = ("name", "size", "kwargs", "skip")


def _weighted(model: nn.Module, skip: tuple[str, ...]) -> list[str]:
    return [n for n, m in model.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Linear)) and n not in skip]


def _step(model: nn.Module, size: int, seed: int) -> None:
    """One SGD step on a seeded random batch of 2 images and 3 classes."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 3, size, size, generator=gen)
    y = torch.randint(0, 3, (2,), generator=gen)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    nn.functional.cross_entropy(model(x), y).backward()
    nnc.mask_fixed_gradients(model)
    optimizer.step()
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())


def _build(name: str, kwargs: dict[str, object]) -> nn.Module:
    torch.manual_seed(0)
    return build_model(name, num_classes=3, **kwargs)


@pytest.mark.parametrize(FIELDS, CASES)
def test_dns_prunes_every_layer_and_finalizes(name: str, size: int, kwargs: dict[str, object],
                                              skip: tuple[str, ...]) -> None:
    model = _build(name, kwargs)
    layers = _weighted(model, skip)
    nnc.prepare(model, nnc.DNSConfig(c_rate=0.5), layers=dict.fromkeys(skip))
    assert [n for n, _ in nnc.compressed_layers(model)] == layers
    _step(model, size, seed=1)  # the first training forward prunes with probability 1
    for layer_name, layer in nnc.compressed_layers(model):
        mask = layer.mask("weight")
        assert mask is not None and mask.dtype == torch.bool
        kept = int(mask.sum())
        assert 0 < kept < mask.numel(), layer_name
    model.eval()
    x = torch.rand(2, 3, size, size)
    prepared_out = model(x)
    plain = nnc.finalize(model)
    assert not nnc.is_prepared(plain)
    assert torch.equal(plain(x), prepared_out)


@pytest.mark.parametrize(FIELDS, INQ_CASES)
def test_inq_fixes_powers_of_two_in_every_layer(name: str, size: int, kwargs: dict[str, object],
                                                skip: tuple[str, ...]) -> None:
    model = _build(name, kwargs)
    nnc.prepare(model, nnc.INQConfig(num_quantum_values=8), layers=dict.fromkeys(skip))
    assert [n for n, _ in nnc.compressed_layers(model)] == _weighted(model, skip)
    nnc.quantize_step(model, 0.5)
    fixed_before = {}
    for layer_name, layer in nnc.compressed_layers(model):
        values = layer.fixed_values("weight")
        assert values is not None
        levels = layer.inq_levels("weight")
        assert levels is not None
        participating = levels[2]  # N0: exact zeros are fixed at 0 from the start
        chosen = ~torch.isnan(values)
        # round(0.5 * N0), halves up, of the participating entries fixed; each 0 or +-2^k
        expected = values.numel() - participating + math.floor(0.5 * participating + 0.5)
        assert participating > 0.99 * values.numel()
        assert int(chosen.sum()) == expected, layer_name
        nonzero = values[chosen & (values != 0)].abs()
        assert bool((torch.log2(nonzero) == torch.log2(nonzero).round()).all()), layer_name
        fixed_before[layer_name] = (chosen, values[chosen].clone())
    _step(model, size, seed=2)
    for layer_name, layer in nnc.compressed_layers(model):
        chosen, values = fixed_before[layer_name]
        assert torch.equal(layer.weight.detach()[chosen], values), layer_name


def _caffe_alexnet(size: int, classes: int) -> str:
    """The BVLC AlexNet deploy net, written out layer by layer, with a small input."""
    def conv(name: str, bottom: str, out: int, kernel: int, stride: int = 1, pad: int = 0,
             group: int = 1) -> str:
        return (f'layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{name}" '
                f"convolution_param {{ num_output: {out} kernel_size: {kernel} stride: {stride} "
                f'pad: {pad} group: {group} weight_filler {{ type: "gaussian" std: 0.01 }} }} }}\n'
                f'layer {{ name: "relu{name[-1]}" type: "ReLU" bottom: "{name}" top: "{name}" }}\n')

    def pool(name: str, bottom: str) -> str:
        return (f'layer {{ name: "{name}" type: "Pooling" bottom: "{bottom}" top: "{name}" '
                "pooling_param { pool: MAX kernel_size: 3 stride: 2 } }\n")

    def norm(name: str, bottom: str) -> str:
        return (f'layer {{ name: "{name}" type: "LRN" bottom: "{bottom}" top: "{name}" '
                "lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 } }\n")

    def fc(name: str, bottom: str, out: int, relu: bool = True) -> str:
        text = (f'layer {{ name: "{name}" type: "InnerProduct" bottom: "{bottom}" '
                f'top: "{name}" inner_product_param {{ num_output: {out} '
                'weight_filler { type: "gaussian" std: 0.005 } } }\n')
        if relu:
            text += (f'layer {{ name: "relu{name[-1]}" type: "ReLU" bottom: "{name}" '
                     f'top: "{name}" }}\n')
        return text

    return (f'input: "data" input_shape {{ dim: 1 dim: 3 dim: {size} dim: {size} }}\n'
            + conv("conv1", "data", 96, 11, stride=4) + norm("norm1", "conv1")
            + pool("pool1", "norm1") + conv("conv2", "pool1", 256, 5, pad=2, group=2)
            + norm("norm2", "conv2") + pool("pool2", "norm2")
            + conv("conv3", "pool2", 384, 3, pad=1) + conv("conv4", "conv3", 384, 3, pad=1,
                                                           group=2)
            + conv("conv5", "conv4", 256, 3, pad=1, group=2) + pool("pool5", "conv5")
            + fc("fc6", "pool5", 4096) + fc("fc7", "fc6", 4096)
            + fc("fc8", "fc7", classes, relu=False))


@pytest.mark.slow
def test_alexnet_computes_what_the_caffe_net_computes(tmp_path: Path) -> None:
    from nncompress.cli import main
    from nncompress.interop.caffe_net import from_text
    from nncompress.interop.caffemodel import write_caffemodel
    from nncompress.interop.weights import net_blobs

    # 99 -> conv1 23 -> pool1 11 -> pool2 5 -> pool5 2: Caffe's rounded-up pooling matters
    text = _caffe_alexnet(99, 5)
    caffe = from_text(text, seed=3).eval()
    (tmp_path / "deploy.prototxt").write_text(text)
    write_caffemodel(tmp_path / "alexnet.caffemodel", net_blobs(caffe))
    converted = tmp_path / "converted.safetensors"
    assert main(["caffe", "convert", str(tmp_path / "deploy.prototxt"),
                 str(tmp_path / "alexnet.caffemodel"), "-o", str(converted)]) == 0
    ours = load_state_dict_file(build_model("alexnet", num_classes=5, input_size=99), converted)
    ours.eval()
    x = torch.rand(2, 3, 99, 99, generator=torch.Generator().manual_seed(4)) * 255
    want = caffe(x).detach()
    assert float(want.abs().max()) > 1e-3  # logits of order 1e-3 with these fillers
    torch.testing.assert_close(ours(x), want, rtol=1e-4, atol=1e-7)


@pytest.mark.slow  # writing a compact file takes over a second for these models
@pytest.mark.parametrize("name", ["resnet20", "squeezenet1_1"])
def test_quantized_model_round_trips_through_a_compact_file(tmp_path: Path, name: str) -> None:
    model = _build(name, {})
    nnc.prepare(model, nnc.INQConfig(num_quantum_values=8))
    nnc.quantize_step(model, 1.0)
    model = nnc.finalize(model).eval()
    nnc.save_compact(model, tmp_path / "model.ncz")
    loaded = nnc.load_compact(tmp_path / "model.ncz").eval()
    x = torch.rand(2, 3, 32, 32)
    assert type(loaded) is type(model)
    assert torch.equal(loaded(x), model(x))

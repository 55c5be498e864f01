"""The ImageNet-class models and ResNet-20: parameter counts, layouts, output shapes, arguments.

Big models are built on the ``meta`` device (shapes only, no memory, no initialisation cost);
their forward passes there check output shapes without computing anything.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nncompress.errors import ConfigError
from nncompress.models import build_model, default_input_shape, list_models


def _meta(name: str, **kwargs: object) -> nn.Module:
    with torch.device("meta"):
        return build_model(name, **kwargs)


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


# The published counts at 1000 classes (torchvision's and Caffe's model files hold as many).
PARAMETERS = {
    "alexnet": 60_965_224,
    "resnet18": 11_689_512,
    "resnet50": 25_557_032,
    "vgg16": 138_357_544,
    "squeezenet1_1": 1_235_496,
    "mobilenet_v2": 3_504_872,
}


def test_new_models_are_registered() -> None:
    assert set(PARAMETERS) | {"resnet20"} <= set(list_models())


@pytest.mark.parametrize("name", sorted(PARAMETERS))
def test_parameter_count_at_1000_classes(name: str) -> None:
    assert _count(_meta(name)) == PARAMETERS[name]


@pytest.mark.parametrize("name", sorted(PARAMETERS))
def test_classifier_follows_num_classes(name: str) -> None:
    # only the last layer changes: (in + 1) parameters per class
    last_in = {"alexnet": 4096, "resnet18": 512, "resnet50": 2048, "vgg16": 4096,
               "squeezenet1_1": 512, "mobilenet_v2": 1280}[name]
    assert _count(_meta(name, num_classes=10)) == PARAMETERS[name] - 990 * (last_in + 1)


def test_resnet20_count_by_hand() -> None:
    # conv1 3*16*9 = 432, bn1 2*16 = 32
    # layer1: 3 blocks of 2 convs 16*16*9 = 2304 and 2 BNs of 32: 3 * (4608 + 64) = 14,016
    # layer2: first block 16*32*9 + 32*32*9 + 2*64 = 13,952; two more of 2*9216 + 128:
    #         37,120 -> 51,072
    # layer3: first block 32*64*9 + 64*64*9 + 2*128 = 55,552; two more of 2*36,864 + 256:
    #         147,968 -> 203,520
    # fc 64*10 + 10 = 650; option A shortcuts have no parameters.
    # 432 + 32 + 14,016 + 51,072 + 203,520 + 650 = 269,722 (the paper's "0.27M").
    assert _count(_meta("resnet20")) == 269_722
    # option B adds two 1x1 projections with BatchNorm: 16*32 + 64 and 32*64 + 128
    assert _count(_meta("resnet20", shortcut="B")) == 269_722 + 576 + 2_176


def test_resnet18_has_torchvision_names_and_shapes() -> None:
    shapes = _shapes(_meta("resnet18"))
    assert len(shapes) == 122  # 62 parameters, 60 BatchNorm buffers
    assert shapes["conv1.weight"] == (64, 3, 7, 7)
    assert shapes["bn1.running_var"] == (64,)
    assert shapes["layer1.1.conv2.weight"] == (64, 64, 3, 3)
    assert shapes["layer2.0.conv1.weight"] == (128, 64, 3, 3)
    assert shapes["layer2.0.downsample.0.weight"] == (128, 64, 1, 1)
    assert shapes["layer2.0.downsample.1.num_batches_tracked"] == ()
    assert shapes["layer4.1.bn2.bias"] == (512,)
    assert shapes["fc.weight"] == (1000, 512)
    assert "layer1.0.downsample.0.weight" not in shapes


def test_resnet50_bottlenecks_stride_in_the_3x3() -> None:
    model = _meta("resnet50")
    shapes = _shapes(model)
    assert len(shapes) == 320
    assert shapes["layer1.0.downsample.0.weight"] == (256, 64, 1, 1)
    assert shapes["layer3.5.conv3.weight"] == (1024, 256, 1, 1)
    first = model.layer2[0]
    assert (first.conv1.stride, first.conv2.stride) == ((1, 1), (2, 2))


def test_vgg16_squeezenet_mobilenet_names() -> None:
    vgg = _shapes(_meta("vgg16"))
    convs = [int(k.split(".")[1]) for k in vgg if k.startswith("features.") and
             k.endswith(".weight")]
    assert convs == [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
    assert [k for k in vgg if k.startswith("classifier.")] == [
        "classifier.0.weight", "classifier.0.bias", "classifier.3.weight",
        "classifier.3.bias", "classifier.6.weight", "classifier.6.bias"]
    squeeze = _shapes(_meta("squeezenet1_1"))
    assert len(squeeze) == 52
    assert squeeze["features.3.squeeze.weight"] == (16, 64, 1, 1)
    assert squeeze["features.12.expand3x3.weight"] == (256, 64, 3, 3)
    assert squeeze["classifier.1.weight"] == (1000, 512, 1, 1)
    mobile = _shapes(_meta("mobilenet_v2"))
    assert len(mobile) == 314
    assert mobile["features.0.0.weight"] == (32, 3, 3, 3)
    assert mobile["features.1.conv.0.0.weight"] == (32, 1, 3, 3)  # depthwise, no expansion
    assert mobile["features.1.conv.1.weight"] == (16, 32, 1, 1)
    assert mobile["features.2.conv.0.0.weight"] == (96, 16, 1, 1)  # expansion 6
    assert mobile["features.17.conv.3.running_mean"] == (320,)
    assert mobile["features.18.0.weight"] == (1280, 320, 1, 1)
    assert mobile["classifier.1.weight"] == (1000, 1280)


def test_alexnet_has_caffe_layer_names_groups_and_lrn() -> None:
    model = _meta("alexnet")
    assert [n for n, p in model.named_parameters() if n.endswith(".weight")] == [
        "conv1.weight", "conv2.weight", "conv3.weight", "conv4.weight", "conv5.weight",
        "fc6.weight", "fc7.weight", "fc8.weight"]
    assert [getattr(model, f"conv{i}").groups for i in range(1, 6)] == [1, 2, 1, 2, 2]
    shapes = _shapes(model)
    assert shapes["conv2.weight"] == (256, 48, 5, 5)
    assert shapes["conv4.weight"] == (384, 192, 3, 3)
    assert shapes["fc6.weight"] == (4096, 9216)
    norm = model.norm1
    assert (norm.size, norm.alpha, norm.beta, norm.k) == (5, 1e-4, 0.75, 1.0)
    assert model.pool1.ceil_mode and model.pool5.ceil_mode


def test_alexnet_caffe_fillers() -> None:
    torch.manual_seed(0)
    model = build_model("alexnet", num_classes=10, input_size=55)
    state = {k: v.detach() for k, v in model.state_dict().items()}
    assert torch.equal(state["conv2.bias"], torch.full((256,), 0.1))
    assert torch.equal(state["fc6.bias"], torch.full((4096,), 0.1))
    assert torch.count_nonzero(state["conv3.bias"]) == 0
    assert torch.count_nonzero(state["fc8.bias"]) == 0
    assert float(state["fc7.weight"].std()) == pytest.approx(0.005, rel=0.02)
    assert float(state["conv1.weight"].std()) == pytest.approx(0.01, rel=0.05)
    assert float(state["conv1.weight"].mean()) == pytest.approx(0.0, abs=5e-4)


@pytest.mark.parametrize(("size", "fc6_in"), [(227, 9216), (55, 256), (99, 1024), (67, 256)])
def test_alexnet_fc6_follows_the_input_size(size: int, fc6_in: int) -> None:
    # 99 -> conv1 23 -> pool1 11 -> pool2 5 -> pool5 2 (Caffe rounds pooled sizes up)
    model = _meta("alexnet", input_size=size)
    assert model.fc6.in_features == fc6_in
    assert model(torch.empty(2, 3, size, size, device="meta")).shape == (2, 1000)


@pytest.mark.parametrize(("name", "size"), [("alexnet", 227), ("vgg16", 224),
                                            ("resnet50", 224), ("resnet18", 224),
                                            ("squeezenet1_1", 224), ("mobilenet_v2", 224)])
def test_output_shape_at_full_size(name: str, size: int) -> None:
    model = _meta(name, num_classes=7)
    assert model(torch.empty(2, 3, size, size, device="meta")).shape == (2, 7)


@pytest.mark.parametrize(("name", "size"), [("resnet18", 64), ("resnet20", 32),
                                            ("squeezenet1_1", 64), ("mobilenet_v2", 64),
                                            ("squeezenet1_1", 25), ("resnet20", 4)])
def test_small_models_compute_logits_on_small_inputs(name: str, size: int) -> None:
    torch.manual_seed(0)
    model = build_model(name, num_classes=7, in_channels=2, input_size=size).eval()
    out = model(torch.rand(2, 2, size, size))
    assert out.shape == (2, 7)
    assert bool(torch.isfinite(out).all())
    assert not torch.equal(out[0], out[1])


def test_resnet20_option_a_shortcut_pads_zero_channels() -> None:
    model = build_model("resnet20")
    shortcut = model.layer2[0].downsample
    x = torch.arange(2 * 16 * 4 * 4, dtype=torch.float32).view(2, 16, 4, 4)
    out = shortcut(x)
    assert out.shape == (2, 32, 2, 2)
    assert torch.count_nonzero(out[:, :8]) == 0 and torch.count_nonzero(out[:, 24:]) == 0
    assert torch.equal(out[:, 8:24], x[:, :, ::2, ::2])
    assert list(shortcut.parameters()) == []


@pytest.mark.parametrize(("name", "kwargs", "message"), [
    ("resnet18", {"input_size": 31}, "resnet18: input_size=31 is too small; the network needs "
     "images of at least 32x32 (five stride-2 stages halve it down to 1x1 at 32)"),
    ("alexnet", {"input_size": 54}, "alexnet: input_size=54 is too small; the network needs "
     "images of at least 55x55 (conv1 and three 3x3/2 poolings leave no pixel below that)"),
    ("squeezenet1_1", {"input_size": 24}, "squeezenet1_1: input_size=24 is too small; the "
     "network needs images of at least 25x25 (the 3x3/2 stem and three 3x3/2 max-pools leave "
     "no pixel below that)"),
    ("vgg16", {"num_classes": 0}, "vgg16: num_classes=0 must be an integer >= 1"),
    ("mobilenet_v2", {"in_channels": 1.5}, "mobilenet_v2: in_channels=1.5 must be an integer "
     ">= 1"),
    ("resnet50", {"input_size": "224"}, "resnet50: input_size='224' must be an integer "
     "(pixels)"),
    ("alexnet", {"dropout": 1.0}, "alexnet: dropout=1.0 must be a number in [0, 1)"),
    ("resnet20", {"shortcut": "C"}, "resnet20: shortcut='C' must be 'A' (zero-padding "
     "identity) or 'B' (1x1 convolution projection)"),
])
def test_bad_arguments_are_config_errors(name: str, kwargs: dict[str, object],
                                         message: str) -> None:
    with pytest.raises(ConfigError) as info:
        _meta(name, **kwargs)
    assert str(info.value) == message


def test_smallest_inputs_run() -> None:
    for name, size in (("alexnet", 55), ("vgg16", 32), ("resnet50", 32), ("mobilenet_v2", 32)):
        model = _meta(name, input_size=size)
        assert model(torch.empty(2, 3, size, size, device="meta")).shape == (2, 1000)


@pytest.mark.parametrize(("ref", "kwargs", "shape"), [
    ("resnet18", {}, (3, 224, 224)), ("alexnet", {}, (3, 227, 227)),
    ("resnet20", {}, (3, 32, 32)), ("mobilenet_v2", {"input_size": 96}, (3, 96, 96)),
    ("squeezenet1_1", {"in_channels": 1}, (1, 224, 224)), ("lenet300_100", {}, (1, 28, 28)),
    ("torch.nn:Linear", {}, None), ("nonexistent", {}, None)])
def test_default_input_shape_reads_factory_defaults(ref: str, kwargs: dict[str, object],
                                                    shape: tuple[int, ...] | None) -> None:
    assert default_input_shape(ref, kwargs) == shape

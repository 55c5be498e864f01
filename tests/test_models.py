from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from nncompress.errors import ConfigError
from nncompress.models import _registry, architecture, build_model, list_models, register_model


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {name: tuple(p.shape) for name, p in model.named_parameters()}


BUILTIN_MODELS = ["lenet300_100", "lenet5", "tiny_cnn", "tiny_conv1d", "tiny_mlp"]


@pytest.fixture
def builtin_models_only(monkeypatch: pytest.MonkeyPatch) -> None:
    # only the built-in models, whatever else was registered in this session
    builtin = {name: _registry._MODELS[name] for name in BUILTIN_MODELS}
    monkeypatch.setattr(_registry, "_MODELS", builtin)


def test_registered_models(builtin_models_only: None) -> None:
    assert list_models() == BUILTIN_MODELS


def test_lenet5_has_caffe_layer_names_shapes_and_count() -> None:
    model = build_model("lenet5")
    assert _count(model) == 431_080
    assert _shapes(model) == {
        "conv1.weight": (20, 1, 5, 5),
        "conv1.bias": (20,),
        "conv2.weight": (50, 20, 5, 5),
        "conv2.bias": (50,),
        "ip1.weight": (500, 800),
        "ip1.bias": (500,),
        "ip2.weight": (10, 500),
        "ip2.bias": (10,),
    }


def test_lenet300_100_shapes_and_count() -> None:
    model = build_model("lenet300_100")
    assert _count(model) == 266_610
    assert _shapes(model)["ip1.weight"] == (300, 784)
    assert _shapes(model)["ip2.weight"] == (100, 300)
    assert _shapes(model)["ip3.weight"] == (10, 100)


@pytest.mark.parametrize("name", ["lenet5", "lenet300_100", "tiny_mlp", "tiny_cnn", "tiny_conv1d"])
def test_output_shape_on_mnist_sized_batches(name: str) -> None:
    model = build_model(name, num_classes=7)
    assert model(torch.rand(3, 1, 28, 28)).shape == (3, 7)


@pytest.mark.parametrize(("size", "flat"), [(28, 800), (32, 1250), (29, 1250), (16, 50)])
def test_lenet5_input_size_follows_caffe_ceil_pooling(size: int, flat: int) -> None:
    # Caffe pools with ceil: 29 -> conv 25 -> pool 13 -> conv 9 -> pool 5.
    model = build_model("lenet5", input_size=size, in_channels=3)
    assert model.ip1.in_features == flat
    assert model(torch.rand(2, 3, size, size)).shape == (2, 10)


def test_caffe_xavier_bounds_and_zero_biases() -> None:
    torch.manual_seed(0)
    model = build_model("lenet5")
    for name, fan_in in (("conv1", 25), ("conv2", 500), ("ip1", 800), ("ip2", 500)):
        layer = getattr(model, name)
        bound = math.sqrt(3.0 / fan_in)
        weight = layer.weight.detach()
        assert float(weight.abs().max()) <= bound
        assert float(weight.abs().max()) > 0.9 * bound
        # uniform(-b, b) has standard deviation b / sqrt(3) = sqrt(1 / fan_in)
        assert float(weight.std()) == pytest.approx(math.sqrt(1.0 / fan_in), rel=0.1)
        assert torch.count_nonzero(layer.bias) == 0


def test_tiny_cnn_has_grouped_and_depthwise_convolutions() -> None:
    model = build_model("tiny_cnn", width=6)
    assert (model.conv2.groups, model.conv3.groups) == (2, 6)
    assert model.conv3.bias is None
    assert tuple(model.conv3.weight.shape) == (6, 1, 3, 3)
    conv1d = build_model("tiny_conv1d")
    assert isinstance(conv1d.conv1, nn.Conv1d) and conv1d.conv2.groups == 2


def test_architecture_is_recorded_and_rebuilds_from_json() -> None:
    model = build_model("lenet5", num_classes=5, input_size=32)
    recorded = architecture(model)
    assert recorded == {"ref": "lenet5", "kwargs": {"num_classes": 5, "input_size": 32}}
    restored = json.loads(json.dumps(recorded))
    rebuilt = build_model(restored["ref"], **restored["kwargs"])
    rebuilt.load_state_dict(model.state_dict())
    x = torch.rand(2, 1, 32, 32)
    assert torch.equal(rebuilt(x), model(x))


def test_architecture_returns_a_copy_and_none_for_plain_modules() -> None:
    model = build_model("tiny_mlp", hidden=4)
    recorded = architecture(model)
    assert recorded is not None
    recorded["kwargs"]["hidden"] = 99
    assert architecture(model) == {"ref": "tiny_mlp", "kwargs": {"hidden": 4}}
    assert architecture(nn.Linear(2, 2)) is None


def test_module_callable_ref() -> None:
    model = build_model("torch.nn:Linear", in_features=3, out_features=2)
    assert isinstance(model, nn.Linear) and model.weight.shape == (2, 3)
    assert architecture(model) == {
        "ref": "torch.nn:Linear",
        "kwargs": {"in_features": 3, "out_features": 2},
    }


def test_registered_factory_and_duplicates(monkeypatch: pytest.MonkeyPatch) -> None:
    # a private copy of the registry, so the test's model does not leak into other tests
    monkeypatch.setattr(_registry, "_MODELS", dict(_registry._MODELS))

    @register_model("test_models_double")
    def factory(width: int = 2) -> nn.Module:
        return nn.Linear(width, 2 * width)

    assert build_model("test_models_double", width=3).out_features == 6
    with pytest.raises(ConfigError, match="already registered"):
        register_model("test_models_double")(factory)
    with pytest.raises(ConfigError, match="contain no ':'"):
        register_model("a:b")


@pytest.mark.parametrize(
    ("ref", "kwargs", "message"),
    [
        (
            "lenet",
            {},
            "unknown model 'lenet' (did you mean 'lenet5'?); known: lenet300_100, lenet5, "
            "tiny_cnn, tiny_conv1d, tiny_mlp (or give 'package.module:callable')",
        ),
        (
            "no_such_package_xyz:build",
            {},
            "model ref 'no_such_package_xyz:build': cannot import 'no_such_package_xyz': "
            "No module named 'no_such_package_xyz'",
        ),
        ("torch.nn:NoSuchNet", {}, "model ref 'torch.nn:NoSuchNet': 'torch.nn' has no attribute"),
        (
            "builtins:dict",
            {},
            "model ref 'builtins:dict' returned dict, not a torch.nn.Module; "
            "the callable must build and return the model",
        ),
        ("torch:", {}, "model ref 'torch:' must look like 'package.module:callable'"),
        ("math:pi", {}, "model ref 'math:pi': 'pi' is not callable"),
        ("lenet5", {"num_clases": 3}, "(did you mean 'num_classes'?); accepted keyword arguments:"),
        ("lenet5", {"input_size": 8}, "input_size=8 must be an integer >= 16"),
        ("tiny_cnn", {"width": 5}, "width=5 must be even (conv2 has 2 groups)"),
        ("tiny_mlp", {"hidden": {1, 2}}, "keyword arguments must be JSON-serialisable"),
    ],
)
def test_build_errors_name_the_ref(
    ref: str, kwargs: dict, message: str, builtin_models_only: None
) -> None:
    with pytest.raises(ConfigError) as info:
        build_model(ref, **kwargs)
    assert message in str(info.value)

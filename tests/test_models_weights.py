"""Pretrained state-dict files: safetensors and weights-only .pth round trips, mismatch errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from nncompress.errors import ConfigError
from nncompress.models import build_model, load_state_dict_file, read_state_dict


def _trained(name: str, **kwargs: object) -> nn.Module:
    """A model whose weights and BatchNorm statistics differ from a fresh one's."""
    torch.manual_seed(1)
    model = build_model(name, **kwargs)
    model.train()
    with torch.no_grad():
        model(torch.rand(4, 3, 32, 32))  # moves the running statistics
    return model.eval()


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize(("name", "suffix"), [
    ("resnet20", ".safetensors"), ("resnet20", ".pth"), ("squeezenet1_1", ".pth"),
    ("mobilenet_v2", ".safetensors")])
def test_round_trip_gives_equal_outputs(tmp_path: Path, name: str, suffix: str) -> None:
    source = _trained(name, num_classes=5)
    file = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        save_file(_state(source), str(file))
    else:
        torch.save(source.state_dict(), file)
    torch.manual_seed(2)
    fresh = build_model(name, num_classes=5).eval()
    x = torch.rand(2, 3, 32, 32)
    assert not torch.equal(fresh(x), source(x))
    assert load_state_dict_file(fresh, file) is fresh
    assert torch.equal(fresh(x), source(x))
    for key, value in source.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key


def test_checkpoint_wrappers_and_prefixes_are_unwrapped(tmp_path: Path) -> None:
    source = _trained("resnet20")
    wrapped = {"epoch": 90, "state_dict": {f"module.{k}": v for k, v in
                                           source.state_dict().items()}}
    torch.save(wrapped, tmp_path / "checkpoint.pth")
    state = read_state_dict(tmp_path / "checkpoint.pth")
    assert set(state) == {f"module.{k}" for k in source.state_dict()}
    fresh = load_state_dict_file(build_model("resnet20").eval(), tmp_path / "checkpoint.pth")
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(fresh(x), source(x))


def test_nncompress_training_checkpoint_gives_its_model(tmp_path: Path) -> None:
    from nncompress.train.checkpoint import save_checkpoint

    source = _trained("resnet20", num_classes=4)
    optimizer = torch.optim.SGD(source.parameters(), lr=0.1, momentum=0.9)
    source(torch.rand(2, 3, 8, 8)).sum().backward()
    optimizer.step()
    source.eval()
    save_checkpoint(tmp_path / "ckpt.safetensors", model=source, optimizer=optimizer,
                    metadata={"iteration": 1})
    fresh = load_state_dict_file(build_model("resnet20", num_classes=4).eval(),
                                 tmp_path / "ckpt.safetensors")
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(fresh(x), source(x))


def test_a_model_whose_own_names_start_with_model_keeps_them(tmp_path: Path) -> None:
    class Wrapper(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = nn.Linear(3, 2)

    source = Wrapper()
    save_file(_state(source), str(tmp_path / "wrapper.safetensors"))
    assert set(read_state_dict(tmp_path / "wrapper.safetensors")) == {"model.weight", "model.bias"}
    fresh = load_state_dict_file(Wrapper(), tmp_path / "wrapper.safetensors")
    assert torch.equal(fresh.model.weight, source.model.weight)


def test_half_precision_file_loads_into_float32_model(tmp_path: Path) -> None:
    source = _trained("resnet20")
    half = {k: v.half() if v.is_floating_point() else v for k, v in _state(source).items()}
    save_file(half, str(tmp_path / "half.safetensors"))
    fresh = load_state_dict_file(build_model("resnet20"), tmp_path / "half.safetensors")
    assert fresh.fc.weight.dtype == torch.float32
    assert torch.equal(fresh.fc.weight.detach(), half["fc.weight"].float())


def test_missing_batch_counters_are_accepted(tmp_path: Path) -> None:
    # files written before PyTorch 0.4.1 have no num_batches_tracked buffers
    source = _trained("resnet20")
    state = {k: v for k, v in _state(source).items() if not k.endswith("num_batches_tracked")}
    save_file(state, str(tmp_path / "old.safetensors"))
    fresh = load_state_dict_file(build_model("resnet20"), tmp_path / "old.safetensors")
    assert torch.equal(fresh.layer3[2].bn2.running_var, source.layer3[2].bn2.running_var)


def test_shape_mismatch_names_the_key_and_both_shapes(tmp_path: Path) -> None:
    save_file(_state(build_model("resnet20", num_classes=10)), str(tmp_path / "c10.safetensors"))
    model = build_model("resnet20", num_classes=5)
    before = _state(model)
    with pytest.raises(ConfigError) as info:
        load_state_dict_file(model, tmp_path / "c10.safetensors")
    assert str(info.value) == (
        f"weights in {str(tmp_path / 'c10.safetensors')!r} do not fit the model: "
        "key 'fc.weight': the file has shape [10, 64], the model [5, 64]; "
        "key 'fc.bias': the file has shape [10], the model [5]")
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())  # nothing was copied


def test_missing_and_unexpected_keys_are_listed(tmp_path: Path) -> None:
    # option B has projection shortcuts that option A lacks
    save_file(_state(build_model("resnet20", shortcut="B")), str(tmp_path / "b.safetensors"))
    with pytest.raises(ConfigError) as info:
        load_state_dict_file(build_model("resnet20"), tmp_path / "b.safetensors")
    message = str(info.value)
    assert message.endswith(
        "do not fit the model: not in the model: 'layer2.0.downsample.0.weight', "
        "'layer2.0.downsample.1.bias', 'layer2.0.downsample.1.num_batches_tracked', "
        "'layer2.0.downsample.1.running_mean', 'layer2.0.downsample.1.running_var', "
        "'layer2.0.downsample.1.weight', 'layer3.0.downsample.0.weight', "
        "'layer3.0.downsample.1.bias', 'layer3.0.downsample.1.num_batches_tracked', "
        "'layer3.0.downsample.1.running_mean' and 2 more")
    state = _state(build_model("resnet20"))
    del state["fc.bias"], state["conv1.weight"]
    save_file(state, str(tmp_path / "partial.safetensors"))
    with pytest.raises(ConfigError) as info:
        load_state_dict_file(build_model("resnet20"), tmp_path / "partial.safetensors")
    assert str(info.value).endswith("missing from the file: 'conv1.weight', 'fc.bias'")


def test_alexnet_loads_caffe_named_weights(tmp_path: Path) -> None:
    # what a converted bvlc_alexnet.caffemodel holds: conv1..fc8 weights and biases
    with torch.device("meta"):
        model = build_model("alexnet", input_size=67, num_classes=3)
    state = {k: torch.full(v.shape, 0.5) for k, v in model.state_dict().items()}
    assert sorted(state) == sorted(f"{layer}.{blob}" for blob in ("weight", "bias") for layer in
                                   ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7",
                                    "fc8"))
    save_file(state, str(tmp_path / "alexnet.safetensors"))
    loaded = load_state_dict_file(build_model("alexnet", input_size=67, num_classes=3),
                                  tmp_path / "alexnet.safetensors")
    assert float(loaded.fc6.weight.detach().sum()) == 0.5 * 256 * 4096


def test_a_converted_caffe_mean_gets_a_hint(tmp_path: Path) -> None:
    state = _state(build_model("resnet20"))
    state["input_transform.mean_image"] = torch.zeros(3, 32, 32)
    save_file(state, str(tmp_path / "converted.safetensors"))
    with pytest.raises(ConfigError) as info:
        load_state_dict_file(build_model("resnet20"), tmp_path / "converted.safetensors")
    assert str(info.value).endswith(
        "not in the model: 'input_transform.mean_image' (input_transform.* is the input mean "
        "of a converted Caffe net: convert it without --mean-file/--mean-value and give the "
        "mean in the data transform)")


@pytest.mark.parametrize(("content", "message"), [
    (b"not a checkpoint", "cannot read weights from"),
    ({"w": [1, 2, 3], "b": torch.zeros(1)}, "entries that are not named tensors: 'w'; save "
     "model.state_dict()"),
    ([1, 2], "holds no state dict (a mapping of names to tensors); save model.state_dict()"),
    ({}, "holds no state dict (a mapping of names to tensors); save model.state_dict()"),
])
def test_unreadable_or_foreign_files(tmp_path: Path, content: object, message: str) -> None:
    file = tmp_path / "bad.pth"
    if isinstance(content, bytes):
        file.write_bytes(content)
    else:
        torch.save(content, file)
    with pytest.raises(ConfigError) as info:
        read_state_dict(file)
    assert message in str(info.value)


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    torch.save({"model": nn.Linear(2, 2)}, tmp_path / "whole_model.pth")
    with pytest.raises(ConfigError) as info:
        read_state_dict(tmp_path / "whole_model.pth")
    assert str(info.value).startswith(
        f"cannot read weights from {str(tmp_path / 'whole_model.pth')!r}: ")
    assert str(info.value).endswith("(give a .safetensors file or a .pth/.pt written by "
                                    "torch.save(model.state_dict(), ...))")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_state_dict_file(nn.Linear(2, 2), tmp_path / "none.safetensors")
    assert str(info.value) == f"weights file {str(tmp_path / 'none.safetensors')!r} not found"

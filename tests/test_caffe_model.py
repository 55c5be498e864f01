"""caffemodel files: bit-exact round trips, the legacy layer list, masks, and bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import nncompress as nnc
from nncompress.errors import ConfigError, FormatError
from nncompress.export import load_compact
from nncompress.interop.caffe_net import from_text
from nncompress.interop.caffemodel import (
    CaffeLayerBlobs,
    _classes,
    read_caffemodel,
    write_caffemodel,
)
from nncompress.interop.convert import convert, load_plain
from nncompress.interop.weights import apply_masks, load_blobs, net_blobs

NET = """
name: "small"
input: "data" input_shape { dim: 1 dim: 1 dim: 8 dim: 8 }
layer { name: "conv1" type: "DNSConvolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 3 kernel_size: 3 weight_filler { type: "xavier" }
                            bias_filler { type: "gaussian" std: 0.1 } }
        dns_convolution_param { c_rate: 0.5 } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip1" type: "InnerProduct" bottom: "pool1" top: "ip1"
        inner_product_param { num_output: 4 weight_filler { type: "xavier" } } }
"""


def _write(tmp_path: Path, text: str = NET) -> Path:
    path = tmp_path / "net.prototxt"
    path.write_text(text)
    return path


def test_written_model_reads_back_bit_exactly(tmp_path: Path) -> None:
    net = from_text(NET, seed=3)
    path = tmp_path / "m.caffemodel"
    blobs = net_blobs(net)
    write_caffemodel(path, blobs, "small")
    back = read_caffemodel(path)
    assert [(b.name, b.type) for b in back] == [("conv1", "Convolution"), ("ip1", "InnerProduct")]
    for a, b in zip(blobs, back):
        assert [x.shape for x in a.blobs] == [x.shape for x in b.blobs]
        assert all(np.array_equal(x.view(np.uint32), y.view(np.uint32))
                   for x, y in zip(a.blobs, b.blobs))
    other = from_text(NET, seed=4)
    load_blobs(other, back)
    for (k, v), w in zip(net.state_dict().items(), other.state_dict().values()):
        assert torch.equal(v, w), k


def test_legacy_layers_list_with_4d_shapes(tmp_path: Path) -> None:
    net_msg = _classes()["NetParameter"](name="old")
    layer = net_msg.layers.add(name="ip1", type=14)  # V1 INNER_PRODUCT
    weight = np.arange(4 * 27, dtype=np.float32)
    w_blob = layer.blobs.add(num=1, channels=1, height=4, width=27)
    w_blob.data.extend(weight.tolist())
    b_blob = layer.blobs.add(num=1, channels=1, height=1, width=4)
    b_blob.double_data.extend([0.5, 1.5, 2.5, 3.5])
    path = tmp_path / "old.caffemodel"
    path.write_bytes(net_msg.SerializeToString())
    (entry,) = read_caffemodel(path)
    assert (entry.name, entry.type, entry.legacy_shape) == ("ip1", "InnerProduct", [True, True])
    net = from_text(NET)
    load_blobs(net, [entry])
    ip = net.get_submodule("ip1")
    assert torch.equal(ip.weight.detach(), torch.from_numpy(weight.reshape(4, 27)))
    assert ip.bias.detach().tolist() == [0.5, 1.5, 2.5, 3.5]


def test_shape_mismatch_names_layer_and_both_shapes() -> None:
    net = from_text(NET)
    bad = CaffeLayerBlobs("ip1", "InnerProduct", [np.zeros((4, 30), np.float32),
                                                  np.zeros(4, np.float32)], [False, False])
    with pytest.raises(ConfigError) as info:
        load_blobs(net, [bad], "m.caffemodel")
    assert str(info.value) == ("m.caffemodel: layer 'ip1' blob 0 (weight) has shape [4, 30]; "
                               "the net expects [4, 27]")
    three = CaffeLayerBlobs("ip1", "InnerProduct", [np.zeros((4, 27), np.float32)] * 3,
                            [False] * 3)
    with pytest.raises(ConfigError, match="layer 'ip1' has 3 blobs, the net's layer 'ip1' "
                                          "expects 2 \\(or 4 with masks\\)"):
        load_blobs(net, [three], "m.caffemodel")


def test_missing_or_corrupt_caffemodel(tmp_path: Path) -> None:
    with pytest.raises(FormatError) as info:
        read_caffemodel(tmp_path / "none.caffemodel")
    assert str(info.value) == f"caffemodel not found: {tmp_path / 'none.caffemodel'}"
    junk = tmp_path / "junk.caffemodel"
    junk.write_bytes(b"\xff\xff\xff")
    with pytest.raises(FormatError, match="not a caffemodel"):
        read_caffemodel(junk)


def test_dns_masks_restore_and_bake(tmp_path: Path) -> None:
    net = from_text(NET, seed=1)
    conv = net.get_submodule("conv1")
    rng = np.random.default_rng(0)
    w_mask = (rng.random(conv.weight.shape) > 0.5).astype(np.float32)
    b_mask = np.array([1, 0, 1], np.float32)
    raw = CaffeLayerBlobs("conv1", "DNSConvolution",
                          [conv.weight.detach().numpy(), conv.bias.detach().numpy(), w_mask,
                           b_mask], [False] * 4)
    path = tmp_path / "raw.caffemodel"
    write_caffemodel(path, [raw])
    fresh = from_text(NET, seed=2)
    masks = load_blobs(fresh, read_caffemodel(path))
    assert masks["conv1"].kind == "dns"
    nnc.prepare(fresh, nnc.DNSConfig(c_rate=0.5), layers={"ip1": None})
    apply_masks(fresh, masks, {})
    layer = fresh.get_submodule("conv1")
    assert torch.equal(layer.weight_mask, torch.from_numpy(w_mask).bool())
    assert layer.bias_mask.tolist() == [True, False, True]
    # written back with masks it reads identically; plain, the masks are baked in
    again = tmp_path / "again.caffemodel"
    write_caffemodel(again, net_blobs(fresh, with_masks=True))
    (entry, _) = read_caffemodel(again)
    assert entry.type == "DNSConvolution" and np.array_equal(entry.blobs[2], w_mask)
    (plain, _) = net_blobs(fresh)
    assert len(plain.blobs) == 2 and plain.type == "Convolution"
    assert np.array_equal(plain.blobs[0], conv.weight.detach().numpy() * w_mask)
    with pytest.raises(ConfigError, match="'ip1' have no weights"):
        load_plain(_write(tmp_path), path)  # the file holds conv1 only
    baked, _ = load_plain(_write(tmp_path), path, allow_missing=True)
    assert torch.equal(baked.get_submodule("conv1").weight.detach(),
                       torch.from_numpy(plain.blobs[0]))


def test_inq_masks_fix_their_entries(tmp_path: Path) -> None:
    text = NET.replace('"DNSConvolution"', '"INQConvolution"').replace(
        "dns_convolution_param { c_rate: 0.5 }",
        "inq_convolution_param { portion: 0.5 portion: 0.75 num_quantum_values: 4 }")
    net = from_text(text, seed=5)
    conv = net.get_submodule("conv1")
    weight = conv.weight.detach().clone()
    free = np.ones(weight.shape, np.float32)
    free.reshape(-1)[:9] = 0  # first 9 entries fixed
    raw = CaffeLayerBlobs("conv1", "INQConvolution",
                          [weight.numpy(), conv.bias.detach().numpy(), free,
                           np.ones(3, np.float32)], [False] * 4)
    fresh = from_text(text)
    masks = load_blobs(fresh, [raw])
    nnc.prepare(fresh, nnc.INQConfig(num_quantum_values=4), layers={"ip1": None})
    apply_masks(fresh, masks, {"conv1": 0.5})
    layer = fresh.get_submodule("conv1")
    fixed = ~torch.isnan(layer.weight_fixed.float())
    assert fixed.reshape(-1)[:9].all() and int(fixed.sum()) == 9
    n1, n2, _ = layer.weight_levels.tolist()
    values = layer.weight.detach().reshape(-1)[:9]
    exps = values.abs().log2()
    assert torch.equal(exps, exps.round()) and bool(((exps >= n2) & (exps <= n1)).all())
    layer.quantize_to(0.75)
    assert int((~torch.isnan(layer.weight_fixed.float())).sum()) == round(0.75 * weight.numel())


def test_eval_of_caffemodel_matches_the_pytorch_checkpoint(tmp_path: Path) -> None:
    net = from_text(NET, seed=7)
    model_path = tmp_path / "m.caffemodel"
    write_caffemodel(model_path, net_blobs(net))
    loaded, text = load_plain(_write(tmp_path), model_path)
    out = convert(loaded, text, tmp_path / "m.safetensors")
    state = load_file(str(out))
    rebuilt = from_text(text, seed=99).eval()
    rebuilt.load_state_dict(state)
    x = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    net.eval()
    with torch.no_grad():
        assert torch.equal(rebuilt(x), net(x))
        assert torch.equal(loaded(x), net(x))
    with pytest.raises(ConfigError, match=r"unknown suffix; use one of \.ncz, \.safetensors"):
        convert(loaded, text, tmp_path / "m.onnx")
    # A converted .ncz rebuilds the net from its own text: no allow_import needed.
    compact = load_compact(convert(loaded, text, tmp_path / "m.ncz"))
    with torch.no_grad():
        assert torch.equal(compact(x), net(x))

"""Hostile and broken Caffe nets and caffemodels: one clear error each, never a traceback, a huge
allocation or a silently wrong net."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from nncompress.cli import main
from nncompress.errors import ConfigError, FormatError, NNCompressError, NonFiniteError
from nncompress.interop import caffe_checks
from nncompress.interop.caffe_net import from_text
from nncompress.interop.caffemodel import (
    CaffeLayerBlobs,
    _classes,
    read_caffemodel,
    write_caffemodel,
)
from nncompress.interop.convert import load_plain
from nncompress.interop.weights import net_blobs
from tests.caffe_mutations import LIMITED_CHILD, base_nets, classify, mutations

NET = """name: "small"
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 1 dim: 4 dim: 12 dim: 12 } } }
layer { name: "conv1" type: "DNSConvolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 6 kernel_size: 3 }
        dns_convolution_param { c_rate: 0.4 } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip1" type: "InnerProduct" bottom: "pool1" top: "ip1"
        inner_product_param { num_output: 5 } }
"""
LABELLED = """name: "labelled"
layer { name: "d" type: "Data" top: "data" top: "label" include { phase: TRAIN }
        data_param { batch_size: 4 } }
layer { name: "d" type: "Data" top: "data" top: "label" include { phase: TEST }
        data_param { batch_size: 4 } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 10 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""


def _edit(old: str, new: str, text: str = NET) -> str:
    assert old in text
    return text.replace(old, new, 1)


def _refused(text: str, kind: type[Exception] = NNCompressError,
             input_shape: tuple[int, ...] | None = None) -> str:
    with pytest.raises(kind) as info:
        from_text(text, input_shape=input_shape)
    return str(info.value)


def test_the_base_net_builds() -> None:
    assert [name for name, _ in from_text(NET).named_children()] == ["conv1", "ip1"]


@pytest.mark.parametrize("value", [999_999_999, 2_147_483_647, 10 ** 20])
def test_huge_num_output_is_refused_naming_the_layer_and_the_count(value: int) -> None:
    message = _refused(_edit("num_output: 5", f"num_output: {value}"), FormatError)
    assert "layer 'ip1'" in message and f"{value * 6 * 5 * 5:,} weights" in message
    message = _refused(_edit("num_output: 6", f"num_output: {value}"), FormatError)
    assert "layer 'conv1'" in message and f"{value * 4 * 9:,} weights" in message


def test_huge_kernel_and_zero_stride_are_refused() -> None:
    message = _refused(_edit("kernel_size: 3", f"kernel_size: {2 ** 31}"), FormatError)
    assert f"kernel_size {2 ** 31} is out of range" in message and "'conv1'" in message
    message = _refused(_edit("kernel_size: 3", "kernel_size: 3 stride: 0"), FormatError)
    assert "stride 0 is out of range" in message
    message = _refused(_edit("stride: 2", "stride: 0"), FormatError)
    assert "layer 'pool1': stride 0" in message
    message = _refused(_edit("kernel_size: 3", "kernel_size: 13"))
    assert "window [13, 13]" in message and "larger than its input [12, 12]" in message


@pytest.mark.parametrize("group", [3, 0, -2])
def test_group_must_divide_the_channels(group: int) -> None:
    message = _refused(_edit("kernel_size: 3", f"kernel_size: 3 group: {group}"), FormatError)
    assert f"group {group} must divide both the 4 input channels and num_output 6" in message


def test_a_group_dividing_both_builds() -> None:
    net = from_text(_edit("kernel_size: 3", "kernel_size: 3 group: 2"))
    assert tuple(net.get_submodule("conv1").weight.shape) == (6, 2, 3, 3)


def test_large_pad_is_bounded_by_the_layer_after_it() -> None:
    text = _edit("kernel_size: 3", "kernel_size: 3 pad: 100")
    message = _refused(_edit("num_output: 5", "num_output: 50000", text), FormatError)
    assert "layer 'ip1' would hold" in message and "[50000, 66150]" in message
    message = _refused(_edit("dim: 12 dim: 12", "dim: 4000 dim: 4000", text))
    assert "blob 'conv1' of shape [6, 4198, 4198]" in message  # before anything is allocated


def test_a_huge_input_blob_is_refused() -> None:
    message = _refused(_edit("dim: 12 dim: 12", "dim: 100000 dim: 100000"), ConfigError)
    assert "layer 'data' makes blob 'data' of shape [1, 4, 100000, 100000]" in message


def test_misspelt_compression_field_names_the_right_one() -> None:
    message = _refused(_edit("c_rate: 0.4", "c_rat: 0.4"), FormatError)
    assert "unknown field 'c_rat' in dns_convolution_param" in message
    assert "did you mean 'c_rate'" in message and "layer 'conv1'" in message
    message = _refused(_edit("pool: MAX", "pool: MAX group: 2"), FormatError)
    assert "unknown field 'group' in pooling_param" in message
    message = _refused(_edit("inner_product_param", "inner_produc_param"), FormatError)
    assert "did you mean 'inner_product_param'" in message
    message = _refused(NET.replace('layer { name: "pool1"', 'layr { name: "pool1"'), FormatError)
    assert "unknown field 'layr' in the net (did you mean 'layer'?)" in message
    legacy = 'layers { name: "r" type: RELU bottom: "x" top: "x" relu_parm { } }'
    assert "layer 'r': unknown field 'relu_parm'" in _refused(legacy, FormatError)


def test_a_misspelt_filler_field_is_refused() -> None:
    text = _edit("num_output: 5", "num_output: 5 weight_filler { type: 'gaussian' sdt: 0.1 }")
    assert "did you mean 'std'" in _refused(text, FormatError)


def test_a_layer_name_used_twice_in_one_phase_is_refused() -> None:
    message = _refused(_edit('name: "pool1"', 'name: "conv1"'), ConfigError)
    assert "layer name 'conv1' is used twice in the TRAIN phase" in message
    # one name in two phases: the TRAIN and TEST copies of a layer, as Caffe's nets have them
    assert from_text(LABELLED, input_shape=(1, 2, 2)).inputs == {"TRAIN": "data", "TEST": "data"}


def test_a_removed_data_top_names_the_missing_bottom() -> None:
    text = LABELLED.replace('top: "data" top: "label" include { phase: TEST }',
                            'top: "label" include { phase: TEST }')
    message = _refused(text, ConfigError, input_shape=(1, 2, 2))
    assert "reads bottom 'data', which no earlier layer of the TEST phase produces" in message


@pytest.mark.parametrize(("old", "new", "said"), [
    ('bottom: "pool1" top: "ip1"', 'top: "ip1"', "(InnerProduct) has 0 bottom blob(s)"),
    ('top: "loss"', "", "(SoftmaxWithLoss) has 0 top blob(s)"),
    ('type: "Pooling" ', "", "layer 'pool1' has no type"),
])
def test_missing_bottoms_tops_and_types_are_refused(old: str, new: str, said: str) -> None:
    text = NET + LABELLED.split("\n", 1)[1].replace('"d"', '"d2"').replace('"data"', '"x"')
    assert said in _refused(_edit(old, new, text), FormatError, input_shape=(1, 2, 2))


ONE_LAYER = """layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 1 dim: 4 dim: 6 dim: 6 } } }
layer { name: "label" type: "Input" top: "label" input_param { shape { dim: 1 } } }
%s
"""


@pytest.mark.parametrize(("layer", "said"), [
    ('type: "LRN" bottom: "data" top: "n" lrn_param { local_size: 999999999 }',
     "local_size 999999999 is out of range"),
    ('type: "BatchNorm" bottom: "label" top: "b"', "BatchNorm needs channels"),
    ('type: "Scale" bottom: "data" top: "s" scale_param { num_axes: 99 }',
     "num_axes 99 from axis 1 goes past the 4 axes"),
    ('type: "Pooling" bottom: "data" top: "p" pooling_param { global_pooling: true pad: 3 }',
     "with global_pooling only stride 1 and pad 0"),
    ('type: "Pooling" bottom: "data" top: "p" pooling_param { global_pooling: true '
     'kernel_size: 2 }', "remove kernel_size"),
    ('type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 3 '
     'weight_filler { type: "gaussian" std: -1 } }', "the gaussian filler's std -1.0"),
    ('type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 3 '
     'weight_filler { type: "uniform" min: 2 max: 1 } }', "min 2.0 must not exceed its max"),
    ('type: "DummyData" top: "z" dummy_data_param { shape { dim: 100000 dim: 100000 } }',
     "blob 'z' of shape [100000, 100000]"),
    ('type: "DummyData" top: "z" dummy_data_param { shape { dim: -3 dim: 2 } }',
     "sizes must not be negative"),
    ('type: "Accuracy" bottom: "data" bottom: "label" top: "a" accuracy_param { top_k: 99 }',
     "top_k 99 must lie in [1, 4]"),
])
def test_other_layer_parameters_are_checked(layer: str, said: str) -> None:
    assert said in _refused(ONE_LAYER % f"layer {{ name: \"x\" {layer} }}")


def test_the_bounds_are_what_the_docs_say() -> None:
    assert caffe_checks.MAX_LAYER_PARAMS == 1 << 28
    assert caffe_checks.MAX_BLOB_VALUES == 1 << 26
    assert caffe_checks.MAX_SPATIAL == 1 << 16


@pytest.mark.skipif(not base_nets(), reason="shared Caffe fixtures absent")
def test_seeded_mutations_of_the_lenet_fixtures_are_valid_or_refused() -> None:
    outcomes = {}
    for m in mutations(base_nets(), seed=5, count=40):
        outcome = classify(m.text)
        outcomes[m.detail] = outcome
        assert outcome in ("accepted", "refused"), (m.detail, outcome)
        if m.invalid:
            assert outcome == "refused", m.detail
    assert "accepted" in outcomes.values() and "refused" in outcomes.values()


@pytest.mark.slow  # a child interpreter under an address-space limit: about 20 s
@pytest.mark.skipif(not base_nets(), reason="shared Caffe fixtures absent")
def test_many_seeded_mutations_under_an_address_space_limit() -> None:
    proc = subprocess.run([sys.executable, "-c", LIMITED_CHILD], capture_output=True, text=True,
                          timeout=600, check=False, cwd=Path(__file__).parents[1])
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(results) == 330
    for detail, invalid, outcome in results:  # no traceback, no failed huge allocation
        assert outcome in ("accepted", "refused") and (outcome == "refused" or not invalid), \
            (detail, outcome)


def test_the_cli_says_one_line_and_exits_1(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    net = tmp_path / "net.prototxt"
    net.write_text(_edit("c_rate: 0.4", "c_rat: 0.4"))
    weights = tmp_path / "w.caffemodel"
    weights.write_bytes(b"")
    code = main(["caffe", "eval", str(net), str(weights), "--data",
                 "synthetic:n=20,test=10,size=12,seed=1"])
    err = capsys.readouterr().err
    assert code == 1 and "did you mean 'c_rate'" in err and "Traceback" not in err


# -- caffemodels ----------------------------------------------------------------------------

def _caffemodel(tmp_path: Path, edit: str = "") -> tuple[Path, Path]:
    """The small net and its weights, the file edited: ``rename``, ``nan``, ``inf`` or ``drop``
    applied to layer ip1."""
    net_file = tmp_path / "net.prototxt"
    net_file.write_text(NET)
    layers = net_blobs(from_text(NET, seed=3))
    ip = next(entry for entry in layers if entry.name == "ip1")
    if edit == "rename":
        ip.name = "ip_1"
    elif edit in ("nan", "inf"):
        ip.blobs[0].reshape(-1)[7] = np.nan if edit == "nan" else -np.inf
    elif edit == "drop":
        layers.remove(ip)
    path = tmp_path / f"w{edit}.caffemodel"
    write_caffemodel(path, layers)
    return net_file, path


def test_a_renamed_layer_is_an_error_or_a_named_warning(tmp_path: Path) -> None:
    net_file, path = _caffemodel(tmp_path, "rename")
    with pytest.raises(ConfigError) as info:
        load_plain(net_file, path)
    assert "layer(s) 'ip1' have no weights in the file (the file's layers the net lacks: " \
        "'ip_1')" in str(info.value) and "--allow-missing" in str(info.value)
    with pytest.warns(UserWarning, match="'ip1' have no weights in the file"):
        net, _ = load_plain(net_file, path, allow_missing=True)
    assert net.get_submodule("ip1").weight.shape == (5, 150)


def test_non_finite_weights_are_an_error_naming_the_layer(tmp_path: Path) -> None:
    for kind in ("nan", "inf"):
        net_file, path = _caffemodel(tmp_path, kind)
        with pytest.raises(NonFiniteError) as info:
            load_plain(net_file, path)
        assert "layer 'ip1' blob 0 holds 1 NaN or infinite value(s) of 750" in str(info.value)
        with pytest.warns(UserWarning, match="layer 'ip1' blob 0 holds 1 NaN"):
            net, _ = load_plain(net_file, path, allow_nonfinite=True)
        assert not bool(net.get_submodule("ip1").weight.isfinite().all())


def test_the_caffe_commands_take_allow_missing(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    net_file, path = _caffemodel(tmp_path, "drop")
    base = ["caffe", "convert", str(net_file), str(path), "-o", str(tmp_path / "out.ncz"),
            "--input-shape", "4,12,12"]
    assert main(base) == 1
    err = capsys.readouterr().err
    assert "'ip1' have no weights" in err and "Traceback" not in err
    assert not (tmp_path / "out.ncz").exists()
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        assert main([*base, "--allow-missing"]) == 0
    assert (tmp_path / "out.ncz").is_file()
    net_file, path = _caffemodel(tmp_path, "nan")
    data = ["--data", "synthetic:n=20,test=10,size=12,seed=1"]
    assert main(["caffe", "eval", str(net_file), str(path), *data]) == 1
    assert "NaN or infinite" in capsys.readouterr().err


def _mutated_caffemodel(layers: list[CaffeLayerBlobs], rng: random.Random) -> None:
    entry = rng.choice(layers)
    blob = entry.blobs[rng.randrange(len(entry.blobs))].reshape(-1)
    kind = rng.choice(("nan", "inf", "rename", "drop"))
    if kind in ("nan", "inf"):
        blob[rng.randrange(blob.size)] = np.nan if kind == "nan" else rng.choice((np.inf, -np.inf))
    elif kind == "rename":
        cut = rng.randrange(len(entry.name))
        entry.name = entry.name[:cut] + "w" + entry.name[cut + 1:]
    else:
        layers.remove(entry)


def test_seeded_caffemodel_mutations_are_all_refused(tmp_path: Path) -> None:
    net_file, _ = _caffemodel(tmp_path)
    rng = random.Random(3)
    for i in range(12):
        layers = net_blobs(from_text(NET, seed=i))
        _mutated_caffemodel(layers, rng)
        path = tmp_path / f"m{i}.caffemodel"
        write_caffemodel(path, layers)
        with pytest.raises((ConfigError, NonFiniteError)):
            load_plain(net_file, path)


def test_a_negative_blob_size_is_a_format_error(tmp_path: Path) -> None:
    net = _classes()["NetParameter"]()
    blob = net.layer.add(name="ip1", type="InnerProduct").blobs.add()
    blob.shape.dim.extend([-1, -3])
    blob.data.extend([1.0, 2.0, 3.0])
    (tmp_path / "neg.caffemodel").write_bytes(net.SerializeToString())
    with pytest.raises(FormatError, match=r"blob shape \[-1, -3\] has a negative size"):
        read_caffemodel(tmp_path / "neg.caffemodel")


def test_raw_corruption_of_a_caffemodel_is_loaded_or_refused(tmp_path: Path) -> None:
    net_file, path = _caffemodel(tmp_path)
    base, rng = path.read_bytes(), random.Random(1)
    outcomes = set()
    for _ in range(150):
        data = bytearray(base)
        if rng.random() < 0.5:
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        else:
            data = data[:rng.randrange(len(data))]
        path.write_bytes(bytes(data))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                load_plain(net_file, path)
            outcomes.add("loaded")
        except NNCompressError:
            outcomes.add("refused")
    assert outcomes == {"loaded", "refused"}

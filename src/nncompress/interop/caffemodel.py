"""Read and write Caffe's binary ``.caffemodel`` files (a serialized ``NetParameter``).

The schema is a minimal subset of Caffe's message definitions, built at run time from the
documented field numbers, so no ``caffe_pb2`` module is needed. Only what carries weights is
declared: the net and layer names, the layer type, bottoms and tops, and the blobs. Fields that are
not declared are kept by protobuf as unknown fields and ignored.

Field numbers (from Caffe's ``caffe.proto``):
``NetParameter``: name 1, layers 2 (``V1LayerParameter``, the legacy list), layer 100
(``LayerParameter``). ``LayerParameter``: name 1, type 2, bottom 3, top 4, blobs 7.
``V1LayerParameter``: bottom 2, top 3, name 4, type 5 (an enum), blobs 6.
``BlobProto``: num 1, channels 2, height 3, width 4 (legacy 4-D shape), data 5 (packed float),
shape 7 (``BlobShape``: dim 1, packed int64), double_data 8 (packed double).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

from nncompress._io import atomic_write_bytes
from nncompress.errors import FormatError

__all__ = ["CaffeLayerBlobs", "read_caffemodel", "write_caffemodel"]

# V1LayerParameter.LayerType numbers -> the type strings of the current format.
V1_LAYER_TYPES: dict[int, str] = {
    35: "AbsVal", 1: "Accuracy", 30: "ArgMax", 2: "BNLL", 3: "Concat", 37: "ContrastiveLoss",
    4: "Convolution", 5: "Data", 39: "Deconvolution", 6: "Dropout", 32: "DummyData",
    7: "EuclideanLoss", 25: "Eltwise", 38: "Exp", 8: "Flatten", 9: "HDF5Data", 10: "HDF5Output",
    28: "HingeLoss", 11: "Im2col", 12: "ImageData", 13: "InfogainLoss", 14: "InnerProduct",
    15: "LRN", 29: "MemoryData", 16: "MultinomialLogisticLoss", 34: "MVN", 17: "Pooling",
    26: "Power", 18: "ReLU", 19: "Sigmoid", 27: "SigmoidCrossEntropyLoss", 36: "Silence",
    20: "Softmax", 21: "SoftmaxWithLoss", 22: "Split", 33: "Slice", 23: "TanH", 24: "WindowData",
    31: "Threshold",
}

_F = descriptor_pb2.FieldDescriptorProto


def _add_field(msg: descriptor_pb2.DescriptorProto, name: str, number: int, ftype: int,
               repeated: bool = False, type_name: str = "", packed: bool = False) -> None:
    f = msg.field.add(name=name, number=number, type=ftype,  # type: ignore[arg-type]
                      label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL)
    if type_name:
        f.type_name = type_name
    if packed:
        f.options.packed = True


def _build_classes() -> dict[str, Any]:
    fdp = descriptor_pb2.FileDescriptorProto(name="nncompress_caffe_subset.proto",
                                             package="nncompress_caffe", syntax="proto2")
    shape = fdp.message_type.add(name="BlobShape")
    _add_field(shape, "dim", 1, _F.TYPE_INT64, repeated=True, packed=True)
    blob = fdp.message_type.add(name="BlobProto")
    for name, number in (("num", 1), ("channels", 2), ("height", 3), ("width", 4)):
        _add_field(blob, name, number, _F.TYPE_INT32)
    _add_field(blob, "data", 5, _F.TYPE_FLOAT, repeated=True, packed=True)
    _add_field(blob, "shape", 7, _F.TYPE_MESSAGE, type_name=".nncompress_caffe.BlobShape")
    _add_field(blob, "double_data", 8, _F.TYPE_DOUBLE, repeated=True, packed=True)
    layer = fdp.message_type.add(name="LayerParameter")
    _add_field(layer, "name", 1, _F.TYPE_STRING)
    _add_field(layer, "type", 2, _F.TYPE_STRING)
    _add_field(layer, "bottom", 3, _F.TYPE_STRING, repeated=True)
    _add_field(layer, "top", 4, _F.TYPE_STRING, repeated=True)
    _add_field(layer, "blobs", 7, _F.TYPE_MESSAGE, repeated=True,
               type_name=".nncompress_caffe.BlobProto")
    v1 = fdp.message_type.add(name="V1LayerParameter")
    _add_field(v1, "bottom", 2, _F.TYPE_STRING, repeated=True)
    _add_field(v1, "top", 3, _F.TYPE_STRING, repeated=True)
    _add_field(v1, "name", 4, _F.TYPE_STRING)
    _add_field(v1, "type", 5, _F.TYPE_INT32)  # an enum on the wire: same varint encoding
    _add_field(v1, "blobs", 6, _F.TYPE_MESSAGE, repeated=True,
               type_name=".nncompress_caffe.BlobProto")
    net = fdp.message_type.add(name="NetParameter")
    _add_field(net, "name", 1, _F.TYPE_STRING)
    _add_field(net, "layers", 2, _F.TYPE_MESSAGE, repeated=True,
               type_name=".nncompress_caffe.V1LayerParameter")
    _add_field(net, "layer", 100, _F.TYPE_MESSAGE, repeated=True,
               type_name=".nncompress_caffe.LayerParameter")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(
        f"nncompress_caffe.{name}")) for name in ("BlobProto", "LayerParameter", "NetParameter")}


_CLASSES: dict[str, Any] = {}


def _classes() -> dict[str, Any]:
    if not _CLASSES:
        _CLASSES.update(_build_classes())
    return _CLASSES


@dataclass
class CaffeLayerBlobs:
    """The weights of one layer of a caffemodel.

    Attributes:
        name: the layer name.
        type: the layer type string (legacy enum types are translated, e.g. 4 -> "Convolution").
        blobs: the layer's blobs as float32 arrays, in file order (for Caffe's DNS and INQ layers:
            weights, bias, weight mask, bias mask).
        legacy_shape: per blob, True when its shape came from the deprecated num/channels/height/
            width fields (always 4-D, padded with leading ones).
    """

    name: str
    type: str
    blobs: list[np.ndarray]
    legacy_shape: list[bool]


def _blob_to_array(blob: Any, where: str) -> tuple[np.ndarray, bool]:
    if blob.HasField("shape"):
        shape, legacy = tuple(int(d) for d in blob.shape.dim), False
    else:
        shape, legacy = (blob.num, blob.channels, blob.height, blob.width), True
    if len(blob.data):
        values = np.asarray(blob.data, dtype=np.float32)
    else:
        values = np.asarray(blob.double_data, dtype=np.float64).astype(np.float32)
    if any(d < 0 for d in shape):
        raise FormatError(f"{where}: blob shape {list(shape)} has a negative size")
    count = math.prod(shape)
    if legacy and not len(values) and count == 0:
        return np.zeros((0,), np.float32), legacy
    if values.size != count:
        raise FormatError(f"{where}: blob shape {list(shape)} needs {count} values, "
                          f"the file holds {values.size}")
    return values.reshape(shape), legacy


def read_caffemodel(path: str | Path) -> list[CaffeLayerBlobs]:
    """Read the weights of a binary caffemodel (current ``layer`` and legacy ``layers`` lists).

    Args:
        path: the ``.caffemodel`` file.

    Returns:
        One entry per layer that holds blobs, in file order.

    Raises:
        FormatError: the file is missing, not a NetParameter, or a blob's size disagrees with its
            shape.

    Example:
        >>> [(l.name, [b.shape for b in l.blobs]) for l in read_caffemodel("lenet.caffemodel")]
        ... # doctest: +SKIP
        [('conv1', [(20, 1, 5, 5), (20,)]), ...]
    """
    p = Path(path)
    if not p.is_file():
        raise FormatError(f"caffemodel not found: {p}")
    net = _classes()["NetParameter"]()
    try:
        net.ParseFromString(p.read_bytes())
    except DecodeError as exc:
        raise FormatError(f"{p}: not a caffemodel (binary NetParameter): {exc}") from exc
    out: list[CaffeLayerBlobs] = []
    for layer in net.layer:
        out.append(_layer_blobs(layer.name, layer.type, layer.blobs, p))
    for layer in net.layers:
        type_name = V1_LAYER_TYPES.get(layer.type, f"V1 layer type {layer.type}")
        out.append(_layer_blobs(layer.name, type_name, layer.blobs, p))
    return [entry for entry in out if entry.blobs]


def _layer_blobs(name: str, type_name: str, blobs: Sequence[Any], path: Path) -> CaffeLayerBlobs:
    arrays, legacy = [], []
    for i, blob in enumerate(blobs):
        arr, leg = _blob_to_array(blob, f"{path}: layer '{name}' blob {i}")
        arrays.append(arr)
        legacy.append(leg)
    return CaffeLayerBlobs(name=name, type=type_name, blobs=arrays, legacy_shape=legacy)


def write_caffemodel(path: str | Path, layers: Sequence[CaffeLayerBlobs], net_name: str = "",
                     io: dict[str, tuple[list[str], list[str]]] | None = None) -> None:
    """Write layers and their blobs as a binary caffemodel, atomically.

    Blobs are stored as float32 with the ``shape`` field (the current format).

    Args:
        path: the file to write.
        layers: the layers with their blobs, in net order.
        net_name: the ``name`` of the NetParameter.
        io: optional ``{layer name: (bottoms, tops)}`` to record with each layer.

    Example:
        >>> blobs = [np.ones((2, 3), np.float32), np.zeros(2, np.float32)]
        >>> write_caffemodel("ip.caffemodel", [CaffeLayerBlobs("ip", "InnerProduct", blobs,
        ...                  [False, False])])  # doctest: +SKIP
    """
    net = _classes()["NetParameter"](name=net_name)
    for entry in layers:
        layer = net.layer.add(name=entry.name, type=entry.type)
        if io and entry.name in io:
            layer.bottom.extend(io[entry.name][0])
            layer.top.extend(io[entry.name][1])
        for arr in entry.blobs:
            blob = layer.blobs.add()
            blob.shape.dim.extend(int(d) for d in arr.shape)
            blob.data.extend(np.ascontiguousarray(arr, dtype=np.float32).ravel().tolist())
    atomic_write_bytes(Path(path), net.SerializeToString())

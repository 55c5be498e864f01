"""Checks a Caffe net passes before anything is built: fields, blob counts, names and sizes.

Caffe's own text parser refuses a field its schema lacks; so does this module, for the layer
message and the parameter messages of the layer types nncompress runs (``c_rat: 0.4`` in a DNS
layer: "unknown field 'c_rat' ... did you mean 'c_rate'"). Blob counts follow Caffe's
``ExactNumBottomBlobs`` and friends; a layer name may appear twice only in different phases (the
TRAIN and TEST copies of one layer, which share blobs). Sizes are bounded so that a net file
cannot ask for more memory than a real net needs: at most :data:`MAX_LAYER_PARAMS` learned values
per layer, :data:`MAX_BLOB_VALUES` values per example in any blob, and spatial parameters
(kernel, stride, pad, dilation) of at most :data:`MAX_SPATIAL`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from nncompress.errors import ConfigError, did_you_mean
from nncompress.interop.caffe_spec import LayerSpec, phase_included
from nncompress.interop.prototxt import Message, PrototxtError

__all__ = ["MAX_BLOB_VALUES", "MAX_LAYER_PARAMS", "MAX_SPATIAL", "check_blob_size",
           "check_bottoms", "check_global_pooling", "check_layers", "check_params", "check_spatial",
           "check_window_output"]

MAX_LAYER_PARAMS = 1 << 28  # 1 GiB of float32: VGG-16's fc6 (103 M) fits 2.6 times
MAX_BLOB_VALUES = 1 << 26   # per example: VGG-16's conv1_1 output (3.2 M) fits 20 times
MAX_SPATIAL = 1 << 16

_FILLER = {"type", "value", "min", "max", "mean", "std", "sparse", "variance_norm"}
_CONV = {"num_output", "bias_term", "pad", "kernel_size", "stride", "dilation", "pad_h", "pad_w",
         "kernel_h", "kernel_w", "stride_h", "stride_w", "group", "weight_filler", "bias_filler",
         "engine", "axis", "force_nd_im2col"}
_DNS = {"gamma", "power", "c_rate", "iter_stop", "alpha_low", "alpha_high", "weight_mask_filler",
        "bias_mask_filler"}
_INQ = {"portion", "num_quantum_values", "weight_mask_filler", "bias_mask_filler"}
_PARAMS: dict[str, set[str]] = {
    "convolution_param": _CONV,
    "inner_product_param": {"num_output", "bias_term", "weight_filler", "bias_filler", "axis",
                            "transpose"},
    "pooling_param": {"pool", "pad", "pad_h", "pad_w", "kernel_size", "kernel_h", "kernel_w",
                      "stride", "stride_h", "stride_w", "engine", "global_pooling",
                      "round_mode"},
    "dns_convolution_param": _DNS, "dns_inner_product_param": _DNS,
    "cconvolution_param": _DNS, "cinner_product_param": _DNS,
    "inq_convolution_param": _INQ, "inq_inner_product_param": _INQ,
    "lrn_param": {"local_size", "alpha", "beta", "norm_region", "k", "engine"},
    "relu_param": {"negative_slope", "engine"},
    "dropout_param": {"dropout_ratio", "scale_train"},
    "eltwise_param": {"operation", "coeff", "stable_prod_grad"},
    "concat_param": {"axis", "concat_dim"},
    "flatten_param": {"axis", "end_axis"},
    "reshape_param": {"shape", "axis", "num_axes"},
    "softmax_param": {"engine", "axis"},
    "batch_norm_param": {"use_global_stats", "moving_average_fraction", "eps"},
    "scale_param": {"axis", "num_axes", "filler", "bias_term", "bias_filler"},
    "loss_param": {"ignore_label", "normalization", "normalize"},
    "accuracy_param": {"top_k", "axis", "ignore_label"},
    "param": {"name", "share_mode", "lr_mult", "decay_mult"},
    "include": {"phase", "min_level", "max_level", "stage", "not_stage"},
    "exclude": {"phase", "min_level", "max_level", "stage", "not_stage"},
}
_LAYER = {"name", "type", "bottom", "top", "phase", "loss_weight", "param", "blobs",
          "propagate_down", "include", "exclude", "transform_param", "data_param",
          "dummy_data_param", "input_param", "image_data_param", "memory_data_param",
          "hdf5_data_param", "window_data_param", "python_param", *_PARAMS,
          "argmax_param", "bias_param", "clip_param", "contrastive_loss_param", "crop_param",
          "elu_param", "embed_param", "exp_param", "hdf5_output_param", "hinge_loss_param",
          "infogain_loss_param", "log_param", "mvn_param", "parameter_param", "power_param",
          "prelu_param", "recurrent_param", "reduction_param", "sigmoid_param", "spp_param",
          "slice_param", "swish_param", "tanh_param", "threshold_param", "tile_param"}

_V1_LAYER = {"bottom", "top", "name", "include", "exclude", "type", "blobs", "param",
             "blob_share_mode", "blobs_lr", "weight_decay", "loss_weight", "layer",
             "transform_param", "data_param", "dummy_data_param", "image_data_param",
             "memory_data_param", "hdf5_data_param", "window_data_param", *_PARAMS,
             "argmax_param", "contrastive_loss_param", "exp_param", "hdf5_output_param",
             "hinge_loss_param", "infogain_loss_param", "mvn_param", "power_param",
             "sigmoid_param", "slice_param", "tanh_param", "threshold_param"}
_NET = {"name", "input", "input_shape", "input_dim", "force_backward", "state", "debug_info",
        "layer", "layers"}

# type -> (fewest bottoms, most bottoms, fewest tops, most tops); None: no upper bound
_ONE = (1, 1, 1, 1)
_COUNTS: dict[str, tuple[int, int | None, int, int | None]] = {
    "Convolution": _ONE, "InnerProduct": _ONE, "Pooling": _ONE, "ReLU": _ONE, "Sigmoid": _ONE,
    "TanH": _ONE, "Dropout": _ONE, "LRN": _ONE, "Softmax": _ONE, "Flatten": _ONE,
    "Reshape": _ONE, "BatchNorm": _ONE, "Scale": (1, 2, 1, 1), "Eltwise": (2, None, 1, 1),
    "Concat": (1, None, 1, 1), "Split": (1, 1, 1, None), "Silence": (1, None, 0, 0),
    "SoftmaxWithLoss": (2, 2, 1, 1), "SigmoidCrossEntropyLoss": (2, 2, 1, 1),
    "EuclideanLoss": (2, 2, 1, 1), "Accuracy": (2, 2, 1, 1), "Data": (0, 0, 1, 2),
    "Input": (0, 0, 1, None), "DummyData": (0, 0, 1, None),
}


def check_layers(net: Message, specs: Sequence[LayerSpec], phases: Sequence[str]) -> None:
    """Fields, blob counts and names of every layer, before any is built.

    Args:
        net: the parsed net: its own fields, and those of its ``layer`` (and legacy ``layers``)
            messages, are checked against Caffe's schema.
        specs: its layers (:func:`~nncompress.interop.caffe_spec.layer_specs`).
        phases: the phases the net is built for.

    Raises:
        PrototxtError: an unknown field (with the closest known one), a layer without type, or
            a wrong number of bottoms or tops (file:line:column).
        ConfigError: two layers of one phase share a name.

    Example:
        >>> from nncompress.interop.caffe_spec import layer_specs
        >>> from nncompress.interop.prototxt import parse_text
        >>> net = parse_text('layer { name: "r" type: "ReLU" bottom: "x" top: "x" '
        ...                  'relu_param { negative_slop: 0.1 } }')
        >>> check_layers(net, layer_specs(net), ["TEST"])
        Traceback (most recent call last):
        ...
        nncompress.interop.prototxt_tree.PrototxtError: <text>:1:81: layer 'r': unknown field 'negative_slop' in relu_param (did you mean 'negative_slope'?)
    """  # noqa: E501
    _check_fields(net, "the net", _NET, "")
    written = {id(m): _LAYER for m in net.messages("layer")}
    written.update({id(m): _V1_LAYER for m in net.messages("layers")})
    for spec in specs:
        if not spec.type:
            raise PrototxtError(spec.where, f"layer '{spec.name}' has no type")
        if id(spec.msg) in written:
            _check_fields(spec.msg, "layer", written[id(spec.msg)], f"layer '{spec.name}': ")
        _check_counts(spec)
    for phase in phases:
        seen: dict[str, LayerSpec] = {}
        for spec in specs:
            if not phase_included(spec, phase) or not spec.name:
                continue
            if spec.name in seen:
                raise ConfigError(f"{spec.where}: layer name '{spec.name}' is used twice in the "
                                  f"{phase} phase (first at {seen[spec.name].where}); give each "
                                  "layer its own name")
            seen[spec.name] = spec


def _check_fields(msg: Message, what: str, known: set[str], owner: str) -> None:
    for f in msg.fields:
        if f.name not in known:
            raise PrototxtError(f.where, f"{owner}unknown field '{f.name}' in "
                                f"{what}{did_you_mean(f.name, known)}")
        inner = _PARAMS.get(f.name) or (_FILLER if f.name.endswith("filler") else None)
        if inner is not None and isinstance(f.value, Message):
            _check_fields(f.value, f.name, inner, owner)


def _check_counts(spec: LayerSpec) -> None:
    if spec.type not in _COUNTS:
        return
    low_b, high_b, low_t, high_t = _COUNTS[spec.type]
    for what, n, low, high in (("bottom", len(spec.bottoms), low_b, high_b),
                               ("top", len(spec.tops), low_t, high_t)):
        if n < low or (high is not None and n > high):
            wanted = f"{low}" if low == high else f"at least {low}" if high is None else \
                f"{low} to {high}"
            raise PrototxtError(spec.where, f"layer '{spec.name}' ({spec.type}) has {n} {what} "
                                f"blob(s); it takes {wanted}")


def check_bottoms(spec: LayerSpec, shapes: dict[str, tuple[int, ...]], phase: str) -> None:
    """Every bottom of ``spec`` is made by an earlier layer of ``phase``.

    Raises:
        ConfigError: naming the layer and the missing bottom.
    """
    for bottom in spec.bottoms:
        if bottom not in shapes:
            raise ConfigError(f"{spec.where}: layer '{spec.name}' ({spec.type}) reads bottom "
                              f"'{bottom}', which no earlier layer of the {phase} phase "
                              "produces")


def check_spatial(spec: LayerSpec, where: str, name: str, values: Sequence[int],
                  low: int) -> None:
    """Each of ``values`` (a kernel, stride, pad or dilation) lies in ``[low, MAX_SPATIAL]``.

    Raises:
        PrototxtError: naming the layer, the field and the value.
    """
    for value in values:
        if not low <= value <= MAX_SPATIAL:
            raise PrototxtError(where, f"layer '{spec.name}': {name} {value} is out of range; "
                                f"it must lie in [{low}, {MAX_SPATIAL}]")


def check_params(spec: LayerSpec, where: str, shape: Sequence[int]) -> None:
    """A layer's learned blob of ``shape`` holds at most :data:`MAX_LAYER_PARAMS` values.

    Raises:
        PrototxtError: naming the layer, the shape and the count.
    """
    count = math.prod(shape)
    if count > MAX_LAYER_PARAMS:
        raise PrototxtError(where, f"layer '{spec.name}' would hold {count:,} weights (shape "
                            f"{list(shape)}), more than the {MAX_LAYER_PARAMS:,} nncompress "
                            "builds; check num_output and kernel_size")


def check_blob_size(spec: LayerSpec, top: str, shape: Sequence[int]) -> None:
    """A blob of one example holds at most :data:`MAX_BLOB_VALUES` values.

    Raises:
        ConfigError: naming the layer, the blob and its shape.
    """
    count = math.prod(shape)
    if min(shape, default=1) < 0:
        raise ConfigError(f"{spec.where}: layer '{spec.name}' makes blob '{top}' of shape "
                          f"{list(shape)}; sizes must not be negative")
    if count > MAX_BLOB_VALUES:
        raise ConfigError(f"{spec.where}: layer '{spec.name}' makes blob '{top}' of shape "
                          f"{list(shape)} ({count:,} values per example), more than the "
                          f"{MAX_BLOB_VALUES:,} nncompress allows; check pad, kernel and the "
                          "input shape")


def check_window_output(spec: LayerSpec, channels: int, sizes: Sequence[int],
                        kernel: Sequence[int], stride: Sequence[int], pad: Sequence[int],
                        dilation: Sequence[int]) -> None:
    """The output of a convolution or pooling window over ``sizes`` fits the blob bound,
    computed before anything is allocated.

    Raises:
        ConfigError: see :func:`check_blob_size`.
    """
    out = [channels] + [(n + 2 * p - (d * (k - 1) + 1)) // s + 1
                        for n, k, s, p, d in zip(sizes, kernel, stride, pad, dilation)]
    if min(out[1:], default=1) < 1:
        raise ConfigError(f"{spec.where}: layer '{spec.name}' ({spec.type}): the window "
                          f"{list(kernel)} (dilation {list(dilation)}) is larger than its input "
                          f"{list(sizes)} padded by {list(pad)}")
    check_blob_size(spec, spec.tops[0] if spec.tops else "?", out)


def check_global_pooling(spec: LayerSpec, p: Message, stride: Sequence[int],
                         pad: Sequence[int]) -> None:
    """As Caffe: with ``global_pooling`` no kernel size, and only stride 1 and pad 0.

    Raises:
        PrototxtError: naming the layer.
    """
    if any(p.has(n) for n in ("kernel_size", "kernel_h", "kernel_w")):
        raise PrototxtError(p.where, f"layer '{spec.name}': with global_pooling the kernel is the "
                            "input's size; remove kernel_size")
    if any(s != 1 for s in stride) or any(v != 0 for v in pad):
        raise PrototxtError(p.where, f"layer '{spec.name}': with global_pooling only stride 1 "
                            f"and pad 0 are allowed, got stride {list(stride)}, pad {list(pad)}")

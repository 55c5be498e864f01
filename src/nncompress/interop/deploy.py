"""Score a Caffe net on a data set: its input transform, its output blob, and the checks between.

Deploy nets (legacy ``input:``/``input_dim:`` or ``Input`` layers) carry no transform, so the
transform comes from the TEST Data layer's ``transform_param`` when there is one, with the command
line's ``--scale``, ``--mean-value`` and ``--mean-file`` taking precedence. The output is the
scored blob (:meth:`CaffeNet._output_blob`) unless ``--output`` names another. Before scoring, the
shapes of the data and of the net's input are compared, and the output's class count with the
data's, so a mistake ends in a message naming both values instead of a wrong number.
"""

from __future__ import annotations

from pathlib import Path

import torch

from nncompress.errors import ConfigError, did_you_mean
from nncompress.interop.caffe_layers import INPUT_TYPES, input_blob_shape
from nncompress.interop.caffe_net import CaffeNet
from nncompress.interop.transform import CaffeTransform, TransformSpec

__all__ = ["attach_transform", "check_input", "check_output", "class_scores", "kept_weights",
           "set_output"]


def attach_transform(net: CaffeNet, base: Path | None = None, scale: float | None = None,
                     mean_values: list[float] | None = None,
                     mean_file: str | Path | None = None) -> CaffeTransform:
    """Give ``net`` the transform it is scored with, as its ``input_transform``.

    Args:
        net: the net.
        base: the net's folder (a relative ``mean_file`` of the prototxt is looked up there).
        scale: replaces the transform's scale.
        mean_values: replace its mean (one value, or one per channel).
        mean_file: a ``.binaryproto`` mean image; replaces its mean.

    Returns:
        The transform, in eval mode.

    Raises:
        ConfigError: both a mean file and mean values are given.
        FormatError: the mean file is missing or not a mean file.

    Example:
        >>> attach_transform(net, scale=1 / 256).spec.scale  # doctest: +SKIP
        0.00390625
    """
    if mean_values and mean_file:
        raise ConfigError("give --mean-value or --mean-file, not both")
    data = next((s.spec for s in net.steps if "TEST" in s.phases and s.spec.type == "Data"), None)
    spec = TransformSpec() if data is None else TransformSpec.from_param(
        data.msg.message("transform_param"), data.where)
    spec.mirror = False
    if scale is not None:
        spec.scale = scale
    if mean_values:
        spec.mean_values, spec.mean_file = list(mean_values), None
    if mean_file:
        spec.mean_file, spec.mean_values = str(mean_file), []
    transform = CaffeTransform(spec, base=base if not mean_file else None).eval()
    net.input_transform = transform
    return transform


def _test_blobs(net: CaffeNet) -> list[str]:
    return list(dict.fromkeys(t for s in net.steps if "TEST" in s.phases for t in s.spec.tops))


def set_output(net: CaffeNet, blob: str) -> None:
    """Make ``net(x)`` return ``blob`` in the TEST phase.

    Raises:
        ConfigError: the TEST phase of the net has no such blob (with the closest name).
    """
    blobs = _test_blobs(net)
    if blob not in blobs:
        raise ConfigError(f"--output {blob!r}: the net has no blob of that name in the TEST phase"
                          f"{did_you_mean(blob, blobs)}; its blobs: {', '.join(blobs)} "
                          "(the output file of 'caffe convert' is -o FILE)")
    net.outputs["TEST"] = blob


def check_input(net: CaffeNet, sample: torch.Tensor) -> None:
    """Check that transformed examples have the shape the net's TEST input expects.

    Raises:
        ConfigError: the shapes differ (naming both).
    """
    spec = next((s.spec for s in net.steps if "TEST" in s.phases and s.spec.type in INPUT_TYPES
                 and s.spec.tops and s.spec.tops[0] == net.inputs.get("TEST")), None)
    if spec is None:
        raise ConfigError(f"net '{net.net_name}' has no input blob in the TEST phase")
    expected = list(input_blob_shape(spec, 0, net.input_shape)[1:])
    got = list(sample.shape[1:])
    if expected != got:
        hint = "--input-shape" if spec.type == "Data" else "the net's input shape"
        raise ConfigError(f"the net's input '{spec.tops[0]}' takes examples of shape {expected} "
                          f"({hint}), the data gives {got} after the transform; make them agree")


def class_scores(scores: torch.Tensor, blob: str = "output") -> torch.Tensor:
    """Scores ``(N, classes)``: trailing axes of size 1 (``N x C x 1 x 1``) are dropped.

    Raises:
        ConfigError: the blob is not one score per class (naming its shape).
    """
    if scores.dim() >= 2 and all(d == 1 for d in scores.shape[2:]):
        return scores.reshape(scores.shape[0], scores.shape[1])
    raise ConfigError(f"blob '{blob}' has shape {list(scores.shape)}, not one score per class "
                      "(N x classes); choose the scores with --output BLOB")


@torch.no_grad()
def check_output(net: CaffeNet, sample: torch.Tensor, num_classes: int) -> int:
    """Check that the output scores as many classes as the data has; returns that count.

    Raises:
        ConfigError: the counts differ (naming both, and the blobs with the data's count).
    """
    net.eval()
    source, target = net.inputs["TEST"], net.outputs["TEST"]
    if source is None or target is None:
        raise ConfigError(f"net '{net.net_name}' has no input or output blob in the TEST phase")
    values = net.run({source: sample})
    classes = class_scores(values[target], target).shape[1]
    if classes != num_classes:
        fits = [name for name, v in values.items() if name != source and v.dim() >= 2
                and v.shape[1] == num_classes and all(d == 1 for d in v.shape[2:])]
        hint = f" (blobs with {num_classes}: {', '.join(fits)})" if fits else ""
        raise ConfigError(f"the net's output '{target}' scores {classes} classes but the data "
                          f"has {num_classes}; choose the output with --output BLOB{hint}")
    return classes


def kept_weights(net: CaffeNet) -> tuple[int, int]:
    """``(non-zero, total)`` entries of the convolution and inner-product blobs of ``net``.

    Example:
        >>> kept_weights(net)  # doctest: +SKIP
        (3993, 431080)
    """
    kept = total = 0
    keys = {s.key for s in net.steps if s.spec.type in ("Convolution", "InnerProduct")}
    for key in sorted(k for k in keys if k is not None):
        module = net.get_submodule(key)
        for name in ("weight", "bias"):
            value = getattr(module, name, None)
            if isinstance(value, torch.Tensor):
                kept += int(torch.count_nonzero(value))
                total += value.numel()
    return kept, total

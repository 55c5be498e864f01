"""Caffe's loss and accuracy layers: builders, and the arithmetic PyTorch does not share.

``SigmoidCrossEntropyLoss`` sums the binary cross-entropy of every entry against a target of the
same shape (probabilities in [0, 1]) and divides by Caffe's normalizer (``VALID``: the entries not
ignored, by default; ``BATCH_SIZE``: the first axis; ``FULL``: all entries; ``NONE``: 1).
``EuclideanLoss`` is ``sum((a - b)^2) / (2 N)`` with ``N`` the first axis of the bottoms.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from nncompress.errors import ConfigError
from nncompress.interop import caffe_ops as ops
from nncompress.interop._layer_base import Builder, Built, Shape, sub
from nncompress.interop.caffe_spec import LayerSpec
from nncompress.interop.prototxt import Message

__all__ = ["LOSS_BUILDERS", "LOSS_TYPES", "euclidean_loss", "sigmoid_cross_entropy_loss"]

LOSS_TYPES = ("SoftmaxWithLoss", "SigmoidCrossEntropyLoss", "EuclideanLoss")
# layers that take integer class labels as their second bottom
LABEL_TYPES = ("SoftmaxWithLoss", "Accuracy")
_NORMALIZATIONS = ("FULL", "VALID", "BATCH_SIZE", "NONE")


def sigmoid_cross_entropy_loss(logits: torch.Tensor, targets: torch.Tensor,
                               ignore_label: int | None, normalization: str) -> torch.Tensor:
    """Caffe's SigmoidCrossEntropyLoss.

    Args:
        logits: the scores, any shape.
        targets: probabilities of the same number of entries.
        ignore_label: entries whose target equals it take no part.
        normalization: ``VALID``, ``FULL``, ``BATCH_SIZE`` or ``NONE`` (see the module docstring).

    Raises:
        ConfigError: the target has a different number of entries.

    Example:
        >>> float(sigmoid_cross_entropy_loss(torch.zeros(2, 2), torch.ones(2, 2), None, "VALID"))
        0.6931471824645996
    """
    if targets.numel() != logits.numel():
        raise ConfigError(f"SigmoidCrossEntropyLoss: the target holds {targets.numel()} entries "
                          f"for {logits.numel()} scores; they must match")
    x, t = logits.reshape(-1), targets.reshape(-1).to(logits.dtype)
    valid = torch.ones_like(t, dtype=torch.bool) if ignore_label is None else t != ignore_label
    each = F.binary_cross_entropy_with_logits(x, torch.where(valid, t, 0.0), reduction="none")
    total = (each * valid).sum()
    divisor = {"VALID": int(valid.sum()), "FULL": t.numel(),
               "BATCH_SIZE": logits.shape[0] if logits.dim() else 1, "NONE": 1}[normalization]
    return total / max(divisor, 1)


def euclidean_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Caffe's EuclideanLoss: ``sum((a - b)^2) / (2 N)``, ``N`` the first axis of ``a``.

    Raises:
        ConfigError: the bottoms hold different numbers of entries.

    Example:
        >>> float(euclidean_loss(torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 0.0]])))
        2.5
    """
    if a.numel() != b.numel():
        raise ConfigError(f"EuclideanLoss: its bottoms hold {a.numel()} and {b.numel()} entries; "
                          "they must match")
    diff = a - b.reshape(a.shape).to(a.dtype)
    return (diff * diff).sum() / (2 * max(a.shape[0] if a.dim() else 1, 1))


def _normalization(loss: Message) -> str:
    default = "VALID" if loss.get_bool("normalize", True) else "BATCH_SIZE"
    return loss.get_enum("normalization", _NORMALIZATIONS, default)


def _softmax_loss(spec: LayerSpec, shapes: list[Shape], gen: torch.Generator) -> Built:
    loss = sub(spec, "loss_param")
    axis = sub(spec, "softmax_param").get_int("axis", 1) or 0
    ignore, norm = loss.get_int("ignore_label"), _normalization(loss)
    return Built(None, lambda m, xs, t: [ops.softmax_loss(xs[0], xs[1], axis, ignore, norm)])


def _sigmoid_loss(spec: LayerSpec, shapes: list[Shape], gen: torch.Generator) -> Built:
    loss = sub(spec, "loss_param")
    ignore, norm = loss.get_int("ignore_label"), _normalization(loss)
    return Built(None, lambda m, xs, t: [sigmoid_cross_entropy_loss(xs[0], xs[1], ignore, norm)])


def _euclidean_loss(spec: LayerSpec, shapes: list[Shape], gen: torch.Generator) -> Built:
    return Built(None, lambda m, xs, t: [euclidean_loss(xs[0], xs[1])])


def _accuracy(spec: LayerSpec, shapes: list[Shape], gen: torch.Generator) -> Built:
    p = sub(spec, "accuracy_param")
    top_k, axis, ignore = p.get_int("top_k", 1) or 1, p.get_int("axis", 1) or 0, \
        p.get_int("ignore_label")
    classes = shapes[0][axis] if -len(shapes[0]) <= axis < len(shapes[0]) else 0
    if not 1 <= top_k <= max(classes, 1):
        raise ConfigError(f"{spec.where}: layer '{spec.name}': top_k {top_k} must lie in [1, "
                          f"{classes}], the number of classes of its input")
    return Built(None, lambda m, xs, t: [ops.accuracy(xs[0], xs[1], axis, top_k, ignore)])


LOSS_BUILDERS: dict[str, Builder] = {
    "SoftmaxWithLoss": _softmax_loss,
    "SigmoidCrossEntropyLoss": _sigmoid_loss,
    "EuclideanLoss": _euclidean_loss,
    "Accuracy": _accuracy,
}

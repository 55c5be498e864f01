"""AlexNet as Caffe's BVLC reference defines it (Krizhevsky, Sutskever, Hinton, NIPS 2012).

Differences from the single-tower variants found elsewhere: local response normalisation after
``conv1`` and ``conv2`` (5 channels, alpha 1e-4, beta 0.75, k 1), ``conv2``/``conv4``/``conv5``
split into 2 groups, 96-256-384-384-256 channels, a 227x227 input and Caffe's rounded-up max
pooling. Module names equal the Caffe layer names (``conv1`` ... ``conv5``, ``fc6``, ``fc7``,
``fc8``; ``relu1``, ``norm1``, ``pool1``, ``drop6`` ...), so the parameters of a converted
``.caffemodel`` load by name and per-layer recipe keys read as in the Caffe files.
"""

from __future__ import annotations

import torch
from torch import nn

from nncompress.models._image import (
    check_dropout,
    check_image_args,
    has_no_values,
    pooled_size,
)
from nncompress.models._registry import register_model

__all__ = ["AlexNetCaffe", "alexnet"]

# The smallest input whose pool5 window still fits: 55 -> conv1 12 -> pool1 6 -> pool2 3 -> 1.
_MIN_INPUT = 55

# Caffe's bvlc_alexnet fillers: gaussian weights (std), constant biases (value).
_FILLERS = {
    "conv1": (0.01, 0.0), "conv2": (0.01, 0.1), "conv3": (0.01, 0.0), "conv4": (0.01, 0.1),
    "conv5": (0.01, 0.1), "fc6": (0.005, 0.1), "fc7": (0.005, 0.1), "fc8": (0.01, 0.0),
}


def _pool5_size(input_size: int) -> int:
    size = pooled_size(input_size, 11, 4)  # conv1; conv2..conv5 keep the size (padding)
    for _ in range(3):  # pool1, pool2, pool5: 3x3, stride 2, rounded up as Caffe does
        size = pooled_size(size, 3, 2, ceil=True)
    return size


class AlexNetCaffe(nn.Module):
    """conv1..conv5 (LRN after 1 and 2, max-pool after 1, 2 and 5), then fc6, fc7, fc8."""

    def __init__(self, num_classes: int = 1000, in_channels: int = 3,
                 input_size: int = 227, dropout: float = 0.5) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 96, kernel_size=11, stride=4)
        self.relu1 = nn.ReLU()
        self.norm1 = nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0)
        self.pool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.conv2 = nn.Conv2d(96, 256, kernel_size=5, padding=2, groups=2)
        self.relu2 = nn.ReLU()
        self.norm2 = nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0)
        self.pool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.conv3 = nn.Conv2d(256, 384, kernel_size=3, padding=1)
        self.relu3 = nn.ReLU()
        self.conv4 = nn.Conv2d(384, 384, kernel_size=3, padding=1, groups=2)
        self.relu4 = nn.ReLU()
        self.conv5 = nn.Conv2d(384, 256, kernel_size=3, padding=1, groups=2)
        self.relu5 = nn.ReLU()
        self.pool5 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        side = _pool5_size(input_size)
        self.fc6 = nn.Linear(256 * side * side, 4096)
        self.relu6 = nn.ReLU()
        self.drop6 = nn.Dropout(dropout)
        self.fc7 = nn.Linear(4096, 4096)
        self.relu7 = nn.ReLU()
        self.drop7 = nn.Dropout(dropout)
        self.fc8 = nn.Linear(4096, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits ``(N, num_classes)`` for images ``(N, C, input_size, input_size)``."""
        x = self.pool1(self.norm1(self.relu1(self.conv1(x))))
        x = self.pool2(self.norm2(self.relu2(self.conv2(x))))
        x = self.relu4(self.conv4(self.relu3(self.conv3(x))))
        x = self.pool5(self.relu5(self.conv5(x)))
        x = self.drop6(self.relu6(self.fc6(x.flatten(1))))
        x = self.drop7(self.relu7(self.fc7(x)))
        logits: torch.Tensor = self.fc8(x)
        return logits


def _caffe_fill(model: AlexNetCaffe) -> AlexNetCaffe:
    """Fill the weights as the BVLC AlexNet net file does (gaussian weights, constant biases)."""
    if has_no_values(model):
        return model
    with torch.no_grad():
        for name, (std, bias) in _FILLERS.items():
            layer = getattr(model, name)
            layer.weight.normal_(0.0, std)
            layer.bias.fill_(bias)
    return model


@register_model("alexnet")
def alexnet(num_classes: int = 1000, in_channels: int = 3, input_size: int = 227,
            dropout: float = 0.5) -> nn.Module:
    """Caffe's BVLC AlexNet (60,965,224 parameters at 1000 classes and 227x227 input).

    Layer names follow the Caffe net (``conv1`` ... ``fc8``), so a ``.caffemodel`` converted by
    name loads into it. The input size sets ``fc6``'s inputs (``256 * 6 * 6`` at 227).

    Args:
        num_classes: outputs of ``fc8``.
        in_channels: input channels of ``conv1``.
        input_size: height = width of the input images (at least 55).
        dropout: drop probability of ``drop6`` and ``drop7``, in [0, 1).

    Returns:
        The model, with Caffe's gaussian/constant fillers.

    Raises:
        ConfigError: an argument is out of range.

    Example:
        >>> with torch.device("meta"):
        ...     net = alexnet()
        >>> net.fc6.in_features, net.conv2.groups
        (9216, 2)
    """
    check_image_args("alexnet", num_classes, in_channels, input_size, _MIN_INPUT,
                     "conv1 and three 3x3/2 poolings leave no pixel below that")
    check_dropout("alexnet", dropout)
    return _caffe_fill(AlexNetCaffe(num_classes, in_channels, input_size, dropout))


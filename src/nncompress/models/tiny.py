"""Tiny models for tests and quick runs; each covers a different kind of compressible layer.

- ``tiny_mlp``: two Linear layers.
- ``tiny_cnn``: a plain, a grouped (groups=2) and a bias-free depthwise Conv2d, then a Linear.
- ``tiny_conv1d``: Conv1d layers over the flattened pixels (grouped included), then a Linear.

All take images ``(N, C, H, W)`` (the synthetic and MNIST sets) and use Caffe's xavier init.
"""

from __future__ import annotations

import torch
from torch import nn

from nncompress.errors import ConfigError
from nncompress.models._registry import register_model, require_ints
from nncompress.models.lenet import caffe_xavier_

__all__ = ["TinyCNN", "TinyConv1d", "TinyMLP", "tiny_cnn", "tiny_conv1d", "tiny_mlp"]


class TinyMLP(nn.Module):
    """fc1 -> ReLU -> fc2."""

    def __init__(self, num_classes: int, in_features: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits for images or flat rows."""
        logits: torch.Tensor = self.fc2(torch.relu(self.fc1(x.flatten(1))))
        return logits


class TinyCNN(nn.Module):
    """conv1 (stride 2) -> grouped conv2 -> depthwise conv3 (no bias) -> 2x2 pool -> fc."""

    def __init__(self, num_classes: int, in_channels: int, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, groups=2)
        self.conv3 = nn.Conv2d(width, width, 3, padding=1, groups=width, bias=False)
        self.pool = nn.AdaptiveMaxPool2d(2)
        self.fc = nn.Linear(width * 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits for images ``(N, C, H, W)``."""
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        x = torch.relu(self.conv3(x))
        logits: torch.Tensor = self.fc(self.pool(x).flatten(1))
        return logits


class TinyConv1d(nn.Module):
    """Conv1d over each channel's flattened pixels: conv1 (stride 4) -> grouped conv2 -> fc."""

    def __init__(self, num_classes: int, in_channels: int, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(in_channels, width, 8, stride=4)
        self.conv2 = nn.Conv1d(width, width, 5, stride=2, groups=2)
        self.pool = nn.AdaptiveMaxPool1d(4)
        self.fc = nn.Linear(width * 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits for images ``(N, C, H, W)`` (flattened to ``(N, C, H*W)``) or sequences."""
        if x.dim() == 4:
            x = x.flatten(2)
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        logits: torch.Tensor = self.fc(self.pool(x).flatten(1))
        return logits


def _check_conv_args(num_classes: int, in_channels: int, width: int) -> None:
    require_ints(num_classes=(num_classes, 1), in_channels=(in_channels, 1), width=(width, 2))
    if width % 2:
        raise ConfigError(f"width={width} must be even (conv2 has 2 groups)")


@register_model("tiny_mlp")
def tiny_mlp(
    num_classes: int = 10, in_channels: int = 1, input_size: int = 28, hidden: int = 32
) -> nn.Module:
    """A two-layer perceptron (25,450 parameters with the defaults).

    Example:
        >>> tiny_mlp(input_size=8)(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """
    require_ints(
        num_classes=(num_classes, 1),
        in_channels=(in_channels, 1),
        input_size=(input_size, 1),
        hidden=(hidden, 1),
    )
    return caffe_xavier_(TinyMLP(num_classes, in_channels * input_size * input_size, hidden))


@register_model("tiny_cnn")
def tiny_cnn(num_classes: int = 10, in_channels: int = 1, width: int = 8) -> nn.Module:
    """A small CNN with a grouped and a depthwise convolution (any input size >= 4).

    Args:
        num_classes: outputs of ``fc``.
        in_channels: input channels of ``conv1``.
        width: channels of every convolution; must be even (conv2 has 2 groups).

    Example:
        >>> tiny_cnn()(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """
    _check_conv_args(num_classes, in_channels, width)
    return caffe_xavier_(TinyCNN(num_classes, in_channels, width))


@register_model("tiny_conv1d")
def tiny_conv1d(num_classes: int = 10, in_channels: int = 1, width: int = 8) -> nn.Module:
    """A small Conv1d model reading images as sequences of pixels (length >= 32).

    Example:
        >>> tiny_conv1d()(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """
    _check_conv_args(num_classes, in_channels, width)
    return caffe_xavier_(TinyConv1d(num_classes, in_channels, width))

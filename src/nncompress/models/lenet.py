"""Caffe's LeNet-5 and LeNet-300-100, with Caffe's layer names and initialisation.

Module attribute names equal the Caffe layer names (``conv1``, ``ip1``, ...), so per-layer
recipe keys and converted ``.caffemodel`` blobs line up with the seed's prototxt files.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from nncompress.models._registry import register_model, require_ints

__all__ = ["LeNet5", "LeNet300100", "caffe_xavier_", "lenet5", "lenet300_100"]


def caffe_xavier_(module: nn.Module) -> nn.Module:
    """Initialise every Linear/Conv weight as Caffe's ``xavier`` filler and zero the biases.

    Caffe's xavier (default ``variance_norm: FAN_IN``) draws uniformly from
    ``±sqrt(3 / fan_in)`` with ``fan_in`` = inputs per output unit (``in/groups · kernel``).

    Args:
        module: the model; initialised in place.

    Returns:
        The same module.

    Example:
        >>> layer = caffe_xavier_(nn.Linear(300, 10))
        >>> bool(layer.weight.abs().max() <= (3 / 300) ** 0.5), layer.bias.abs().sum().item()
        (True, 0.0)
    """
    for sub in module.modules():
        if isinstance(sub, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            fan_in = sub.weight[0].numel()
            bound = math.sqrt(3.0 / fan_in)
            with torch.no_grad():
                sub.weight.uniform_(-bound, bound)
                if sub.bias is not None:
                    sub.bias.zero_()
    return module


def _caffe_pool_size(size: int) -> int:
    # Caffe pooling rounds up: ceil((size - 2) / 2) + 1 for a 2x2 window with stride 2.
    return math.ceil((size - 2) / 2) + 1


class LeNet5(nn.Module):
    """conv1 20@5x5 -> max-pool 2/2 -> conv2 50@5x5 -> max-pool 2/2 -> ip1 500 -> ReLU -> ip2."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, input_size: int = 28) -> None:
        super().__init__()
        after = _caffe_pool_size(_caffe_pool_size(input_size - 4) - 4)
        self.conv1 = nn.Conv2d(in_channels, 20, kernel_size=5)
        self.pool1 = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        self.conv2 = nn.Conv2d(20, 50, kernel_size=5)
        self.pool2 = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        self.ip1 = nn.Linear(50 * after * after, 500)
        self.relu1 = nn.ReLU()
        self.ip2 = nn.Linear(500, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits ``(N, num_classes)`` for images ``(N, C, H, W)``."""
        x = self.pool2(self.conv2(self.pool1(self.conv1(x))))
        logits: torch.Tensor = self.ip2(self.relu1(self.ip1(x.flatten(1))))
        return logits


class LeNet300100(nn.Module):
    """ip1 300 -> ReLU -> ip2 100 -> ReLU -> ip3 (the fully connected LeNet)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, input_size: int = 28) -> None:
        super().__init__()
        self.ip1 = nn.Linear(in_channels * input_size * input_size, 300)
        self.relu1 = nn.ReLU()
        self.ip2 = nn.Linear(300, 100)
        self.relu2 = nn.ReLU()
        self.ip3 = nn.Linear(100, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits ``(N, num_classes)`` for images ``(N, C, H, W)`` or flat rows."""
        x = self.relu1(self.ip1(x.flatten(1)))
        logits: torch.Tensor = self.ip3(self.relu2(self.ip2(x)))
        return logits


@register_model("lenet5")
def lenet5(num_classes: int = 10, in_channels: int = 1, input_size: int = 28) -> nn.Module:
    """Caffe's MNIST LeNet (431,080 parameters for 1x28x28 input and 10 classes).

    Args:
        num_classes: outputs of ``ip2``.
        in_channels: input channels of ``conv1``.
        input_size: height = width of the input images (at least 16).

    Example:
        >>> sum(p.numel() for p in lenet5().parameters())
        431080
    """
    require_ints(
        num_classes=(num_classes, 1), in_channels=(in_channels, 1), input_size=(input_size, 16)
    )
    return caffe_xavier_(LeNet5(num_classes, in_channels, input_size))


@register_model("lenet300_100")
def lenet300_100(num_classes: int = 10, in_channels: int = 1, input_size: int = 28) -> nn.Module:
    """LeNet-300-100: 784 -> 300 -> 100 -> 10 (266,610 parameters).

    Args:
        num_classes: outputs of ``ip3``.
        in_channels: input channels (flattened with the pixels).
        input_size: height = width of the input images.

    Example:
        >>> sum(p.numel() for p in lenet300_100().parameters())
        266610
    """
    require_ints(
        num_classes=(num_classes, 1), in_channels=(in_channels, 1), input_size=(input_size, 1)
    )
    return caffe_xavier_(LeNet300100(num_classes, in_channels, input_size))

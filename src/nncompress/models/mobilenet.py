"""MobileNetV2 (Sandler et al., CVPR 2018), width 1.0, torchvision's layout.

A 3x3/2 stem with 32 channels, seventeen inverted-residual blocks (1x1 expansion by ``t``,
3x3 depthwise, 1x1 linear projection; identity shortcut where stride is 1 and the channels
match), a 1x1 convolution to 1280 channels, global average pooling, dropout and ``Linear``.
Parameter names match torchvision's ``state_dict``: ``features.0.0`` (stem convolution) and
``features.0.1`` (its BatchNorm), ``features.N.conv.*`` for the blocks, ``features.18`` and
``classifier.1``.
"""

from __future__ import annotations

import torch
from torch import nn

from nncompress.models._image import check_dropout, check_image_args, he_init_
from nncompress.models._registry import register_model

__all__ = ["InvertedResidual", "MobileNetV2", "mobilenet_v2"]

# The paper's Table 2: expansion t, output channels c, repeats n, first stride s.
_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
             (6, 160, 3, 2), (6, 320, 1, 1))


def _conv_bn_relu6(cin: int, cout: int, kernel: int = 3, stride: int = 1,
                   groups: int = 1) -> nn.Sequential:
    """Convolution (no bias), BatchNorm, ReLU6: children ``0``, ``1``, ``2``."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, padding=(kernel - 1) // 2, groups=groups,
                  bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU6(),
    )


class InvertedResidual(nn.Module):
    """Expand (when ``expansion`` > 1), depthwise 3x3, project; ``x +`` it when shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = cin * expansion
        self.use_shortcut = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(_conv_bn_relu6(cin, hidden, kernel=1))
        layers += [_conv_bn_relu6(hidden, hidden, stride=stride, groups=hidden),
                   nn.Conv2d(hidden, cout, kernel_size=1, bias=False),
                   nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the block's output, with the identity shortcut added when it has one."""
        out: torch.Tensor = self.conv(x)
        return x + out if self.use_shortcut else out


class MobileNetV2(nn.Module):
    """``features`` (stem, 17 blocks, 1x1 to 1280), global pool, ``classifier``."""

    def __init__(self, num_classes: int = 1000, in_channels: int = 3,
                 dropout: float = 0.2) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv_bn_relu6(in_channels, 32, stride=2)]
        cin = 32
        for expansion, cout, repeats, first_stride in _SETTINGS:
            for index in range(repeats):
                stride = first_stride if index == 0 else 1
                layers.append(InvertedResidual(cin, cout, stride, expansion))
                cin = cout
        layers.append(_conv_bn_relu6(cin, 1280, kernel=1))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(1280, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits ``(N, num_classes)`` for images ``(N, C, H, W)``."""
        x = self.avgpool(self.features(x))
        logits: torch.Tensor = self.classifier(x.flatten(1))
        return logits


@register_model("mobilenet_v2")
def mobilenet_v2(num_classes: int = 1000, in_channels: int = 3, input_size: int = 224,
                 dropout: float = 0.2) -> nn.Module:
    """MobileNetV2 at width 1.0 (3,504,872 parameters at 1000 classes).

    Args:
        num_classes: outputs of ``classifier.1``.
        in_channels: input channels of the stem ``features.0.0``.
        input_size: height = width of the input images (at least 32; any size works).
        dropout: drop probability before ``classifier.1``, in [0, 1).

    Returns:
        The model: He-initialised convolutions, BatchNorm at 1 and 0, ``N(0, 0.01)`` Linear.

    Raises:
        ConfigError: an argument is out of range.

    Example:
        >>> mobilenet_v2(num_classes=3)(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 3])
    """
    check_image_args("mobilenet_v2", num_classes, in_channels, input_size, 32,
                     "five stride-2 convolutions halve it down to 1x1 at 32")
    check_dropout("mobilenet_v2", dropout)
    return he_init_(MobileNetV2(num_classes, in_channels, dropout))

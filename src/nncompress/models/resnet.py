"""ResNet-18 and ResNet-50 for ImageNet (He, Zhang, Ren, Sun, CVPR 2016), torchvision's layout.

Parameter names match torchvision's ``state_dict`` (``conv1.weight``, ``bn1.running_mean``,
``layer1.0.conv1.weight``, ``layer2.0.downsample.0.weight``, ``fc.weight``, ...), so its
pretrained weights load as they are. The bottleneck block strides in its 3x3 convolution (the
variant torchvision ships, often called v1.5). The global average pooling makes the network
work at any input of 32x32 or more; ``input_size`` only records and checks it.
"""

from __future__ import annotations

import torch
from torch import nn

from nncompress.models._image import check_image_args, he_init_
from nncompress.models._registry import register_model

__all__ = ["BasicBlock", "Bottleneck", "ResNet", "resnet18", "resnet50"]

_WHY = "five stride-2 stages halve it down to 1x1 at 32"


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


def _projection(cin: int, cout: int, stride: int) -> nn.Sequential:
    """A 1x1 convolution and BatchNorm matching the shortcut to the block's output."""
    return nn.Sequential(nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False),
                         nn.BatchNorm2d(cout))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with BatchNorm and a shortcut (identity or ``downsample``)."""

    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = _conv3x3(cin, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``."""
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        result: torch.Tensor = self.relu(out + shortcut)
        return result


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand by 4, each with BatchNorm, and a shortcut."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU()
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the block's output: the three convolutions plus the shortcut, then ReLU."""
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        result: torch.Tensor = self.relu(out + shortcut)
        return result


class ResNet(nn.Module):
    """The ImageNet ResNet: 7x7/2 stem, 3x3/2 max-pool, four stages, global pool, ``fc``."""

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], depths: tuple[int, ...],
                 num_classes: int = 1000, in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1, channels = _stage(block, 64, 64, depths[0], 1)
        self.layer2, channels = _stage(block, channels, 128, depths[1], 2)
        self.layer3, channels = _stage(block, channels, 256, depths[2], 2)
        self.layer4, channels = _stage(block, channels, 512, depths[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits ``(N, num_classes)`` for images ``(N, C, H, W)``."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        logits: torch.Tensor = self.fc(self.avgpool(x).flatten(1))
        return logits


def _stage(block: type[BasicBlock] | type[Bottleneck], cin: int, planes: int, depth: int,
           stride: int) -> tuple[nn.Sequential, int]:
    """``depth`` blocks; the first strides and projects its shortcut when the shape changes."""
    cout = planes * block.expansion
    downsample = _projection(cin, cout, stride) if stride != 1 or cin != cout else None
    blocks: list[nn.Module] = [block(cin, planes, stride, downsample)]
    blocks += [block(cout, planes) for _ in range(depth - 1)]
    return nn.Sequential(*blocks), cout


@register_model("resnet18")
def resnet18(num_classes: int = 1000, in_channels: int = 3, input_size: int = 224) -> nn.Module:
    """ResNet-18: basic blocks 2-2-2-2 (11,689,512 parameters at 1000 classes).

    Args:
        num_classes: outputs of ``fc``.
        in_channels: input channels of ``conv1``.
        input_size: height = width of the input images (at least 32; any size works).

    Returns:
        The model, He-initialised (BatchNorm at 1 and 0).

    Raises:
        ConfigError: an argument is out of range.

    Example:
        >>> resnet18(num_classes=10)(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """
    check_image_args("resnet18", num_classes, in_channels, input_size, 32, _WHY)
    return he_init_(ResNet(BasicBlock, (2, 2, 2, 2), num_classes, in_channels))


@register_model("resnet50")
def resnet50(num_classes: int = 1000, in_channels: int = 3, input_size: int = 224) -> nn.Module:
    """ResNet-50: bottleneck blocks 3-4-6-3 (25,557,032 parameters at 1000 classes).

    Args:
        num_classes: outputs of ``fc``.
        in_channels: input channels of ``conv1``.
        input_size: height = width of the input images (at least 32; any size works).

    Returns:
        The model, He-initialised (BatchNorm at 1 and 0).

    Raises:
        ConfigError: an argument is out of range.

    Example:
        >>> with torch.device("meta"):
        ...     net = resnet50()
        >>> tuple(net.layer4[0].downsample[0].weight.shape), net.fc.in_features
        ((2048, 1024, 1, 1), 2048)
    """
    check_image_args("resnet50", num_classes, in_channels, input_size, 32, _WHY)
    return he_init_(ResNet(Bottleneck, (3, 4, 6, 3), num_classes, in_channels))

"""ResNet-20 for 32x32 images (He, Zhang, Ren, Sun, CVPR 2016, section 4.2: CIFAR-10).

A 3x3 convolution with 16 channels, then three stages of three basic blocks with 16, 32 and
64 channels (the second and third stage start with stride 2), global average pooling and ``fc``:
6n + 2 = 20 weighted layers for n = 3. Names follow torchvision's ResNet (``conv1``, ``bn1``,
``layer1.0.conv1``, ``fc``).

Shortcuts where the shape changes are the paper's **option A** by default: parameter-free, the
input subsampled by the stride and its new channels zero (as many padded before as after).
``shortcut="B"`` uses a 1x1 convolution with BatchNorm there instead (``downsample.0``/``.1``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nncompress.errors import ConfigError
from nncompress.models._image import check_image_args, he_init_
from nncompress.models._registry import register_model
from nncompress.models.resnet import BasicBlock

__all__ = ["CifarResNet", "PadShortcut", "resnet20"]


class PadShortcut(nn.Module):
    """Option A: ``x[:, :, ::stride, ::stride]`` with ``extra`` zero channels, half on each side."""

    def __init__(self, stride: int, extra: int) -> None:
        super().__init__()
        self.stride = stride
        self.extra = extra

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the subsampled input with the zero channels added."""
        x = x[:, :, :: self.stride, :: self.stride]
        before = self.extra // 2
        return F.pad(x, (0, 0, 0, 0, before, self.extra - before))


class CifarResNet(nn.Module):
    """3x3 stem with 16 channels, stages of 16/32/64 channels, global pool, ``fc``."""

    def __init__(self, depth_per_stage: int = 3, num_classes: int = 10, in_channels: int = 3,
                 shortcut: str = "A") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU()
        self.layer1 = _stage(16, 16, 1, depth_per_stage, shortcut)
        self.layer2 = _stage(16, 32, 2, depth_per_stage, shortcut)
        self.layer3 = _stage(32, 64, 2, depth_per_stage, shortcut)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits ``(N, num_classes)`` for images ``(N, C, H, W)``."""
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        logits: torch.Tensor = self.fc(self.avgpool(x).flatten(1))
        return logits


def _stage(cin: int, planes: int, stride: int, depth: int, shortcut: str) -> nn.Sequential:
    blocks: list[nn.Module] = [BasicBlock(cin, planes, stride,
                                          _shortcut(shortcut, cin, planes, stride))]
    blocks += [BasicBlock(planes, planes) for _ in range(depth - 1)]
    return nn.Sequential(*blocks)


def _shortcut(kind: str, cin: int, cout: int, stride: int) -> nn.Module | None:
    if stride == 1 and cin == cout:
        return None
    if kind == "A":
        return PadShortcut(stride, cout - cin)
    return nn.Sequential(nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False),
                         nn.BatchNorm2d(cout))


@register_model("resnet20")
def resnet20(num_classes: int = 10, in_channels: int = 3, input_size: int = 32,
             shortcut: str = "A") -> nn.Module:
    """ResNet-20 for CIFAR-size images (269,722 parameters with option A and 10 classes).

    Args:
        num_classes: outputs of ``fc``.
        in_channels: input channels of ``conv1``.
        input_size: height = width of the input images (at least 4; any size works).
        shortcut: ``"A"`` (zero-padding identity, no parameters; the paper's choice) or ``"B"``
            (1x1 convolution and BatchNorm where the shape changes; 272,474 parameters).

    Returns:
        The model, He-initialised (BatchNorm at 1 and 0).

    Raises:
        ConfigError: an argument is out of range or ``shortcut`` is neither "A" nor "B".

    Example:
        >>> resnet20()(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """
    check_image_args("resnet20", num_classes, in_channels, input_size, 4,
                     "two stride-2 stages halve it down to 1x1 at 4")
    if shortcut not in ("A", "B"):
        raise ConfigError(f"resnet20: shortcut={shortcut!r} must be 'A' (zero-padding "
                          "identity) or 'B' (1x1 convolution projection)")
    return he_init_(CifarResNet(3, num_classes, in_channels, shortcut))

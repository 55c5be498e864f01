"""VGG-16 (Simonyan, Zisserman, ICLR 2015, configuration D), torchvision's layout.

Thirteen 3x3 convolutions with biases in five blocks (64, 128, 256, 512, 512 channels), each
block closed by a 2x2 max-pool; an adaptive average pool to 7x7; then three fully connected
layers with dropout. Parameter names match torchvision's ``state_dict``: convolutions at
``features.0``, ``features.2``, ``features.5``, ... ``features.28``; the fully connected layers at
``classifier.0``, ``classifier.3`` and ``classifier.6``.
"""

from __future__ import annotations

import torch
from torch import nn

from nncompress.models._image import check_dropout, check_image_args, he_init_
from nncompress.models._registry import register_model

__all__ = ["VGG", "vgg16"]

# Output channels of each 3x3 convolution; 0 marks a 2x2 max-pool.
_VGG16 = (64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0)


def _features(plan: tuple[int, ...], in_channels: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    cin = in_channels
    for cout in plan:
        if cout == 0:
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        layers += [nn.Conv2d(cin, cout, kernel_size=3, padding=1), nn.ReLU()]
        cin = cout
    return nn.Sequential(*layers)


class VGG(nn.Module):
    """``features`` (convolutions and pools), ``avgpool`` to 7x7, ``classifier``."""

    def __init__(self, plan: tuple[int, ...], num_classes: int = 1000, in_channels: int = 3,
                 dropout: float = 0.5) -> None:
        super().__init__()
        self.features = _features(plan, in_channels)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits ``(N, num_classes)`` for images ``(N, C, H, W)``."""
        x = self.avgpool(self.features(x))
        logits: torch.Tensor = self.classifier(x.flatten(1))
        return logits


@register_model("vgg16")
def vgg16(num_classes: int = 1000, in_channels: int = 3, input_size: int = 224,
          dropout: float = 0.5) -> nn.Module:
    """VGG-16 without BatchNorm (138,357,544 parameters at 1000 classes).

    Args:
        num_classes: outputs of ``classifier.6``.
        in_channels: input channels of ``features.0``.
        input_size: height = width of the input images (at least 32; any size works, the
            adaptive pool always gives 7x7).
        dropout: drop probability in the classifier, in [0, 1).

    Returns:
        The model: He-initialised convolutions, ``N(0, 0.01)`` Linear weights, zero biases.

    Raises:
        ConfigError: an argument is out of range.

    Example:
        >>> with torch.device("meta"):
        ...     net = vgg16()
        >>> tuple(net.classifier[0].weight.shape), tuple(net.features[28].weight.shape)
        ((4096, 25088), (512, 512, 3, 3))
    """
    check_image_args("vgg16", num_classes, in_channels, input_size, 32,
                     "five 2x2 max-pools halve it down to 1x1 at 32")
    check_dropout("vgg16", dropout)
    return he_init_(VGG(_VGG16, num_classes, in_channels, dropout))

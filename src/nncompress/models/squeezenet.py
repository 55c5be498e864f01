"""SqueezeNet 1.1 (Iandola et al. 2016; version 1.1 of the authors' release), torchvision's layout.

A 3x3/2 convolution with 64 channels, three rounded-up 3x3/2 max-pools and eight Fire modules
(1x1 squeeze, then 1x1 and 3x3 expands concatenated), then dropout, a 1x1 convolution to the
classes, ReLU and global average pooling. Parameter names match torchvision's ``state_dict``:
``features.0``; Fire modules at ``features.3``, ``.4``, ``.6``, ``.7``, ``.9`` ... ``.12`` with
``squeeze``, ``expand1x1`` and ``expand3x3``; the class convolution at ``classifier.1``.
"""

from __future__ import annotations

import torch
from torch import nn

from nncompress.models._image import check_dropout, check_image_args, has_no_values, he_init_
from nncompress.models._registry import register_model

__all__ = ["Fire", "SqueezeNet", "squeezenet1_1"]

# (squeeze, expand) channels of each Fire module; None marks a max-pool.
_V1_1: tuple[tuple[int, int] | None, ...] = (
    (16, 64), (16, 64), None, (32, 128), (32, 128), None, (48, 192), (48, 192), (64, 256),
    (64, 256))


class Fire(nn.Module):
    """1x1 squeeze to ``squeeze`` channels, then 1x1 and 3x3 expands of ``expand`` each."""

    def __init__(self, cin: int, squeeze: int, expand: int) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(cin, squeeze, kernel_size=1)
        self.squeeze_activation = nn.ReLU()
        self.expand1x1 = nn.Conv2d(squeeze, expand, kernel_size=1)
        self.expand1x1_activation = nn.ReLU()
        self.expand3x3 = nn.Conv2d(squeeze, expand, kernel_size=3, padding=1)
        self.expand3x3_activation = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the two expands' activations concatenated along the channels."""
        x = self.squeeze_activation(self.squeeze(x))
        return torch.cat([self.expand1x1_activation(self.expand1x1(x)),
                          self.expand3x3_activation(self.expand3x3(x))], dim=1)


class SqueezeNet(nn.Module):
    """``features`` (stem, pools, Fire modules) and ``classifier`` (dropout, 1x1 conv, pool)."""

    def __init__(self, num_classes: int = 1000, in_channels: int = 3,
                 dropout: float = 0.5) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, 64, kernel_size=3, stride=2),
                                   nn.ReLU(), _pool()]
        cin = 64
        for spec in _V1_1:
            if spec is None:
                layers.append(_pool())
                continue
            squeeze, expand = spec
            layers.append(Fire(cin, squeeze, expand))
            cin = 2 * expand
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(dropout),
                                        nn.Conv2d(cin, num_classes, kernel_size=1),
                                        nn.ReLU(), nn.AdaptiveAvgPool2d(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits ``(N, num_classes)`` for images ``(N, C, H, W)``."""
        logits: torch.Tensor = self.classifier(self.features(x)).flatten(1)
        return logits


def _pool() -> nn.MaxPool2d:
    return nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)


@register_model("squeezenet1_1")
def squeezenet1_1(num_classes: int = 1000, in_channels: int = 3, input_size: int = 224,
                  dropout: float = 0.5) -> nn.Module:
    """SqueezeNet 1.1 (1,235,496 parameters at 1000 classes).

    Args:
        num_classes: outputs of the class convolution ``classifier.1``.
        in_channels: input channels of ``features.0``.
        input_size: height = width of the input images (at least 25; any size works).
        dropout: drop probability before the class convolution, in [0, 1).

    Returns:
        The model: He-initialised convolutions, the class convolution ``N(0, 0.01)``, zero
        biases.

    Raises:
        ConfigError: an argument is out of range.

    Example:
        >>> squeezenet1_1(num_classes=5)(torch.zeros(1, 3, 64, 64)).shape
        torch.Size([1, 5])
    """
    check_image_args("squeezenet1_1", num_classes, in_channels, input_size, 25,
                     "the 3x3/2 stem and three 3x3/2 max-pools leave no pixel below that")
    check_dropout("squeezenet1_1", dropout)
    model = SqueezeNet(num_classes, in_channels, dropout)
    he_init_(model)
    classes = model.classifier[1]
    if isinstance(classes, nn.Conv2d) and not has_no_values(model):
        nn.init.normal_(classes.weight, 0.0, 0.01)
    return model

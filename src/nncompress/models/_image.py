"""Shared pieces of the image-classification models: argument checks and weight initialisation."""

from __future__ import annotations

import math

from torch import nn

from nncompress.errors import ConfigError
from nncompress.models._registry import require_ints

__all__ = ["check_dropout", "check_image_args", "has_no_values", "he_init_", "pooled_size"]


def check_image_args(model: str, num_classes: int, in_channels: int, input_size: int,
                     minimum: int, why: str) -> None:
    """Raise ConfigError unless the common arguments of an image model are usable.

    Args:
        model: the registry name, named in the message.
        num_classes: outputs of the classifier, at least 1.
        in_channels: channels of the input images, at least 1.
        input_size: height = width of the input images, at least ``minimum``.
        minimum: the smallest input the network takes.
        why: what makes ``minimum`` the smallest, said in the message.

    Example:
        >>> check_image_args("net", 10, 3, 16, 32, "it downsamples by 32")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        nncompress.errors.ConfigError: net: input_size=16 is too small; the network needs ...
    """
    try:
        require_ints(num_classes=(num_classes, 1), in_channels=(in_channels, 1))
    except ConfigError as exc:
        raise ConfigError(f"{model}: {exc}") from None
    if not isinstance(input_size, int) or isinstance(input_size, bool):
        raise ConfigError(f"{model}: input_size={input_size!r} must be an integer (pixels)")
    if input_size < minimum:
        raise ConfigError(f"{model}: input_size={input_size} is too small; the network needs "
                          f"images of at least {minimum}x{minimum} ({why})")


def check_dropout(model: str, dropout: float) -> None:
    """Raise ConfigError unless ``dropout`` is a number in [0, 1).

    Example:
        >>> check_dropout("net", 0.5)
    """
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or \
            not 0.0 <= dropout < 1.0:
        raise ConfigError(f"{model}: dropout={dropout!r} must be a number in [0, 1)")


def has_no_values(module: nn.Module) -> bool:
    """True for a model on the ``meta`` device (shapes only): there is nothing to initialise.

    Example:
        >>> has_no_values(nn.Linear(2, 2, device="meta")), has_no_values(nn.Linear(2, 2))
        (True, False)
    """
    return any(p.is_meta for p in module.parameters())


def pooled_size(size: int, kernel: int, stride: int, pad: int = 0, ceil: bool = False) -> int:
    """Output size along one axis of a convolution or pooling window.

    With ``ceil`` (Caffe's pooling, and PyTorch's ``ceil_mode``), the division rounds up.

    Example:
        >>> pooled_size(227, 11, 4), pooled_size(55, 3, 2, ceil=True), pooled_size(14, 3, 2)
        (55, 27, 6)
    """
    span = size + 2 * pad - kernel
    steps = math.ceil(span / stride) if ceil else span // stride
    return steps + 1


def he_init_(module: nn.Module, linear_std: float = 0.01) -> nn.Module:
    """He (fan-out) initialisation of convolutions, unit BatchNorm, small normal Linear weights.

    Convolution weights are drawn from ``N(0, 2 / fan_out)`` with ``fan_out = out/groups · kernel``;
    BatchNorm scales start at 1 and shifts at 0; Linear weights from ``N(0, linear_std^2)``;
    every bias at 0. A model on the ``meta`` device holds no values and is left as it is.

    Args:
        module: the model; initialised in place.
        linear_std: standard deviation of the Linear weights.

    Returns:
        The same module.

    Example:
        >>> layer = he_init_(nn.Conv2d(4, 8, 3))
        >>> float(layer.bias.detach().abs().sum())
        0.0
    """
    if has_no_values(module):
        return module
    for sub in module.modules():
        if isinstance(sub, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            nn.init.kaiming_normal_(sub.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(sub, nn.Linear):
            nn.init.normal_(sub.weight, 0.0, linear_std)
        elif isinstance(sub, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.ones_(sub.weight)
        else:
            continue
        if sub.bias is not None:
            nn.init.zeros_(sub.bias)
    return module

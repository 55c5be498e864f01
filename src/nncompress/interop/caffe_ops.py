"""Caffe's layer arithmetic in PyTorch where it differs from PyTorch's own.

Pooling follows Caffe's output-size rule (rounding up, then dropping a last window that would start
inside the right padding) and its average divisor (the window clipped to the padded input, so
padding counts but the overhang past it does not). LRN, BatchNorm, Scale, the softmax loss and
accuracy follow Caffe's definitions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nncompress.errors import ConfigError

__all__ = [
    "CaffeBatchNorm",
    "CaffeScale",
    "accuracy",
    "caffe_pool2d",
    "lrn",
    "pool_output_size",
    "softmax_loss",
]


def pool_output_size(size: int, kernel: int, stride: int, pad: int,
                     any_pad: bool | None = None) -> int:
    """Caffe's pooled size along one axis.

    ``ceil((size + 2*pad - kernel) / stride) + 1``, minus one if the last window would start at or
    beyond ``size + pad``. Caffe makes that correction only when the layer has some padding
    (``any_pad``, on any axis; by default ``pad != 0``).

    Example:
        >>> [pool_output_size(24, 2, 2, 0), pool_output_size(13, 3, 2, 0)]
        [12, 6]
        >>> pool_output_size(5, 2, 2, 1)  # the 4th window would start in the padding
        3
    """
    out = math.ceil((size + 2 * pad - kernel) / stride) + 1
    if (pad != 0 if any_pad is None else any_pad) and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def caffe_pool2d(x: torch.Tensor, kernel: Sequence[int], stride: Sequence[int],
                 pad: Sequence[int], mode: str) -> torch.Tensor:
    """Max or average pooling of ``(N, C, H, W)`` with Caffe's sizes and divisors.

    Args:
        x: the input.
        kernel: ``(kh, kw)``.
        stride: ``(sh, sw)``.
        pad: ``(ph, pw)``; Caffe requires ``pad < kernel``.
        mode: ``"MAX"`` or ``"AVE"``.

    Returns:
        The pooled tensor, ``(N, C, out_h, out_w)`` with :func:`pool_output_size` per axis.

    Example:
        >>> caffe_pool2d(torch.arange(9.).view(1, 1, 3, 3), (2, 2), (2, 2), (0, 0), "MAX").shape
        torch.Size([1, 1, 2, 2])
    """
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, pad
    h, w = x.shape[-2:]
    padded_any = bool(ph or pw)
    oh = pool_output_size(h, kh, sh, ph, padded_any)
    ow = pool_output_size(w, kw, sw, pw, padded_any)
    # pad so that every window lies inside: left pad, right pad up to the last window's end
    extra_h = max((oh - 1) * sh + kh - h - ph, 0)
    extra_w = max((ow - 1) * sw + kw - w - pw, 0)
    if mode == "MAX":
        padded = F.pad(x, (pw, extra_w, ph, extra_h), value=-math.inf)
        return F.max_pool2d(padded, (kh, kw), (sh, sw))[..., :oh, :ow]
    padded = F.pad(x, (pw, extra_w, ph, extra_h), value=0.0)
    sums = F.avg_pool2d(padded, (kh, kw), (sh, sw), divisor_override=1)[..., :oh, :ow]
    # the divisor counts positions inside [-pad, size + pad), not the overhang past it
    ones = torch.ones((1, 1, h + 2 * ph, w + 2 * pw), dtype=x.dtype, device=x.device)
    ones = F.pad(ones, (0, max(extra_w - pw, 0), 0, max(extra_h - ph, 0)))
    counts = F.avg_pool2d(ones, (kh, kw), (sh, sw), divisor_override=1)[..., :oh, :ow]
    return sums / counts


def lrn(x: torch.Tensor, size: int, alpha: float, beta: float, k: float,
        region: str) -> torch.Tensor:
    """Caffe's local response normalization, ``ACROSS_CHANNELS`` or ``WITHIN_CHANNEL``.

    Across channels: ``x / (k + alpha/size * sum of x^2 over size channels)^beta``. Within a
    channel: ``x / (1 + alpha * mean of x^2 over a size x size window)^beta`` (Caffe uses 1 there,
    not ``k``; the window mean uses Caffe's average pooling with padding ``(size - 1) / 2``).

    Example:
        >>> lrn(torch.ones(1, 3, 2, 2), 3, 1.0, 0.75, 1.0, "ACROSS_CHANNELS").shape
        torch.Size([1, 3, 2, 2])
    """
    if region == "ACROSS_CHANNELS":
        return F.local_response_norm(x, size, alpha=alpha, beta=beta, k=k)
    half = (size - 1) // 2
    mean_sq = caffe_pool2d(x * x, (size, size), (1, 1), (half, half), "AVE")
    return x * (1 + alpha * mean_sq).pow(-beta)


def softmax_loss(logits: torch.Tensor, labels: torch.Tensor, axis: int, ignore_label: int | None,
                 normalization: str) -> torch.Tensor:
    """Caffe's SoftmaxWithLoss: mean negative log-likelihood over the ``axis`` classes.

    ``normalization`` is ``VALID`` (divide by the non-ignored count), ``FULL`` (all positions),
    ``BATCH_SIZE`` (the outer count) or ``NONE``.

    Example:
        >>> float(softmax_loss(torch.zeros(2, 4), torch.tensor([0, 3]), 1, None, "VALID"))
        1.3862943649291992
    """
    axis = axis % logits.dim()
    classes = logits.shape[axis]
    flat = logits.log_softmax(axis).movedim(axis, -1).reshape(-1, classes)
    target = labels.reshape(-1).long()
    if target.numel() != flat.shape[0]:
        raise ConfigError(f"SoftmaxWithLoss: {target.numel()} labels for {flat.shape[0]} "
                          "predictions; the label blob must hold one class per prediction")
    valid = torch.ones_like(target, dtype=torch.bool) if ignore_label is None \
        else target != ignore_label
    outside = valid & ((target < 0) | (target >= classes))
    if bool(outside.any()):
        raise ConfigError(f"SoftmaxWithLoss: label {int(target[outside][0])} is outside the "
                          f"{classes} classes of its scores; give the layer before it num_output "
                          "of at least the data's number of classes")
    picked = flat.gather(1, torch.where(valid, target, 0).unsqueeze(1)).squeeze(1)
    total = -(picked * valid).sum()
    outer = math.prod(logits.shape[:axis])
    divisor = {"VALID": int(valid.sum()), "FULL": target.numel(), "BATCH_SIZE": outer,
               "NONE": 1}[normalization]
    return total / max(divisor, 1)


def accuracy(scores: torch.Tensor, labels: torch.Tensor, axis: int, top_k: int,
             ignore_label: int | None) -> torch.Tensor:
    """Caffe's Accuracy: the share of positions whose label is among the ``top_k`` scores.

    As in Caffe, a label counts as found when fewer than ``top_k`` classes score strictly higher,
    so ties go in its favour.

    Example:
        >>> float(accuracy(torch.tensor([[1., 2.], [3., 0.]]), torch.tensor([1, 1]), 1, 1, None))
        0.5
    """
    axis = axis % scores.dim()
    classes = scores.shape[axis]
    flat = scores.detach().movedim(axis, -1).reshape(-1, classes)
    target = labels.reshape(-1).long()
    valid = torch.ones_like(target, dtype=torch.bool) if ignore_label is None \
        else target != ignore_label
    true_score = flat.gather(1, torch.where(valid, target, 0).unsqueeze(1))
    better = (flat > true_score).sum(1)
    correct = ((better < top_k) & valid).sum()
    return correct.to(torch.float32) / max(int(valid.sum()), 1)


class CaffeBatchNorm(nn.Module):
    """Caffe's BatchNorm: normalization without affine terms, statistics as buffers.

    Caffe keeps running sums scaled by a factor (its third blob); the means stored here are
    already divided by it. ``use_global_stats`` None means: batch statistics while training,
    running ones in eval mode (Caffe's phase default).
    """

    running_mean: torch.Tensor
    running_var: torch.Tensor

    def __init__(self, channels: int, eps: float, moving_average_fraction: float,
                 use_global_stats: bool | None) -> None:
        super().__init__()
        self.eps = eps
        self.momentum = 1.0 - moving_average_fraction
        self.use_global_stats = use_global_stats
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        use_global = (not self.training) if self.use_global_stats is None \
            else self.use_global_stats
        return F.batch_norm(x, self.running_mean, self.running_var, None, None,
                            training=not use_global, momentum=self.momentum, eps=self.eps)


class CaffeScale(nn.Module):
    """Caffe's Scale with a learned factor (one bottom) and an optional learned bias.

    ``weight`` has the shape of the covered axes ``[axis, axis + num_axes)`` of the input.
    """

    def __init__(self, shape: Sequence[int], axis: int, bias: bool, learned_scale: bool) -> None:
        super().__init__()
        self.axis = axis
        self.weight = nn.Parameter(torch.ones(tuple(shape))) if learned_scale else None
        self.bias = nn.Parameter(torch.zeros(tuple(shape))) if bias else None

    def _broadcast(self, t: torch.Tensor, ndim: int) -> torch.Tensor:
        return t.reshape((1,) * self.axis + tuple(t.shape) + (1,) * (ndim - self.axis - t.dim()))

    def forward(self, x: torch.Tensor, factor: torch.Tensor | None = None) -> torch.Tensor:
        scale = self.weight if factor is None else factor
        assert scale is not None
        out = x * self._broadcast(scale, x.dim())
        if self.bias is not None:
            out = out + self._broadcast(self.bias, x.dim())
        return out

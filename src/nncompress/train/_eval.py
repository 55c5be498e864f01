"""Evaluation of a model during training: mean cross-entropy and accuracy, kept fraction."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["evaluate", "kept_fraction"]


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor | Iterable[tuple[torch.Tensor, torch.Tensor]],
             y: torch.Tensor | None = None, batch_size: int = 1000) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``(x, y)``, in eval mode.

    ``x`` may instead be an iterable of ``(inputs, labels)`` batches, ``y`` left out (e.g.
    :meth:`nncompress.data.StreamSplits.eval_batches`).

    Example:
        >>> net = nn.Linear(2, 2)
        >>> loss, acc = evaluate(net, torch.zeros(4, 2), torch.zeros(4, dtype=torch.long))
        >>> 0.0 <= acc <= 1.0
        True
    """
    if isinstance(x, torch.Tensor):
        if y is None:
            raise TypeError("evaluate(model, x, y): an input tensor needs its labels y")
        x = zip(torch.split(x, batch_size), torch.split(y, batch_size))
    was_training = model.training
    model.eval()
    loss_sum, correct, count = 0.0, 0, 0
    try:
        for inputs, target in x:
            out = model(inputs)
            loss_sum += float(F.cross_entropy(out, target, reduction="sum"))
            correct += int((out.argmax(dim=1) == target).sum())
            count += len(target)
    finally:
        model.train(was_training)
    if count == 0:
        return math.nan, math.nan
    return loss_sum / count, correct / count


def kept_fraction(model: nn.Module) -> float:
    """Share of the compressible layers' entries that are non-zero (masks applied).

    Example:
        >>> kept_fraction(nn.Linear(2, 2))
        1.0
    """
    from nncompress.report.summary import summarize

    summary = summarize(model)
    return summary.total_kept / summary.total_entries if summary.total_entries else 1.0

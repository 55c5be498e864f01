"""A ``resnet20`` that notes the time at each training forward, for throughput benchmarks.

A recipe names it as ``_timed_model:timed_resnet20`` (the ``benchmarks`` folder is on the
path when a benchmark script runs), so the times come from inside ``nncompress run`` without
timing whole runs: the rate over iterations ``k+1 .. k+n`` is read between the starts of
forwards ``k+1`` and ``k+n+1``, start-up and the final evaluation (eval mode) left out.
"""

from __future__ import annotations

import time

from torch import nn

from nncompress.models import build_model

__all__ = ["MARKS", "timed_resnet20", "window_rate"]

MARKS: list[tuple[float, float]] = []  # (CPU, wall) seconds at each training-mode forward


def _mark(module: nn.Module, inputs: object) -> None:
    if module.training:
        MARKS.append((time.process_time(), time.perf_counter()))


def timed_resnet20(num_classes: int = 10) -> nn.Module:
    """``resnet20`` (32x32 input) whose training forwards append to :data:`MARKS`.

    Args:
        num_classes: outputs of the classifier.

    Returns:
        The model, with a forward pre-hook.
    """
    model = build_model("resnet20", num_classes=num_classes)
    model.register_forward_pre_hook(_mark)
    return model


def window_rate(window: int, batch: int) -> tuple[float, float]:
    """CPU and wall images/s of iterations ``window+1 .. 2*window``; clears :data:`MARKS`.

    Args:
        window: iterations timed; the run must have made ``2 * window + 1`` training forwards.
        batch: images per iteration.

    Returns:
        ``(images per CPU second, images per wall second)``.

    Raises:
        RuntimeError: fewer training forwards were noted than the window needs.
    """
    if len(MARKS) < 2 * window + 1:
        raise RuntimeError(f"{len(MARKS)} training forwards noted, {2 * window + 1} needed")
    (cpu0, wall0), (cpu1, wall1) = MARKS[window], MARKS[2 * window]
    MARKS.clear()
    images = window * batch
    return images / (cpu1 - cpu0), images / (wall1 - wall0)

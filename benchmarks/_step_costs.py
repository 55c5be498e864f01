"""Training-step cost of ``resnet20`` plain, under DNS on every layer and under INQ.

The three models train on the same batch with the same SGD settings; their steps are
interleaved a few at a time, so that a shared machine's drift hits them alike, and the cost of
each compressed variant is the median over rounds of its time over plain's in the same round.
This isolates the per-step cost of the compression from the pipeline and the data.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

import nncompress as nnc
from nncompress.models import build_model

__all__ = ["KINDS", "print_step_costs", "step_costs"]

KINDS = ("plain", "dns", "inq")


def _model(kind: str, classes: int) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model("resnet20", num_classes=classes)
    if kind == "dns":
        nnc.prepare(model, nnc.DNSConfig())  # every layer, the recipe's defaults
    elif kind == "inq":
        nnc.prepare(model, nnc.INQConfig())
        nnc.quantize_step(model, 0.5)
    return model.train()


def _step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        float(loss.detach())
        loss.backward()
        optimizer.step()

    return step


def step_costs(x: torch.Tensor, y: torch.Tensor, classes: int, rounds: int,
               per_round: int) -> dict[str, list[float]]:
    """CPU seconds per step of each kind, one entry per round.

    Args:
        x: the batch (N x 3 x 32 x 32).
        y: its labels.
        classes: outputs of the models.
        rounds: rounds; each runs ``per_round`` steps of every kind in turn.
        per_round: steps of one kind in a row.

    Returns:
        ``{kind: [seconds per step in round r, ...]}`` for ``plain``, ``dns`` and ``inq``.
    """
    steps = {kind: _step(_model(kind, classes), x, y) for kind in KINDS}
    for step in steps.values():  # start-up: DNS statistics, allocator, kernels
        for _ in range(3):
            step()
    times: dict[str, list[float]] = {kind: [] for kind in KINDS}
    for _ in range(rounds):
        for kind, step in steps.items():
            start = time.process_time()
            for _ in range(per_round):
                step()
            times[kind].append((time.process_time() - start) / per_round)
    return times


def print_step_costs(times: dict[str, list[float]], per_round: int) -> None:
    """Print median milliseconds per step and the paired costs against plain."""
    rounds = len(times["plain"])
    print(f"\nresnet20 training step, same batch, {rounds} interleaved rounds x {per_round} "
          "steps, CPU time:")
    for kind in KINDS:
        paired = [t / p for t, p in zip(times[kind], times["plain"])]
        print(f"  {kind:5s} {1000 * statistics.median(times[kind]):8.2f} ms/step, cost vs plain "
              f"in the same round: min {min(paired):.3f}, median {statistics.median(paired):.3f}"
              " (goal <= 1.05)")

"""Training losses kept on their device until the loop reads them, then checked to be finite.

Reading a CUDA loss (``float(loss)``) waits for the GPU, so the training loop does not read
each iteration's loss on CUDA: the losses wait here, as device scalars, and are read in one
transfer where the loop needs their sum anyway (the progress bar every 20 iterations, each
evaluation, each checkpoint). A NaN or infinite loss is reported there with the iteration
that produced it; the iterations after it, up to the read, are lost work (their weights are
not saved, since a checkpoint reads the losses first). On the CPU a read costs nothing and
happens every iteration, before the optimizer step.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from nncompress.errors import NonFiniteError

__all__ = ["PendingLosses"]


class PendingLosses:
    """Losses of consecutive iterations, not yet read back from their device.

    Example:
        >>> pending = PendingLosses()
        >>> pending.add(torch.tensor(0.5), 0); pending.add(torch.tensor(0.25), 1)
        >>> pending.read(1.0, "train", lambda i: 0.1)
        1.75
    """

    def __init__(self) -> None:
        self._losses: list[torch.Tensor] = []
        self._first = 0  # the iteration of the first pending loss

    def add(self, loss: torch.Tensor, iteration: int) -> None:
        """Keep the (detached, scalar) ``loss`` of ``iteration``."""
        if not self._losses:
            self._first = iteration
        self._losses.append(loss)

    def read(self, total: float, description: str, lr_at: Callable[[int], float]) -> float:
        """Add the pending losses to ``total`` in iteration order (one device read).

        Returns:
            The new total; the same float as adding ``float(loss)`` at every iteration.

        Raises:
            NonFiniteError: a loss is NaN or infinite, naming its iteration and lr.
        """
        if not self._losses:
            return total
        values = torch.stack(self._losses).double().tolist()
        first, self._losses = self._first, []
        for offset, value in enumerate(values):
            if not math.isfinite(value):
                raise NonFiniteError(
                    f"{description}: the training loss became {value} at iteration "
                    f"{first + offset} (lr {lr_at(first + offset):g}); lower the learning "
                    "rate (lr.base_lr) or check the data scale")
            total += value
        return total

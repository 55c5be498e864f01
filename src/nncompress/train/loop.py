"""The training loop: iteration-based (Caffe style), tensors in memory, resumable bit for bit.

Batches come from a per-epoch permutation of the training set whose generator is seeded from
``(seed, epoch)`` alone, so the data order at any iteration is a pure function of the iteration:
resuming needs no saved data-loader state. Like Caffe's data layer, batches run through the
epoch boundary (a batch may hold the end of one permutation and the start of the next).
Streamed data (:class:`~nncompress.data.StreamSplits`) follows the same order: its DataLoader
yields the examples of ``order.indices(i)`` for iteration ``i``, from any starting iteration.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from nncompress.errors import ConfigError
from nncompress.train._dist_eval import evaluate_batches_sharded, evaluate_sharded
from nncompress.train._eval import evaluate, kept_fraction  # re-exported: imported from here
from nncompress.train._losses import PendingLosses
from nncompress.train._records import postfix
from nncompress.train.config import BiasConfig, LRConfig, OptimizerConfig
from nncompress.train.device import Precision
from nncompress.train.lars import LarsSGD
from nncompress.train.lr import LRSchedule, apply_lr

if TYPE_CHECKING:
    from nncompress.data.stream import StreamSplits

__all__ = [
    "BatchOrder",
    "Criterion",
    "TrainState",
    "TrainingLoop",
    "build_optimizer",
    "build_schedule",
    "evaluate",
    "kept_fraction",
]

_GOLDEN = 0x9E3779B97F4A7C15  # mixes the epoch into the seed
_MASK64 = (1 << 64) - 1


class BatchOrder:
    """Indices of the examples of each iteration's batch.

    Args:
        num_examples: size of the training set.
        batch_size: examples per batch.
        seed: seed of the permutations; each epoch mixes in its number.

    Example:
        >>> order = BatchOrder(10, 4, seed=0)
        >>> sorted(torch.cat([order.indices(i) for i in range(5)]).tolist()) == sorted(
        ...     list(range(10)) * 2)
        True
    """

    def __init__(self, num_examples: int, batch_size: int, seed: int) -> None:
        if num_examples < 1:
            raise ConfigError("the training set is empty; check the data spec and validation size")
        self.num_examples, self.batch_size, self.seed = num_examples, batch_size, seed
        self._cached: tuple[int, torch.Tensor] | None = None

    def permutation(self, epoch: int) -> torch.Tensor:
        """The order of epoch ``epoch``."""
        if self._cached is None or self._cached[0] != epoch:
            generator = torch.Generator().manual_seed((self.seed + epoch * _GOLDEN) & _MASK64)
            self._cached = (epoch, torch.randperm(self.num_examples, generator=generator))
        return self._cached[1]

    def indices(self, iteration: int) -> torch.Tensor:
        """Indices of the batch of ``iteration``."""
        start = iteration * self.batch_size
        parts, needed = [], self.batch_size
        while needed:
            epoch, offset = divmod(start, self.num_examples)
            take = min(needed, self.num_examples - offset)
            parts.append(self.permutation(epoch)[offset:offset + take])
            start, needed = start + take, needed - take
        return parts[0] if len(parts) == 1 else torch.cat(parts)


def build_optimizer(model: nn.Module, spec: OptimizerConfig,
                    bias: BiasConfig) -> torch.optim.Optimizer:
    """Make the stage's optimizer; biases get their own group with ``lr_mult``/``decay_mult``.

    Each group carries ``lr_mult``, which :func:`~nncompress.train.lr.apply_lr` multiplies in.

    Example:
        >>> opt = build_optimizer(nn.Linear(2, 2), OptimizerConfig(name="sgd", momentum=0.9,
        ...                       weight_decay=1e-3, nesterov=False), BiasConfig(lr_mult=2.0))
        >>> [(g["lr_mult"], g["weight_decay"]) for g in opt.param_groups]
        [(1.0, 0.001), (2.0, 0.001)]
    """
    options = spec.options()
    decay = float(options.pop("weight_decay"))
    weights = [p for n, p in model.named_parameters() if p.requires_grad and
               not n.endswith("bias")]
    biases = [p for n, p in model.named_parameters() if p.requires_grad and n.endswith("bias")]
    groups: list[dict[str, Any]] = [
        {"params": weights, "lr_mult": 1.0, "decay_mult": 1.0, "weight_decay": decay},
        {"params": biases, "lr_mult": bias.lr_mult, "decay_mult": bias.decay_mult,
         "weight_decay": decay * bias.decay_mult},
    ]
    groups = [g for g in groups if g["params"]]
    lr = 0.0  # set at every iteration from the schedule
    if spec.name == "sgd":
        return torch.optim.SGD(groups, lr=lr, **options)
    if spec.name == "adam":
        return torch.optim.Adam(groups, lr=lr, **options)
    if spec.name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, **options)
    return LarsSGD(groups, lr=lr, **options)


def build_schedule(spec: LRConfig, max_iter: int) -> LRSchedule:
    """The stage's LR schedule; ``max_iter`` (for ``poly``) is the stage's iteration count.

    Example:
        >>> build_schedule(LRConfig(policy="fixed", base_lr=0.1), 10).lr_at(5)
        0.1
    """
    return LRSchedule(policy=spec.policy, base_lr=spec.base_lr, gamma=spec.gamma,
                      power=spec.power, stepsize=spec.stepsize, stepvalues=tuple(spec.stepvalues),
                      max_iter=max(max_iter, 1), rampup_interval=spec.rampup_interval,
                      rampup_lr=spec.rampup_lr, min_lr=spec.min_lr)


@dataclass
class TrainState:
    """Where a stage's training stands; saved with every checkpoint."""

    iteration: int = 0
    loss_sum: float = 0.0  # training loss summed since the last evaluation
    loss_count: int = 0


EvalHook = Callable[[dict[str, Any]], None]
StateHook = Callable[[TrainState], None]
# (inputs, the model's logits, labels) -> the training loss, e.g. a DistillationCriterion
Criterion = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class TrainingLoop:
    """Train ``model`` for ``iterations`` from ``state.iteration`` with a fixed optimizer.

    Attributes:
        model: the model, in training mode while it runs.
        train_x: training inputs.
        train_y: training labels.
        eval_x: inputs evaluated every ``eval_interval`` iterations and at the end.
        eval_y: their labels.
        optimizer: built by :func:`build_optimizer`; its lr is set every iteration.
        schedule: lr at each iteration of this stage.
        order: the batch order.
        iterations: the stage's length.
        eval_interval: evaluate every so many iterations (0: only at the end).
        checkpoint_interval: call ``on_checkpoint`` every so many iterations (0: never).
        description: the progress bar's label.
        progress: ``"bar"`` (tqdm), ``"log"`` (one line per evaluation) or ``"none"``.
        on_eval: receives each evaluation's record.
        on_checkpoint: receives the state every ``checkpoint_interval`` iterations.
        after_iteration: called after each iteration (tests use it to simulate a kill).
        stream: streamed data; when given, batches come from its DataLoader in ``order``,
            evaluations read its ``eval_split``, and the four tensors are not used.
        eval_split: the split of ``stream`` evaluated (``"test"`` or ``"val"``).
        eval_batch_size: examples per evaluation batch.
        amp: autocast (and the fp16 gradient scaler) of each training forward and step.
        criterion: the training loss of a batch (None: cross-entropy); it runs under ``amp``.
    """

    model: nn.Module
    train_x: torch.Tensor
    train_y: torch.Tensor
    eval_x: torch.Tensor
    eval_y: torch.Tensor
    optimizer: torch.optim.Optimizer
    schedule: LRSchedule
    order: BatchOrder
    iterations: int
    eval_interval: int = 0
    checkpoint_interval: int = 0
    description: str = "train"
    progress: str = "bar"
    on_eval: EvalHook | None = None
    on_checkpoint: StateHook | None = None
    after_iteration: Callable[[], None] | None = None
    stream: StreamSplits | None = None
    eval_split: str = "test"
    eval_batch_size: int = 1000
    amp: Precision = field(default_factory=Precision)
    criterion: Criterion | None = None
    _last_eval: str = ""
    _feed: Iterator[tuple[torch.Tensor, torch.Tensor]] | None = None
    _losses: PendingLosses = field(default_factory=PendingLosses)  # see train/_losses.py

    def run(self, state: TrainState) -> None:
        """Train from ``state.iteration`` to ``iterations``, updating ``state`` in place.

        Raises:
            NonFiniteError: the training loss became NaN or infinite (on CUDA found at the
                next progress update, evaluation or checkpoint: no sync per iteration).

        Example:
            >>> # see nncompress.pipeline.run_recipe
        """
        bar = self._bar(state.iteration)
        self.model.train()
        lr = self.schedule.lr_at(max(state.iteration - 1, 0))
        if self.stream is not None:
            self._feed = self.stream.train_batches(self.order.batch_size, state.iteration,
                                                   self.iterations, self.order, self._device())
        try:
            if state.iteration >= self.iterations:
                self._evaluate(state, lr, bar)
            while state.iteration < self.iterations:
                lr = self._step(state)
                if bar is not None:
                    bar.update(1)
                    if state.iteration % 20 == 0:  # running loss, then the last evaluation
                        self._read_losses(state)
                        bar.set_postfix_str(f"loss {state.loss_sum / state.loss_count:.4f} "
                                            f"{self._last_eval}".rstrip())
                last = state.iteration == self.iterations
                if last or (self.eval_interval and state.iteration % self.eval_interval == 0):
                    self._evaluate(state, lr, bar)
                if (not last and self.checkpoint_interval
                        and state.iteration % self.checkpoint_interval == 0
                        and self.on_checkpoint is not None):
                    self._read_losses(state)
                    self.on_checkpoint(state)
                if self.after_iteration is not None:
                    self.after_iteration()
        finally:
            self._feed = None
            if bar is not None:
                bar.close()

    def _step(self, state: TrainState) -> float:
        lr = self.schedule.lr_at(state.iteration)
        apply_lr(self.optimizer, lr)
        if self._feed is None:
            batch = self.order.indices(state.iteration)
            x, y = self.train_x[batch], self.train_y[batch]
        else:
            x, y = next(self._feed)
        self.optimizer.zero_grad(set_to_none=True)
        with self.amp.autocast():
            out = self.model(x)
            loss = F.cross_entropy(out, y) if self.criterion is None else self.criterion(x, out, y)
        self._losses.add(loss.detach(), state.iteration)
        if not loss.is_cuda:  # read (and checked) now only where that costs no device sync
            self._read_losses(state)
        self.amp.backward_step(loss, self.optimizer)
        state.iteration += 1
        state.loss_count += 1
        return lr

    def _read_losses(self, state: TrainState) -> None:
        state.loss_sum = self._losses.read(state.loss_sum, self.description,
                                           self.schedule.lr_at)

    def _evaluate(self, state: TrainState, lr: float, bar: Any) -> None:
        self._read_losses(state)  # a non-finite loss stops the run here on CUDA
        if self.stream is None:
            eval_loss, accuracy = evaluate_sharded(self.model, self.eval_x, self.eval_y)
        else:
            batches = self.stream.eval_batches(self.eval_batch_size, self.eval_split,
                                               self._device())
            eval_loss, accuracy = evaluate_batches_sharded(self.model, batches)
        record = {
            "iteration": state.iteration,
            "loss": state.loss_sum / state.loss_count if state.loss_count else None,
            "lr": lr,
            "eval_loss": None if math.isnan(eval_loss) else eval_loss,
            "accuracy": None if math.isnan(accuracy) else accuracy,
            "kept_fraction": kept_fraction(self.model),
        }
        state.loss_sum, state.loss_count = 0.0, 0
        shown = postfix(record)
        self._last_eval = "| " + shown.split(" ", 2)[-1] if record["loss"] is not None else shown
        if bar is not None:
            bar.set_postfix_str(shown)
        elif self.progress == "log":
            print(f"{self.description}: iteration {state.iteration}/{self.iterations} "
                  f"{postfix(record)} lr {lr:.3g}", file=sys.stderr, flush=True)
        if self.on_eval is not None:
            self.on_eval(record)

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _bar(self, initial: int) -> Any:
        if self.progress != "bar":
            return None
        from tqdm import tqdm

        return tqdm(total=self.iterations, initial=initial, desc=self.description,
                    unit="it", dynamic_ncols=True, file=sys.stderr, leave=True)

"""What a run reads before it trains: the recipe's model (with its weights) and its data.

:func:`load_inputs` opens the recipe's ``data:`` section with :func:`nncompress.data.open_data`
(tensors in memory, or a :class:`~nncompress.data.StreamSplits` read batch by batch) and builds
the model. :class:`RunData` hands either kind to the training loop and to the final evaluation,
so the runner (:mod:`nncompress.pipeline`) does not care which it has.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nncompress.data import Splits, StreamSplits, open_data
from nncompress.models import build_model, load_state_dict_file
from nncompress.recipe import Recipe
from nncompress.recipe_specs import DataSpec, model_num_classes
from nncompress.train.distributed import evaluate_batches_sharded, evaluate_sharded

__all__ = ["RunData", "load_inputs", "open_recipe_data"]


def open_recipe_data(data: DataSpec, *, seed: int,
                     num_classes: int | None = None) -> Splits | StreamSplits:
    """Open a recipe's ``data:`` section (see :func:`nncompress.data.open_data`).

    Example:
        >>> open_recipe_data(DataSpec(spec="synthetic:n=32,test=8"), seed=0).train_x.shape[0]
        32
    """
    return open_data(data.spec, scale=data.scale, validation=data.validation, seed=seed,
                     workers=data.workers, transform=data.transform,
                     skip_bad_images=data.skip_bad_images, num_classes=num_classes,
                     grey=data.grey)


def load_inputs(recipe: Recipe) -> tuple[nn.Module, Splits | StreamSplits]:
    """Build the recipe's model (seeded, with its initial weights) and open its data.

    A streamed LMDB or user data set takes its class count from the model, which spares
    reading every label first.

    Raises:
        NNCompressError: the data or the weights cannot be read, or do not fit the model.

    Example:
        >>> # model, splits = load_inputs(load_recipe("demo_lenet300_100"))
    """
    num_classes = model_num_classes(recipe.model.ref, recipe.model.kwargs)
    splits = open_recipe_data(recipe.data, seed=recipe.seed, num_classes=num_classes)
    torch.manual_seed(recipe.seed)
    model = build_model(recipe.model.ref, **recipe.model.kwargs)
    if recipe.model.weights:
        load_state_dict_file(model, recipe.model.weights)
    return model, splits


def _device(model: nn.Module) -> torch.device:
    return next(iter(model.parameters()), torch.empty(0)).device


@dataclass
class RunData:
    """A run's data, in memory or streamed, as the training loop and the final test read it.

    Attributes:
        splits: what :func:`load_inputs` opened.
    """

    splits: Splits | StreamSplits

    @property
    def streamed(self) -> bool:
        """True for data read batch by batch from disk."""
        return isinstance(self.splits, StreamSplits)

    @property
    def train_size(self) -> int:
        """Training examples (without the held-out validation ones)."""
        if isinstance(self.splits, StreamSplits):
            return len(self.splits.train)
        return len(self.splits.train_y)

    @property
    def eval_split(self) -> str:
        """What training evaluates: the held-out ``"val"`` examples if any, else ``"test"``."""
        if isinstance(self.splits, StreamSplits):
            return "val" if self.splits.val is not None else "test"
        return "val" if len(self.splits.val_y) > 0 else "test"

    def loop_inputs(self, eval_batch_size: int) -> dict[str, Any]:
        """The data arguments of :class:`~nncompress.train.loop.TrainingLoop`.

        Args:
            eval_batch_size: examples per evaluation batch of streamed data.
        """
        splits = self.splits
        if isinstance(splits, StreamSplits):
            empty = torch.empty(0)
            return {"train_x": empty, "train_y": empty, "eval_x": empty, "eval_y": empty,
                    "stream": splits, "eval_split": self.eval_split,
                    "eval_batch_size": eval_batch_size}
        held = self.eval_split == "val"
        return {"train_x": splits.train_x, "train_y": splits.train_y,
                "eval_x": splits.val_x if held else splits.test_x,
                "eval_y": splits.val_y if held else splits.test_y}

    def evaluate_test(self, model: nn.Module, batch_size: int) -> tuple[float, float]:
        """Mean loss and accuracy on the test set (shared among the ranks under torchrun).

        Args:
            model: the model.
            batch_size: examples per batch of streamed data.
        """
        splits = self.splits
        if isinstance(splits, StreamSplits):
            batches = splits.eval_batches(batch_size, "test", _device(model))
            return evaluate_batches_sharded(model, batches)
        return evaluate_sharded(model, splits.test_x, splits.test_y)

"""``nncompress eval PATH``: loss and accuracy of a run's model on a data set."""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from nncompress.cli._options import (
    add_allow_import_argument,
    add_device_argument,
    add_json_argument,
    add_model_path_argument,
)
from nncompress.errors import ConfigError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from nncompress.recipe import Recipe
    from nncompress.recipe_specs import DataSpec

__all__ = ["add_parser", "run"]


def add_parser(parser: argparse.ArgumentParser) -> None:
    """Register the arguments of ``eval``."""
    add_model_path_argument(parser)
    parser.add_argument("--data", default=None,
                        help="data spec (default: the run's recipe data), e.g. mnist or "
                             "folder:/data/imagenet (a streamed spec keeps the recipe's "
                             "transform)")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="DataLoader workers of streamed data (default: the recipe's)")
    parser.add_argument("--batch-size", type=int, default=100, metavar="N",
                        help="examples per batch of streamed data (default: 100)")
    parser.add_argument("--split", choices=("test", "val", "train"), default="test",
                        help="which split to evaluate (default: test)")
    add_allow_import_argument(parser)
    add_device_argument(parser, "cpu")
    add_json_argument(parser, "the result")


def run(args: argparse.Namespace) -> int:
    """Evaluate and print ``accuracy``, ``error`` and ``loss``; 0 on success."""
    import torch

    from nncompress.cli._misuse import checked
    from nncompress.data import StreamSplits
    from nncompress.run_folder import load_run_model
    from nncompress.run_inputs import open_recipe_data
    from nncompress.train.device import resolve_device
    from nncompress.train.loop import evaluate

    device = resolve_device(args.device or "cpu")  # refused before anything loads
    model, recipe = load_run_model(args.path, allow_import=args.allow_import)
    if args.data is None and recipe is None:
        raise ConfigError(f"{args.path}: no run recipe beside it to take the data from; "
                          "give --data, e.g. --data mnist")
    data, seed = _data_spec(args.data, recipe, args.workers)
    spec = data.spec
    if args.split == "val" and data.validation == 0:
        raise ConfigError("--split val: the run held out no validation set (data.validation 0)")
    classes = _num_classes(model)
    transform = getattr(model, "input_transform", None)
    if transform is not None:  # a converted Caffe net: pixels through its own transform
        from torch import nn

        data, model = _unscaled(data), nn.Sequential(transform, model)
    splits = open_recipe_data(data, seed=seed, num_classes=classes)
    model.to(device)
    if isinstance(splits, StreamSplits):
        counts: list[int] = []
        batches = splits.eval_batches(args.batch_size, args.split, device)
        loss, accuracy = evaluate(model, checked(model, _counted(batches, counts), spec,
                                                 args.split))
        y = torch.empty(sum(counts))  # the examples read (unreadable ones skipped)
    else:
        x, y = {"test": (splits.test_x, splits.test_y), "val": (splits.val_x, splits.val_y),
                "train": (splits.train_x, splits.train_y)}[args.split]
        loss, accuracy = evaluate(model, checked(model, ((a.to(device), b.to(device)) for a, b in
                                  zip(torch.split(x, 1000), torch.split(y, 1000))), spec,
                                  args.split))
    result = {"data": spec, "split": args.split, "examples": len(y), "loss": loss,
              "accuracy": accuracy, "error": 1.0 - accuracy}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{spec} {args.split} ({len(y):,} examples): accuracy {100 * accuracy:.2f}%, "
              f"error {100 * (1 - accuracy):.2f}%, loss {loss:.4f}")
    return 0


def _data_spec(spec: str | None, recipe: Recipe | None, workers: int | None
               ) -> tuple[DataSpec, int]:
    """The data to evaluate on: the run's ``data:`` section, ``--data`` replacing its spec.

    A streamed ``--data`` keeps the recipe's streamed options (transform...); an in-memory one
    keeps only its scale and validation size.
    """
    from nncompress.data import is_stream_spec
    from nncompress.recipe_specs import DataSpec

    if recipe is None:
        data = DataSpec(spec=str(spec))
    elif spec is None:
        data = recipe.data
    elif is_stream_spec(spec) and is_stream_spec(recipe.data.spec):
        data = dataclasses.replace(recipe.data, spec=spec)
    else:
        data = DataSpec(spec=spec, scale=recipe.data.scale, validation=recipe.data.validation)
    if workers is not None:
        if workers < 0:
            raise ConfigError(f"--workers {workers}: use 0 or more")
        data = dataclasses.replace(data, workers=workers)
    return data, recipe.seed if recipe is not None else 0


def _unscaled(data: DataSpec) -> DataSpec:
    """Raw pixel values for a converted Caffe net, whose own input transform scales them."""
    from nncompress.data import TransformConfig, is_stream_spec

    if not is_stream_spec(data.spec):
        return dataclasses.replace(data, scale=1.0)
    if data.transform is None:
        return dataclasses.replace(data, transform=TransformConfig(kind="caffe"))
    return data


def _counted(batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
             counts: list[int]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for x, y in batches:
        counts.append(len(y))
        yield x, y


def _num_classes(model: nn.Module) -> int | None:
    """The class count the model was built with (spares an LMDB's label scan)."""
    from nncompress.models import architecture
    from nncompress.recipe_specs import model_num_classes

    arch = architecture(model)
    return None if arch is None else model_num_classes(arch["ref"], arch["kwargs"])

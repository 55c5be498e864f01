"""``nncompress eval PATH``: loss and accuracy of a run's model on a data set."""

from __future__ import annotations

import argparse
import json

from nncompress.cli._options import (
    add_allow_import_argument,
    add_json_argument,
    add_model_path_argument,
)
from nncompress.errors import ConfigError

__all__ = ["add_parser", "run"]


def add_parser(parser: argparse.ArgumentParser) -> None:
    """Register the arguments of ``eval``."""
    add_model_path_argument(parser)
    parser.add_argument("--data", default=None,
                        help="data spec (default: the run's recipe data), e.g. mnist")
    parser.add_argument("--split", choices=("test", "val", "train"), default="test",
                        help="which split to evaluate (default: test)")
    add_allow_import_argument(parser)
    add_json_argument(parser, "the result")


def run(args: argparse.Namespace) -> int:
    """Evaluate and print ``accuracy``, ``error`` and ``loss``; 0 on success."""
    import torch

    from nncompress.cli._misuse import checked
    from nncompress.data import load_data
    from nncompress.run_folder import load_run_model
    from nncompress.train.loop import evaluate

    model, recipe = load_run_model(args.path, allow_import=args.allow_import)
    if args.data is None and recipe is None:
        raise ConfigError(f"{args.path}: no run recipe beside it to take the data from; "
                          "give --data, e.g. --data mnist")
    spec = args.data if args.data is not None else recipe.data.spec  # type: ignore[union-attr]
    scale = recipe.data.scale if recipe is not None else 1 / 256
    validation = recipe.data.validation if recipe is not None else 0
    seed = recipe.seed if recipe is not None else 0
    if args.split == "val" and validation == 0:
        raise ConfigError("--split val: the run held out no validation set (data.validation 0)")
    transform = getattr(model, "input_transform", None)
    if transform is not None:  # a converted Caffe net: pixels through its own transform
        from torch import nn

        scale, model = 1.0, nn.Sequential(transform, model)
    splits = load_data(spec, scale=scale, validation=validation, seed=seed)
    x, y = {"test": (splits.test_x, splits.test_y), "val": (splits.val_x, splits.val_y),
            "train": (splits.train_x, splits.train_y)}[args.split]
    loss, accuracy = evaluate(model, checked(model, zip(torch.split(x, 1000), torch.split(y, 1000)),
                                             spec, args.split))
    result = {"data": spec, "split": args.split, "examples": len(y), "loss": loss,
              "accuracy": accuracy, "error": 1.0 - accuracy}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{spec} {args.split} ({len(y):,} examples): accuracy {100 * accuracy:.2f}%, "
              f"error {100 * (1 - accuracy):.2f}%, loss {loss:.4f}")
    return 0

"""``nncompress bench MODEL``: latency of the sparse runtime against the dense model."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from nncompress.cli._options import add_allow_import_argument, add_json_argument, apply_threads
from nncompress.errors import ConfigError

__all__ = ["add_parser", "run"]


def add_parser(parser: argparse.ArgumentParser) -> None:
    """Register the arguments of ``bench``."""
    parser.add_argument("model", type=Path, help="a .ncz file, or a run folder with model.ncz")
    parser.add_argument("--batch", default="1,64", metavar="N,N",
                        help="batch sizes, comma-separated (default: 1,64)")
    parser.add_argument("--threads", type=int, default=1, metavar="N",
                        help="CPU threads for torch (default: 1)")
    parser.add_argument("--rounds", type=int, default=9, metavar="N",
                        help="interleaved timing rounds per batch size (default: 9)")
    parser.add_argument("--seconds", type=float, default=0.05, metavar="S",
                        help="time each model about S seconds per round (default: 0.05)")
    parser.add_argument("--input-shape", default=None, metavar="C,H,W",
                        help="one input's shape (default: from the model's in_channels and "
                             "input_size, else 1,28,28)")
    parser.add_argument("--usual-pools", action="store_true",
                        help="keep nn.MaxPool2d layers (default: the runtime's 2x2 max-pool)")
    add_allow_import_argument(parser)
    add_json_argument(parser, "the measurements")


def _ints(text: str, option: str, example: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        values = ()
    if not values or any(v < 1 for v in values):
        raise ConfigError(f"{option} {text!r}: give positive integers separated by commas, "
                          f"e.g. {option} {example}")
    return values


def _model_file(path: Path) -> Path:
    if path.is_dir():
        path = path / "model.ncz"
        if not path.is_file():
            raise ConfigError(f"{path.parent}: no model.ncz in this folder; export one with "
                              f"nncompress export {path.parent} -o {path}")
    elif not path.is_file():
        raise ConfigError(f"{path}: no such file; give a .ncz file or a run folder")
    return path


def run(args: argparse.Namespace) -> int:
    """Time the dense and the sparse model and print the table; 0 on success."""
    from nncompress.runtime.measure import benchmark_file, format_benchmark

    batches = _ints(args.batch, "--batch", "1,64")
    shape = None if args.input_shape is None else _ints(args.input_shape, "--input-shape",
                                                        "1,28,28")
    if args.rounds < 1:
        raise ConfigError(f"--rounds {args.rounds}: use 1 or more")
    if not args.seconds > 0:
        raise ConfigError(f"--seconds {args.seconds}: use a positive number, e.g. 0.05")
    apply_threads(args.threads)
    result = benchmark_file(_model_file(args.model), batches=batches, rounds=args.rounds,
                            round_seconds=args.seconds, shape=shape, allow_import=args.allow_import,
                            fast_pool=not args.usual_pools)
    print(json.dumps(result.to_dict(), indent=2) if args.json else format_benchmark(result))
    return 0

"""``nncompress caffe train|eval|convert``: run Caffe prototxt and caffemodel files."""

from __future__ import annotations

import argparse
from pathlib import Path

from nncompress.errors import ConfigError

__all__ = ["add_parser", "run"]


def _shape(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a shape like 1,28,28") from None
    if not dims or min(dims) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a shape like 1,28,28")
    return dims


def add_parser(parser: argparse.ArgumentParser) -> None:
    """Register ``caffe train``, ``caffe eval`` and ``caffe convert``."""
    sub = parser.add_subparsers(dest="caffe_command", metavar="ACTION", required=True)
    train = sub.add_parser("train", help="train with a Caffe solver and net (DNS/INQ layers too)")
    train.add_argument("--solver", type=Path, required=True, help="solver prototxt")
    train.add_argument("--net", type=Path, default=None,
                       help="net prototxt (default: the solver's 'net', looked up beside it)")
    train.add_argument("--weights", type=Path, default=None, help="caffemodel to start from")
    train.add_argument("--data", default=None,
                       help="data replacing the Data layers' LMDB: mnist, idx:DIR, synthetic")
    train.add_argument("--out", type=Path, default=Path("."), help="folder of the snapshots")
    train.add_argument("--max-iter", type=int, default=None,
                       help="override the solver's max_iter (short trial runs)")
    for name, text in (("eval", "top-1 accuracy of a caffemodel on a data set"),
                       ("convert", "caffemodel to .ncz, .safetensors or plain .caffemodel")):
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("net", type=Path, help="net prototxt")
        p.add_argument("weights", type=Path, help="caffemodel")
        p.add_argument("--input-shape", type=_shape, default=None,
                       help="shape of one example for Data layers, e.g. 1,28,28 "
                            "(default: from --data)")
        if name == "eval":
            p.add_argument("--data", required=True, help="data set: mnist, idx:DIR, synthetic")
            p.add_argument("--batch", type=int, default=100, help="examples per forward")
        else:
            p.add_argument("-o", "--output", type=Path, required=True,
                           help="output file: .ncz, .safetensors or .caffemodel")
            p.add_argument("--data", default=None, help="data set, to take the input shape from")


def run(args: argparse.Namespace) -> int:
    """Run the chosen action; 0 on success."""
    if args.caffe_command == "train":
        return _train(args)
    return _eval(args) if args.caffe_command == "eval" else _convert(args)


def _train(args: argparse.Namespace) -> int:
    from nncompress.interop.solver_train import train_from_solver

    result = train_from_solver(args.solver, net=args.net, weights=args.weights, data=args.data,
                               out_dir=args.out, max_iter=args.max_iter)
    if result.tests:
        it, outputs = result.tests[-1]
        shown = ", ".join(f"{k} = {v:.4f}" for k, v in outputs.items())
        print(f"done: {result.iterations} iterations; last test (iteration {it}): {shown}")
    for path in result.snapshots:
        print(f"wrote {path}")
    return 0


def _load(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from nncompress.data import load_data
    from nncompress.interop.convert import load_plain

    splits = load_data(args.data, scale=1.0) if args.data else None
    shape = args.input_shape or (splits.input_shape if splits is not None else None)
    net, text = load_plain(args.net, args.weights, shape)
    return net, text, splits


def _eval(args: argparse.Namespace) -> int:
    from nncompress.interop.convert import evaluate
    from nncompress.interop.solver_train import DataFeed

    if args.batch <= 0:
        raise ConfigError(f"--batch {args.batch} must be a positive number of examples")
    net, _, splits = _load(args)
    test = next((s.spec for s in net.steps if "TEST" in s.phases and s.spec.type == "Data"),
                None)
    transform = None
    if test is not None:
        transform = DataFeed(splits.test_x, splits.test_y, test, train=False, seed=0).transform
    accuracy = evaluate(net, splits.test_x, splits.test_y, args.batch, transform)
    print(f"{args.data} test ({len(splits.test_y):,} examples): accuracy {100 * accuracy:.2f}%")
    return 0


def _convert(args: argparse.Namespace) -> int:
    from nncompress.interop.convert import convert

    net, text, _ = _load(args)
    path = convert(net, text, args.output)
    print(f"wrote {path} ({path.stat().st_size:,} bytes)")
    return 0

"""``nncompress caffe train|eval|convert|decode-compact|encode-compact``: Caffe files.

The actions themselves are in :mod:`nncompress.cli._caffe_actions`; this module holds the
arguments.
"""

from __future__ import annotations

import argparse
from fractions import Fraction
from pathlib import Path

from nncompress.cli._options import add_device_argument

__all__ = ["add_parser", "run"]


def _shape(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a shape like 1,28,28") from None
    if not dims or min(dims) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a shape like 1,28,28")
    return dims


def _scale(text: str) -> float:
    try:
        value = float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number like 0.00390625 or "
                                         "1/256") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"--scale {text} must be positive")
    return value


def _means(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of means like 104,117,123 "
                                         "(B,G,R) or 33.3") from None
    return values


def _scoring_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input-shape", type=_shape, default=None,
                   help="shape of one example for Data layers, e.g. 1,28,28 (default: the data's)")
    p.add_argument("--scale", type=_scale, default=None,
                   help="multiply inputs by this after the mean, e.g. 1/256 (default: the TEST "
                        "Data layer's transform_param, else 1)")
    mean = p.add_mutually_exclusive_group()
    mean.add_argument("--mean-value", type=_means, default=None, metavar="B,G,R",
                      help="mean subtracted per channel (one value for all channels, or one each)")
    mean.add_argument("--mean-file", type=Path, default=None, metavar="FILE.binaryproto",
                      help="per-pixel mean image subtracted (Caffe's binaryproto)")
    p.add_argument("--output", default=None, metavar="BLOB",
                   help="the blob holding the scores (default: the first bottom of the TEST "
                        "Accuracy/loss layer that scores the labels, else the last top)")


def _weights_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--allow-missing", action="store_true",
                   help="warn instead of failing when a net layer has no weights in the caffemodel "
                        "(it keeps its initial weights)")
    p.add_argument("--allow-nonfinite", action="store_true",
                   help="warn instead of failing when the caffemodel holds NaN or infinite values")


def add_parser(parser: argparse.ArgumentParser) -> None:
    """Register the ``caffe`` actions."""
    sub = parser.add_subparsers(dest="caffe_command", metavar="ACTION", required=True)
    train = sub.add_parser("train", help="train with a Caffe solver and net (DNS/INQ layers too)")
    train.add_argument("--solver", type=Path, required=True, help="solver prototxt")
    train.add_argument("--net", type=Path, default=None,
                       help="net prototxt (default: the solver's 'net', looked up beside it)")
    train.add_argument("--weights", type=Path, default=None, help="caffemodel to start from")
    train.add_argument("--data", default=None,
                       help="data replacing the Data layers' own source LMDBs (default: "
                            "those, when on disk): mnist, idx:DIR, synthetic")
    train.add_argument("--out", type=Path, default=Path("."), help="folder of the snapshots")
    train.add_argument("--max-iter", type=int, default=None,
                       help="override the solver's max_iter (short trial runs)")
    _weights_options(train)
    add_device_argument(train, "cpu")
    train.add_argument("--dist-backend", choices=("gloo", "nccl"), default=None,
                       help="under torchrun: the process group's backend (default gloo: the "
                            "solver trains on the CPU)")
    for name, text in (("eval", "top-1 accuracy of a caffemodel on a data set"),
                       ("convert", "caffemodel to .ncz, .safetensors or plain .caffemodel")):
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("net", type=Path, help="net prototxt (train_val or deploy)")
        p.add_argument("weights", type=Path, help="caffemodel")
        _scoring_options(p)
        _weights_options(p)
        if name == "eval":
            p.add_argument("--data", required=True, help="data set: mnist, idx:DIR, synthetic")
            p.add_argument("--batch", type=int, default=100, help="examples per forward")
            add_device_argument(p, "cpu")
        else:
            p.add_argument("-o", "--out", type=Path, required=True, dest="out_file",
                           help="output file: .ncz, .safetensors or .caffemodel")
            p.add_argument("--data", default=None, help="data set, to take the input shape from")
    _compact_parsers(sub)


def _compact_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    text = "the seed's compact .binary file to .caffemodel, .ncz or .safetensors"
    dec = sub.add_parser("decode-compact", help=text, description=text)
    dec.add_argument("net", type=Path, help="net prototxt the file was written for")
    dec.add_argument("file", type=Path, help="the seed's compact file (.binary)")
    dec.add_argument("-o", "--out", type=Path, required=True, dest="out_file",
                     help="output file: .caffemodel, .ncz or .safetensors")
    dec.add_argument("--gap-bits", type=int, choices=(4, 8), default=None,
                     help="the variant (default: the one that reads the file exactly)")
    dec.add_argument("--input-shape", type=_shape, default=None,
                     help="shape of one example for Data layers, e.g. 1,28,28")
    text = "a caffemodel to the seed's compact .binary file (for the original C++ decoder)"
    enc = sub.add_parser("encode-compact", help=text, description=text)
    enc.add_argument("net", type=Path, help="net prototxt")
    enc.add_argument("weights", type=Path, help="caffemodel (INQ-quantized: at most 15 non-zero "
                                                "values per blob)")
    enc.add_argument("-o", "--out", type=Path, required=True, dest="out_file",
                     help="output .binary file")
    enc.add_argument("--gap-bits", type=int, choices=(4, 8), default=4,
                     help="index gaps in 4 bits (the seed's first variant) or 8 bits")
    enc.add_argument("--input-shape", type=_shape, default=None,
                     help="shape of one example for Data layers, e.g. 1,28,28")


def run(args: argparse.Namespace) -> int:
    """Run the chosen action; 0 on success."""
    from nncompress.cli import _caffe_actions as actions

    return {"train": actions.train, "eval": actions.evaluate, "convert": actions.convert,
            "decode-compact": actions.decode_compact,
            "encode-compact": actions.encode_compact}[args.caffe_command](args)

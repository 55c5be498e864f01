"""The work of ``nncompress caffe ...`` (arguments in :mod:`nncompress.cli.caffe`)."""

from __future__ import annotations

import argparse
from typing import Any

from nncompress.errors import ConfigError

__all__ = ["convert", "decode_compact", "encode_compact", "evaluate", "train"]


def train(args: argparse.Namespace) -> int:
    """``caffe train``: run a solver; prints the last test outputs and the snapshots.

    Under torchrun every process trains its share of each batch; rank 0 alone writes and prints.
    """
    from nncompress.cli._options import check_backend
    from nncompress.interop.solver_train import train_from_solver
    from nncompress.train.device import resolve_device
    from nncompress.train.distributed import failure_guard, init_distributed, is_writer, shutdown

    check_backend(args.dist_backend, args.device or "cpu", "fp32")
    device = resolve_device(args.device or "cpu")
    # nothing happens without torchrun; nccl for a net on CUDA, gloo otherwise
    init_distributed(args.dist_backend or ("nccl" if device.type == "cuda" else "gloo"))
    with failure_guard():
        result = train_from_solver(args.solver, net=args.net, weights=args.weights,
                                   data=args.data, out_dir=args.out, max_iter=args.max_iter,
                                   allow_missing=args.allow_missing,
                                   allow_nonfinite=args.allow_nonfinite, device=device)
    writer = is_writer()
    shutdown()
    if not writer:
        return 0
    if result.tests:
        it, outputs = result.tests[-1]
        shown = ", ".join(f"{k} = {v:.4f}" for k, v in outputs.items())
        print(f"done: {result.iterations} iterations; last test (iteration {it}): {shown}")
    for path in result.snapshots:
        print(f"wrote {path}")
    return 0


def _scored_net(args: argparse.Namespace) -> tuple[Any, str, Any]:
    """The net with its weights, its transform and output chosen, checked against the data."""
    from nncompress.data import load_data
    from nncompress.interop.convert import load_plain
    from nncompress.interop.deploy import attach_transform, check_input, check_output, set_output

    splits = load_data(args.data, scale=1.0) if args.data else None
    shape = args.input_shape or (splits.input_shape if splits is not None else None)
    net, text = load_plain(args.net, args.weights, shape, allow_missing=args.allow_missing,
                           allow_nonfinite=args.allow_nonfinite)
    if args.output is not None:
        set_output(net, args.output)
    transform = attach_transform(net, args.net.parent, args.scale, args.mean_value,
                                 args.mean_file)
    if splits is not None:
        sample = transform(splits.test_x[:1])
        check_input(net, sample)
        check_output(net, sample, splits.num_classes)
    return net, text, splits


def evaluate(args: argparse.Namespace) -> int:
    """``caffe eval``: top-1 accuracy, with the output, transform and kept weights used."""
    from nncompress.interop.convert import evaluate as score
    from nncompress.interop.deploy import kept_weights

    if args.batch <= 0:
        raise ConfigError(f"--batch {args.batch} must be a positive number of examples")
    from nncompress.train.device import resolve_device

    device = resolve_device(args.device or "cpu")
    net, _, splits = _scored_net(args)
    net.to(device)
    accuracy = score(net, splits.test_x.to(device), splits.test_y.to(device), args.batch,
                     net.input_transform)
    kept, total = kept_weights(net)
    print(f"{args.data} test ({len(splits.test_y):,} examples): accuracy {100 * accuracy:.2f}% "
          f"(output '{net.outputs['TEST']}', {net.input_transform.spec.describe()}; "
          f"weights kept {kept:,} of {total:,})")
    return 0


def convert(args: argparse.Namespace) -> int:
    """``caffe convert``: write the net with its weights, transform and output."""
    from nncompress.interop.convert import convert as write

    net, text, _ = _scored_net(args)
    path = write(net, text, args.out_file)
    print(f"wrote {path} ({path.stat().st_size:,} bytes)")
    return 0


def decode_compact(args: argparse.Namespace) -> int:
    """``caffe decode-compact``: the seed's compact file to a caffemodel, .ncz or .safetensors."""
    from nncompress.interop.convert import SUFFIXES
    from nncompress.interop.convert import convert as write
    from nncompress.interop.seed_compact import load_seed_compact

    if args.out_file.suffix not in SUFFIXES:
        raise ConfigError(f"output {str(args.out_file)!r} has an unknown suffix; use one of "
                          f"{', '.join(SUFFIXES)}")
    net, text, gap_bits = load_seed_compact(args.net, args.file, args.input_shape,
                                            args.gap_bits)
    path = write(net, text, args.out_file)
    kept = sum(int((p != 0).sum()) for p in net.parameters())
    print(f"read {args.file} ({gap_bits}-bit gaps, {kept:,} non-zero values); wrote {path} "
          f"({path.stat().st_size:,} bytes)")
    return 0


def encode_compact(args: argparse.Namespace) -> int:
    """``caffe encode-compact``: a caffemodel to the seed's compact file."""
    from nncompress.interop.convert import load_plain
    from nncompress.interop.seed_compact import save_seed_compact

    net, _ = load_plain(args.net, args.weights, args.input_shape)
    size = save_seed_compact(net, args.out_file, args.gap_bits)
    print(f"wrote {args.out_file} ({size:,} bytes, {args.gap_bits}-bit gaps)")
    return 0

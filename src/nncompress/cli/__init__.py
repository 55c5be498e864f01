"""Command-line entry point: ``nncompress SUBCOMMAND ...``.

Each subcommand lives in its own module of this package and exposes two functions:
``add_parser(subparsers)`` registers its arguments, ``run(args) -> int`` does the work.
Modules are imported only when their subcommand runs, so ``nncompress --help`` stays fast
and optional parts (Caffe, ONNX) load only when asked for.

Exit codes: 0 success, 1 user error (one message on stderr, no traceback),
3 internal error (a bug: traceback shown), 130 interrupted, 141 output pipe closed.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from collections.abc import Sequence

from nncompress.errors import NNCompressError

__all__ = ["main"]

# subcommand -> (module under nncompress.cli, one-line help)
_SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("demo", "run the LeNet-300-100 reference -> DNS -> INQ demo on bundled MNIST"),
    "run": ("run", "run a recipe (train, dns, inq, finalize, export stages)"),
    "validate": ("validate", "check a recipe without running it"),
    "eval": ("evaluate", "evaluate a run folder or checkpoint on a data set"),
    "report": ("report", "per-layer compression report of a run folder"),
    "export": ("export", "write a compact .ncz file (or ONNX) from a run folder or checkpoint"),
    "inspect": ("inspect", "per-layer sizes of a compact .ncz file"),
    "bench": ("bench", "latency of the sparse inference runtime against the dense model"),
    "plot": ("plot", "training curves and per-layer plots of a run folder (PNG)"),
    "caffe": ("caffe", "train, evaluate and convert Caffe prototxt/caffemodel files"),
}


def _build_parser(argv: Sequence[str]) -> tuple[argparse.ArgumentParser, str | None]:
    parser = argparse.ArgumentParser(
        prog="nncompress",
        description="Prune (Dynamic Network Surgery) and quantize (INQ) PyTorch models.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    # Only the chosen subcommand's module is imported; the others get a bare entry for --help.
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (module, help_text) in _SUBCOMMANDS.items():
        if name == chosen:
            mod = importlib.import_module(f"nncompress.cli.{module}")
            mod.add_parser(sub.add_parser(name, help=help_text, description=help_text))
        else:
            sub.add_parser(name, help=help_text, add_help=False)
    return parser, chosen


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit code.

    Args:
        argv: the arguments after the program name; ``sys.argv[1:]`` when None.

    Returns:
        0 on success, 1 for a user error, 3 for an internal error, 130 when interrupted.

    Example:
        >>> main(["--version"])  # doctest: +SKIP
        0
    """
    args_list = list(sys.argv[1:] if argv is None else argv)
    try:
        parser, _ = _build_parser(args_list)
        try:
            args = parser.parse_args(args_list)
        except SystemExit as exc:  # argparse reports usage errors itself
            return 0 if exc.code in (0, None) else 1
        if args.version:
            from nncompress._version import __version__

            print(__version__)
            return 0
        if args.command is None:
            parser.print_help()
            return 1
        module = importlib.import_module(f"nncompress.cli.{_SUBCOMMANDS[args.command][0]}")
        return int(module.run(args))
    except NNCompressError as exc:
        print(f"nncompress: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("nncompress: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (e.g. `| head`): stop quietly, like a shell
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the final flush at exit cannot fail again
        return 141
    except Exception:  # a bug: show everything
        traceback.print_exc()
        print("nncompress: internal error (exit 3); please report it with the traceback above",
              file=sys.stderr)
        return 3


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""``nncompress run RECIPE``: run a recipe's stages into a run folder."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

# add_set_argument, add_progress_arguments and apply_threads were defined here; importing them
# from this module keeps working.
from nncompress.cli._options import (
    add_device_argument,
    add_json_argument,
    add_progress_arguments,
    add_recipe_argument,
    add_set_argument,
    apply_threads,
    check_backend,
)

__all__ = ["add_parser", "run"]


def add_parser(parser: argparse.ArgumentParser) -> None:
    """Register the arguments of ``run``."""
    add_recipe_argument(parser)
    parser.add_argument("--out", type=Path, default=None,
                        help="run folder (default: runs/<recipe name>)")
    add_set_argument(parser)
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its newest checkpoint")
    add_progress_arguments(parser)
    add_device_argument(parser, "the recipe's device, cpu if it has none")
    add_json_argument(parser, "report.json instead of a table")
    parser.add_argument("--dist-backend", choices=("gloo", "nccl"), default=None,
                        help="under torchrun: the process group's backend (default gloo; "
                             "nccl for a run on CUDA GPUs, --device cuda)")
    parser.add_argument("--verify-ranks", action="store_true",
                        help="under torchrun: compare the ranks' weights, masks and fixed values "
                             "at every evaluation (always done at checkpoints)")


def run(args: argparse.Namespace) -> int:
    """Run the recipe and print the per-layer report; 0 on success.

    Under torchrun every process runs it; rank 0 alone writes the run folder and prints.
    """
    from nncompress.train.distributed import failure_guard, shutdown

    with failure_guard():
        code = _run(args)
    shutdown()
    return code


def _run(args: argparse.Namespace) -> int:
    from nncompress.pipeline import run_recipe
    from nncompress.recipe import load_recipe
    from nncompress.report import format_report
    from nncompress.train.device import resolve_device
    from nncompress.train.distributed import init_distributed, is_writer

    device = [f"device={args.device}"] if args.device is not None else []  # over the recipe's
    recipe = load_recipe(args.recipe, [*args.overrides, *device])
    check_backend(args.dist_backend, recipe.device, recipe.precision)
    # nothing happens without torchrun; nccl for a run on CUDA, gloo otherwise
    init_distributed(args.dist_backend or
                     ("nccl" if resolve_device(recipe.device, recipe.precision).type == "cuda"
                      else "gloo"))
    if is_writer():
        _say_imports(recipe.model.ref, recipe.data.spec)
    apply_threads(args.threads)
    out = args.out if args.out is not None else Path("runs") / recipe.name
    started = time.monotonic()
    result = run_recipe(recipe, out, resume=args.resume, progress="log" if args.quiet else "bar",
                        verify_ranks=args.verify_ranks)
    if not is_writer():
        return 0
    if args.json:
        print(json.dumps(result.report, indent=2))
    else:
        print(format_report(result.report))
        print(f"run folder:  {out} ({time.monotonic() - started:.0f} s)")
    from nncompress.cli.plot import plots_after_run

    plots = plots_after_run(out)  # when matplotlib is installed
    if plots is not None:
        print(plots, file=sys.stderr if args.json else sys.stdout)
    return 0


def _say_imports(model_ref: str, data_spec: str) -> None:
    """Say once, on stderr, which of the user's Python modules the run imports (and runs)."""
    from nncompress.data import is_stream_spec
    from nncompress.export._schema import is_builtin

    refs = [] if is_builtin(model_ref) else [f"model {model_ref!r}"]
    if is_stream_spec(data_spec) and data_spec.partition(":")[0] not in ("folder", "lmdb"):
        refs.append(f"data {data_spec!r}")
    if refs:
        modules = ", ".join(sorted({r.split("'")[1].partition(":")[0] for r in refs}))
        print(f"nncompress: importing Python code of this recipe ({' and '.join(refs)}): "
              f"module {modules} runs with your permissions", file=sys.stderr, flush=True)

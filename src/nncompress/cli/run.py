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
    add_json_argument,
    add_progress_arguments,
    add_recipe_argument,
    add_set_argument,
    apply_threads,
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
    add_json_argument(parser, "report.json instead of a table")


def run(args: argparse.Namespace) -> int:
    """Run the recipe and print the per-layer report; 0 on success."""
    from nncompress.pipeline import run_recipe
    from nncompress.recipe import load_recipe
    from nncompress.report import format_report

    recipe = load_recipe(args.recipe, args.overrides)
    apply_threads(args.threads)
    out = args.out if args.out is not None else Path("runs") / recipe.name
    started = time.monotonic()
    result = run_recipe(recipe, out, resume=args.resume, progress="log" if args.quiet else "bar")
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

"""``nncompress demo``: LeNet-300-100 reference -> DNS -> INQ on bundled MNIST, in minutes.

Runs the shipped recipe ``demo_lenet300_100`` into ``runs/demo`` under the current folder
(``runs/demo-2``, ``-3``... when that exists) and prints the per-layer table and the totals.
It uses one CPU thread unless ``--threads`` says otherwise.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from nncompress.cli._options import add_progress_arguments, add_set_argument, apply_threads

__all__ = ["DEMO_RECIPE", "add_parser", "run"]

DEMO_RECIPE = "demo_lenet300_100"


def add_parser(parser: argparse.ArgumentParser) -> None:
    """Register the arguments of ``demo``."""
    parser.add_argument("--out", type=Path, default=None,
                        help="run folder (default: runs/demo, or runs/demo-N if it exists)")
    add_set_argument(parser)
    add_progress_arguments(parser)
    # One thread by default: LeNet-300-100's small matrices gain little from a second thread,
    # and on a busy machine two threads can make every step many times slower.
    parser.set_defaults(threads=1)


def _free_folder(base: Path) -> Path:
    candidate, number = base, 2
    while candidate.exists() and any(candidate.iterdir()):
        candidate, number = base.with_name(f"{base.name}-{number}"), number + 1
    return candidate


def run(args: argparse.Namespace) -> int:
    """Run the demo recipe and print the report; 0 on success."""
    from nncompress.cli.plot import plots_after_run
    from nncompress.data import DatasetNotFoundError
    from nncompress.errors import NNCompressError
    from nncompress.pipeline import run_recipe
    from nncompress.recipe import find_recipe, load_recipe
    from nncompress.report import format_report

    recipe_file = find_recipe(DEMO_RECIPE)
    recipe = load_recipe(recipe_file, args.overrides)
    apply_threads(args.threads)
    out = args.out if args.out is not None else _free_folder(Path("runs") / "demo")
    print(f"nncompress demo: {recipe.description.strip()}")
    print(f"recipe {recipe_file}\nrun folder {out}")
    started = time.monotonic()
    try:
        result = run_recipe(recipe, out, progress="log" if args.quiet else "bar")
    except DatasetNotFoundError as exc:
        raise NNCompressError(f"the demo needs MNIST: {exc}") from None
    print()
    print(format_report(result.report))
    plots = plots_after_run(Path(out))  # when matplotlib is installed
    if plots is not None:
        print(plots)
    print(f"wall time:   {time.monotonic() - started:.0f} s (run folder {out}; "
          f"`nncompress report {out}` shows this table again)")
    return 0

"""``nncompress run RECIPE``: run a recipe's stages into a run folder."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

__all__ = ["add_parser", "run"]


def add_parser(parser: argparse.ArgumentParser) -> None:
    """Register the arguments of ``run``."""
    parser.add_argument("recipe", help="recipe YAML file, or the name of a shipped recipe")
    parser.add_argument("--out", type=Path, default=None,
                        help="run folder (default: runs/<recipe name>)")
    add_set_argument(parser)
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its newest checkpoint")
    add_progress_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print report.json instead of a table")


def add_set_argument(parser: argparse.ArgumentParser) -> None:
    """The repeatable ``--set key.path=value`` override (also used by ``validate``)."""
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY.PATH=VALUE",
                        help="override a recipe value, e.g. stages.0.iterations=100 or "
                             "stages.dns.defaults.gamma=1e-4 (repeatable)")


def add_progress_arguments(parser: argparse.ArgumentParser) -> None:
    """``--quiet``: one log line per evaluation instead of progress bars."""
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no progress bars; one line per evaluation (for logs)")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="CPU threads for torch (default: torch's choice); 1 is often "
                             "fastest for small models on a busy machine")


def apply_threads(threads: int | None) -> None:
    """Set torch's CPU thread count when ``--threads`` was given."""
    if threads is None:
        return
    if threads < 1:
        from nncompress.errors import ConfigError

        raise ConfigError(f"--threads {threads}: use 1 or more")
    import torch

    torch.set_num_threads(threads)


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
    return 0

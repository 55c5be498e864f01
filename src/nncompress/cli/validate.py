"""``nncompress validate RECIPE``: check a recipe without running it."""

from __future__ import annotations

import argparse

from nncompress.cli._options import add_recipe_argument, add_set_argument

__all__ = ["add_parser", "run"]


def add_parser(parser: argparse.ArgumentParser) -> None:
    """Register the arguments of ``validate``."""
    add_recipe_argument(parser)
    add_set_argument(parser)
    parser.add_argument("--show", action="store_true",
                        help="print the resolved recipe (every default written out)")


def run(args: argparse.Namespace) -> int:
    """Check keys, types, values, and that each stage's layer selection fits the model."""
    from nncompress.recipe import dump_recipe, load_recipe
    from nncompress.stages import check_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    check_recipe(recipe)
    if args.show:
        print(dump_recipe(recipe), end="")
    else:
        print(f"{args.recipe}: valid recipe {recipe.name!r}, {len(recipe.stages)} stages: "
              + ", ".join(_stage_line(s) for s in recipe.stages))
    return 0


def _stage_line(stage: object) -> str:
    from nncompress.recipe import INQStage

    name = getattr(stage, "name", "")
    if isinstance(stage, INQStage):
        return f"{name} ({sum(stage.step_iterations()):,} iterations)"
    iterations = getattr(stage, "iterations", None)
    return name if iterations is None else f"{name} ({iterations:,} iterations)"

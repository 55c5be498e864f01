"""``nncompress validate RECIPE``: check a recipe without running it (nor reading its data)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from nncompress.cli._options import (
    add_allow_import_argument,
    add_recipe_argument,
    add_set_argument,
)

if TYPE_CHECKING:
    from nncompress.recipe import Recipe

__all__ = ["add_parser", "run"]


def add_parser(parser: argparse.ArgumentParser) -> None:
    """Register the arguments of ``validate``."""
    add_recipe_argument(parser)
    add_set_argument(parser)
    parser.add_argument("--show", action="store_true",
                        help="print the resolved recipe (every default written out)")
    add_allow_import_argument(parser)  # without it a module:callable model is not imported


def run(args: argparse.Namespace) -> int:
    """Check keys, types, values, and that each stage's layer selection fits the model.

    Paths the run would read (data, mean file, weights, distillation teachers) are only looked
    for: a missing one is reported as a note, so a recipe for data on another machine, or one
    that starts from another run's model, validates here.
    """
    from nncompress._teachers import missing_teacher_files
    from nncompress.recipe import dump_recipe, load_recipe
    from nncompress.recipe_specs import missing_paths
    from nncompress.stages import check_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    code_note = _check_model(recipe, args.allow_import)
    if code_note is None:
        check_recipe(recipe, require_files=False)
    if args.show:
        print(dump_recipe(recipe), end="")
    else:
        print(f"{args.recipe}: valid recipe {recipe.name!r}, {len(recipe.stages)} stages: "
              + ", ".join(_stage_line(s) for s in recipe.stages))
    if code_note is not None:
        print(code_note)
    missing = missing_paths(recipe.model, recipe.data) + missing_teacher_files(recipe)
    if missing:
        print("note: `nncompress run` would read these paths, which do not exist here (point "
              "to them with --set KEY=VALUE):\n  " + "\n  ".join(missing))
    device_note = _device_note(recipe.device, recipe.precision)
    if device_note:
        print(device_note)
    return 0


def _device_note(device: str, precision: str) -> str:
    """A note when this machine lacks the recipe's device (the recipe is still valid)."""
    from nncompress.errors import ConfigError
    from nncompress.train.device import resolve_device

    try:
        resolve_device(device, precision)
    except ConfigError as exc:
        return (f"note: `nncompress run` would stop on this machine unless given another "
                f"--device: {exc}")
    return ""


def _check_model(recipe: Recipe, allow_import: bool) -> str | None:
    """For a ``package.module:callable`` model: check the ref without importing; the note."""
    from nncompress.export._schema import is_builtin
    from nncompress.models import locate_ref

    ref = recipe.model.ref
    if allow_import or is_builtin(ref):
        return None
    where = locate_ref(ref)  # syntax and the module's file; nothing is imported
    found = f"module file {where}" if where else "a module without a file"
    return (f"note: model {ref!r} is Python code ({found}); it was not imported, so the "
            "stages' layer selections are checked when `nncompress run` builds it (or here "
            "with --allow-import, which runs it)")


def _stage_line(stage: object) -> str:
    from nncompress.recipe import INQStage

    name = getattr(stage, "name", "")
    if isinstance(stage, INQStage):
        if stage.iterations_per_step is None:
            epochs = stage.epochs_per_step
            total = sum(epochs) if isinstance(epochs, tuple) else (epochs or 0) * len(
                stage.portions)
            return f"{name} ({total:g} epochs)"
        return f"{name} ({sum(stage.step_iterations()):,} iterations)"
    iterations, epochs = getattr(stage, "iterations", None), getattr(stage, "epochs", None)
    if iterations is None and epochs is not None:
        return f"{name} ({epochs:g} epochs)"
    return name if iterations is None else f"{name} ({iterations:,} iterations)"

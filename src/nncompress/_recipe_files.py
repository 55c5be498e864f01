"""Recipe files: the shipped ones, finding a recipe by path or name, YAML in and plain data out.

:mod:`nncompress.recipe` keeps the public functions (``find_recipe``, ``load_recipe``,
``recipe_to_dict``...); the file and YAML handling behind them lives here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from nncompress._typed import RecipeError
from nncompress.errors import did_you_mean

__all__ = ["locate", "read_yaml", "shipped", "to_plain_data"]

_LENGTH_KEYS = frozenset({"iterations", "epochs", "iterations_per_step", "epochs_per_step"})


def shipped() -> dict[str, Path]:
    """The recipes shipped inside the package, by name (file name without ``.yaml``).

    Names are unique across ``recipes/`` and its subfolders (``recipes/imagenet/``), so a
    recipe is found by its name alone: ``nncompress run resnet18_inq5bit``.
    """
    folder = Path(__file__).parent / "recipes"
    files = sorted(folder.glob("*.yaml")) + sorted(folder.glob("*/*.yaml"))
    return {p.stem: p for p in files}


def locate(path: str | Path) -> Path:
    """``path`` if it is a file, else the shipped recipe of that name; RecipeError if neither."""
    file = Path(path)
    if file.is_file():
        return file
    recipes = shipped()
    name = file.name.removesuffix(".yaml")
    if file.parent == Path(".") and name in recipes:
        return recipes[name]
    raise RecipeError("", f"recipe file not found; give a YAML file or one of the shipped "
                      f"recipes: {', '.join(recipes)}{did_you_mean(name, recipes)}", str(path))


def read_yaml(file: Path, source: str) -> Any:
    """The data of a YAML file; RecipeError (with line and column when known) if unreadable."""
    try:
        return yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise RecipeError("", f"not valid YAML{where}: {exc.problem}", source) from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise RecipeError("", f"cannot read the recipe: {exc}", source) from None


def _plain(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def to_plain_data(recipe: Any, training_keys: Sequence[str]) -> dict[str, Any]:
    """A recipe dataclass as plain data (lists, dicts), every default written out.

    ``training_keys`` are the keys every training stage shares; they follow a stage's own keys.
    """
    out: dict[str, Any] = {}
    for f in dataclasses.fields(recipe):
        value = getattr(recipe, f.name)
        if f.name == "stages":
            out["stages"] = [_stage_data(s, training_keys) for s in value]
        else:
            is_spec = dataclasses.is_dataclass(value) and not isinstance(value, type)
            out[f.name] = _plain(dataclasses.asdict(value) if is_spec else value)
    return out


def _stage_data(stage: Any, training_keys: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"stage": stage.stage, "name": stage.name}
    # the stage's own keys (iterations, portions, defaults...) first, training settings after
    names = [f.name for f in dataclasses.fields(stage) if f.name not in training_keys]
    names += [n for n in training_keys if hasattr(stage, n)]
    for name in names:
        value = getattr(stage, name)
        if name in out or (name in _LENGTH_KEYS and value is None):
            continue  # a stage counted in epochs has no iterations until its run resolves them
        if name == "optimizer":  # only the options of the chosen optimizer
            out[name] = {"name": value.name, **_plain(value.options())}
        elif dataclasses.is_dataclass(value):
            out[name] = _plain(dataclasses.asdict(value))  # type: ignore[arg-type]
        else:
            out[name] = _plain(value)
    return out

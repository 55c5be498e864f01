"""Recipes: a typed, versioned description of one compression run, read from YAML.

A recipe names the model, the data, a seed and an ordered list of stages (``train``, ``dns``,
``retrain``, ``inq``, ``finalize``, ``export``). Settings are layered: the defaults written
here (the seed's Caffe LeNet solver) < the recipe file < ``--set key.path=value`` overrides
(:mod:`nncompress._overrides`). Every value is checked before anything runs; a mistake raises
:class:`RecipeError` naming the path of the bad key (``stages[1].defaults.c_rate``), the
value, what is allowed and, for near-miss keys, the closest valid one. A training stage's
``optimizer``, ``lr`` and ``bias`` are the configs of :mod:`nncompress.train.config`.

Example:
    >>> recipe = parse_recipe({"version": 1, "model": "tiny_mlp", "data": "synthetic",
    ...                        "stages": [{"stage": "train", "iterations": 10}]})
    >>> recipe.stages[0].lr.policy, recipe.stages[0].optimizer.momentum
    ('inv', 0.9)
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from nncompress import _recipe_checks as _checks
from nncompress import _recipe_files as _files
from nncompress._overrides import apply_overrides, default_stage_names, normalized
from nncompress._recipe_epochs import resolve_epochs
from nncompress._recipe_portions import expand_portions
from nncompress._typed import (
    RecipeError,
    build_dataclass,
    check_keys,
    convert,
    join_path,
    require,
    shown,
)
from nncompress.errors import did_you_mean
from nncompress.recipe_specs import DataSpec, ModelSpec, build_data_spec, check_data_kind
from nncompress.recipe_stages import (  # the stage classes live there; names kept here
    _STAGE_CLASSES,
    STAGE_TYPES,
    DNSStage,
    ExportStage,
    FinalizeStage,
    INQStage,
    RetrainStage,
    Stage,
    TrainStage,
    VDStage,
    _TrainingStage,
)
from nncompress.train.config import (
    LR_POLICIES,
    OPTIMIZERS,
    BiasConfig,
    LRConfig,
    OptimizerConfig,
)

__all__ = [
    "LR_POLICIES",
    "OPTIMIZERS",
    "RECIPE_VERSION",
    "STAGE_TYPES",
    "BiasSpec",
    "DNSStage",
    "DataSpec",
    "ExportStage",
    "FinalizeStage",
    "INQStage",
    "LRSpec",
    "ModelSpec",
    "OptimizerSpec",
    "Recipe",
    "RecipeError",
    "RetrainStage",
    "Stage",
    "TrainStage",
    "VDStage",
    "apply_overrides",
    "dump_recipe",
    "find_recipe",
    "load_recipe",
    "packaged_recipes",
    "parse_recipe",
    "recipe_to_dict",
    "resolve_epochs",
]

RECIPE_VERSION = 1

# The training configs' former names, kept for code that imports them from here.
OptimizerSpec = OptimizerConfig
LRSpec = LRConfig
BiasSpec = BiasConfig




@dataclass(frozen=True, kw_only=True)
class Recipe:
    """A whole run: model, data, seed, device, precision and stages, all defaults resolved."""

    version: int
    name: str
    description: str = ""
    model: ModelSpec
    data: DataSpec
    seed: int = 0
    device: str = "cpu"  # auto | cpu | cuda | cuda:N | mps (checked against the machine at run)
    precision: str = "fp32"  # fp32 | bf16 | fp16: autocast of the training forward
    verify_ranks: bool = False  # under torchrun: compare the ranks' state at every evaluation
    stages: tuple[Stage, ...]


# ---------------------------------------------------------------------------------------------
# Building: stages, then the whole recipe.


def _build_stage(value: Any, path: str, seed: int) -> Stage:
    if not isinstance(value, Mapping):
        raise RecipeError(path, f"expected a mapping with a 'stage' key, got {shown(value)}")
    kind = value.get("stage")
    if kind not in STAGE_TYPES:
        hint = did_you_mean(kind, STAGE_TYPES) if isinstance(kind, str) else ""
        problem = "required key missing" if kind is None else f"unknown stage {kind!r}{hint}"
        raise RecipeError(join_path(path, "stage"), f"{problem}; stages: {', '.join(STAGE_TYPES)}")
    cls = _STAGE_CLASSES[kind]
    if kind == "inq":
        value = expand_portions(value, path)  # portions: {step: 0.05}
    if kind in ("dns", "inq", "vd"):
        names = [f.name for f in dataclasses.fields(cls)]
        check_keys(value, names, path, _checks.misplaced_hints(kind))
    stage = build_dataclass(cls, value, path)
    if isinstance(stage, _TrainingStage):
        _checks.check_training(stage, path)
    if isinstance(stage, ExportStage):
        _checks.check_export_file(stage.file, path)
    if isinstance(stage, (DNSStage, VDStage, INQStage)):
        stage = dataclasses.replace(stage,
                                    **_checks.resolve_layer_configs(kind, stage, path, seed))
    return typing.cast(Stage, stage)


def _build_stages(value: Any, seed: int) -> tuple[Stage, ...]:
    require(isinstance(value, list) and len(value) > 0, "stages",
             f"expected a non-empty list of stages, got {shown(value)}")
    names = default_stage_names(value)
    stages = []
    for i, (item, name) in enumerate(zip(value, names)):
        stage = _build_stage(item, join_path("stages", i), seed)
        require(name not in names[:i], join_path(join_path("stages", i), "name"),
                 f"stage name {name!r} is used twice; give each stage its own name")
        stages.append(dataclasses.replace(stage, name=name))
    _checks.check_stage_order(stages)
    return tuple(stages)


_TOP_KEYS = ("version", "name", "description", "model", "data", "seed", "device", "precision",
             "verify_ranks", "stages")


def _build_recipe(raw: Any, default_name: str, check_registries: bool) -> Recipe:
    require(isinstance(raw, Mapping), "", f"a recipe is a mapping of keys, got {shown(raw)}")
    require("version" in raw, "version", f"required key missing; add 'version: {RECIPE_VERSION}'")
    require(raw["version"] == RECIPE_VERSION and not isinstance(raw["version"], bool), "version",
             f"unsupported recipe version {raw['version']!r}; this nncompress reads version "
             f"{RECIPE_VERSION}")
    check_keys(raw, _TOP_KEYS, "")
    values = normalized(raw)
    seed = convert(int, values.get("seed", 0), "seed")
    stages = _build_stages(values.get("stages"), seed)
    data = build_data_spec(values["data"], "data") if "data" in values else None
    rest = {k: v for k, v in values.items() if k not in ("stages", "data")}
    rest.setdefault("name", default_name)
    if data is not None:  # built above with its own checks; a stand-in here
        rest["data"] = {"spec": data.spec}
    recipe: Recipe = build_dataclass(Recipe, {**rest, "stages": [{"stage": "finalize"}]}, "")
    recipe = dataclasses.replace(recipe, data=data or recipe.data, stages=stages)
    _checks.check_run_settings(recipe.device, recipe.precision)
    if check_registries:
        _checks.check_registries(recipe.model.ref, recipe.data.spec)
        check_data_kind(recipe.data, "data")
    return recipe


def parse_recipe(raw: Any, *, source: str = "recipe", overrides: Iterable[str] = (),
                 check_registries: bool = True) -> Recipe:
    """Build a :class:`Recipe` from plain data (as read from YAML) and ``--set`` overrides.

    Args:
        raw: the mapping read from the YAML file.
        source: where it came from, prefixed to error messages.
        overrides: ``key.path=value`` strings applied over ``raw`` (values are YAML).
        check_registries: also check the model and data names against the registries.

    Returns:
        The recipe with every default resolved.

    Raises:
        RecipeError: a key is unknown, a value has the wrong type or is out of range.

    Example:
        >>> r = parse_recipe({"version": 1, "model": "tiny_mlp", "data": "synthetic",
        ...                   "stages": [{"stage": "train", "iterations": 5}]},
        ...                  overrides=["stages.0.iterations=7"])
        >>> r.stages[0].iterations
        7
    """
    try:
        if overrides:
            raw = apply_overrides(raw, overrides)
        return _build_recipe(raw, Path(source).stem if source != "recipe" else "recipe",
                             check_registries)
    except RecipeError as exc:
        raise RecipeError(exc.path, exc.problem, source) from None


def load_recipe(path: str | Path, overrides: Iterable[str] = (), *,
                check_registries: bool = True) -> Recipe:
    """Read, override and check a recipe file.

    Args:
        path: the YAML file, or the name of a recipe shipped with nncompress.
        overrides: ``key.path=value`` strings, applied after the file.
        check_registries: also check the model and data names.

    Returns:
        The resolved recipe.

    Raises:
        RecipeError: the file is missing, not YAML, or not a valid recipe.

    Example:
        >>> load_recipe("demo_lenet300_100").model.ref  # doctest: +SKIP
        'lenet300_100'
    """
    raw = _files.read_yaml(find_recipe(path), str(path))
    return parse_recipe(raw, source=str(path), overrides=overrides,
                        check_registries=check_registries)


def packaged_recipes() -> dict[str, Path]:
    """The recipes shipped inside the package, by name (file name without ``.yaml``)."""
    return _files.shipped()


def find_recipe(path: str | Path) -> Path:
    """Return ``path`` if it is a file, else the shipped recipe of that name.

    Raises:
        RecipeError: neither exists.

    Example:
        >>> find_recipe("demo_lenet300_100").name  # doctest: +SKIP
        'demo_lenet300_100.yaml'
    """
    return _files.locate(path)


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    """The recipe as plain data, every default written out (what ``run`` saves).

    Example:
        >>> r = parse_recipe({"version": 1, "model": "tiny_mlp", "data": "synthetic",
        ...                   "stages": [{"stage": "finalize"}]})
        >>> recipe_to_dict(r)["stages"]
        [{'stage': 'finalize', 'name': 'finalize'}]
    """
    return _files.to_plain_data(recipe, [f.name for f in dataclasses.fields(_TrainingStage)])


def dump_recipe(recipe: Recipe) -> str:
    """The resolved recipe as YAML text that :func:`load_recipe` reads back to an equal recipe.

    Example:
        >>> r = parse_recipe({"version": 1, "model": "tiny_mlp", "data": "synthetic",
        ...                   "stages": [{"stage": "finalize"}]})
        >>> parse_recipe(yaml.safe_load(dump_recipe(r))) == r
        True
    """
    return yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False, default_flow_style=None)

"""Recipes: a typed, versioned description of one compression run, read from YAML.

A recipe names the model, the data, a seed and an ordered list of stages (``train``, ``dns``,
``inq``, ``finalize``, ``export``). Settings are layered: the defaults written here (the seed's
Caffe LeNet solver) < the recipe file < ``--set key.path=value`` overrides. Every value is
checked before anything runs; a mistake raises :class:`RecipeError` naming the path of the bad
key (``stages[1].defaults.c_rate``), the value, what is allowed and, for near-miss keys, the
closest valid one.

Example:
    >>> recipe = parse_recipe({"version": 1, "model": "tiny_mlp", "data": "synthetic",
    ...                        "stages": [{"stage": "train", "iterations": 10}]})
    >>> recipe.stages[0].lr.policy, recipe.stages[0].optimizer.momentum
    ('inv', 0.9)
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from nncompress._typed import (
    RecipeError,
    build_dataclass,
    check_keys,
    convert,
    join_path,
    require,
    shown,
)
from nncompress.errors import ConfigError, did_you_mean

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
    "Stage",
    "TrainStage",
    "apply_overrides",
    "dump_recipe",
    "load_recipe",
    "parse_recipe",
    "recipe_to_dict",
]

RECIPE_VERSION = 1
STAGE_TYPES = ("train", "dns", "inq", "finalize", "export")
OPTIMIZERS = ("sgd", "adam", "adamw", "lars")
LR_POLICIES = ("fixed", "step", "multistep", "exp", "inv", "poly", "sigmoid")

# Options each optimizer takes, with their defaults. SGD and LARS follow the seed's solvers
# (momentum 0.9, weight decay 5e-4); Adam and AdamW use PyTorch's defaults.
_OPTIMIZER_OPTIONS: dict[str, dict[str, Any]] = {
    "sgd": {"momentum": 0.9, "weight_decay": 5e-4, "nesterov": False},
    "adam": {"betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0},
    "adamw": {"betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.01},
    "lars": {"momentum": 0.9, "weight_decay": 5e-4, "local_gw_ratio": 0.001},
}





@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """The model: a registered name or ``package.module:callable``, its kwargs, initial weights."""

    ref: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    weights: str | None = None  # a .safetensors file of the plain model to start from


@dataclass(frozen=True, kw_only=True)
class DataSpec:
    """The data set spec (``mnist``, ``idx:<dir>``, ``synthetic``), input scale, validation size."""

    spec: str
    validation: int = 0  # training examples held out for evaluation during training
    scale: float = 0.00390625  # Caffe's LeNet scales pixels by 1/256, no mean


@dataclass(frozen=True, kw_only=True)
class OptimizerSpec:
    """Optimizer name and options; options left out take the optimizer's default."""

    name: Literal["sgd", "adam", "adamw", "lars"] = "sgd"
    momentum: float | None = None
    weight_decay: float | None = None
    nesterov: bool | None = None
    betas: tuple[float, float] | None = None
    eps: float | None = None
    local_gw_ratio: float | None = None

    def options(self) -> dict[str, Any]:
        """The options of this optimizer, defaults filled in."""
        return {k: getattr(self, k) for k in _OPTIMIZER_OPTIONS[self.name]}


@dataclass(frozen=True, kw_only=True)
class LRSpec:
    """Learning-rate policy (Caffe's), with the seed's warm-up and floor."""

    policy: Literal["fixed", "step", "multistep", "exp", "inv", "poly", "sigmoid"] = "inv"
    base_lr: float = 0.01
    gamma: float = 1e-4
    power: float = 0.75
    stepsize: int = 1
    stepvalues: tuple[int, ...] = ()
    rampup_interval: int = 0
    rampup_lr: float = 0.0
    min_lr: float = 0.0


@dataclass(frozen=True, kw_only=True)
class BiasSpec:
    """Learning-rate and weight-decay multipliers of biases (Caffe nets give biases lr_mult 2)."""

    lr_mult: float = 2.0
    decay_mult: float = 1.0


@dataclass(frozen=True, kw_only=True)
class _StageBase:
    stage: str
    name: str = ""


@dataclass(frozen=True, kw_only=True)
class _TrainingStage(_StageBase):
    batch_size: int = 64
    eval_interval: int = 500  # 0: evaluate only at the end of the stage
    checkpoint_interval: int = 1000  # 0: checkpoint only at stage (and INQ step) ends
    optimizer: OptimizerSpec = field(default_factory=OptimizerSpec)
    lr: LRSpec = field(default_factory=LRSpec)
    bias: BiasSpec = field(default_factory=BiasSpec)


@dataclass(frozen=True, kw_only=True)
class TrainStage(_TrainingStage):
    """Plain training (the reference model)."""

    iterations: int


@dataclass(frozen=True, kw_only=True)
class DNSStage(_TrainingStage):
    """Dynamic Network Surgery: ``defaults`` are DNSConfig fields, ``layers`` overrides."""

    iterations: int
    defaults: dict[str, Any] = field(default_factory=dict)
    layers: dict[str, dict[str, Any] | None] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class INQStage(_TrainingStage):
    """INQ: for each accumulated portion, quantize then retrain ``iterations_per_step``."""

    portions: tuple[float, ...] = (0.5, 0.75, 0.875, 1.0)
    iterations_per_step: int | tuple[int, ...]
    defaults: dict[str, Any] = field(default_factory=dict)
    layers: dict[str, dict[str, Any] | None] = field(default_factory=dict)

    def step_iterations(self) -> tuple[int, ...]:
        """Training iterations after each portion's quantization step."""
        if isinstance(self.iterations_per_step, int):
            return (self.iterations_per_step,) * len(self.portions)
        return self.iterations_per_step


@dataclass(frozen=True, kw_only=True)
class FinalizeStage(_StageBase):
    """Bake masks and quantized values into plain layers."""


@dataclass(frozen=True, kw_only=True)
class ExportStage(_StageBase):
    """Write the compact model file into the run folder."""

    file: str = "model.ncz"  # relative to the run folder
    float_dtype: Literal["float32", "float16"] = "float32"  # of tensors that are not INQ levels


Stage = Union[TrainStage, DNSStage, INQStage, FinalizeStage, ExportStage]  # noqa: UP007
_STAGE_CLASSES: dict[str, type[Any]] = {
    "train": TrainStage, "dns": DNSStage, "inq": INQStage,
    "finalize": FinalizeStage, "export": ExportStage,
}


@dataclass(frozen=True, kw_only=True)
class Recipe:
    """A whole run: model, data, seed and stages, all defaults resolved."""

    version: int
    name: str
    description: str = ""
    model: ModelSpec
    data: DataSpec
    seed: int = 0
    stages: tuple[Stage, ...]


# ---------------------------------------------------------------------------------------------
# Stages and their checks.


def _core_config_class(kind: str) -> type[Any]:
    if kind == "dns":
        from nncompress.dns import DNSConfig

        return DNSConfig
    from nncompress.inq import INQConfig

    return INQConfig


# Keys of the DNS/INQ config that are not per-layer settings in a recipe.
_NOT_LAYER_KEYS = {"dns": frozenset(), "inq": frozenset({"portions"})}


def _layer_fields(kind: str) -> dict[str, dataclasses.Field[Any]]:
    cls = _core_config_class(kind)
    return {f.name: f for f in dataclasses.fields(cls) if f.name not in _NOT_LAYER_KEYS[kind]}


def _partial_config(kind: str, value: Any, path: str) -> dict[str, Any]:
    """Convert a mapping of some DNSConfig/INQConfig fields, checking names and types."""
    if not isinstance(value, Mapping):
        raise RecipeError(path, f"expected a mapping, got {shown(value)}")
    fields = _layer_fields(kind)
    check_keys(value, list(fields), path)
    hints = typing.get_type_hints(_core_config_class(kind))
    return {k: convert(hints[k], v, join_path(path, k)) for k, v in value.items()}


def _instantiate(kind: str, values: Mapping[str, Any], path: str) -> None:
    """Build the core config to check the values; report the first bad key by its path."""
    cls = _core_config_class(kind)
    try:
        cls(**values)
    except ConfigError as exc:
        for key in values:
            try:
                cls(**{key: values[key]})
            except ConfigError:
                raise RecipeError(join_path(path, key), str(exc)) from None
        raise RecipeError(path, str(exc)) from None


def _resolve_layer_configs(kind: str, stage: Any, path: str, seed: int) -> dict[str, Any]:
    """Fill the stage's ``defaults`` (all fields, seed = recipe seed) and check every layer."""
    given = _partial_config(kind, stage.defaults, join_path(path, "defaults"))
    resolved = {n: f.default for n, f in _layer_fields(kind).items()}
    resolved["seed"] = seed
    resolved.update(given)
    extra = {"portions": stage.portions} if kind == "inq" else {}
    _instantiate(kind, {**extra, **resolved}, join_path(path, "defaults"))
    layers: dict[str, dict[str, Any] | None] = {}
    for selector, override in stage.layers.items():
        where = join_path(join_path(path, "layers"), selector)
        if override is None:
            layers[selector] = None
            continue
        layer = _partial_config(kind, override, where)
        _instantiate(kind, {**extra, **resolved, **layer}, where)
        layers[selector] = layer
    return {"defaults": resolved, "layers": layers}


def _resolve_optimizer(spec: OptimizerSpec, path: str) -> OptimizerSpec:
    options = _OPTIMIZER_OPTIONS[spec.name]
    values: dict[str, Any] = {}
    for f in dataclasses.fields(spec):
        given = getattr(spec, f.name)
        if f.name == "name" or given is None:
            continue
        require(f.name in options, join_path(path, f.name),
                 f"not an option of optimizer {spec.name!r}; its options: {', '.join(options)}")
        values[f.name] = given
    filled = {k: values.get(k, default) for k, default in options.items()}
    for key in ("momentum", "weight_decay", "eps", "local_gw_ratio"):
        if key in filled:
            require(filled[key] >= 0, join_path(path, key), f"must be >= 0, got {filled[key]!r}")
    if filled.get("nesterov"):
        require(filled["momentum"] > 0, join_path(path, "nesterov"),
                 "nesterov needs momentum > 0")
    return dataclasses.replace(spec, **filled)


def _check_lr(stage: Any, path: str, max_iter: int) -> None:
    lr = stage.lr
    where = join_path(path, "lr")
    require(lr.base_lr > 0, join_path(where, "base_lr"), f"must be > 0, got {lr.base_lr!r}")
    require(lr.stepsize >= 1, join_path(where, "stepsize"), f"must be >= 1, got {lr.stepsize!r}")
    require(list(lr.stepvalues) == sorted(set(lr.stepvalues)), join_path(where, "stepvalues"),
             f"must increase, got {list(lr.stepvalues)}")
    require(lr.rampup_interval >= 0, join_path(where, "rampup_interval"),
             f"must be >= 0, got {lr.rampup_interval!r}")
    require(lr.min_lr >= 0, join_path(where, "min_lr"), f"must be >= 0, got {lr.min_lr!r}")
    try:
        from nncompress.train.lr import LRSchedule
    except ImportError:  # pragma: no cover - the schedule module ships with the package
        return
    try:
        LRSchedule(policy=lr.policy, base_lr=lr.base_lr, gamma=lr.gamma, power=lr.power,
                   stepsize=lr.stepsize, stepvalues=tuple(lr.stepvalues), max_iter=max(max_iter, 1),
                   rampup_interval=lr.rampup_interval, rampup_lr=lr.rampup_lr, min_lr=lr.min_lr)
    except ConfigError as exc:
        raise RecipeError(where, str(exc)) from None


def _misplaced_hints(kind: str) -> dict[str, str]:
    return {k: " (a per-layer setting: put it under 'defaults')" for k in _layer_fields(kind)}


def _build_stage(value: Any, path: str, seed: int) -> Stage:
    if not isinstance(value, Mapping):
        raise RecipeError(path, f"expected a mapping with a 'stage' key, got {shown(value)}")
    kind = value.get("stage")
    if kind not in STAGE_TYPES:
        hint = did_you_mean(kind, STAGE_TYPES) if isinstance(kind, str) else ""
        problem = "required key missing" if kind is None else f"unknown stage {kind!r}{hint}"
        raise RecipeError(join_path(path, "stage"), f"{problem}; stages: {', '.join(STAGE_TYPES)}")
    cls = _STAGE_CLASSES[kind]
    if kind in ("dns", "inq"):
        names = [f.name for f in dataclasses.fields(cls)]
        check_keys(value, names, path, _misplaced_hints(kind))
    stage = build_dataclass(cls, value, path)
    if isinstance(stage, _TrainingStage):
        stage = _check_training(stage, path)
    if isinstance(stage, ExportStage):
        parts = Path(stage.file).parts
        require(bool(parts) and not Path(stage.file).is_absolute() and ".." not in parts,
                join_path(path, "file"),
                f"{stage.file!r} must be a file name inside the run folder")
    if isinstance(stage, (DNSStage, INQStage)):
        stage = dataclasses.replace(stage, **_resolve_layer_configs(kind, stage, path, seed))
    return typing.cast(Stage, stage)


def _check_training(stage: Any, path: str) -> Any:
    require(stage.batch_size >= 1, join_path(path, "batch_size"),
             f"must be >= 1, got {stage.batch_size!r}")
    for key in ("eval_interval", "checkpoint_interval"):
        require(getattr(stage, key) >= 0, join_path(path, key),
                 f"must be >= 0 (0: only at stage ends), got {getattr(stage, key)!r}")
    if isinstance(stage, INQStage):
        steps = stage.step_iterations()
        where = join_path(path, "iterations_per_step")
        require(len(steps) == len(stage.portions), where,
                 f"has {len(steps)} entries but there are {len(stage.portions)} portions; "
                 "give one count per portion or a single integer")
        require(all(n >= 0 for n in steps), where, f"counts must be >= 0, got {list(steps)}")
        max_iter = max(steps)
    else:
        require(stage.iterations >= 0, join_path(path, "iterations"),
                 f"must be >= 0, got {stage.iterations!r}")
        max_iter = stage.iterations
    _check_lr(stage, path, max_iter)
    optimizer = _resolve_optimizer(stage.optimizer, join_path(path, "optimizer"))
    return dataclasses.replace(stage, optimizer=optimizer)


def _default_stage_names(stages: Sequence[Any]) -> list[str]:
    """``name`` if given, else the stage type, made unique with ``_2``, ``_3``..."""
    names: list[str] = []
    for item in stages:
        explicit = item.get("name") if isinstance(item, Mapping) else None
        if isinstance(explicit, str) and explicit:
            names.append(explicit)
            continue
        base = str(item.get("stage", "stage")) if isinstance(item, Mapping) else "stage"
        name, k = base, 2
        while name in names:
            name, k = f"{base}_{k}", k + 1
        names.append(name)
    return names


def _build_stages(value: Any, seed: int) -> tuple[Stage, ...]:
    require(isinstance(value, list) and len(value) > 0, "stages",
             f"expected a non-empty list of stages, got {shown(value)}")
    names = _default_stage_names(value)
    stages = []
    for i, (item, name) in enumerate(zip(value, names)):
        stage = _build_stage(item, join_path("stages", i), seed)
        require(name not in names[:i], join_path(join_path("stages", i), "name"),
                 f"stage name {name!r} is used twice; give each stage its own name")
        stages.append(dataclasses.replace(stage, name=name))
    return tuple(stages)


# ---------------------------------------------------------------------------------------------
# The whole recipe: shorthands, overrides, registries, YAML in and out.

_TOP_KEYS = ("version", "name", "description", "model", "data", "seed", "stages")


def _normalized(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Expand the shorthands ``model: lenet5`` and ``data: mnist`` into mappings."""
    out = dict(raw)
    if isinstance(out.get("model"), str):
        out["model"] = {"ref": out["model"]}
    if isinstance(out.get("data"), str):
        out["data"] = {"spec": out["data"]}
    return out


def _check_registries(recipe: Recipe) -> None:
    from nncompress.data import list_datasets
    from nncompress.models import list_models

    ref = recipe.model.ref
    if ":" not in ref:
        models = list_models()
        require(ref in models, "model.ref", f"unknown model {ref!r}{did_you_mean(ref, models)}; "
                 f"registered: {', '.join(models)}; or give package.module:callable")
    data_name = recipe.data.spec.split(":", 1)[0]
    datasets = list_datasets()
    require(data_name in datasets, "data.spec",
             f"unknown data set {data_name!r}{did_you_mean(data_name, datasets)}; "
             f"known: {', '.join(datasets)}")


def _build_recipe(raw: Any, default_name: str, check_registries: bool) -> Recipe:
    require(isinstance(raw, Mapping), "", f"a recipe is a mapping of keys, got {shown(raw)}")
    require("version" in raw, "version", f"required key missing; add 'version: {RECIPE_VERSION}'")
    require(raw["version"] == RECIPE_VERSION and not isinstance(raw["version"], bool), "version",
             f"unsupported recipe version {raw['version']!r}; this nncompress reads version "
             f"{RECIPE_VERSION}")
    check_keys(raw, _TOP_KEYS, "")
    values = _normalized(raw)
    seed = convert(int, values.get("seed", 0), "seed")
    stages = _build_stages(values.get("stages"), seed)
    rest = {k: v for k, v in values.items() if k != "stages"}
    rest.setdefault("name", default_name)
    recipe: Recipe = build_dataclass(Recipe, {**rest, "stages": [{"stage": "finalize"}]}, "")
    recipe = dataclasses.replace(recipe, stages=stages)
    require(recipe.data.validation >= 0, "data.validation",
             f"must be >= 0, got {recipe.data.validation!r}")
    require(recipe.data.scale > 0, "data.scale", f"must be > 0, got {recipe.data.scale!r}")
    if check_registries:
        _check_registries(recipe)
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


def _parse_override(text: str) -> tuple[list[str], Any]:
    key, sep, value_text = text.partition("=")
    if not sep or not key.strip():
        raise RecipeError("", f"--set {text!r}: expected key.path=value, e.g. "
                          "stages.0.iterations=100")
    try:
        value = yaml.safe_load(value_text) if value_text.strip() else ""
    except yaml.YAMLError:
        value = value_text  # not YAML: keep the text as a string
    return key.strip().split("."), value


def _stage_index(stages: list[Any], part: str, text: str) -> int:
    if part.lstrip("-").isdigit():
        index = int(part)
        if not 0 <= index < len(stages):
            raise RecipeError("", f"--set {text!r}: no stage {index}; the recipe has "
                              f"{len(stages)} stages (0 to {len(stages) - 1})")
        return index
    names = _default_stage_names(stages)
    if part not in names:
        raise RecipeError("", f"--set {text!r}: no stage named {part!r}"
                          f"{did_you_mean(part, names)}; stages: {', '.join(names)}")
    return names.index(part)


def apply_overrides(raw: Any, overrides: Iterable[str]) -> dict[str, Any]:
    """Return a copy of ``raw`` with each ``key.path=value`` set; stages by index or name.

    Example:
        >>> apply_overrides({"seed": 0, "stages": [{"stage": "train"}]},
        ...                 ["seed=3", "stages.train.iterations=10"])
        {'seed': 3, 'stages': [{'stage': 'train', 'iterations': 10}]}
    """
    import copy

    out = _normalized(copy.deepcopy(dict(raw)) if isinstance(raw, Mapping) else {})
    for text in overrides:
        parts, value = _parse_override(text)
        node: Any = out
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            if isinstance(node, list):
                index = _stage_index(node, part, text)
                if last:
                    node[index] = value
                else:
                    node = node[index]
                continue
            if not isinstance(node, dict):
                where = ".".join(parts[:depth])
                raise RecipeError("", f"--set {text!r}: {where} is {shown(node)}, not a mapping")
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
                if parts[0] in ("model", "data") and depth == 0:
                    node = _normalized({parts[0]: node})[parts[0]]
                    out[parts[0]] = node
    return out


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
    file = find_recipe(path)
    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise RecipeError("", f"not valid YAML{where}: {exc.problem}", str(path)) from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise RecipeError("", f"cannot read the recipe: {exc}", str(path)) from None
    return parse_recipe(raw, source=str(path), overrides=overrides,
                        check_registries=check_registries)


def packaged_recipes() -> dict[str, Path]:
    """The recipes shipped inside the package, by name (file name without ``.yaml``)."""
    folder = Path(__file__).parent / "recipes"
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))}


def find_recipe(path: str | Path) -> Path:
    """Return ``path`` if it is a file, else the shipped recipe of that name.

    Raises:
        RecipeError: neither exists.

    Example:
        >>> find_recipe("demo_lenet300_100").name  # doctest: +SKIP
        'demo_lenet300_100.yaml'
    """
    file = Path(path)
    if file.is_file():
        return file
    shipped = packaged_recipes()
    name = file.name.removesuffix(".yaml")
    if file.parent == Path(".") and name in shipped:
        return shipped[name]
    raise RecipeError("", f"recipe file not found; give a YAML file or one of the shipped "
                      f"recipes: {', '.join(shipped)}{did_you_mean(name, shipped)}", str(path))


def _plain(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    """The recipe as plain data, every default written out (what ``run`` saves).

    Example:
        >>> r = parse_recipe({"version": 1, "model": "tiny_mlp", "data": "synthetic",
        ...                   "stages": [{"stage": "finalize"}]})
        >>> recipe_to_dict(r)["stages"]
        [{'stage': 'finalize', 'name': 'finalize'}]
    """
    out: dict[str, Any] = {}
    for f in dataclasses.fields(recipe):
        value = getattr(recipe, f.name)
        if f.name == "stages":
            out["stages"] = [_stage_to_dict(s) for s in value]
        else:
            is_spec = dataclasses.is_dataclass(value) and not isinstance(value, type)
            out[f.name] = _plain(dataclasses.asdict(value) if is_spec else value)
    return out


def _stage_to_dict(stage: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"stage": stage.stage, "name": stage.name}
    common = [f.name for f in dataclasses.fields(_TrainingStage)]
    # the stage's own keys (iterations, portions, defaults...) first, training settings after
    names = [f.name for f in dataclasses.fields(stage) if f.name not in common]
    names += [n for n in common if hasattr(stage, n)]
    for name in names:
        value = getattr(stage, name)
        if name in out:
            continue
        if name == "optimizer":
            out[name] = {"name": value.name, **_plain(value.options())}
        elif dataclasses.is_dataclass(value):
            out[name] = _plain(dataclasses.asdict(value))  # type: ignore[arg-type]
        else:
            out[name] = _plain(value)
    return out


def dump_recipe(recipe: Recipe) -> str:
    """The resolved recipe as YAML text that :func:`load_recipe` reads back to an equal recipe.

    Example:
        >>> r = parse_recipe({"version": 1, "model": "tiny_mlp", "data": "synthetic",
        ...                   "stages": [{"stage": "finalize"}]})
        >>> parse_recipe(yaml.safe_load(dump_recipe(r))) == r
        True
    """
    return yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False, default_flow_style=None)

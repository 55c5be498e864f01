"""The checks of a recipe beyond types: per-layer DNS/INQ configs, stage settings, registries.

:mod:`nncompress.recipe` converts YAML into its dataclasses (types, unknown keys) and calls
these for what a type cannot say: a stage's ``defaults`` and ``layers`` must make valid
:class:`~nncompress.dns.DNSConfig` / :class:`~nncompress.inq.INQConfig` objects (resolved here,
every field written out, the seed taken from the recipe), counts must be in range, and model
and data names must be registered. Every failure is a :class:`RecipeError` at the key's path.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nncompress._recipe_epochs import check_length
from nncompress._typed import RecipeError, check_keys, convert, join_path, require, shown
from nncompress.dns import DNSConfig
from nncompress.errors import ConfigError, did_you_mean
from nncompress.inq import INQConfig
from nncompress.vd import VDConfig

__all__ = [
    "check_export_file",
    "check_registries",
    "check_run_settings",
    "check_stage_order",
    "check_training",
    "misplaced_hints",
    "resolve_layer_configs",
]

_CORE_CONFIGS: dict[str, type[Any]] = {"dns": DNSConfig, "inq": INQConfig, "vd": VDConfig}
# Keys of the DNS/INQ config that are not per-layer settings in a recipe: an INQ stage's
# ``portions`` is its own key, handed to every layer's INQConfig (the schedule they step by).
_NOT_LAYER_KEYS = {"dns": frozenset(), "inq": frozenset({"portions"}), "vd": frozenset()}


def _layer_fields(kind: str) -> dict[str, dataclasses.Field[Any]]:
    cls = _CORE_CONFIGS[kind]
    return {f.name: f for f in dataclasses.fields(cls) if f.name not in _NOT_LAYER_KEYS[kind]}


def _partial_config(kind: str, value: Any, path: str) -> dict[str, Any]:
    """Convert a mapping of some DNSConfig/INQConfig fields, checking names and types."""
    if not isinstance(value, Mapping):
        raise RecipeError(path, f"expected a mapping, got {shown(value)}")
    fields = _layer_fields(kind)
    check_keys(value, list(fields), path)
    hints = typing.get_type_hints(_CORE_CONFIGS[kind])
    return {k: convert(hints[k], v, join_path(path, k)) for k, v in value.items()}


def _instantiate(kind: str, values: Mapping[str, Any], path: str) -> None:
    """Build the core config to check the values; report the first bad key by its path."""
    cls = _CORE_CONFIGS[kind]
    try:
        cls(**values)
    except ConfigError as exc:
        for key in values:
            try:
                cls(**{key: values[key]})
            except ConfigError:
                raise RecipeError(join_path(path, key), str(exc)) from None
        raise RecipeError(path, str(exc)) from None


def resolve_layer_configs(kind: str, stage: Any, path: str, seed: int) -> dict[str, Any]:
    """Fill a DNS/INQ/VD stage's ``defaults`` (all fields, seed = recipe seed), check each layer.

    Returns:
        The stage's new ``defaults`` and ``layers`` values.
    """
    given = _partial_config(kind, stage.defaults, join_path(path, "defaults"))
    resolved = {n: f.default for n, f in _layer_fields(kind).items()}
    if "seed" in resolved:
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


def misplaced_hints(kind: str) -> dict[str, str]:
    """Hints for per-layer keys written at the stage's top level instead of ``defaults``."""
    return {k: " (a per-layer setting: put it under 'defaults')" for k in _layer_fields(kind)}


def check_training(stage: Any, path: str) -> None:
    """Batch size, intervals and iteration counts of a training stage (train, dns, inq)."""
    require(stage.batch_size >= 1, join_path(path, "batch_size"),
            f"must be >= 1, got {stage.batch_size!r}")
    for key in ("eval_interval", "checkpoint_interval"):
        require(getattr(stage, key) >= 0, join_path(path, key),
                f"must be >= 0 (0: only at stage ends), got {getattr(stage, key)!r}")
    check_length(stage, path)  # iterations or epochs (INQ: per step)


def check_stage_order(stages: Sequence[Any]) -> None:
    """A ``retrain`` stage must come after a ``dns`` or ``vd`` stage, with no ``inq`` or
    ``finalize`` between them (both bake the masks in); ``train``, ``retrain`` and ``export``
    may."""
    last = None  # the latest stage that changed the layers' structure
    for index, stage in enumerate(stages):
        if stage.stage in ("dns", "vd", "inq", "finalize"):
            last = stage
        elif stage.stage == "retrain" and (last is None or last.stage not in ("dns", "vd")):
            why = ("no dns or vd stage comes before it" if last is None else
                   f"it follows {last.stage} stage {last.name!r}, which baked the masks in")
            raise RecipeError(join_path(join_path("stages", index), "stage"),
                              f"a retrain stage trains with the DNS masks frozen, but {why}; "
                              "put it after a dns or vd stage and before inq and finalize (or "
                              "make it a train stage)")


def check_export_file(file: str, path: str) -> None:
    """An export stage's file must stay inside the run folder."""
    parts = Path(file).parts
    require(bool(parts) and not Path(file).is_absolute() and ".." not in parts,
            join_path(path, "file"), f"{file!r} must be a file name inside the run folder")
    require(parts[0] not in ("recipe.yaml", "metrics.jsonl", "model.safetensors",
                             "report.json", "checkpoints", "plots", "teachers"),
            join_path(path, "file"), f"{file!r} would replace the run folder's own "
            f"{parts[0]}; give another name, e.g. 'model.ncz'")
    require(Path(file).suffix == ".ncz", join_path(path, "file"),
            f"{file!r} must end in .ncz, e.g. 'model.ncz'")


def check_registries(model_ref: str, data_spec: str) -> None:
    """The model must be registered (or ``package.module:callable``), the data set known."""
    from nncompress.data import is_stream_spec, list_datasets
    from nncompress.models import list_models

    if ":" not in model_ref:
        models = list_models()
        require(model_ref in models, "model.ref",
                f"unknown model {model_ref!r}{did_you_mean(model_ref, models)}; "
                f"registered: {', '.join(models)}; or give package.module:callable")
    if is_stream_spec(data_spec):  # folder:, lmdb:, package.module:callable
        return
    data_name = data_spec.split(":", 1)[0]
    datasets = list_datasets()
    require(data_name in datasets, "data.spec",
            f"unknown data set {data_name!r}{did_you_mean(data_name, datasets)}; "
            f"known: {', '.join(datasets)}")


def check_run_settings(device: str, precision: str) -> None:
    """The spelling of ``device`` and ``precision`` (the machine is checked when a run starts)."""
    from nncompress.train.device import check_device_name, check_precision_name

    for key, check, value in (("device", check_device_name, device),
                              ("precision", check_precision_name, precision)):
        try:
            check(value)
        except ConfigError as exc:
            raise RecipeError(key, str(exc)) from None

"""A recipe's ``model:`` and ``data:`` sections: their dataclasses, checks and the paths they need.

``data:`` names the data (``spec``) and how it is read: in-memory sets (``mnist``, ``idx:DIR``,
``synthetic``) take ``scale`` and ``validation``; streamed ones (``folder:DIR``,
``lmdb:TRAIN[,TEST]``, ``package.module:callable``) also take ``workers``, ``transform`` (the
fields of :class:`~nncompress.data.TransformConfig`), ``skip_bad_images`` and ``grey``. Every
mistake is a :class:`RecipeError` at its path (``data.transform.crop_size``).

Example:
    >>> build_data_spec({"spec": "folder:/d", "transform": {"kind": "caffe", "crop_size": 8}},
    ...                 "data").transform.crop_size
    8
    >>> build_data_spec({"spec": "folder:/d", "transform": {"kind": "imagenet",
    ...                  "crop_size": 8}}, "data")
    Traceback (most recent call last):
    ...
    nncompress._typed.RecipeError: data.transform.crop_size: crop_size applies to kind \
'caffe', not 'imagenet'; for kind 'imagenet' use size, resize, area, ratio, flip, mean, std
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nncompress._typed import (
    RecipeError,
    build_dataclass,
    check_keys,
    convert,
    join_path,
    require,
    shown,
)
from nncompress.data.transforms import TransformConfig
from nncompress.errors import ConfigError

__all__ = ["DataSpec", "ModelSpec", "build_data_spec", "check_data_kind", "missing_paths",
           "model_num_classes"]

_DEFAULT_SCALE = 0.00390625  # Caffe's LeNet scales pixels by 1/256, no mean
_STREAM_ONLY = ("workers", "transform", "skip_bad_images", "grey")


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """The model: a registered name or ``package.module:callable``, its kwargs, initial weights."""

    ref: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    weights: str | None = None  # a .safetensors or .pth state dict of the plain model


@dataclass(frozen=True, kw_only=True)
class DataSpec:
    """The data set spec and how it is read (see the module docstring)."""

    spec: str
    validation: int = 0  # training examples held out for evaluation during training
    scale: float = _DEFAULT_SCALE  # pixel scale without a transform
    workers: int = 0  # DataLoader worker processes of streamed data (0: the main process)
    transform: TransformConfig | None = None  # streamed data; None: stored size, pixels * scale
    skip_bad_images: bool = False  # skip (and count) unreadable images instead of stopping
    grey: bool = False  # decode image files to one grey channel


def _build_transform(value: Any, path: str) -> TransformConfig:
    if not isinstance(value, Mapping):
        raise RecipeError(path, f"expected a mapping, got {shown(value)}")
    check_keys(value, [f.name for f in dataclasses.fields(TransformConfig)], path)
    hints = typing.get_type_hints(TransformConfig)
    kwargs = {k: convert(hints[k], v, join_path(path, k)) for k, v in value.items()}
    try:
        return TransformConfig(**kwargs)
    except ConfigError as exc:
        problem = str(exc).removeprefix("transform: ")
        kind = {"kind": kwargs["kind"]} if "kind" in kwargs else {}
        for key in kwargs:  # the first field that is wrong on its own names the path
            try:
                TransformConfig(**{**kind, key: kwargs[key]})
            except ConfigError:
                raise RecipeError(join_path(path, key), problem) from None
        raise RecipeError(path, problem) from None


def build_data_spec(value: Any, path: str) -> DataSpec:
    """Convert and check a recipe's ``data:`` mapping.

    Raises:
        RecipeError: a key is unknown, a value has the wrong type or is out of range.
    """
    if not isinstance(value, Mapping):
        raise RecipeError(path, f"expected a mapping, got {shown(value)}")
    given = dict(value)
    transform = given.pop("transform", None)
    spec: DataSpec = build_dataclass(DataSpec, given, path)
    if transform is not None:
        spec = dataclasses.replace(spec, transform=_build_transform(
            transform, join_path(path, "transform")))
    require(spec.validation >= 0, join_path(path, "validation"),
            f"must be >= 0, got {spec.validation!r}")
    require(spec.scale > 0, join_path(path, "scale"), f"must be > 0, got {spec.scale!r}")
    require(spec.workers >= 0, join_path(path, "workers"),
            f"must be an integer >= 0 (0: load in the main process), got {spec.workers!r}")
    require(spec.transform is None or spec.scale == _DEFAULT_SCALE, join_path(path, "scale"),
            "applies without a transform; with one, give the scale in data.transform.scale")
    return spec


def check_data_kind(data: DataSpec, path: str) -> None:
    """Streamed-only options must not be given for an in-memory data set.

    Raises:
        RecipeError: e.g. ``data.workers`` for ``mnist``.
    """
    from nncompress.data import is_stream_spec

    if is_stream_spec(data.spec):
        return
    defaults = DataSpec(spec=data.spec)
    for key in _STREAM_ONLY:
        require(getattr(data, key) == getattr(defaults, key), join_path(path, key),
                f"applies to streamed data (folder:, lmdb:, package.module:callable), not to "
                f"{data.spec!r}, which is held in memory; remove it")


def _stream_paths(spec: str) -> list[tuple[str, Path]]:
    scheme, _, rest = spec.partition(":")
    if scheme == "folder" and rest:
        return [("data.spec (the image folder's train/)", Path(rest) / "train"),
                ("data.spec (the image folder's val/)", Path(rest) / "val")]
    if scheme == "lmdb" and rest:
        names = ("data.spec (training LMDB)", "data.spec (test LMDB)")
        return [(names[i], Path(p)) for i, p in enumerate(rest.split(",")[:2]) if p]
    if scheme == "idx" and rest:
        return [("data.spec (IDX folder)", Path(rest))]
    return []


def missing_paths(model: ModelSpec, data: DataSpec) -> list[str]:
    """What a run of these specs would read that does not exist here, each with its key.

    Only looks for the paths (nothing is read), so a recipe for data on another machine can
    be checked anywhere.

    Example:
        >>> missing_paths(ModelSpec(ref="lenet5"), DataSpec(spec="folder:/nonexistent"))
        ["data.spec (the image folder's train/): /nonexistent/train", \
"data.spec (the image folder's val/): /nonexistent/val"]
    """
    wanted = _stream_paths(data.spec)
    if data.transform is not None and data.transform.mean_file:
        wanted.append(("data.transform.mean_file", Path(data.transform.mean_file)))
    if model.weights:
        wanted.append(("model.weights", Path(model.weights)))
    return [f"{key}: {path}" for key, path in wanted if not path.exists()]


def model_num_classes(ref: str, kwargs: Mapping[str, Any]) -> int | None:
    """The class count a registered model is built with (kwargs, else the factory default).

    Example:
        >>> model_num_classes("resnet18", {}), model_num_classes("lenet5", {"num_classes": 3})
        (1000, 3)
    """
    if "num_classes" in kwargs:
        value = kwargs["num_classes"]
        return value if isinstance(value, int) else None
    from nncompress.models._registry import _MODELS

    factory = _MODELS.get(ref)
    if factory is None:
        return None
    default = inspect.signature(factory).parameters.get("num_classes")
    value = None if default is None else default.default
    return value if isinstance(value, int) and not isinstance(value, bool) else None

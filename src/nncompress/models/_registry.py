"""Model registry: names or ``package.module:callable`` refs -> ``nn.Module``.

:func:`build_model` records ``{"ref": ..., "kwargs": ...}`` on the model it builds (attribute
``nnc_architecture``) so a checkpoint can store it as JSON and rebuild the same model later.
"""

from __future__ import annotations

import importlib
import inspect
import json
import sys
from collections.abc import Callable
from typing import Any

from torch import nn

from nncompress._registry import registrar
from nncompress.errors import ConfigError, did_you_mean

__all__ = [
    "ARCHITECTURE_ATTR",
    "ModelFactory",
    "architecture",
    "build_model",
    "default_input_shape",
    "list_models",
    "locate_ref",
    "register_model",
    "require_ints",
]

ModelFactory = Callable[..., nn.Module]
ARCHITECTURE_ATTR = "nnc_architecture"
_MODELS: dict[str, ModelFactory] = {}


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Register a factory ``fn(**kwargs) -> nn.Module`` under ``name``.

    Args:
        name: the registry name; must not contain ``:`` (that marks a ``module:callable`` ref).

    Returns:
        A decorator that registers the factory and returns it unchanged.

    Raises:
        ConfigError: the name is empty, contains ``:`` or is taken.

    Example:
        >>> @register_model("doc_linear")
        ... def doc_linear(features: int = 4) -> nn.Module:
        ...     return nn.Linear(features, 2)
        >>> build_model("doc_linear", features=3).in_features
        3
    """
    return registrar(_MODELS, "model", name)


def list_models() -> list[str]:
    """Return the registered model names, sorted.

    Example:
        >>> "lenet5" in list_models()
        True
    """
    return sorted(_MODELS)


def build_model(ref: str, **kwargs: Any) -> nn.Module:
    """Build a model from a registered name or a ``package.module:callable`` ref.

    Args:
        ref: e.g. ``"lenet5"`` or ``"torchvision.models:resnet18"``.
        **kwargs: passed to the factory; must be JSON-serialisable so the architecture can be
            stored with a checkpoint.

    Returns:
        The model, with ``architecture(model) == {"ref": ref, "kwargs": kwargs}``.

    Raises:
        ConfigError: unknown name, failed import or attribute lookup, kwargs the factory does
            not accept or that are not JSON-serialisable, or a factory that returns no nn.Module.

    Example:
        >>> model = build_model("lenet300_100", num_classes=5)
        >>> architecture(model)
        {'ref': 'lenet300_100', 'kwargs': {'num_classes': 5}}
    """
    factory = _resolve(ref)
    _check_json(ref, kwargs)
    _check_signature(ref, factory, kwargs)
    model = factory(**kwargs)
    if not isinstance(model, nn.Module):
        raise ConfigError(
            f"model ref {ref!r} returned {type(model).__name__}, not a torch.nn.Module; "
            "the callable must build and return the model"
        )
    setattr(model, ARCHITECTURE_ATTR, {"ref": ref, "kwargs": json.loads(json.dumps(kwargs))})
    return model


def architecture(model: nn.Module) -> dict[str, Any] | None:
    """Return the ``{"ref", "kwargs"}`` recorded by :func:`build_model`, or None.

    Example:
        >>> architecture(nn.Linear(2, 2)) is None
        True
    """
    recorded = getattr(model, ARCHITECTURE_ATTR, None)
    if not isinstance(recorded, dict):
        return None
    return {"ref": recorded["ref"], "kwargs": dict(recorded["kwargs"])}


def default_input_shape(ref: str, kwargs: dict[str, Any]) -> tuple[int, int, int] | None:
    """The ``(in_channels, input_size, input_size)`` a registered model is built for.

    Values come from ``kwargs`` first, then from the factory's own defaults, so a model built
    with its defaults (``resnet18``: 3 x 224 x 224) needs no kwargs to say its input shape.

    Returns:
        The shape of one example, or None when the factory has no such arguments (or ``ref``
        is not registered).

    Example:
        >>> default_input_shape("lenet5", {}), default_input_shape("lenet5", {"input_size": 32})
        ((1, 28, 28), (1, 32, 32))
    """
    factory = _MODELS.get(ref)
    if factory is None:
        return None
    defaults = {name: p.default for name, p in inspect.signature(factory).parameters.items()
                if p.default is not inspect.Parameter.empty}
    values = {**defaults, **kwargs}
    channels, size = values.get("in_channels"), values.get("input_size")
    if isinstance(channels, int) and isinstance(size, int):
        return (channels, size, size)
    return None


def _resolve(ref: str) -> ModelFactory:
    if ":" not in ref:
        if ref in _MODELS:
            return _MODELS[ref]
        raise ConfigError(
            f"unknown model {ref!r}{did_you_mean(ref, _MODELS)}; known: {', '.join(list_models())} "
            "(or give 'package.module:callable')"
        )
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"model ref {ref!r} must look like 'package.module:callable'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"model ref {ref!r}: cannot import {module_name!r}: {exc}") from exc
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise ConfigError(f"model ref {ref!r}: {module_name!r} has no attribute {attr!r}")
        target = getattr(target, part)
    if not callable(target):
        raise ConfigError(f"model ref {ref!r}: {attr!r} is not callable")
    return target  # type: ignore[no-any-return]


def locate_ref(ref: str) -> str | None:
    """Check a ``package.module:callable`` ref and find its module's file, importing nothing.

    Each dotted part of the module is looked up with the import system's finders
    (``sys.meta_path``) in its parent's folder, as ``import`` would, but no module runs: not
    the module itself, and not its parent packages (``importlib.util.find_spec`` of
    ``a.b`` would run ``a/__init__.py``). The callable's name is checked for syntax only.

    Returns:
        The module's file, or None for a module without one (built in, or already imported
        without a file, or below such a module).

    Raises:
        ConfigError: the ref is not ``module.path:name.path`` of identifiers, or its module
            is not found.

    Example:
        >>> locate_ref("json.decoder:JSONDecoder").endswith("decoder.py")
        True
    """
    module_name, _, attr = ref.partition(":")
    names = module_name.split(".")
    if not all(part.isidentifier() for part in [*names, *attr.split(".")]):
        raise ConfigError(f"model ref {ref!r} must look like 'package.module:callable' "
                          "(dotted Python names on both sides of one ':')")
    search: list[str] | None = None
    origin: str | None = None
    for index in range(len(names)):
        full = ".".join(names[:index + 1])
        loaded = sys.modules.get(full)
        spec = getattr(loaded, "__spec__", None) if loaded is not None else None
        if loaded is None:
            if index and search is None:  # below a module that is no package: cannot tell
                return None
            spec = _find_spec(full, search)
            if spec is None:
                raise ConfigError(f"model ref {ref!r}: no module {full!r} on the Python path "
                                  "(looked for without importing); check the name, or "
                                  "install it")
        locations = getattr(spec, "submodule_search_locations", None)
        search = None if locations is None else list(locations)
        origin = spec.origin if spec is not None and spec.has_location else None
    return origin


def _find_spec(name: str, search: list[str] | None) -> Any:
    for finder in sys.meta_path:
        find = getattr(finder, "find_spec", None)
        spec = find(name, search) if find is not None else None
        if spec is not None:
            return spec
    return None


def require_ints(**checks: tuple[Any, int]) -> None:
    """Raise ConfigError unless each ``name=(value, minimum)`` is an int >= minimum.

    Example:
        >>> require_ints(num_classes=(10, 1), input_size=(28, 16))
    """
    for name, (value, low) in checks.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ConfigError(f"{name}={value!r} must be an integer >= {low}")


def _check_json(ref: str, kwargs: dict[str, Any]) -> None:
    try:
        json.dumps(kwargs, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"model {ref!r}: keyword arguments must be JSON-serialisable (numbers, strings, "
            f"lists, dicts) so the architecture can be saved: {exc}"
        ) from exc


def _check_signature(ref: str, factory: ModelFactory, kwargs: dict[str, Any]) -> None:
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # some builtins have no signature; let the call decide
        return
    try:
        signature.bind(**kwargs)
    except TypeError as exc:
        accepted = [p for p in signature.parameters if p not in ("self", "args", "kwargs")]
        unknown = [k for k in kwargs if k not in signature.parameters]
        hint = did_you_mean(unknown[0], accepted) if unknown else ""
        raise ConfigError(
            f"model {ref!r}: {exc}{hint}; accepted keyword arguments: "
            f"{', '.join(accepted) or 'none'}"
        ) from None

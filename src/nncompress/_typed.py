"""Typed conversion of plain YAML data into dataclasses, naming the path of every bad value.

The recipe schema (:mod:`nncompress.recipe`) is plain dataclasses with typed fields; this module
turns parsed YAML into them and raises :class:`RecipeError` with the key path
(``stages[1].defaults.gamma``), the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Union

from nncompress._config import FieldError
from nncompress.errors import ConfigError, did_you_mean

__all__ = ["RecipeError", "build_dataclass", "check_keys", "convert", "convert_scalar", "describe",
           "join_path", "require", "shown"]


class RecipeError(ConfigError):
    """A recipe is malformed; ``path`` names the bad key, e.g. ``stages[1].defaults.gamma``."""

    def __init__(self, path: str, problem: str, source: str = "") -> None:
        self.path, self.problem, self.source = path, problem, source
        where = f"{path}: " if path else ""
        super().__init__(f"{source}: {where}{problem}" if source else f"{where}{problem}")


def join_path(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def describe(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        return " or ".join(describe(a) for a in args if a is not type(None))
    if origin in (tuple, list):
        return f"a list of {describe(args[0])}s" if args else "a list"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        tp, "a value")


def shown(value: Any) -> str:
    kind = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a mapping", type(None): "null"}.get(type(value), "a value")
    text = repr(value)
    return f"{text if len(text) <= 40 else text[:37] + '...'} ({kind})"


_FLOAT_TEXT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def convert(tp: Any, value: Any, path: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    wrong = RecipeError(path, f"expected {describe(tp)}, got {shown(value)}")
    if tp is Any:
        return value
    if origin is Literal:
        if value not in args:
            hint = did_you_mean(value, [str(a) for a in args]) if isinstance(value, str) else ""
            raise RecipeError(path, f"{value!r} is not allowed{hint}; use one of "
                              + ", ".join(str(a) for a in args))
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return convert(option, value, path)
            except RecipeError:
                continue
        raise wrong
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise wrong
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise RecipeError(path, f"expected a list of {len(args)} values, "
                                  f"got {shown(value)}")
            pairs = enumerate(zip(args, value))
            return tuple(convert(a, v, join_path(path, i)) for i, (a, v) in pairs)
        item_type = args[0] if args else Any
        items = [convert(item_type, v, join_path(path, i)) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, Mapping):
            raise wrong
        for key in value:
            if not isinstance(key, str):
                raise RecipeError(path, f"keys must be strings, got {shown(key)}")
        return {k: convert(args[1], v, join_path(path, k)) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return build_dataclass(typing.cast(type, tp), value, path)
    return convert_scalar(tp, value, wrong)


def convert_scalar(tp: Any, value: Any, wrong: RecipeError) -> Any:
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        # YAML 1.1 reads 1e-4 (no dot) as a string; accept it as the number it plainly is.
        if isinstance(value, str) and _FLOAT_TEXT.fullmatch(value.strip()):
            return float(value)
    elif tp is str and isinstance(value, str):
        return value
    raise wrong


def check_keys(value: Mapping[str, Any], allowed: Sequence[str], path: str,
                hint: Mapping[str, str] | None = None) -> None:
    for key in value:
        if not isinstance(key, str):
            raise RecipeError(path, f"keys must be strings, got {shown(key)}")
        if key not in allowed:
            extra = (hint or {}).get(key, "")
            raise RecipeError(join_path(path, key),
                              f"unknown key{did_you_mean(key, allowed)}{extra}; "
                              f"allowed keys: {', '.join(allowed)}")


def build_dataclass(cls: type[Any], value: Any, path: str) -> Any:
    if not isinstance(value, Mapping):
        raise RecipeError(path, f"expected a mapping, got {shown(value)}")
    fields = [f for f in dataclasses.fields(cls) if f.init]
    check_keys(value, [f.name for f in fields], path)
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in fields:
        if f.name in value:
            kwargs[f.name] = convert(hints[f.name], value[f.name], join_path(path, f.name))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise RecipeError(join_path(path, f.name), "required key missing")
    try:
        return cls(**kwargs)
    except RecipeError:
        raise
    except FieldError as exc:  # a config's own check, located at its field
        raise RecipeError(join_path(path, exc.field), exc.problem) from None
    except ConfigError as exc:
        raise RecipeError(path, str(exc)) from None


def require(ok: bool, path: str, problem: str) -> None:
    if not ok:
        raise RecipeError(path, problem)

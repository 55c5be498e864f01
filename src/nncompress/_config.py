"""Machinery shared by the config dataclasses: explicit-field tracking and field validation."""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from nncompress.errors import ConfigError, did_you_mean

__all__ = ["FieldError", "check", "check_real", "config_class", "explicit_fields", "merge"]

T = TypeVar("T")


class FieldError(ConfigError):
    """One field of a config holds a bad value.

    ``field`` and ``problem`` let a recipe report it at the field's path
    (``stages[0].lr.base_lr: must be > 0, got 0.0``).
    """

    def __init__(self, owner: str, field: str, problem: str) -> None:
        self.field, self.problem = field, problem
        super().__init__(f"{owner}.{field}: {problem}")


def config_class(cls: type[T]) -> type[T]:
    """Make ``cls`` (a frozen dataclass) reject unknown fields and remember which were given.

    The set of explicitly given fields lets a per-layer config override only what it names:
    ``DNSConfig(c_rate=0.4)`` for one layer keeps the default config's ``gamma``.
    """
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    init = cls.__init__

    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if len(args) > len(names):
            raise ConfigError(f"{cls.__name__} takes at most {len(names)} positional values, "
                              f"got {len(args)}")
        for key in kwargs:
            if key not in names:
                raise ConfigError(f"{cls.__name__} has no field {key!r}{did_you_mean(key, names)}; "
                                  f"fields are: {', '.join(names)}")
        object.__setattr__(self, "_explicit", frozenset(names[: len(args)]) | frozenset(kwargs))
        init(self, *args, **kwargs)

    cls.__init__ = __init__  # type: ignore[assignment]
    return cls


def explicit_fields(config: object) -> frozenset[str]:
    """Names of the fields given when ``config`` was made."""
    return getattr(config, "_explicit", frozenset())


def merge(default: T, override: T | Mapping[str, Any]) -> T:
    """Return ``default`` with the fields ``override`` names replaced.

    ``override`` is either a config of the same type (its explicitly given fields win)
    or a mapping of field names to values.
    """
    if isinstance(override, Mapping):
        changes = dict(override)
        names = {f.name for f in dataclasses.fields(default)}  # type: ignore[arg-type]
        for key in changes:
            if key not in names:
                raise ConfigError(f"{type(default).__name__} has no field {key!r}"
                                  f"{did_you_mean(key, names)}; fields are: "
                                  f"{', '.join(sorted(names))}")
    elif type(override) is type(default):
        changes = {k: getattr(override, k) for k in explicit_fields(override)}
    else:
        raise ConfigError(f"a per-layer override must be a {type(default).__name__} or a dict "
                          f"of its fields, got {type(override).__name__}")
    merged = dataclasses.replace(default, **changes)  # type: ignore[type-var]
    object.__setattr__(merged, "_explicit", explicit_fields(default) | frozenset(changes))
    return merged


def check(ok: bool, owner: str, name: str, value: object, allowed: str) -> None:
    """Raise a ConfigError naming the field, its value and what is allowed unless ``ok``."""
    if not ok:
        raise ConfigError(f"{owner}.{name}={value!r} is invalid: {allowed}")


def check_real(owner: str, name: str, value: object, test: Callable[[float], bool],
               allowed: str) -> None:
    """Check that ``value`` is a finite real number (not bool) passing ``test``."""
    is_real = isinstance(value, (int, float)) and not isinstance(value, bool)
    check(is_real and math.isfinite(float(value)) and test(float(value)),  # type: ignore[arg-type]
          owner, name, value, allowed)

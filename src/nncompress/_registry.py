"""The registration decorator shared by the data set and model registries."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from nncompress.errors import ConfigError

__all__ = ["registrar"]

T = TypeVar("T")


def registrar(table: dict[str, T], kind: str, name: str) -> Callable[[T], T]:
    """A decorator that stores its argument in ``table`` under ``name`` and returns it.

    ``kind`` names the registry in errors ("dataset", "model"). Names may not contain ``:``,
    which marks a ``module:callable`` or ``scheme:option`` reference.

    Example:
        >>> table: dict[str, int] = {}
        >>> registrar(table, "number", "one")(1), table
        (1, {'one': 1})
    """
    if not name or ":" in name:
        raise ConfigError(f"{kind} name {name!r} must be non-empty and contain no ':'")

    def decorator(item: T) -> T:
        if name in table:
            raise ConfigError(f"{kind} {name!r} is already registered; choose another name")
        table[name] = item
        return item

    return decorator

"""The tree a prototxt file parses into: :class:`Message` and :class:`Field`, with typed access.

Every field remembers the file, line and column it was written at. Typed accessors (``get_int``,
``get_float``, ...) convert values on demand and raise :class:`PrototxtError` with
``file:line:column`` when a value has the wrong kind.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from nncompress.errors import FormatError

__all__ = ["Field", "Ident", "Message", "PrototxtError"]


class PrototxtError(FormatError):
    """A prototxt file is malformed, or one of its values has the wrong kind."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where


class Ident(str):
    """An unquoted word in the text (an enum value such as ``MAX``, or ``true``/``false``)."""

    __slots__ = ()


@dataclass
class Field:
    """One ``name: value`` or ``name { ... }`` entry, with where it was written."""

    name: str
    value: str | int | float | Ident | Message
    where: str


@dataclass
class Message:
    """A parsed message: its fields in file order, and where its text starts."""

    where: str
    fields: list[Field] = field(default_factory=list)

    def all(self, name: str) -> list[Field]:
        """Every occurrence of ``name``, in file order."""
        return [f for f in self.fields if f.name == name]

    def has(self, name: str) -> bool:
        """True when ``name`` occurs at least once."""
        return any(f.name == name for f in self.fields)

    def last(self, name: str) -> Field | None:
        """The last occurrence of ``name`` (protobuf semantics: a repeated scalar set wins)."""
        found = self.all(name)
        return found[-1] if found else None

    def names(self) -> list[str]:
        """The distinct field names, in order of first occurrence."""
        return list(dict.fromkeys(f.name for f in self.fields))

    def message(self, name: str) -> Message | None:
        """The last sub-message ``name``, or None when absent."""
        f = self.last(name)
        if f is None:
            return None
        return _as_message(f)

    def messages(self, name: str) -> list[Message]:
        """All sub-messages ``name``."""
        return [_as_message(f) for f in self.all(name)]

    def get_str(self, name: str, default: str | None = None) -> str | None:
        """The last value of string field ``name``, or ``default``."""
        f = self.last(name)
        return default if f is None else _as_str(f)

    def get_int(self, name: str, default: int | None = None) -> int | None:
        """The last value of integer field ``name``, or ``default``."""
        f = self.last(name)
        return default if f is None else _as_int(f)

    def get_float(self, name: str, default: float | None = None) -> float | None:
        """The last value of numeric field ``name``, or ``default``."""
        f = self.last(name)
        return default if f is None else _as_float(f)

    def get_bool(self, name: str, default: bool | None = None) -> bool | None:
        """The last value of boolean field ``name``, or ``default``."""
        f = self.last(name)
        return default if f is None else _as_bool(f)

    def get_enum(self, name: str, choices: Sequence[str], default: str) -> str:
        """The last value of enum field ``name`` (a word or its number), checked.

        ``choices`` lists the enum's names in the order of their numbers (0, 1, 2, ...).
        """
        f = self.last(name)
        return default if f is None else _as_enum(f, choices)

    def ints(self, name: str) -> list[int]:
        """All values of repeated integer field ``name``."""
        return [_as_int(f) for f in self.all(name)]

    def floats(self, name: str) -> list[float]:
        """All values of repeated numeric field ``name``."""
        return [_as_float(f) for f in self.all(name)]

    def strs(self, name: str) -> list[str]:
        """All values of repeated string field ``name``."""
        return [_as_str(f) for f in self.all(name)]


def _fail(f: Field, expected: str) -> PrototxtError:
    shown = "a message { ... }" if isinstance(f.value, Message) else repr(str(f.value))
    return PrototxtError(f.where, f"field '{f.name}' expects {expected}, got {shown}")


def _as_message(f: Field) -> Message:
    if not isinstance(f.value, Message):
        raise _fail(f, "a message { ... }")
    return f.value


def _as_str(f: Field) -> str:
    if isinstance(f.value, (Message, int, float)):
        raise _fail(f, "a quoted string")
    return str(f.value)


def _as_int(f: Field) -> int:
    if isinstance(f.value, bool) or not isinstance(f.value, int):
        raise _fail(f, "an integer")
    return f.value


def _as_float(f: Field) -> float:
    v = f.value
    if isinstance(v, Ident) and v.lower() in ("inf", "infinity", "-inf", "-infinity", "nan"):
        return float(v)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or isinstance(v, Ident):
        raise _fail(f, "a number")
    return float(v)


def _as_bool(f: Field) -> bool:
    v = f.value
    if isinstance(v, Ident) and v in ("true", "True", "t"):
        return True
    if isinstance(v, Ident) and v in ("false", "False", "f"):
        return False
    if isinstance(v, int) and not isinstance(v, bool) and v in (0, 1):
        return bool(v)
    raise _fail(f, "true or false")


def _as_enum(f: Field, choices: Sequence[str]) -> str:
    v = f.value
    if isinstance(v, Ident) and v in choices:
        return str(v)
    if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < len(choices):
        return choices[v]
    raise _fail(f, "one of " + ", ".join(choices))

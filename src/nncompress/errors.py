"""Exception types. Every user mistake raises a subclass of :class:`NNCompressError`."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["ConfigError", "FormatError", "NNCompressError", "NonFiniteError", "did_you_mean"]


class NNCompressError(Exception):
    """Base class of the errors nncompress raises for bad input or bad state."""


class ConfigError(NNCompressError, ValueError):
    """A configuration value, recipe key or layer selection is invalid."""


class NonFiniteError(NNCompressError, ValueError):
    """A layer holds NaN or infinite values where statistics or levels are computed."""


class FormatError(NNCompressError, ValueError):
    """A file is truncated, corrupted, of an unknown version or not ours."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return `` (did you mean 'x'?)`` for the closest choice, or an empty string.

    Example:
        >>> did_you_mean("c_rat", ["c_rate", "gamma"])
        " (did you mean 'c_rate'?)"
    """
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""

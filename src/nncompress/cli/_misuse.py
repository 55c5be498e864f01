"""Checks of command-line values that name files or data, made before any work starts.

Each refuses a mistake with one :class:`~nncompress.errors.ConfigError` that names the value
and the fix, so the command exits 1 without a traceback and writes nothing.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
from torch import nn

from nncompress.errors import ConfigError

__all__ = ["check_output_file", "checked", "writing"]

# The files a run folder is made of: an export must not replace one of them.
_RUN_FILES = ("recipe.yaml", "metrics.jsonl", "model.safetensors", "report.json", "checkpoints")


def _inside_run_folder(path: Path) -> tuple[str, Path] | None:
    """The run-folder file ``path`` would replace and that run folder, or None."""
    parent = path.parent
    if path.name in _RUN_FILES and (parent / "recipe.yaml").is_file():
        return path.name, parent
    if parent.name == "checkpoints" and (parent.parent / "recipe.yaml").is_file():
        return "checkpoints/", parent.parent
    return None


def check_output_file(path: Path, flag: str, suffixes: tuple[str, ...]) -> None:
    """Refuse an output file name that cannot or must not be written.

    Args:
        path: the file the command will write.
        flag: the option that gave it, for the message (``-o``).
        suffixes: the accepted suffixes (``(".ncz",)``).

    Raises:
        ConfigError: an unknown suffix, a directory, a file of a run folder, or a place that
            cannot be written.

    Example:
        >>> check_output_file(Path("model.ncz"), "-o", (".ncz",))
    """
    shown, example = f"{flag} {str(path)!r}", "model" + suffixes[0]
    own = _inside_run_folder(path)
    if own is not None:
        raise ConfigError(f"{shown} would replace the run folder's own {own[0]}; give another "
                          f"name, e.g. {str(own[1] / example)!r}")
    if path.is_dir():
        raise ConfigError(f"{shown} is a directory; give a file name, e.g. "
                          f"{str(path / example)!r}")
    if path.suffix.lower() not in suffixes:
        raise ConfigError(f"{shown}: unknown suffix {path.suffix or '(none)'!r}; use "
                          f"{' or '.join(suffixes)}, e.g. {str(path.with_suffix(suffixes[0]))!r}")
    existing = path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{shown}: cannot write in {str(existing)!r}; choose a folder you "
                          "can write to")


@contextlib.contextmanager
def writing(path: Path, flag: str) -> Iterator[None]:
    """Turn an operating-system error while writing ``path`` into a :class:`ConfigError`.

    Example:
        >>> with writing(Path("x.ncz"), "-o"):
        ...     pass
    """
    try:
        yield
    except OSError as exc:
        raise ConfigError(f"{flag} {str(path)!r}: cannot write it ({exc.strerror or exc}); "
                          "choose another file") from None


def checked(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], spec: str,
            split: str) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``batches`` as they are, once the model took one example of the first; none is an error.

    Raises:
        ConfigError: no examples at all, or examples of a shape the model does not take.

    Example:
        >>> batches = [(torch.zeros(4, 3), torch.zeros(4, dtype=torch.long))]
        >>> len(list(checked(nn.Linear(3, 2), batches, "synthetic", "test")))
        1
    """
    examples = 0
    for inputs, labels in batches:
        if examples == 0 and len(inputs):
            _check_shape(model, inputs[:1], spec)
        examples += len(inputs)
        yield inputs, labels
    if examples == 0:
        raise ConfigError(f"--data {spec!r}: the {split} split holds no examples; give data "
                          "with examples (an image folder needs a subfolder per class), or "
                          "another --split")


@torch.no_grad()
def _check_shape(model: nn.Module, example: torch.Tensor, spec: str) -> None:
    was_training = model.training
    model.eval()
    try:
        model(example)
    except (RuntimeError, ValueError, IndexError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"--data {spec!r}: the model does not take its examples of shape "
                          f"{tuple(example.shape[1:])} ({first}); give data of the shape the "
                          "model was trained on") from None
    finally:
        model.train(was_training)

"""Resuming a run folder after a kill or a crash: which files to trust and what to clean up.

On ``--resume`` the run folder is read as its writer left it, or as a kill, a full disk or a
hand edit left it:

- ``recipe.yaml`` must parse to a mapping (a damaged one is an error naming the file);
- stale ``.*.tmp`` files of interrupted atomic writes are removed (in the folder and in
  ``checkpoints/``);
- ``metrics.jsonl``: a last line cut short (no newline, not JSON) is dropped; any other line
  that is not a JSON object is an error naming the line;
- checkpoints are tried newest first: a damaged one (checksum, header, a directory in its
  place) or one that fails :func:`~nncompress.checkpoint_checks.check_checkpoint` is named
  on stderr and the one before is used, the rejected files renamed to ``<name>.damaged``;
  when none is usable the run stops with an error listing them (it never silently starts
  over) and renames nothing.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from nncompress.checkpoint_checks import check_checkpoint
from nncompress.errors import FormatError, NonFiniteError
from nncompress.recipe import Recipe
from nncompress.train.checkpoint import Checkpoint, list_checkpoints, load_checkpoint

__all__ = [
    "read_rows",
    "read_saved_recipe",
    "remove_stale_temporaries",
    "resume_checkpoint",
    "with_last_checkpoint",
]


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` file ([] when it does not exist).

    A last line without its newline that does not parse (a write cut short) is dropped.

    Raises:
        FormatError: another line is not a JSON object (naming the file and line).

    Example:
        >>> read_rows(Path("/nonexistent/metrics.jsonl"))
        []
    """
    if not path.is_file():
        return []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FormatError(f"{path}: cannot read the metrics ({exc})") from None
    lines = text.split("\n")
    rows: list[dict[str, Any]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            if number == len(lines):  # the last line, without its newline: cut short
                break
            raise FormatError(f"{path}: line {number} is not JSON; the metrics file was "
                              "edited or damaged (restore it, or start a new run)") from None
        if not isinstance(row, dict):
            raise FormatError(f"{path}: line {number} is not a JSON object")
        rows.append(row)
    return rows


def read_saved_recipe(path: Path) -> dict[str, Any]:
    """The mapping stored in a run folder's ``recipe.yaml``.

    Raises:
        FormatError: the file does not parse to a mapping.

    Example:
        >>> # previous = read_saved_recipe(Path("runs/demo/recipe.yaml"))
    """
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise FormatError(f"{path}: the run's recipe is damaged ({first}); restore it, or "
                          "start a new run with another --out") from None
    if not isinstance(data, dict):
        raise FormatError(f"{path}: the run's recipe is damaged (not a mapping); restore it, "
                          "or start a new run with another --out")
    return data


def remove_stale_temporaries(out: Path) -> list[Path]:
    """Delete the ``.*.tmp`` files interrupted atomic writes left in ``out`` and its checkpoints.

    Returns:
        The files removed.
    """
    removed = []
    for folder in (out, out / "checkpoints"):
        if folder.is_dir():
            for tmp in folder.glob(".*.tmp"):
                if tmp.is_file():
                    tmp.unlink(missing_ok=True)
                    removed.append(tmp)
    return removed


def _note(text: str) -> None:
    print(f"nncompress: {text}", file=sys.stderr, flush=True)


def resume_checkpoint(out: Path, recipe: Recipe) -> Checkpoint | None:
    """The newest usable checkpoint of the run folder ``out`` (None when it has none).

    Raises:
        FormatError: checkpoints exist but none is usable, or ``metrics.jsonl`` holds fewer
            records than the checkpoint was written after.

    Example:
        >>> # checkpoint = resume_checkpoint(Path("runs/demo"), recipe)
    """
    rejected: list[tuple[Path, str]] = []
    for path in reversed(list_checkpoints(out / "checkpoints")):
        try:
            checkpoint = load_checkpoint(path)
            check_checkpoint(recipe, checkpoint)
        except FormatError as exc:
            rejected.append((path, str(exc)))
            continue
        for bad, reason in rejected:  # kept for inspection, out of the way of the run
            aside = bad.with_name(bad.name + ".damaged")
            if bad.is_file() and not aside.exists():
                bad.rename(aside)
                reason += f"; moved to {aside.name}"
            _note(f"checkpoint not usable: {reason}")
        if rejected:
            _note(f"resuming from the one before: {path.name}")
        if not checkpoint.verified:
            _note(f"{path} has no checksum (written by an older nncompress): its contents are "
                  "checked but cannot be verified")
        _check_rows(out / "metrics.jsonl", checkpoint)
        return checkpoint
    if rejected:
        raise FormatError(f"{out}: no usable checkpoint to resume from ("
                          + "; ".join(reason for _, reason in rejected)
                          + "); start a new run with another --out")
    return None


def _check_rows(metrics: Path, checkpoint: Checkpoint) -> None:
    have, need = len(read_rows(metrics)), checkpoint.metadata["metrics_rows"]
    if have < need:
        raise FormatError(f"{metrics}: holds {have} records, but {checkpoint.path.name} was "
                          f"written after {need}; the file was cut or edited (restore it, or "
                          "start a new run with another --out)")


def with_last_checkpoint(error: NonFiniteError, out: Path) -> NonFiniteError:
    """``error`` (a diverged run) completed with the run's newest checkpoint, to go back to.

    Example:
        >>> str(with_last_checkpoint(NonFiniteError("loss nan"), Path("/nonexistent")))
        'loss nan; the run stopped before its first checkpoint'
    """
    saved = list_checkpoints(out / "checkpoints")
    if not saved:
        return NonFiniteError(f"{error}; the run stopped before its first checkpoint")
    return NonFiniteError(f"{error}; the run stopped, its last checkpoint is {saved[-1]} "
                          "(nncompress eval and export take it)")

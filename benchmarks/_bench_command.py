"""The exact ``nncompress run`` command that reproduces a run folder.

A run folder's ``recipe.yaml`` is the resolved recipe it ran. When the shipped recipe of the
same name resolves to it, the command is ``nncompress run recipes/NAME.yaml``; when it differs
by values that ``--set`` can give, those are added (and checked: the shipped recipe with them
must resolve to the run's recipe); otherwise the command runs the folder's own ``recipe.yaml``.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import yaml

import nncompress
from nncompress.errors import NNCompressError
from nncompress.recipe import parse_recipe, recipe_to_dict

__all__ = ["overrides_between", "reproduce_command", "resolved"]

_IGNORED = ("device", "precision", "verify_ranks")  # may change on resume; not part of a result
_LENGTHS = (("iterations", "epochs"), ("iterations_per_step", "epochs_per_step"))


def resolved(raw: dict[str, Any], overrides: list[str] | None = None) -> dict[str, Any]:
    """A recipe as plain data with every default written out, for comparing two recipes.

    Iteration counts that a run resolved from ``epochs`` are dropped (the shipped recipe
    has only the epochs), as are the device, the precision and the rank checks.

    Raises:
        NNCompressError: the data is not a valid recipe.

    Example:
        >>> r = resolved({"version": 1, "model": "tiny_mlp", "data": "synthetic",
        ...               "stages": [{"stage": "finalize"}]})
        >>> r["stages"], "device" in r
        ([{'stage': 'finalize', 'name': 'finalize'}], False)
    """
    out = recipe_to_dict(parse_recipe(raw, overrides=overrides or (), check_registries=False))
    for key in _IGNORED:
        out.pop(key, None)
    for stage in out["stages"]:
        for count, epochs in _LENGTHS:
            if stage.get(epochs) is not None:
                stage[count] = None
    return out


def _flow(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    return text.removesuffix("...").strip()


def _diff(a: Any, b: Any, path: str, out: list[str]) -> bool:
    """Append ``path=value`` for each value of ``b`` that differs from ``a``; False if a key
    of ``a`` is missing from ``b`` (``--set`` cannot remove one)."""
    if isinstance(a, dict) and isinstance(b, dict):
        if any(key not in b for key in a):
            return False
        return all(_diff(a.get(key), b[key], f"{path}.{key}" if path else str(key), out)
                   for key in b)
    if a != b:
        out.append(f"{path}={_flow(b)}")
    return True


def overrides_between(shipped: dict[str, Any], run: dict[str, Any]) -> list[str] | None:
    """The ``--set`` values that turn one resolved recipe into the other, or ``None``.

    Stages are matched by position and addressed by name; a different number or order of
    stages gives ``None``.

    Example:
        >>> a = {"seed": 0, "stages": [{"stage": "train", "name": "ref", "iterations": 5}]}
        >>> overrides_between(a, {"seed": 1, "stages": [{**a["stages"][0], "iterations": 7}]})
        ['seed=1', 'stages.ref.iterations=7']
    """
    old, new = shipped.get("stages", []), run.get("stages", [])
    if [(s["stage"], s["name"]) for s in old] != [(s["stage"], s["name"]) for s in new]:
        return None
    out: list[str] = []
    if not _diff({k: v for k, v in shipped.items() if k != "stages"},
                 {k: v for k, v in run.items() if k != "stages"}, "", out):
        return None
    for before, after in zip(old, new):
        if not _diff(before, after, f"stages.{after['name']}", out):
            return None
    return out


def _shipped_path(file: Path) -> str:
    root = Path(nncompress.__file__).parent / "recipes"
    if not file.resolve().is_relative_to(root.resolve()):
        return shlex.quote(str(file))
    return f"recipes/{file.resolve().relative_to(root.resolve()).as_posix()}"


def reproduce_command(folder: str, saved: dict[str, Any], shipped: Path | None
                      ) -> tuple[str, str]:
    """The command that reproduces the run in ``folder`` and a note on where it comes from.

    Args:
        folder: the run folder, as the command's ``--out``.
        saved: the data of the folder's ``recipe.yaml``.
        shipped: the shipped recipe file of the same name, if any.

    Returns:
        ``(command, note)``; the note is empty when the shipped recipe is the run's recipe.

    Example:
        >>> # reproduce_command("runs/x", saved, None)[0]
        >>> # 'nncompress run runs/x/recipe.yaml --out runs/x --threads 1'
    """
    tail = f"--out {shlex.quote(folder)} --threads 1"
    own = f"nncompress run {shlex.quote(str(Path(folder) / 'recipe.yaml'))} {tail}"
    if shipped is None:
        return own, "not a shipped recipe: the run's own recipe.yaml"
    try:
        shipped_raw = yaml.safe_load(shipped.read_text(encoding="utf-8"))
        target = resolved(saved)
        sets = overrides_between(resolved(shipped_raw), target)
        if sets is None or resolved(shipped_raw, sets) != target:
            return own, f"differs from {_shipped_path(shipped)}: the run's own recipe.yaml"
    except (NNCompressError, yaml.YAMLError, OSError) as exc:
        return own, f"the run's own recipe.yaml ({exc})"
    sets_text = "".join(f" --set {shlex.quote(s)}" for s in sets)
    note = "shipped recipe with --set values" if sets else ""
    return f"nncompress run {_shipped_path(shipped)}{sets_text} {tail}", note


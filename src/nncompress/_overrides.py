"""``--set key.path=value`` overrides of raw recipe data, and the shorthands they share with it.

Overrides apply to the data read from YAML, before it is checked, so an overridden value gets
the same checks and error paths as one written in the file. Values are YAML (``=1e-4``,
``={name: adamw}``); stages are addressed by index or by name (``stages.dns.iterations``).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import yaml

from nncompress._typed import RecipeError, shown
from nncompress.errors import did_you_mean

__all__ = ["apply_overrides", "default_stage_names", "normalized"]


def normalized(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Expand the shorthands ``model: lenet5`` and ``data: mnist`` into mappings."""
    out = dict(raw)
    if isinstance(out.get("model"), str):
        out["model"] = {"ref": out["model"]}
    if isinstance(out.get("data"), str):
        out["data"] = {"spec": out["data"]}
    return out


def default_stage_names(stages: Sequence[Any]) -> list[str]:
    """``name`` if given, else the stage type, made unique with ``_2``, ``_3``..."""
    names: list[str] = []
    for item in stages:
        explicit = item.get("name") if isinstance(item, Mapping) else None
        if isinstance(explicit, str) and explicit:
            names.append(explicit)
            continue
        base = str(item.get("stage", "stage")) if isinstance(item, Mapping) else "stage"
        name, k = base, 2
        while name in names:
            name, k = f"{base}_{k}", k + 1
        names.append(name)
    return names


def _parse_override(text: str) -> tuple[list[str], Any]:
    key, sep, value_text = text.partition("=")
    if not sep or not key.strip():
        raise RecipeError("", f"--set {text!r}: expected key.path=value, e.g. "
                          "stages.0.iterations=100")
    try:
        value = yaml.safe_load(value_text) if value_text.strip() else ""
    except yaml.YAMLError:
        value = value_text  # not YAML: keep the text as a string
    return key.strip().split("."), value


def _stage_index(stages: list[Any], part: str, text: str) -> int:
    if part.lstrip("-").isdigit():
        index = int(part)
        if not 0 <= index < len(stages):
            raise RecipeError("", f"--set {text!r}: no stage {index}; the recipe has "
                              f"{len(stages)} stages (0 to {len(stages) - 1})")
        return index
    names = default_stage_names(stages)
    if part not in names:
        raise RecipeError("", f"--set {text!r}: no stage named {part!r}"
                          f"{did_you_mean(part, names)}; stages: {', '.join(names)}")
    return names.index(part)


def apply_overrides(raw: Any, overrides: Iterable[str]) -> dict[str, Any]:
    """Return a copy of ``raw`` with each ``key.path=value`` set; stages by index or name.

    Raises:
        RecipeError: an override is not ``key.path=value`` or names no stage or mapping.

    Example:
        >>> apply_overrides({"seed": 0, "stages": [{"stage": "train"}]},
        ...                 ["seed=3", "stages.train.iterations=10"])
        {'seed': 3, 'stages': [{'stage': 'train', 'iterations': 10}]}
    """
    out = normalized(copy.deepcopy(dict(raw)) if isinstance(raw, Mapping) else {})
    for text in overrides:
        parts, value = _parse_override(text)
        node: Any = out
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            if isinstance(node, list):
                index = _stage_index(node, part, text)
                if last:
                    node[index] = value
                else:
                    node = node[index]
                continue
            if not isinstance(node, dict):
                where = ".".join(parts[:depth])
                raise RecipeError("", f"--set {text!r}: {where} is {shown(node)}, not a mapping")
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
                if parts[0] in ("model", "data") and depth == 0:
                    node = normalized({parts[0]: node})[parts[0]]
                    out[parts[0]] = node
    return out

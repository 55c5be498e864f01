"""Run folders: open or resume one, write and read its weights, load the model it holds.

A run folder (written by :func:`nncompress.pipeline.run_recipe`) holds::

    recipe.yaml          the resolved recipe (every default written out)
    metrics.jsonl        one JSON object per evaluation
    checkpoints/         s<stage>-<name>-p<step>-i<iteration>[-end].safetensors
    model.safetensors    the final plain weights (masks and quantized values baked in)
    report.json          per-layer statistics, totals, test loss/accuracy/error
    model.ncz            the compact file (when the recipe has an ``export`` stage)
    teachers/            s<stage>-<name>.safetensors: a stage's model that a later stage
                         distills from (:mod:`nncompress._teachers`)

``model.safetensors`` carries an ``nncompress`` metadata header (format, version, the model's
architecture ref and kwargs, the recipe name), so it loads without its folder. Loading a model
(:func:`load_run_model`) needs none of the training code: ``eval`` and ``export`` use it alone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nncompress._io import atomic_write_bytes, atomic_write_text
from nncompress.checkpoint_checks import check_checkpoint
from nncompress.errors import ConfigError, FormatError, NNCompressError
from nncompress.export._schema import is_builtin
from nncompress.models import build_model
from nncompress.recipe import Recipe, dump_recipe, load_recipe, parse_recipe, recipe_to_dict
from nncompress.run_resume import (
    read_rows,
    read_saved_recipe,
    remove_stale_temporaries,
    resume_checkpoint,
)
from nncompress.stages import restore_checkpoint
from nncompress.train.checkpoint import Checkpoint, list_checkpoints, load_checkpoint

__all__ = [
    "WEIGHTS_FORMAT",
    "load_run_model",
    "load_weights",
    "newest_checkpoint",
    "open_run_folder",
    "read_rows",
    "save_weights",
]

WEIGHTS_FORMAT = "nncompress-weights"


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load plain weights into ``model`` from ``.safetensors`` (or ``.pt`` with weights only).

    Keys may carry the ``model.`` prefix of nncompress checkpoints.

    Raises:
        ConfigError: the file is missing, unreadable or does not fit the model.

    Example:
        >>> # load_weights(net, "runs/x/model.safetensors")
    """
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"weights file {str(file)!r} not found")
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(file))
        else:
            state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # damaged or foreign files raise many types
        raise ConfigError(f"cannot read weights from {str(file)!r}: {exc}") from None
    if not isinstance(state, dict):
        raise ConfigError(f"{str(file)!r} holds no state dict")
    if any(k.startswith("model.") for k in state):
        state = {k[6:]: v for k, v in state.items() if k.startswith("model.")}
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ConfigError(f"weights in {str(file)!r} do not fit the model: missing "
                          f"{result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}")


def save_weights(path: Path, model: nn.Module, recipe: Recipe) -> None:
    """Write ``model``'s plain weights with the header that rebuilds it (atomically)."""
    from safetensors.torch import save

    header = json.dumps({"format": WEIGHTS_FORMAT, "version": 1,
                         "architecture": {"ref": recipe.model.ref,
                                          "kwargs": recipe.model.kwargs},
                         "recipe": recipe.name})
    tensors = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(path, save(tensors, metadata={"nncompress": header}))


def newest_checkpoint(folder: Path) -> Checkpoint | None:
    """The newest readable checkpoint in ``folder``; damaged ones fall back to the one before.

    Only the file is checked (checksum, header); a run resumes through
    :func:`~nncompress.run_resume.resume_checkpoint`, which also checks it against the recipe.
    """
    for path in reversed(list_checkpoints(folder)):
        try:
            return load_checkpoint(path)
        except FormatError:
            continue
    return None


def _first_difference(a: Any, b: Any, path: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in [*a, *(k for k in b if k not in a)]:
            found = _first_difference(a.get(key), b.get(key), f"{path}.{key}" if path else key)
            if found:
                return found
        return ""
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            found = _first_difference(x, y, f"{path}[{i}]")
            if found:
                return found
        return ""
    return path or "(top)" if a != b else ""


def _resumable_part(recipe: dict[str, Any]) -> dict[str, Any]:
    """What must not change on resume: all but device, precision and the rank checks."""
    return {**recipe, "device": None, "precision": None, "verify_ranks": None}


def _resolved(saved: dict[str, Any]) -> dict[str, Any]:
    """A saved recipe with the defaults of newer fields filled in (older run folders lack them)."""
    try:
        return recipe_to_dict(parse_recipe(saved, check_registries=False))
    except NNCompressError:
        return saved  # compared as written; the first difference is reported


def open_run_folder(out: Path, recipe: Recipe, resume: bool) -> Checkpoint | None:
    """Start a new run folder (writing ``recipe.yaml``) or check and resume an existing one.

    Returns:
        The checkpoint to resume from, or None for a fresh start.

    Raises:
        ConfigError: ``out`` is a file or cannot be written, is not empty (without
            ``resume``), or was started with a different recipe.
        FormatError: on resume, its ``recipe.yaml``, ``metrics.jsonl`` or every checkpoint
            is damaged (see :mod:`nncompress.run_resume`).

    Example:
        >>> # checkpoint = open_run_folder(Path("runs/demo"), recipe, resume=False)
    """
    saved = out / "recipe.yaml"
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {str(out)!r} is a file, not a folder; give a folder for the "
                          "run (new, or an earlier run's with --resume)")
    if resume and saved.exists():
        where = _first_difference(_resumable_part(_resolved(read_saved_recipe(saved))),
                                  _resumable_part(recipe_to_dict(recipe)))
        if where:
            raise ConfigError(f"{out}: the run was started with a different recipe (first "
                              f"difference at {where}); resume with the same recipe and --set "
                              "values, or start a new run with another --out")
        remove_stale_temporaries(out)
        return resume_checkpoint(out, recipe)
    if out.exists() and any(out.iterdir()):
        hint = "use --resume to continue it" if saved.is_file() else "it is not a run folder"
        raise ConfigError(f"output folder {str(out)!r} is not empty ({hint}); "
                          "or choose another --out")
    try:
        (out / "checkpoints").mkdir(parents=True, exist_ok=True)
        atomic_write_text(saved, dump_recipe(recipe))
    except OSError as exc:
        raise ConfigError(f"cannot write the run folder {str(out)!r} ({exc.strerror or exc}); "
                          "choose another --out") from None
    return None


def _read_header(path: Path) -> dict[str, Any]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            text = (handle.metadata() or {}).get("nncompress")
    except Exception as exc:  # damaged or foreign files raise many types
        raise FormatError(f"{path}: not a readable safetensors file ({exc})") from None
    if text is None:
        raise FormatError(f"{path}: no nncompress header; give a run folder, its "
                          "model.safetensors, a checkpoint or a .ncz file")
    try:
        header = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise FormatError(f"{path}: its nncompress header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise FormatError(f"{path}: its nncompress header is not a JSON object")
    if header.get("format") == WEIGHTS_FORMAT:
        arch = header.get("architecture")
        if not isinstance(arch, dict) or not isinstance(arch.get("ref"), str) \
                or not isinstance(arch.get("kwargs", {}), dict):
            raise FormatError(f"{path}: its nncompress header lacks the architecture (an "
                              "object with a ref string and kwargs); re-export the weights "
                              "from their run folder")
    return header


def _run_recipe_of(folder: Path) -> Recipe | None:
    file = folder / "recipe.yaml"
    return load_recipe(file, check_registries=False) if file.is_file() else None


def _checked_ref(ref: str, allow_import: bool) -> str:
    if not is_builtin(ref) and not allow_import:
        raise ConfigError(f"the model {ref!r} is built by importing Python code; pass "
                          "--allow-import if you trust this file")
    return ref


def _bounded_build(ref: str, kwargs: dict[str, Any], file: Path, allow_import: bool) -> nn.Module:
    """Build the model a weights file or checkpoint holds, within memory its size accounts for.

    The file stores every tensor of the model, so building it needs no more than the file's
    size (twice, plus 16 MiB of slack); numbers in ``kwargs`` are bounded before anything runs.
    """
    from nncompress.export._guard import FLOOR_BYTES, AllocationGuard
    from nncompress.export._schema import check_arch

    check_arch({"ref": ref, "kwargs": kwargs}, str(file))
    guard = AllocationGuard(FLOOR_BYTES + 2 * file.stat().st_size, str(file))
    try:
        with guard:
            return build_model(_checked_ref(ref, allow_import), **kwargs)
    except Exception:
        if guard.refused is not None:  # said plainly, even where the builder wrapped it
            raise guard.refused from None
        raise


def _resolve_target(target: Path) -> Path:
    """The file to load for ``target``: a folder's final weights, else its newest checkpoint."""
    if target.is_dir():
        if (target / "model.safetensors").is_file():
            return target / "model.safetensors"
        newest = list_checkpoints(target / "checkpoints")
        if _run_recipe_of(target) is None or not newest:
            raise ConfigError(f"{str(target)!r} is not a run folder with weights or checkpoints")
        target = newest[-1]
    if not target.is_file():
        raise ConfigError(f"{str(target)!r} does not exist")
    if target.suffix not in (".ncz", ".safetensors"):
        raise ConfigError(f"{str(target)!r} is neither a run folder nor a .safetensors or .ncz "
                          "file")
    return target


def load_run_model(path: str | Path, *, allow_import: bool = False) -> tuple[nn.Module,
                                                                              Recipe | None]:
    """Load the model of a run folder, a ``model.safetensors``, a checkpoint or a ``.ncz``.

    A run folder gives its final weights, or its newest checkpoint while it is unfinished.
    A checkpoint is rebuilt by replaying its run's stages up to where it was saved.

    Args:
        path: the run folder or file.
        allow_import: allow ``package.module:callable`` model refs (they run code).

    Returns:
        The model (in eval mode) and the run's recipe when one is found.

    Raises:
        NNCompressError: nothing loadable at ``path``.

    Example:
        >>> # model, recipe = load_run_model("runs/demo")
    """
    target = _resolve_target(Path(path))
    if target.suffix == ".ncz":
        from nncompress.export import load_compact

        return load_compact(target, allow_import=allow_import).eval(), None
    header = _read_header(target)
    if header.get("format") == WEIGHTS_FORMAT:
        arch = header["architecture"]
        model = _bounded_build(arch["ref"], arch.get("kwargs", {}), target, allow_import)
        load_weights(model, target)
        return model.eval(), _run_recipe_of(target.parent)
    recipe = _run_recipe_of(target.parent.parent)
    if recipe is None:
        raise ConfigError(f"{target}: a checkpoint is loaded with its run folder's recipe.yaml, "
                          f"which is not at {target.parent.parent / 'recipe.yaml'}")
    model = _bounded_build(recipe.model.ref, recipe.model.kwargs, target, allow_import)
    checkpoint = load_checkpoint(target)
    check_checkpoint(recipe, checkpoint)
    model, _ = restore_checkpoint(recipe, model, checkpoint)
    return model.eval(), recipe

"""What a checkpoint must hold before a run resumes from it, checked against the run's recipe.

A checkpoint's checksum (:mod:`nncompress.train.checkpoint`) catches damage; these checks
catch a file that is intact but wrong, as a tool or a person could write it with the checksum
recomputed. Each failure is one :class:`~nncompress.errors.FormatError` naming the file and
the field:

- ``position``: a stage index of the recipe, an INQ step index within the stage's portions
  (0 elsewhere), an iteration within the stage (or step), ``done`` only at the stage's end;
- ``train_state``: present exactly when the checkpoint is in the middle of a training run,
  with the same iteration and a count of summed losses no larger than it;
- ``metrics_rows``, ``world_size``, ``rng.torch``: integers in range, a generator state of
  the right size;
- model tensors: masks ``0``/``1`` (as stored bytes), no NaN or infinity outside the INQ
  ``*_fixed`` buffers; each INQ fixed entry ``0`` or ``±2^e`` with ``e`` in the layer's level
  range, the weight equal to it, and as many free entries as the layer's portion leaves.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from nncompress.errors import FormatError
from nncompress.inq import MAX_MANTISSA_BITS, fix_count
from nncompress.recipe import DNSStage, INQStage, Recipe, TrainStage, VDStage
from nncompress.train.checkpoint import Checkpoint

__all__ = ["check_checkpoint", "check_model_state", "stage_length"]


def _fail(file: Path, field: str, problem: str) -> FormatError:
    return FormatError(f"{file}: {field} {problem}")


def _int(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def stage_length(recipe: Recipe, stage: int, step: int) -> int:
    """Iterations of stage ``stage`` (of its INQ step ``step``); 0 for stages that do not train.

    Example:
        >>> # stage_length(recipe, 2, 1)
    """
    current = recipe.stages[stage]
    if isinstance(current, INQStage):
        return current.step_iterations()[step]
    if isinstance(current, (TrainStage, DNSStage, VDStage)):
        return current.total_iterations()
    return 0


def _check_position(recipe: Recipe, meta: dict[str, Any], file: Path) -> bool:
    """Check ``position``; True when the checkpoint is in the middle of a training run."""
    pos = meta.get("position")
    if not isinstance(pos, dict) or set(pos) != {"stage", "step", "iteration", "done"}:
        raise _fail(file, "position", f"{pos!r} must be an object with stage, step, "
                    "iteration and done")
    stage, step = pos["stage"], pos["step"]
    if not _int(stage, 0, len(recipe.stages) - 1):
        raise _fail(file, "position.stage", f"{stage!r} is not a stage index of the recipe "
                    f"(0 to {len(recipe.stages) - 1})")
    current = recipe.stages[stage]
    steps = len(current.portions) if isinstance(current, INQStage) else 1
    if not _int(step, 0, steps - 1):
        raise _fail(file, "position.step", f"{step!r} is out of range for stage "
                    f"{current.name!r} (0 to {steps - 1})")
    length = stage_length(recipe, stage, step)
    if not _int(pos["iteration"], 0, length):
        raise _fail(file, "position.iteration", f"{pos['iteration']!r} is beyond stage "
                    f"{current.name!r} (0 to {length})")
    done = pos["done"]
    if not isinstance(done, bool):
        raise _fail(file, "position.done", f"{done!r} must be true or false")
    at_end = step == steps - 1 and pos["iteration"] == length
    if done and not at_end:
        raise _fail(file, "position.done", f"is true at iteration {pos['iteration']} of step "
                    f"{step}, before the end of stage {current.name!r}")
    if not done and not isinstance(current, (TrainStage, DNSStage, VDStage, INQStage)):
        raise _fail(file, "position.done", f"is false for stage {current.name!r}, which does "
                    "not train")
    return not done and pos["iteration"] < length


def _check_train_state(meta: dict[str, Any], mid_training: bool, file: Path) -> None:
    state = meta.get("train_state")
    if not mid_training:
        if state is not None:
            raise _fail(file, "train_state", "is present at a stage or step end")
        return
    if not isinstance(state, dict) or set(state) != {"iteration", "loss_sum", "loss_count"}:
        raise _fail(file, "train_state", f"{state!r} must be an object with iteration, "
                    "loss_sum and loss_count (the run stopped mid-stage)")
    iteration = meta["position"]["iteration"]
    if state["iteration"] != iteration or isinstance(state["iteration"], bool):
        raise _fail(file, "train_state.iteration", f"{state['iteration']!r} is not the "
                    f"position's iteration {iteration}")
    if not _int(state["loss_count"], 0, iteration):
        raise _fail(file, "train_state.loss_count", f"{state['loss_count']!r} is not an "
                    f"integer from 0 to {iteration}")
    loss_sum = state["loss_sum"]
    if not isinstance(loss_sum, (int, float)) or isinstance(loss_sum, bool) or \
            not math.isfinite(loss_sum):
        raise _fail(file, "train_state.loss_sum", f"{loss_sum!r} is not a finite number")


def _check_fixed(state: dict[str, torch.Tensor], key: str, file: Path) -> None:
    prefix = key.removesuffix("_fixed")
    layer = prefix.rpartition(".")[0]
    fixed, weight = state[key], state.get(prefix)
    levels = state.get(f"{prefix}_levels")
    portion = state.get(f"{layer}.inq_portion" if layer else "inq_portion")
    if weight is None or levels is None or portion is None or levels.shape not in ((3,), (4,)) \
            or weight.shape != fixed.shape or levels.dtype != torch.int64:
        raise _fail(file, key, "comes without its weight, levels and portion of the same shape")
    n1, n2, count, *extra = (int(v) for v in levels)
    bits = extra[0] if extra else 0
    if not (-200 <= n2 <= n1 <= 200 and 0 <= count <= fixed.numel()
            and (not extra or 1 <= bits <= MAX_MANTISSA_BITS)):
        raise _fail(file, f"{prefix}_levels", f"{levels.tolist()} are not a level range "
                    "n1 >= n2, a count of entries and (optional) mantissa bits from 1 to "
                    f"{MAX_MANTISSA_BITS}")
    values = fixed.double()
    chosen = ~torch.isnan(values)
    magnitude = values[chosen].abs()
    mantissa, exponent = torch.frexp(magnitude)  # (1 + j/2^M) 2^e: mantissa * 2^(M+1) whole
    steps = mantissa * (1 << (bits + 1))
    level = (steps == steps.floor()) & (exponent - 1 >= n2) & (exponent - 1 <= n1)
    if not bool(((magnitude == 0) | level).all()):
        grid = "+-2^e" if not bits else f"+-(1 + j/{1 << bits}) 2^e"
        raise _fail(file, key, f"holds a value that is not 0 or {grid} with {n2} <= e <= {n1}")
    if not torch.equal(weight.double()[chosen], values[chosen]):
        raise _fail(file, prefix, "differs from its INQ fixed values at fixed entries")
    free = int((~chosen).sum())
    expected = count - fix_count(float(portion), count)
    if free != expected:
        raise _fail(file, key, f"has {free} free entries; its portion {float(portion):g} of "
                    f"{count} leaves {expected}")


def check_model_state(checkpoint: Checkpoint) -> None:
    """Check the model tensors of ``checkpoint``: masks, finite values, INQ fixed entries.

    Raises:
        FormatError: naming the file and the tensor.

    Example:
        >>> # check_model_state(load_checkpoint("runs/x/checkpoints/s01-dns-...safetensors"))
    """
    file, state = checkpoint.path, checkpoint.model_state
    for key, value in state.items():
        if key.endswith("_mask"):
            if value.dtype != torch.bool or (
                    value.numel() and int(value.view(torch.uint8).max()) > 1):
                raise _fail(file, key, "is not a mask of 0/1 (bool) entries")
        elif key.endswith("_fixed"):
            _check_fixed(state, key, file)
        elif value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise _fail(file, key, "holds NaN or infinite values")


def check_checkpoint(recipe: Recipe, checkpoint: Checkpoint) -> None:
    """Check ``checkpoint``'s metadata against ``recipe`` and its model tensors.

    Raises:
        FormatError: the first field or tensor out of bounds, naming the file.

    Example:
        >>> # check_checkpoint(recipe, load_checkpoint(path))
    """
    file, meta = checkpoint.path, checkpoint.metadata
    mid_training = _check_position(recipe, meta, file)
    _check_train_state(meta, mid_training, file)
    if not _int(meta.get("metrics_rows"), 0, 2**40):
        raise _fail(file, "metrics_rows", f"{meta.get('metrics_rows')!r} is not a count")
    if not _int(meta.get("world_size", 1), 1, 2**20):
        raise _fail(file, "world_size", f"{meta.get('world_size')!r} is not a process count")
    rng = checkpoint.rng_state.get("torch")
    current = torch.get_rng_state()
    if rng is None or rng.dtype != current.dtype or rng.shape != current.shape:
        raise _fail(file, "rng.torch", "is missing or not a generator state")
    check_model_state(checkpoint)

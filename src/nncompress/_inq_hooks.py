"""INQ's fixed entries across optimizer steps: a parameter registry and two global hooks.

Design
    INQ fixes entries of a weight at powers of two; training then updates only the free
    ones. The prepared layer keeps the user's Parameter (so an optimizer made before
    :func:`nncompress.prepare` keeps working) and the fixed values in a bfloat16 buffer (NaN
    marks a free entry). Two process-wide hooks, registered once with
    ``torch.optim.optimizer.register_optimizer_step_{pre,post}_hook`` when the first layer
    enters INQ, do the rest for every ``torch.optim.Optimizer``:

    * before ``step()``, the gradients of fixed entries are zeroed;
    * after ``step()``, the fixed entries are written back to their exact values, which
      undoes what weight decay, momentum or Adam's moments did to them.

    The hooks find the INQ blobs of the stepping optimizer through ``_PARAMS``, a dict from
    ``id(parameter)`` to a weak reference to its layer and the blob name. Without any INQ
    layer in the process the hooks return at once; with one, a step costs one dict lookup
    per parameter of the optimizer. A layer that is deep-copied or given a new Parameter is
    tracked again at its first training forward (:meth:`CompressedLayer.effective`), before
    its first step; entries whose layer is gone are dropped when met.

Limits
    * Anything that reads gradients *between* ``backward()`` and ``optimizer.step()`` sees the
      gradients of fixed entries too: ``torch.nn.utils.clip_grad_norm_`` would count them in the
      norm. Call :func:`nncompress.mask_fixed_gradients` first (the Caffe solver of
      ``nncompress caffe train`` does, in Caffe's order).
    * Only steps of ``torch.optim.Optimizer`` subclasses run the hooks; a hand-written update
      (``p -= lr * p.grad``) must call :func:`nncompress.mask_fixed_gradients` before and
      restore the values itself (:meth:`CompressedLayer.restore_fixed`) after.
    * A step that is skipped (e.g. by ``GradScaler`` on an overflow) changes nothing, so the
      hooks need not run.

Why not an autograd function
    Masking the gradient inside the forward (``weight -> GradMask.apply(weight, keep)``) would
    let gradient clipping see masked gradients, but it does not keep fixed entries fixed:
    weight decay and momentum still move them, so a post-step write-back is needed in either
    design. With the hooks, the gradient mask happens at that same point and shares the 0/1
    tensor and the values of the write-back (both from one conversion of the 2-byte state per
    step, not per forward, which matters with gradient accumulation), and a prepared INQ
    layer's forward and backward stay those of the plain layer. Speed does not decide it either
    way:
    ``benchmarks/inq_hooks_cost.py`` times a LeNet-5 training step (batch 64, SGD with
    momentum and weight decay, after a 50% INQ step, one CPU thread) both ways. Four runs on a
    shared 2-core machine gave the autograd variant 0.93x, 1.07x, 1.04x and 0.97x the hooks'
    step time (0.91x to 1.01x when its mask and values are cached as float32, 8 more bytes per
    entry), and the plain model's step 0.85x to 1.05x: all within the machine's noise.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

import torch
from torch.optim.optimizer import (
    register_optimizer_step_post_hook,
    register_optimizer_step_pre_hook,
)

if TYPE_CHECKING:
    from nncompress.layers import CompressedLayer

__all__ = ["free_as_ones", "is_tracked", "mask_gradient", "restore_values", "split_fixed",
           "track", "untrack"]

# id(parameter) -> (layer, blob) for every INQ blob; read by the optimizer hooks below.
_PARAMS: dict[int, tuple[weakref.ref[CompressedLayer], str]] = {}
_installed = False


def track(layer: CompressedLayer, blob: str) -> None:
    """Let the optimizer hooks find ``blob``'s Parameter of ``layer``; installs the hooks."""
    _PARAMS[id(layer.param(blob))] = (weakref.ref(layer), blob)
    _install()


def is_tracked(layer: CompressedLayer, blob: str) -> bool:
    """True when the hooks find ``layer``'s current Parameter of ``blob``."""
    entry = _PARAMS.get(id(layer.param(blob)))
    return entry is not None and entry[0]() is layer and entry[1] == blob


def untrack(param: torch.Tensor) -> None:
    """Forget ``param`` (its layer leaves INQ)."""
    _PARAMS.pop(id(param), None)


def free_as_ones(value: torch.Tensor) -> torch.Tensor:
    """1 where ``value`` is NaN (a free entry), 0 elsewhere, computed in place in ``value``.

    Plain arithmetic on NaN (``NaN * 0`` is NaN, a finite ``v * 0`` is 0) replaces ``isnan``
    and ``where``, which run element by element on the CPU; these ops are vectorised.
    """
    return value.mul_(0).nan_to_num_(nan=1.0)


def split_fixed(fixed: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """``(keep, values)`` in ``dtype`` from one conversion of ``fixed``.

    ``keep`` is 1 on free entries and 0 on fixed ones; ``values`` holds the fixed values and 0
    on free entries, so that ``param * keep + values`` restores a parameter.
    """
    values = fixed.to(dtype, copy=True)
    keep = torch.mul(values, 0).nan_to_num_(nan=1.0)  # as free_as_ones, on a new tensor
    return keep, values.nan_to_num_(nan=0.0)


def mask_gradient(param: torch.Tensor,
                  fixed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Zero ``param.grad`` where ``fixed`` holds a value; return :func:`split_fixed`'s pair."""
    if param.grad is None:
        return None
    split = split_fixed(fixed, param.dtype)
    param.grad.mul_(split[0])
    return split


def restore_values(param: torch.Tensor, fixed: torch.Tensor,
                   split: tuple[torch.Tensor, torch.Tensor] | None) -> None:
    """Write the fixed values into ``param``; ``split`` (from :func:`mask_gradient`) if known."""
    keep, values = split if split is not None else split_fixed(fixed, param.dtype)
    with torch.no_grad():  # param = param * keep + values, in one pass
        torch.addcmul(values, param, keep, out=param)


def _blobs(optimizer: torch.optim.Optimizer) -> list[tuple[CompressedLayer, str]]:
    found = []
    for group in optimizer.param_groups:
        for param in group["params"]:
            entry = _PARAMS.get(id(param))
            if entry is not None:
                layer = entry[0]()
                if layer is None:  # the layer is gone; its id may be reused
                    del _PARAMS[id(param)]
                elif layer._parameters.get(entry[1]) is param:
                    found.append((layer, entry[1]))
    return found


def _before_step(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    """Global optimizer pre-step hook: zero the gradients of fixed INQ entries."""
    if _PARAMS:
        for layer, blob in _blobs(optimizer):
            layer.mask_fixed_gradient(blob, keep_for_restore=True)


def _after_step(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    """Global optimizer post-step hook: put fixed INQ entries back to their exact values."""
    if _PARAMS:
        for layer, blob in _blobs(optimizer):
            layer.restore_fixed(blob)


def _install() -> None:
    global _installed
    if not _installed:
        register_optimizer_step_pre_hook(_before_step)
        register_optimizer_step_post_hook(_after_step)
        _installed = True

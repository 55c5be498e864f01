"""Cost of keeping INQ's fixed entries fixed: optimizer hooks vs an autograd gradient mask.

A LeNet-5 training step (batch 64, SGD momentum 0.9, weight decay 5e-4, after a 50% INQ step
on all four layers), in one process, interleaved so machine drift hits every variant alike:

  * ``plain``: the unprepared model (the baseline of the ratios);
  * ``hooks``: nncompress as shipped: global optimizer pre/post-step hooks mask the gradients
    of fixed entries and write their values back (``nncompress._inq_hooks``);
  * ``autograd``: the alternative: each forward passes the weight through an
    ``autograd.Function`` whose backward multiplies the gradient by a 0/1 mask of the free
    entries, derived from the same 2-byte state as the hooks; a per-optimizer post-step hook
    still writes the fixed values back, since weight decay and momentum move them otherwise;
  * ``autograd-cached``: the same with the mask and values cached as float32 tensors (8 more
    bytes of state per entry).

Run: .venv/bin/python benchmarks/inq_hooks_cost.py [--steps 100] [--rounds 5] [--threads 1]

Measured on a 2-core machine shared with other jobs (the step times moved from 35 to 267 ms
between runs with the load), as ratios to ``hooks`` (plain / autograd / autograd-cached):
  --steps 50 --rounds 5:   1.054 / 0.928 / 0.907
  --steps 10 --rounds 25:  0.963 / 1.066 / 1.012
  --steps 10 --rounds 25:  0.847 / 1.037 / 0.941
  --steps 10 --rounds 30:  1.001 / 0.969 / 0.966
No variant is consistently faster; the spread is the machine's.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from core_speed import make_step, make_variant, time_steps
from nncompress import _inq_hooks
from nncompress.layers import CompressedLayer
from nncompress.prepare import compressed_layers


class _GradMask(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, weight: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(keep)
        return weight.view_as(weight)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (keep,) = ctx.saved_tensors
        return grad * keep, None


def _autograd_variant(cache: bool) -> tuple[nn.Module,
                                            Callable[[torch.optim.Optimizer], None]]:
    """The INQ model with the hooks switched off for it and the gradient mask in autograd.

    With ``cache``, the 0/1 mask and the fixed values are kept as float32 tensors (8 more
    bytes per entry); without, they are derived from the 2-byte state at every use, as the
    hooks do.
    """
    model = make_variant("inq")
    cached: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    uncached: list[tuple[torch.Tensor, torch.Tensor]] = []
    for _, layer in compressed_layers(model):
        keeps = {}
        for blob in ("weight", "bias"):
            fixed = layer.fixed_values(blob)
            assert fixed is not None
            _inq_hooks.untrack(layer.param(blob))
            keep = _inq_hooks.free_as_ones(fixed.float())
            keeps[blob] = keep
            cached.append((layer.param(blob), keep, fixed.float().nan_to_num(nan=0.0)))
            uncached.append((layer.param(blob), fixed))
        layer.effective = _masked_effective(layer, keeps if cache else None)  # type: ignore[method-assign]

    def attach(optimizer: torch.optim.Optimizer) -> None:
        def restore(*_: Any) -> None:
            if not cache:
                for param, fixed in uncached:
                    _inq_hooks.restore_values(param, fixed, None)
                return
            with torch.no_grad():
                for param, keep, value in cached:
                    torch.addcmul(value, param, keep, out=param)

        optimizer.register_step_post_hook(restore)

    return model, attach


def _masked_effective(layer: CompressedLayer, keeps: dict[str, torch.Tensor] | None
                      ) -> Callable[[], tuple[torch.Tensor, torch.Tensor | None]]:
    def keep(blob: str) -> torch.Tensor:
        if keeps is not None:
            return keeps[blob]
        fixed = layer.fixed_values(blob)
        assert fixed is not None
        return _inq_hooks.free_as_ones(fixed.float())

    def effective() -> tuple[torch.Tensor, torch.Tensor | None]:
        weight = _GradMask.apply(layer.param("weight"), keep("weight"))
        bias = _GradMask.apply(layer.param("bias"), keep("bias"))
        return weight, bias

    return effective


def _fixed_kept(model: nn.Module) -> bool:
    """True when every fixed entry still holds its fixed value (both variants must keep it)."""
    for _, layer in compressed_layers(model):
        for blob in ("weight", "bias"):
            fixed, free = layer.fixed_values(blob), layer.free_entries(blob)
            assert fixed is not None and free is not None
            if not torch.equal(layer.param(blob).detach()[~free], fixed[~free].float()):
                return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    hooks_model = make_variant("inq")
    cached_model, cached_attach = _autograd_variant(cache=True)
    derived_model, derived_attach = _autograd_variant(cache=False)
    variants = {"plain": make_step(make_variant("plain")), "hooks": make_step(hooks_model),
                "autograd": make_step(derived_model, derived_attach),
                "autograd-cached": make_step(cached_model, cached_attach)}
    ms = time_steps(variants, args.steps, args.rounds)
    assert all(_fixed_kept(m) for m in (hooks_model, cached_model, derived_model))
    print(f"LeNet-5 training step, batch 64, {args.threads} thread(s), median of "
          f"{args.rounds} x {args.steps} steps")
    for name, value in ms.items():
        print(f"  {name:15s} {value:7.3f} ms  {value / ms['plain']:.3f}x plain  "
              f"{value / ms['hooks']:.3f}x hooks")


if __name__ == "__main__":
    main()

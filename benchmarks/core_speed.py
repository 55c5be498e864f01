"""Speed and memory of the core on LeNet-5 (CPU), as ratios against the plain model.

Measures, in one process and interleaved so machine drift hits every variant alike:
  * a training step (forward, backward, SGD momentum step) at batch 64 of LeNet-5 plain,
    under DNS (all four layers, Guo's parameters), under INQ (after a 50% step), and with
    torch.nn.utils.prune.l1_unstructured on the same four layers;
  * one INQ quantize step on a 4,194,304-weight layer (2048 x 2048, magnitude strategy);
  * the bytes of compression state per weight for DNS and INQ.

Run: .venv/bin/python benchmarks/core_speed.py [--steps 200] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn
from torch.nn.utils import prune

import nncompress as nnc
from nncompress.models import build_model

LAYERS = ("conv1", "conv2", "ip1", "ip2")
GUO = {"conv1": {"c_rate": 2.0}, "conv2": {"c_rate": 3.0}, "ip1": {"c_rate": 4.0},
       "ip2": {"c_rate": 2.5}}


def make_variant(kind: str) -> nn.Module:
    torch.manual_seed(0)
    model = build_model("lenet5")
    if kind == "dns":
        nnc.prepare(model, nnc.DNSConfig(gamma=1e-4, power=1.0, iter_stop=14000, alpha_low=0.9,
                                         alpha_high=1.1), layers=GUO)
    elif kind == "inq":
        nnc.prepare(model, nnc.INQConfig(num_quantum_values=7))
        nnc.quantize_step(model, 0.5)
    elif kind == "torch-prune":
        for name in LAYERS:
            prune.l1_unstructured(model.get_submodule(name), "weight", amount=0.9)
    return model


def make_step(model: nn.Module,
              attach: Callable[[torch.optim.Optimizer], None] | None = None) -> Callable[[], None]:
    """One SGD training step on a fixed batch; ``attach`` sees the optimizer first."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    if attach is not None:
        attach(optimizer)
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(64, 1, 28, 28, generator=gen)
    y = torch.randint(0, 10, (64,), generator=gen)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

    return step


def time_steps(variants: dict[str, Callable[[], None]], steps: int,
               rounds: int) -> dict[str, float]:
    """Median milliseconds per step; variants run in turn, ``rounds`` times ``steps`` each."""
    samples: dict[str, list[float]] = {k: [] for k in variants}
    for step in variants.values():
        for _ in range(10):
            step()
    for _ in range(rounds):
        for name, step in variants.items():
            start = time.perf_counter()
            for _ in range(steps):
                step()
            samples[name].append(1000 * (time.perf_counter() - start) / steps)
    return {k: statistics.median(v) for k, v in samples.items()}


def inq_step_seconds(repeats: int = 3) -> float:
    times = []
    for seed in range(repeats):
        torch.manual_seed(seed)
        layer = nnc.prepare(nn.Linear(2048, 2048, bias=False), nnc.INQConfig())
        start = time.perf_counter()
        nnc.quantize_step(layer, 0.5)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def state_bytes(kind: str) -> tuple[float, float]:
    """Bytes of compression state: per entry (masks, fixed values) and per layer (scalars)."""
    model = make_variant(kind)
    layers = [m for _, m in nnc.compressed_layers(model)]
    entries = sum(p.numel() for m in layers for p in m.parameters(recurse=False))
    per_entry = per_layer = 0
    for m in layers:
        for name, b in m.named_buffers(recurse=False):
            size = b.numel() * b.element_size()
            if name.endswith(("_mask", "_fixed")):
                per_entry += size
            else:
                per_layer += size
    return per_entry / entries, per_layer / len(layers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100, help="steps per timing round")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    kinds = ("plain", "dns", "inq", "torch-prune")
    ms = time_steps({k: make_step(make_variant(k)) for k in kinds}, args.steps, args.rounds)
    print(f"LeNet-5, batch 64, {args.threads} threads, median of {args.rounds} rounds "
          f"x {args.steps} steps")
    print(f"{'variant':<14}{'ms/step':>10}{'vs plain':>10}")
    for kind in kinds:
        print(f"{kind:<14}{ms[kind]:>10.2f}{ms[kind] / ms['plain']:>10.3f}")
    print(f"dns / torch-prune: {ms['dns'] / ms['torch-prune']:.3f}   "
          f"inq / torch-prune: {ms['inq'] / ms['torch-prune']:.3f}")
    print(f"INQ quantize step on a 4,194,304-weight layer: {inq_step_seconds():.3f} s")
    for kind in ("dns", "inq"):
        per_entry, per_layer = state_bytes(kind)
        print(f"compression state, {kind}: {per_entry:.3f} bytes per weight "
              f"+ {per_layer:.0f} bytes per layer")


if __name__ == "__main__":
    main()

"""Sparse inference runtime against dense PyTorch, on CPU, in one run.

For each model: latency of the dense model (``load_compact``) and of ``nncompress.runtime.load``
per batch size (interleaved rounds, medians, ratios from the same rounds), resident weight
bytes, and load time. Models:
  * ``synthetic``: LeNet-5 and LeNet-300-100 pruned here with random masks at the published
    per-layer densities (LeNet-5: conv1 12.7%, conv2 2.9%, ip1 0.75%, ip2 5.0%; LeNet-300-100:
    ip1 1.8%, ip2 1.8%, ip3 5.5%) and INQ values (each kept weight rounded to ``±2**e``, 7
    exponents per layer). Trained models have the same densities but other patterns.
  * ``--ncz FILE`` / ``--run RUN_DIR`` (its model.ncz): trained models, e.g. the shipped recipes'.

Each model is measured with the runtime as ``nncompress.runtime.load`` builds it (the fused
forward of ``runtime/_fused.py`` up to its batch limit), then module by module
(``fuse=False``: sparse layers and the 2x2 max-pool of ``runtime/_pool.py``) and, for a model
with max-pools, module by module with the usual ``nn.MaxPool2d`` kept, so the share of each part
of the speed-up is visible.

``--sweep`` instead times each layer kind alone, sparse kernel against dense, over densities and
batch sizes, for both backends (SciPy CSR and torch.sparse CSR), and ``--fuse-sweep`` the fused
forward against the same model module by module over batch sizes: the measurements behind the
rule in ``nncompress/runtime/_rule.py``.

Run: .venv/bin/python benchmarks/inference.py [--run runs/lenet5_dns_inq] [--threads 1]
     [--batch 1,64] [--json out.json] [--sweep | --fuse-sweep]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
from torch import nn

from nncompress.export import save_compact
from nncompress.models import build_model
from nncompress.runtime import MaxPool2x2, SparseConv, SparseLinear, fused, load
from nncompress.runtime.measure import benchmark_file, format_benchmark, input_shape, time_pair

PUBLISHED = {
    "lenet5": {"conv1": 0.127, "conv2": 0.029, "ip1": 0.0075, "ip2": 0.05},
    "lenet300_100": {"ip1": 0.018, "ip2": 0.018, "ip3": 0.055},
}


def pruned_model(name: str, seed: int = 0) -> nn.Module:
    """The model with random masks at the published densities and power-of-two values."""
    gen = torch.Generator().manual_seed(seed)
    model = build_model(name).eval()
    with torch.no_grad():
        for layer, density in PUBLISHED[name].items():
            module = model.get_submodule(layer)
            for tensor, keep in ((module.weight, density), (module.bias, 1.0)):
                mask = torch.rand(tensor.shape, generator=gen) < keep
                top = torch.floor(torch.log2(tensor.abs().max() * 4 / 3))
                exps = torch.round(torch.log2(tensor.abs().clamp_min(1e-12))).clamp(top - 6, top)
                tensor.copy_(torch.where(mask, torch.sign(tensor) * 2.0 ** exps, 0.0))
    return model


def files(args: argparse.Namespace, tmp: Path) -> list[tuple[str, Path]]:
    out = []
    for name in PUBLISHED:
        path = tmp / f"{name}.ncz"
        save_compact(pruned_model(name), path)
        out.append((f"{name}, synthetic masks at published densities, INQ values", path))
    out += [(f"{p} (trained)", p) for p in args.ncz]
    out += [(f"{r}/model.ncz (trained)", r / "model.ncz") for r in args.run]
    return out


def sweep(batches: list[int], backends: tuple[str, ...] = ("scipy", "torch")) -> None:
    """Per-layer dense / sparse time ratios (above 1: sparse faster)."""
    shapes: list[tuple[str, nn.Module, tuple[int, ...]]] = [
        ("linear 800x500", nn.Linear(800, 500), (800,)),
        ("linear 784x300", nn.Linear(784, 300), (784,)),
        ("linear 300x100", nn.Linear(300, 100), (300,)),
        ("linear 500x10", nn.Linear(500, 10), (500,)),
        ("conv 1->20 k5 28x28", nn.Conv2d(1, 20, 5), (1, 28, 28)),
        ("conv 20->50 k5 12x12", nn.Conv2d(20, 50, 5), (20, 12, 12)),
    ]
    gen = torch.Generator().manual_seed(0)
    print("layer                 density  batch  " + "  ".join(f"{b:>6}" for b in backends))
    for label, layer, shape in shapes:
        for density in (0.01, 0.03, 0.1, 0.3):
            with torch.no_grad():
                layer.weight.mul_(0).add_(torch.randn(layer.weight.shape, generator=gen))
                layer.weight.mul_(torch.rand(layer.weight.shape, generator=gen) < density)
            for batch in batches:
                x = torch.randn(batch, *shape, generator=gen)
                ratios = []
                for backend in backends:
                    fast = (SparseLinear.from_linear(layer, backend) if isinstance(layer, nn.Linear)
                            else SparseConv.from_conv(layer, backend))  # type: ignore[arg-type]
                    fast.mode = "sparse"
                    with torch.inference_mode():
                        ratios.append(time_pair(lambda: layer(x), lambda: fast(x),  # noqa: B023
                                                rounds=7, round_seconds=0.02)[2])
                print(f"{label:<22} {density:>6.2f}  {batch:>5}  "
                      + "  ".join(f"{r:>5.2f}x" for r in ratios), flush=True)


def fuse_sweep(paths: list[tuple[str, Path]], batches: list[int], rounds: int,
               seconds: float) -> None:
    """Module-by-module time over fused time per batch size (above 1: fused faster)."""
    for label, path in paths:
        fast, modules = load(path), load(path, fuse=False)
        holder = fused(fast)
        if holder is None:
            print(f"{label}: not a chain model")
            continue
        holder.max_batch = max(batches)
        shape = input_shape(path)
        print(label)
        with torch.inference_mode():
            for batch in batches:
                x = torch.rand(batch, *shape, generator=torch.Generator().manual_seed(batch))
                assert torch.allclose(fast(x), modules(x), rtol=1e-4, atol=1e-5)
                m, f, ratio = time_pair(lambda: modules(x), lambda: fast(x),  # noqa: B023
                                        rounds=rounds, round_seconds=seconds)
                print(f"  batch {batch:>4}: modules {1e3 * m:8.3f} ms  fused {1e3 * f:8.3f} ms"
                      f"  {ratio:5.2f}x", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ncz", type=Path, action="append", default=[], help=".ncz file")
    parser.add_argument("--run", type=Path, action="append", default=[], help="run folder")
    parser.add_argument("--batch", default="1,64", help="batch sizes, comma-separated")
    parser.add_argument("--threads", type=int, default=1)
    # Short rounds, many of them: on a shared machine both models then see the same load.
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--seconds", type=float, default=0.02, help="per model per round")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--sweep", action="store_true", help="time layers alone (see above)")
    parser.add_argument("--fuse-sweep", action="store_true",
                        help="fused against module by module over batch sizes (see above)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    batches = [int(b) for b in args.batch.split(",")]
    if args.sweep:
        sweep(batches)
        return
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.fuse_sweep:
            fuse_sweep(files(args, Path(tmp)), batches, args.rounds, args.seconds)
            return
        for label, path in files(args, Path(tmp)):
            has_pools = any(isinstance(m, MaxPool2x2) for m in load(path).modules())
            variants = [(True, True, ""), (False, True, "; runtime module by module")]
            if has_pools:
                variants.append((False, False, "; module by module, usual max-pools"))
            for fuse, fast_pool, note in variants:
                result = benchmark_file(
                    path, batches=batches, rounds=args.rounds, round_seconds=args.seconds,
                    fast_pool=fast_pool, fuse=fuse, label=label + note)
                print(format_benchmark(result), "\n", flush=True)
                results.append(result.to_dict() | {"fast_pool": fast_pool, "fuse": fuse})
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

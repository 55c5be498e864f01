"""Training throughput of ``nncompress run`` against a plain PyTorch loop, on a JPEG folder.

The data is a generated image folder (``--classes`` x ``--per-class`` JPEGs of 32x32, one
colour per class plus noise); the model ``resnet20`` at 32x32; SGD (momentum 0.9, weight decay
5e-4), batch ``--batch``, a DataLoader with ``--workers`` workers. Variants, interleaved in
every round so that the machine's drift hits them alike:

  * ``plain``: a hand-written loop: a ``Dataset`` decoding each JPEG with Pillow (pixels / 256),
    ``DataLoader(shuffle=True, num_workers=W)``, forward, cross-entropy, backward, step;
  * ``run``: ``run_recipe`` of a recipe with one ``train`` stage on ``folder:DIR``;
  * ``dns``: the same recipe with a ``dns`` stage on every layer (surgery every iteration);
  * ``inq``: an ``inq`` stage training after its first step (half of every layer fixed).

The rate is that of ``--window`` iterations with start-up left out: every variant runs
``2 * window + 1`` iterations and times iterations ``window + 1`` to ``2 * window``, between
the starts of their training forwards (``_timed_model``: the model notes the time there, inside
``nncompress run`` as in the plain loop). Times are the process's CPU time
(``time.process_time``: on a machine shared with other jobs it moves far less than the wall
clock, which is printed too); with ``--workers 0`` (the default) it includes the JPEG
decoding, with workers it is the training process's share alone, for every variant alike.

Run: .venv/bin/python benchmarks/pipeline_throughput.py [--rounds 5] [--window 10]
     [--workers 0] [--batch 32] [--threads 1]
Prints each variant's median images/s and the ratios: run / plain (goal >= 0.95) and the
per-step cost of plain, dns and inq relative to plain (goal <= 1.05), also paired round by
round (plain's rate over the variant's in the same round: minimum and median).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from _step_costs import print_step_costs, step_costs
from _timed_model import timed_resnet20, window_rate
from nncompress.pipeline import run_recipe
from nncompress.recipe import parse_recipe

SIZE = 32


def make_folder(root: Path, classes: int, per_class: int) -> None:
    """``root/train/c<k>/<j>.jpg`` (``per_class`` each) and ``root/val/c<k>/0.jpg``."""
    rng = np.random.default_rng(0)
    colours = rng.integers(40, 216, (classes, 3))
    for split, count in (("train", per_class), ("val", 1)):
        for k in range(classes):
            folder = root / split / f"c{k}"
            folder.mkdir(parents=True, exist_ok=True)
            for j in range(count):
                noise = rng.integers(-40, 41, (SIZE, SIZE, 3))
                pixels = np.clip(colours[k] + noise, 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{j}.jpg", quality=90)


class JpegFolder(Dataset[tuple[torch.Tensor, int]]):
    """The plain loop's dataset: sorted class folders, Pillow decoding, pixels / 256."""

    def __init__(self, root: Path) -> None:
        classes = sorted(p.name for p in root.iterdir() if p.is_dir())
        self.items = [(path, k) for k, name in enumerate(classes)
                      for path in sorted((root / name).glob("*.jpg"))]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.items[index]
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)
        return torch.from_numpy(pixels.copy()).permute(2, 0, 1).float() / 256, label


def _one_thread(worker_id: int) -> None:
    torch.set_num_threads(1)


def plain(root: Path, args: argparse.Namespace) -> tuple[float, float]:
    """CPU and wall images/s of the hand-written loop over its second window."""
    torch.manual_seed(0)
    model = timed_resnet20(num_classes=args.classes)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    loader = DataLoader(JpegFolder(root / "train"), batch_size=args.batch, shuffle=True,
                        drop_last=False, num_workers=args.workers,
                        prefetch_factor=2 if args.workers else None,
                        worker_init_fn=_one_thread if args.workers else None,
                        generator=torch.Generator().manual_seed(0),
                        persistent_workers=args.workers > 0)
    model.train()
    done = 0
    while done < 2 * args.window + 1:
        for x, y in loader:
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x), y)
            float(loss.detach())  # the pipeline reads the loss every iteration too
            loss.backward()
            optimizer.step()
            done += 1
            if done == 2 * args.window + 1:
                break
    return window_rate(args.window, args.batch)


def _stage(kind: str, iterations: int, args: argparse.Namespace) -> dict[str, Any]:
    common = {"batch_size": args.batch, "eval_interval": 0, "checkpoint_interval": 0,
              "lr": {"policy": "fixed", "base_lr": 0.01},
              "optimizer": {"name": "sgd", "momentum": 0.9, "weight_decay": 5e-4}}
    if kind == "run":
        return {"stage": "train", "iterations": iterations, **common}
    if kind == "dns":
        return {"stage": "dns", "iterations": iterations, **common}
    return {"stage": "inq", "portions": [0.5, 1.0], "iterations_per_step": [iterations, 0],
            **common}


def pipeline(root: Path, kind: str, out: Path, args: argparse.Namespace) -> tuple[float, float]:
    """CPU and wall images/s of ``run_recipe`` over iterations ``window+1 .. 2*window``."""
    raw = {"version": 1, "name": kind, "seed": 0,
           "model": {"ref": "_timed_model:timed_resnet20",
                     "kwargs": {"num_classes": args.classes}},
           "data": {"spec": f"folder:{root}", "workers": args.workers},
           "stages": [_stage(kind, 2 * args.window + 1, args)]}
    run_recipe(parse_recipe(raw), out, progress="none")
    return window_rate(args.window, args.batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--per-class", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--step-rounds", type=int, default=20,
                        help="rounds of the step-level comparison (0: none)")
    parser.add_argument("--round-steps", type=int, default=3, help="steps per kind and round")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rates: dict[str, list[tuple[float, float]]] = {k: [] for k in ("plain", "run", "dns", "inq")}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "images"
        make_folder(root, args.classes, args.per_class)
        for r in range(args.rounds):
            for kind in rates:
                rate = plain(root, args) if kind == "plain" else \
                    pipeline(root, kind, Path(tmp) / f"{kind}{r}", args)
                rates[kind].append(rate)
                print(f"round {r + 1} {kind:5s} {rate[0]:8.1f} images/s CPU, {rate[1]:8.1f} "
                      "wall", flush=True)
        if args.rounds:
            report(rates, args)
        if args.step_rounds:
            x, y = next(iter(DataLoader(JpegFolder(root / "train"), batch_size=args.batch,
                                        shuffle=True,
                                        generator=torch.Generator().manual_seed(0))))
            print_step_costs(step_costs(x, y, args.classes, args.step_rounds, args.round_steps),
                             args.round_steps)


def report(rates: dict[str, list[tuple[float, float]]], args: argparse.Namespace) -> None:
    """Medians of the rates, and each variant's step cost against plain paired round by round.

    A round's variants ran back to back, so the ratio within a round is less exposed to the
    machine's drift than a ratio of medians; its minimum and median over the rounds are printed.
    """
    cpu = {k: statistics.median(r[0] for r in v) for k, v in rates.items()}
    wall = {k: statistics.median(r[1] for r in v) for k, v in rates.items()}
    print(f"\nresnet20 32x32, batch {args.batch}, workers {args.workers}, threads "
          f"{args.threads}, {args.rounds} rounds x {args.window} timed iterations, medians:")
    for kind in rates:
        print(f"  {kind:5s} {cpu[kind]:8.1f} images/s CPU (step cost "
              f"{cpu['plain'] / cpu[kind]:.3f}x plain), {wall[kind]:8.1f} wall "
              f"({wall['plain'] / wall[kind]:.3f}x)")
    print("step cost vs plain in the same round, min / median over rounds (goal <= 1.05):")
    for kind in rates:
        paired = [[p[i] / r[i] for p, r in zip(rates["plain"], rates[kind])] for i in (0, 1)]
        print(f"  {kind:5s} CPU {min(paired[0]):.3f} / {statistics.median(paired[0]):.3f}   "
              f"wall {min(paired[1]):.3f} / {statistics.median(paired[1]):.3f}")
    print(f"run / plain throughput: {cpu['run'] / cpu['plain']:.3f} CPU, "
          f"{wall['run'] / wall['plain']:.3f} wall (goal >= 0.95)")


if __name__ == "__main__":
    main()

"""Training-step time of LeNet-5 on 1 against 2 gloo processes (CPU), and the all-reduce's share.

Global batch 64, SGD with momentum, one thread per process. Two processes are spawned on
127.0.0.1 (loopback only); in each timing round, in turn and so that machine drift hits every
variant alike:
  * ``2 procs``: both ranks step DDP-wrapped models on 32 examples each, gradients all-reduced;
  * ``2 procs, no_sync``: the same steps inside ``DistributedDataParallel.no_sync()``, so no
    gradient is exchanged (the compute alone);
  * ``1 proc``: rank 0 steps a plain copy on all 64 examples while rank 1 waits at a barrier.
  * ``all-reduce``: both ranks all-reduce one tensor of the model's parameter count alone.
The communication share is ``(2 procs - no_sync) / 2 procs``: the all-reduce time the backward
pass does not hide. Each variant runs plain and with DNS on all four layers (``--variants``).
On a shared machine other processes inflate the wall-clock times of some rounds; the first table
gives the best round of each (the least disturbed) and the medians. The second gives CPU time
per step of rank 0 (``time.process_time``, all its threads, waiting excluded), which other
processes barely change: its speed-up is what 2 processes reach when each has a core to itself.

Run: .venv/bin/python benchmarks/ddp_step.py [--steps 10] [--rounds 25] [--variants plain,dns]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import socket
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from tempfile import TemporaryDirectory

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import nncompress as nnc
from nncompress.models import build_model
from nncompress.train import distributed as nd

GLOBAL_BATCH = 64
MODES = ("2 procs", "2 procs, no_sync", "1 proc", "all-reduce")


def make_model(kind: str) -> nn.Module:
    torch.manual_seed(0)
    model = build_model("lenet5")
    if kind == "dns":
        nnc.prepare(model, nnc.DNSConfig(gamma=1e-4, power=1.0, iter_stop=14000))
    elif kind == "inq":
        nnc.prepare(model, nnc.INQConfig(num_quantum_values=7))
        nnc.quantize_step(model, 0.5)
    return model


def make_step(model: nn.Module, examples: int, sync: bool) -> Callable[[], None]:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    generator = torch.Generator().manual_seed(1 + nd.rank())
    x = torch.rand(examples, 1, 28, 28, generator=generator)
    y = torch.randint(0, 10, (examples,), generator=generator)
    quiet = contextlib.nullcontext if sync else model.no_sync

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with quiet():
            nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

    return step


def timed(step: Callable[[], None], steps: int) -> tuple[float, float]:
    """Wall-clock and CPU ms per step over ``steps`` steps, both ranks started together."""
    dist.barrier()
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step()
    cpu = time.process_time() - cpu
    dist.barrier()  # a 2-process step ends when the slower rank ends
    return 1000 * (time.perf_counter() - start) / steps, 1000 * cpu / steps


def measure(kind: str, steps: int, rounds: int) -> dict[str, list[tuple[float, float]]]:
    """Per mode, wall and CPU ms per step of each round after a dropped warm-up round."""
    ddp = nd.wrap(make_model(kind))
    sync, no_sync = make_step(ddp, GLOBAL_BATCH // 2, True), make_step(ddp, GLOBAL_BATCH // 2,
                                                                        False)
    alone = make_step(make_model(kind), GLOBAL_BATCH, True) if nd.rank() == 0 else None
    gradients = torch.zeros(sum(p.numel() for p in ddp.parameters()))
    samples: dict[str, list[tuple[float, float]]] = {mode: [] for mode in MODES}
    for _ in range(rounds + 1):
        samples["2 procs"].append(timed(sync, steps))
        samples["2 procs, no_sync"].append(timed(no_sync, steps))
        samples["1 proc"].append(timed(alone or (lambda: None), steps))  # rank 1 just waits
        samples["all-reduce"].append(timed(lambda: dist.all_reduce(gradients), steps))
    return {mode: values[1:] for mode, values in samples.items()}


def table_row(label: str, ms: dict[str, float]) -> str:
    comm = (ms["2 procs"] - ms["2 procs, no_sync"]) / ms["2 procs"]
    return (f"{label:<14}" + "".join(f"{ms[m]:>18.2f}" for m in MODES)
            + f"{ms['1 proc'] / ms['2 procs']:>10.2f}x{100 * comm:>10.1f}%")


def worker(process: int, port: int, args: argparse.Namespace, out: str) -> None:
    os.environ.update(RANK=str(process), WORLD_SIZE="2", LOCAL_RANK=str(process),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    nd.init_distributed("gloo", timeout=datetime.timedelta(minutes=10))
    best, median, cpu = [], [], []
    for kind in args.variants.split(","):
        samples = measure(kind, args.steps, args.rounds)
        best.append(table_row(f"{kind}, best", {m: min(w for w, _ in v)
                                                for m, v in samples.items()}))
        median.append(table_row(f"{kind}, median", {m: statistics.median(w for w, _ in v)
                                                    for m, v in samples.items()}))
        cpu.append(table_row(f"{kind}, CPU", {m: statistics.median(c for _, c in v)
                                              for m, v in samples.items()}))
    lines = [*best, *median, "", "CPU ms per step of rank 0, median", *cpu]
    if nd.is_writer():
        Path(out).write_text("\n".join(lines))
    nd.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="steps per timing round")
    parser.add_argument("--rounds", type=int, default=25, help="interleaved timing rounds")
    parser.add_argument("--variants", default="plain,dns", help="of plain, dns, inq")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with TemporaryDirectory() as folder:
        out = str(Path(folder) / "table.txt")
        mp.spawn(worker, args=(port, args, out), nprocs=2, join=True)
        table = Path(out).read_text()
    parameters = sum(p.numel() for p in build_model("lenet5").parameters())
    print(f"LeNet-5 ({parameters:,} parameters, {4 * parameters:,} gradient bytes per step), "
          f"global batch {GLOBAL_BATCH}, 1 thread per process, gloo on loopback; wall ms per step, "
          f"{args.rounds} rounds x {args.steps} steps; load average before: "
          f"{load:.2f}")
    print(f"{'':<14}" + "".join(f"{m:>18}" for m in MODES) + f"{'speed-up':>11}{'comm':>11}")
    print(table)


if __name__ == "__main__":
    main()

"""Latency and resident bytes of a .ncz model, dense (``load_compact``) against the runtime.

Both models run the same input, alternating round by round so that a busy machine slows both
alike; each round times enough calls to last about ``round_seconds``. Latencies are medians over
rounds, ratios the median of the per-round ratios. Used by ``nncompress bench`` and
``benchmarks/inference.py``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nncompress.errors import ConfigError

__all__ = ["BatchTiming", "FileBenchmark", "benchmark_file", "format_benchmark", "time_pair"]


@dataclass(frozen=True)
class BatchTiming:
    """Dense and runtime latency for one batch size (milliseconds per call)."""

    batch: int
    dense_ms: float
    runtime_ms: float
    ratio: float  # dense over runtime: above 1 the runtime is faster


@dataclass
class FileBenchmark:
    """What :func:`benchmark_file` measured for one file."""

    label: str
    threads: int
    dense_bytes: int
    runtime_bytes: int
    load_compact_ms: float
    runtime_load_ms: float
    batches: list[BatchTiming] = field(default_factory=list)
    load_compact_min_ms: float | None = None  # the fastest of the load repeats
    runtime_load_min_ms: float | None = None
    first_call_ms: float | None = None  # the runtime's first call (one input; tracing included)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary."""
        return asdict(self)


def time_pair(first: Callable[[], object], second: Callable[[], object], *, rounds: int = 9,
              round_seconds: float = 0.05) -> tuple[float, float, float]:
    """Median seconds per call of two functions, interleaved, and the median ratio.

    Args:
        first: the baseline.
        second: the contender.
        rounds: rounds (each times both).
        round_seconds: about how long each function runs per round.

    Returns:
        ``(first_s, second_s, first_s / second_s)``: medians over the rounds.

    Example:
        >>> a, b, ratio = time_pair(lambda: sum(range(2000)), lambda: 0, rounds=3,
        ...                         round_seconds=0.001)
        >>> ratio > 1
        True
    """
    reps = [_calls_for(f, round_seconds) for f in (first, second)]
    times: tuple[list[float], list[float]] = ([], [])
    for r in range(rounds):
        order = (0, 1) if r % 2 == 0 else (1, 0)
        for i in order:
            f = (first, second)[i]
            start = time.perf_counter()
            for _ in range(reps[i]):
                f()
            times[i].append((time.perf_counter() - start) / reps[i])
    ratios = [a / b for a, b in zip(*times)]
    return statistics.median(times[0]), statistics.median(times[1]), statistics.median(ratios)


def _calls_for(f: Callable[[], object], seconds: float) -> int:
    f()  # warm-up: first-call caches (gather tables, CSR views) are not timed
    # The median of five calls: one call delayed by another process must not set the count
    # (measured: a round of 2 calls, ~1 ms, dodged the load a round of 168 calls then bore).
    samples = []
    for _ in range(5):
        start = time.perf_counter()
        f()
        samples.append(time.perf_counter() - start)
    once = max(statistics.median(samples), 1e-7)
    return max(1, min(10_000, round(seconds / once)))


def _load_ms(f: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median and minimum milliseconds of ``repeats`` calls."""
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        f()
        samples.append(time.perf_counter() - start)
    return 1e3 * statistics.median(samples), 1e3 * min(samples)


def input_shape(path: str | Path) -> tuple[int, ...]:
    """``(C, H, W)`` images for a file's model: its ``in_channels`` and ``input_size`` kwargs.

    Models that take other inputs need an explicit shape (CLI: ``--input-shape``).
    """
    from nncompress.export import inspect_compact

    kwargs = inspect_compact(path).arch["kwargs"]
    size = int(kwargs.get("input_size", 28))
    return (int(kwargs.get("in_channels", 1)), size, size)


def benchmark_file(path: str | Path, *, batches: Sequence[int] = (1, 64), rounds: int = 9,
                   round_seconds: float = 0.05, shape: tuple[int, ...] | None = None,
                   allow_import: bool = False, label: str | None = None,
                   fast_pool: bool = True, fuse: bool = True) -> FileBenchmark:
    """Time ``load_compact(path)`` against ``runtime.load(path)`` at each batch size.

    Args:
        path: the .ncz file.
        batches: batch sizes.
        rounds: interleaved rounds per batch size.
        round_seconds: seconds per model per round.
        shape: one input's shape; by default from the model's arguments (see ``input_shape``).
        allow_import: as for ``load_compact``.
        label: a name for the result (default: the path).
        fast_pool: as for :func:`nncompress.runtime.load`.
        fuse: as for :func:`nncompress.runtime.load`.

    Returns:
        The measurements, under torch's current thread count.

    Raises:
        FormatError: a bad file. ConfigError: a bad batch size or input shape.
    """
    from nncompress.export import load_compact
    from nncompress.runtime import load, weight_bytes

    if not batches or any(b < 1 for b in batches):
        raise ConfigError(f"batch sizes {list(batches)}: give one or more sizes of at least 1")
    dense = load_compact(path, allow_import=allow_import)
    fast = load(path, allow_import=allow_import, fast_pool=fast_pool, fuse=fuse)
    dense_load = _load_ms(lambda: load_compact(path, allow_import=allow_import), 9)
    fast_load = _load_ms(
        lambda: load(path, allow_import=allow_import, fast_pool=fast_pool, fuse=fuse), 9)
    shape = tuple(shape) if shape is not None else input_shape(path)
    result = FileBenchmark(
        label or str(path), torch.get_num_threads(), weight_bytes(dense), weight_bytes(fast),
        dense_load[0], fast_load[0], load_compact_min_ms=dense_load[1],
        runtime_load_min_ms=fast_load[1])
    gen = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        for batch in batches:
            x = torch.rand(batch, *shape, generator=gen)
            _check_same(dense, fast, x)
            d, f, ratio = time_pair(lambda: dense(x), lambda: fast(x), rounds=rounds,  # noqa: B023
                                    round_seconds=round_seconds)
            result.batches.append(BatchTiming(batch, 1e3 * d, 1e3 * f, ratio))
        result.first_call_ms = _first_call_ms(
            lambda: load(path, allow_import=allow_import, fast_pool=fast_pool, fuse=fuse),
            torch.rand(1, *shape, generator=gen))
    return result


def _first_call_ms(make: Callable[[], nn.Module], x: torch.Tensor, repeats: int = 5) -> float:
    """Median milliseconds of a freshly loaded model's first call."""
    samples = []
    for _ in range(repeats):
        model = make()
        start = time.perf_counter()
        model(x)
        samples.append(1e3 * (time.perf_counter() - start))
    return statistics.median(samples)


def _check_same(dense: nn.Module, fast: nn.Module, x: torch.Tensor) -> None:
    try:
        want, got = dense(x), fast(x)
    except RuntimeError as exc:
        raise ConfigError(f"the model does not take inputs of shape {tuple(x.shape[1:])}: "
                          f"{exc}; pass the right one (CLI: --input-shape C,H,W)") from None
    if not torch.allclose(got, want, rtol=1e-4, atol=1e-5 * float(want.abs().max()) + 1e-6):
        raise AssertionError("runtime and dense outputs differ")  # a bug, not a user error


def format_benchmark(result: FileBenchmark) -> str:
    """A text table of one file's measurements.

    Example:
        >>> r = FileBenchmark("m.ncz", 1, 4000, 400, 9.0, 10.0, [BatchTiming(1, 2.0, 0.5, 4.0)])
        >>> print(format_benchmark(r).splitlines()[2])
            1     2.000       0.500   4.00x           4,000               400
    """
    lines = [f"{result.label}  ({result.threads} thread{'s' if result.threads > 1 else ''})",
             "batch  dense ms  runtime ms   ratio  dense weight B  runtime weight B"]
    lines += [f"{t.batch:>5}  {t.dense_ms:>8.3f}  {t.runtime_ms:>10.3f}  {t.ratio:>5.2f}x  "
              f"{result.dense_bytes:>14,}  {result.runtime_bytes:>16,}" for t in result.batches]
    share = result.runtime_bytes / result.dense_bytes if result.dense_bytes else 0.0
    lines.append(f"runtime weights: {100 * share:.1f}% of dense")
    lines.append(f"load: load_compact {result.load_compact_ms:.1f} ms, runtime.load "
                 f"{result.runtime_load_ms:.1f} ms (decode + build; medians)")
    if result.load_compact_min_ms is not None and result.runtime_load_min_ms is not None:
        lines[-1] += (f"; fastest {result.load_compact_min_ms:.1f} and "
                      f"{result.runtime_load_min_ms:.1f} ms")
    if result.first_call_ms is not None:
        lines.append(f"runtime's first call (one input; tracing and set-up included): "
                     f"{result.first_call_ms:.2f} ms")
    return "\n".join(lines)

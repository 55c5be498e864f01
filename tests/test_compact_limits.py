"""Crafted .ncz files load under an address-space limit: FormatError, never MemoryError or a crash.

A child interpreter imports torch, loads every base file once (so later loads need no new
libraries), then limits its own address space to what it uses plus 512 MiB and loads the
crafted files: any attempt to allocate the gigabytes they ask for would fail inside torch or
numpy and show up as another outcome than FormatError.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.compact_crafting import base_files, crafted_cases, reported_cases

CHILD = r"""
import json, resource, sys
import torch
torch.set_num_threads(1)
from nncompress.errors import NNCompressError
from nncompress.export import load_compact

files = sys.argv[2:]
for base in json.loads(sys.argv[1]):
    load_compact(base)
with open("/proc/self/status") as status:
    used = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
resource.setrlimit(resource.RLIMIT_AS, (used + (512 << 20), resource.RLIM_INFINITY))
outcomes = {}
try:  # the limit bites: a real 1 GiB tensor cannot be had
    torch.ones(1 << 30, dtype=torch.uint8)
    outcomes["probe"] = "allocated"
except RuntimeError:
    outcomes["probe"] = "refused"
for path in files:
    try:
        load_compact(path)
        outcomes[path] = "loaded"
    except NNCompressError as exc:
        outcomes[path] = type(exc).__name__
    except BaseException as exc:
        outcomes[path] = f"CRASH {type(exc).__name__}: {str(exc)[:200]}"
print(json.dumps(outcomes))
"""


def _run_limited(bases: list[Path], files: list[Path]) -> dict[str, str]:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps([str(b) for b in bases]), *map(str, files)],
        capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    outcomes: dict[str, str] = json.loads(proc.stdout.strip().splitlines()[-1])
    return outcomes


@pytest.mark.slow  # a child interpreter: about 10 s
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_crafted_files_under_an_address_space_limit(tmp_path: Path) -> None:
    bases = base_files(tmp_path)
    base_paths = [tmp_path / f"base{i}.ncz" for i in range(len(bases))]
    files = []
    for name, data in reported_cases(bases).items():
        files.append(tmp_path / f"{name}.ncz")
        files[-1].write_bytes(data)
    for i, data in enumerate(crafted_cases(bases, seed=11, count=120)):
        files.append(tmp_path / f"crafted{i}.ncz")
        files[-1].write_bytes(data)
    outcomes = _run_limited(base_paths, files)
    assert outcomes.pop("probe") == "refused"
    for name in reported_cases(bases):
        assert outcomes[str(tmp_path / f"{name}.ncz")] == "FormatError", name
    counts: dict[str, int] = {}
    for outcome in outcomes.values():
        counts[outcome] = counts.get(outcome, 0) + 1
    assert set(counts) <= {"FormatError", "ConfigError", "loaded"}, counts
    assert counts["FormatError"] > 90

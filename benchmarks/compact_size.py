"""Size of the compact .ncz file against fp32, zstd(fp32) and the seed's compact scheme.

Usage::

    python benchmarks/compact_size.py            # trains LeNet-5 / LeNet-300-100 once (cached)
    python benchmarks/compact_size.py --no-train # synthetic and untrained models only

Models: LeNet-5 and LeNet-300-100 compressed here with DNS then 5-bit INQ on MNIST (a short
schedule, cached under --cache), a synthetic LeNet-5 stand-in with the per-layer density of
Guo's released model and random exponents (clearly labelled), and a dense 5-bit INQ tiny CNN.

The seed's scheme (SPEC §7) is re-implemented here on the same weights: per blob a 4-byte
count and a 16-entry float32 codebook, then one byte per entry (4-bit gap + 4-bit code) with
filler entries for gaps over 16; its variant uses 8-bit gaps (12 bits per entry). For
5-bit INQ (16 non-zero levels) the baseline gets 5-bit codes and a 32-entry codebook.
"v1 .ncz" is format version 1 written on the same weights by its encoder (still in the
package: the reader keeps it for old files); "v2 .ncz" is what save_compact wrote before
version 3: the same streams as "v3 .ncz", with JSON metadata naming every tensor and a 20-byte
header (byte for byte the version 2 writer's output: tests/test_golden_scripts.py); "v3 .ncz"
is what save_compact writes now. The last column is the CPU time to decode every tensor of
each file (median of 30, no model build) and their ratio, measured in the same run.

Measured (2 shared, loaded CPU cores; bytes), ``--no-train --run runs/m5b --run
runs/d3v200k175 --run runs/lenet5_vd`` (a LeNet-5 run under 2 kB and the runs of the shipped
lenet300_100_vd_3kb and lenet5_vd recipes; all stored here with float32 values)::

    model                          kept  v1 .ncz  v2 .ncz  v3 .ncz  v3-v2  decode ms v1 / v3
    LeNet-5 2 kB (m5b)            1,539    1,883    1,773    1,676    -97  3.3 / 1.7 (1.9x)
      same, weights x1.1 (floats) 1,539    2,882    2,802    2,725    -77  2.2 / 2.0 (1.1x)
    LeNet-300-100 3 kB            2,694    2,961    2,861    2,801    -60  2.6 / 1.7 (1.5x)
      same, weights x1.1 (floats) 2,694    3,480    3,399    3,328    -71  2.4 / 2.0 (1.2x)
    LeNet-5 vd (float values)     3,237   13,285   13,211   13,124    -87  2.9 / 2.1 (1.4x)
    LeNet-5 synthetic Guo         3,998    6,187    6,185    6,131    -54  49.8 / 2.0 (25x)
    tiny_cnn dense INQ5           6,445    2,829    2,791    2,726    -65  1.6 / 1.3 (1.3x)

The seed's encoder on the same weights (4-bit / 8-bit gaps): 27,290 / 5,075 bytes for the
LeNet-5 2 kB model, 18,630 / 5,646 for LeNet-300-100, 33,314 / 8,138 for the synthetic one.
Version 2 saves the per-stream framing (a method byte and a 4-byte rANS state
per stream: one shared stream), codes signs as raw bits carried in the lane states (23 per
lane: a lane state costs about 3 bits), codes a layer's live columns against the previous
layer's live rows (LeNet-5 ip2: 41 -> 8 bytes of positions), and compresses the metadata with
a version 2 dictionary (155 -> about 125 bytes on LeNet-5). Version 3 stores the metadata as
varints and, for a registered model, leaves out the tensors' names, dtypes and shapes (the
reader builds the model on the meta device and checks them against a stored CRC-32): header
and metadata of the LeNet-5 2 kB file (m5b) take 89 bytes instead of 186. Whole load_compact
of the LeNet-5 vd file (decode and build), CPU ms, min / median of 10 in the same run: v1 4.5 / 4.9,
v2 3.6 / 3.8, v3 3.6 / 4.0; of the synthetic one: v1 50.4 / 52.0, v2 3.4 / 3.5, v3 3.2 / 3.3
(version 1 reads escape bits one at a time). "weights x1.1": the run's model with every
weight scaled, so no value is a power of two (a DNS-only model: float32 values, positions in
the shared stream).
The synthetic model is the worst case: random positions and uniformly random exponents.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import zstandard
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))

import nncompress as nnc
from nncompress.export import load_compact, save_compact
from nncompress.export._codec import encode_tensor
from nncompress.export._container import FORMAT_NAME, pack, parse
from nncompress.export._schema import check_meta
from nncompress.export._tensors import decode_state
from nncompress.export.compact import as_version2, fill_layout
from nncompress.interop.seed_compact import encode_blob
from nncompress.models import build_model

GUO_DENSITY = {"conv1": 0.142, "conv2": 0.031, "ip1": 0.0073, "ip2": 0.043}


# ----------------------------------------------------------------------------- baselines
def fp32_bytes(model: nn.Module) -> int:
    """Bytes of the parameters as float32."""
    return 4 * sum(p.numel() for p in model.parameters())


def zstd_fp32_bytes(model: nn.Module) -> int:
    """zstd (level 22) of all parameters as float32."""
    raw = b"".join(p.detach().float().numpy().tobytes() for p in model.parameters())
    return len(zstandard.ZstdCompressor(level=22).compress(raw))


def seed_blob_bytes(values: np.ndarray, gap_bits: int) -> int | None:
    """The seed's scheme for one blob; None when it has more than 31 non-zero levels.

    The seed's 4-bit codes hold 0 and 15 levels (K = 7); for 5-bit INQ (K = 8, 16 non-zero
    levels) the baseline is given 5-bit codes and a 32-entry codebook, in its favour.
    """
    levels = np.unique(values[values != 0])
    if levels.size > 31:
        return None
    if levels.size <= 15:  # the seed's own format: the interop encoder's exact bytes
        return len(encode_blob(values.astype(np.float32), gap_bits))
    code_bits = 5
    max_gap = 1 << gap_bits
    entries, prev = 0, -1
    for idx in np.flatnonzero(values).tolist():
        gap = idx - prev
        entries += 1 + (gap - 1) // max_gap  # fillers for gaps over max_gap
        prev = idx
    return 4 + (1 << code_bits) * 4 + math.ceil(entries * (gap_bits + code_bits) / 8)


def seed_bytes(model: nn.Module, gap_bits: int) -> int | None:
    """The seed's scheme over every parameter blob, or None if it does not apply."""
    total = 0
    for p in model.parameters():
        size = seed_blob_bytes(p.detach().double().reshape(-1).numpy(), gap_bits)
        if size is None:
            return None
        total += size
    return total


def ours_bytes(model: nn.Module, folder: Path) -> int:
    """Size of our file (the current format)."""
    return save_compact(model, folder / "m.ncz").file_bytes


def v1_file(model: nn.Module, folder: Path) -> bytes:
    """The same model in format version 1 (two streams per tensor, each its own rANS or zstd
    coder), written by the version 1 encoder that the reader keeps for old files."""
    from nncompress.export.compact import _architecture

    metas, streams = [], []
    for name, tensor in model.state_dict().items():
        enc = encode_tensor(name, tensor.detach().cpu(), "float32")
        metas.append(enc.meta | {"bytes": [len(enc.positions), len(enc.values)]})
        streams += [enc.positions, enc.values]
    meta = {"format": FORMAT_NAME, "arch": _architecture(model, None), "float_dtype": "float32",
            "writer": "nncompress 0.1.0", "tensors": metas}
    data = pack(meta, streams)
    (folder / "v1.ncz").write_bytes(data)
    assert all(torch.equal(a, b) for a, b in zip(
        load_compact(folder / "v1.ncz").state_dict().values(), model.state_dict().values(),
        strict=True))
    return data


def v2_file(folder: Path) -> bytes:
    """Our file ``m.ncz`` in format version 2: the same streams, JSON metadata naming every
    tensor, and the 20-byte header."""
    data = as_version2((folder / "m.ncz").read_bytes(), "bench")
    (folder / "v2.ncz").write_bytes(data)
    return data


def decode_ms(data: bytes, repeat: int = 30) -> tuple[float, float]:
    """CPU milliseconds to decode every tensor of a file (no model build): min and median."""
    meta, body = parse(data, "bench")
    fill_layout(meta, "bench")
    tensors = check_meta(meta, len(body), len(data), "bench")
    times = []
    for _ in range(repeat):
        start = time.process_time()
        decode_state(meta, tensors, body, "bench")
        times.append(1e3 * (time.process_time() - start))
    times.sort()
    return times[0], times[repeat // 2]


# ----------------------------------------------------------------------------- models
def synthetic_lenet5(seed: int = 0) -> nn.Module:
    """LeNet-5 with Guo's per-layer density and random 5-bit INQ levels (not trained)."""
    gen = torch.Generator().manual_seed(seed)
    model = build_model("lenet5")
    with torch.no_grad():
        for name, p in model.named_parameters():
            keep = torch.rand(p.shape, generator=gen) < GUO_DENSITY[name.split(".")[0]]
            exps = torch.randint(-9, -1, p.shape, generator=gen).float()
            p.copy_(torch.sign(torch.randn(p.shape, generator=gen)) * torch.exp2(exps) * keep)
    return model


def _scaled(model: nn.Module, factor: float) -> nn.Module:
    """A copy with every parameter times ``factor``: INQ levels become plain floats."""
    import copy

    out = copy.deepcopy(model)
    with torch.no_grad():
        for p in out.parameters():
            p.mul_(factor)
    return out


def dense_inq_tiny_cnn() -> nn.Module:
    """tiny_cnn quantized to 5-bit INQ levels, no pruning."""
    torch.manual_seed(0)
    model = build_model("tiny_cnn", width=32)
    nnc.prepare(model, nnc.INQConfig(num_quantum_values=8))
    nnc.quantize_step(model, 1.0)
    return nnc.finalize(model)


def trained_models(cache: Path) -> list[tuple[str, nn.Module]]:
    """LeNet-5 and LeNet-300-100 after DNS and 5-bit INQ on MNIST (trained once, cached)."""
    from _lenet_dns_inq import compress

    out = []
    for name in ("lenet5", "lenet300_100"):
        model, stats = compress(name, cache / f"{name}_dns_inq.safetensors")
        if stats:
            print(f"# trained {name}: {stats}")
        out.append((f"{name} DNS+INQ5 (MNIST)", model))
    return out


# ----------------------------------------------------------------------------- report
def _row(name: str, model: nn.Module, folder: Path) -> list[str]:
    fp32 = fp32_bytes(model)
    seed4, seed8 = seed_bytes(model, 4), seed_bytes(model, 8)
    ours = ours_bytes(model, folder)
    old, v2 = v1_file(model, folder), v2_file(folder)
    kept = sum(int(torch.count_nonzero(p)) for p in model.parameters())
    beats = "n/a" if seed4 is None or seed8 is None else str(ours < min(seed4, seed8))
    v1_med, v3_med = decode_ms(old)[1], decode_ms((folder / "m.ncz").read_bytes())[1]
    return [name, f"{kept:,}", f"{fp32:,}", f"{zstd_fp32_bytes(model):,}",
            "n/a" if seed4 is None else f"{seed4:,}", "n/a" if seed8 is None else f"{seed8:,}",
            f"{len(old):,}", f"{len(v2):,}", f"{ours:,}", f"{ours - len(v2):+,}",
            f"{fp32 / ours:.0f}x", beats, f"{v1_med:.1f} / {v3_med:.1f} ({v1_med / v3_med:.1f}x)"]


def _load_ms(path: Path) -> str:
    loads = []
    for _ in range(10):
        start = time.process_time()
        load_compact(path)
        loads.append(1e3 * (time.process_time() - start))
    return f"{min(loads):.1f} / {sorted(loads)[5]:.1f}"


def main() -> None:
    """Print the size table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-train", action="store_true", help="skip the MNIST models")
    parser.add_argument("--cache", type=Path,
                        default=Path(tempfile.gettempdir()) / "nncompress-bench")
    parser.add_argument("--run", type=Path, action="append", default=[],
                        help="also measure the final model of this run folder (repeatable), "
                             "e.g. one of `nncompress run recipes/lenet5_dns_inq.yaml`")
    args = parser.parse_args()
    torch.set_num_threads(1)
    models: list[tuple[str, nn.Module]] = []
    for folder in args.run:
        from nncompress.pipeline import load_run_model

        model, recipe = load_run_model(folder)
        models.append((f"run {folder.name} ({recipe.name if recipe else '?'})", model))
        models.append((f"run {folder.name}, weights x1.1 (DNS floats, no INQ)",
                       _scaled(model, 1.1)))
    if not args.no_train:
        models += trained_models(args.cache)
    models += [("lenet5 SYNTHETIC Guo density, random exps", synthetic_lenet5()),
               ("tiny_cnn dense INQ5 (untrained)", dense_inq_tiny_cnn())]
    header = ["model", "kept", "fp32", "zstd(fp32)", "seed 4-bit gaps", "seed 8-bit gaps",
              "v1 .ncz", "v2 .ncz", "v3 .ncz", "v3-v2", "fp32/v3", "beats seed",
              "decode ms v1 / v3 (ratio)"]
    rows = [header]
    with tempfile.TemporaryDirectory() as tmp:
        for name, model in models:
            rows.append(_row(name, model, Path(tmp)))
            if "lenet5" in name:
                print(f"# load_compact({name}), decode and build, CPU ms, min / median of 10: "
                      f"v1 {_load_ms(Path(tmp) / 'v1.ncz')}, v2 {_load_ms(Path(tmp) / 'v2.ncz')}"
                      f", v3 {_load_ms(Path(tmp) / 'm.ncz')}")
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for i, r in enumerate(rows):
        print(" | ".join(c.ljust(w) if j == 0 else c.rjust(w)
                         for j, (c, w) in enumerate(zip(r, widths, strict=True))))
        if i == 0:
            print("-|-".join("-" * w for w in widths))


if __name__ == "__main__":
    main()

"""Decoding throughput of streamed image data, images/s per DataLoader worker count.

Generates, in a temporary folder, a JPEG image folder (``folder:``), a Caffe LMDB of raw uint8
Datums and one of encoded JPEG Datums (``lmdb:``), all from the same seeded images, then reads
every training image through :meth:`StreamSplits.train_batches` with 0, 1 and 2 workers. The
rate counts the images after the first batch (a training stage starts its workers once, so
steady throughput is what matters); the time to the first batch, worker start-up included, is
shown beside it. Each row is the best of ``--repeats`` passes (on a shared machine the best pass
is the least disturbed). Ratios are against the same source read with 0 workers.

Run: .venv/bin/python benchmarks/data_throughput.py [--images 512] [--size 128] [--batch 32]
         [--transform none|imagenet] [--repeats 3]
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

import lmdb
import numpy as np
import torch
from PIL import Image

from nncompress.data import TransformConfig, open_stream
from nncompress.data._datum import Datum, encode_datum


def smooth_images(count: int, size: int, seed: int) -> np.ndarray:
    """Seeded photographs-ish images: blurred noise, so JPEG sizes are realistic, not noise."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(count, 3, size // 8, size // 8, generator=gen)
    fine = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic")
    noise = torch.rand(count, 3, size, size, generator=gen) * 0.1
    pixels = ((fine + noise).clamp(0, 1) * 255).round().to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).numpy()  # N, H, W, C


def jpeg(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def write_folder(root: Path, images: np.ndarray, classes: int) -> None:
    for split in ("train", "val"):
        for i, pixels in enumerate(images if split == "train" else images[:classes]):
            folder = root / split / f"c{i % classes:03d}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{i:06d}.jpg").write_bytes(jpeg(pixels))


def write_lmdb(path: Path, images: np.ndarray, classes: int, encoded: bool) -> None:
    env = lmdb.open(str(path), map_size=1 << 32)
    with env.begin(write=True) as txn:
        for i, pixels in enumerate(images):
            if encoded:
                datum = Datum(data=jpeg(pixels), label=i % classes, encoded=True)
            else:
                chw = np.ascontiguousarray(pixels.transpose(2, 0, 1))
                datum = Datum(*chw.shape, data=chw.tobytes(), label=i % classes)
            txn.put(f"{i:08d}".encode(), encode_datum(datum))
    env.close()


def images_per_second(spec: str, workers: int, batch: int, count: int,
                      transform: TransformConfig, repeats: int) -> tuple[float, float]:
    """Best steady rate (after the first batch) and the matching time to the first batch."""
    stream = open_stream(spec, workers=workers, transform=transform, num_classes=10)
    iterations = count // batch
    best = (0.0, 0.0)
    for _ in range(repeats):
        start = time.perf_counter()
        batches = stream.train_batches(batch, start=0, stop=iterations)
        next(batches)
        first = time.perf_counter()
        seen = sum(len(y) for _, y in batches)
        rate = seen / (time.perf_counter() - first)
        best = max(best, (rate, first - start))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--transform", choices=("none", "imagenet"), default="none")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    transform = TransformConfig(kind=args.transform, size=min(112, args.size),
                                resize=min(128, args.size)) if args.transform == "imagenet" \
        else TransformConfig()
    images = smooth_images(args.images, args.size, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_folder(root / "folder", images, classes=10)
        write_lmdb(root / "raw", images, classes=10, encoded=False)
        write_lmdb(root / "jpeg", images, classes=10, encoded=True)
        sources = {"folder (JPEG files)": f"folder:{root / 'folder'}",
                   "LMDB (encoded JPEG Datums)": f"lmdb:{root / 'jpeg'}",
                   "LMDB (raw uint8 Datums)": f"lmdb:{root / 'raw'}"}
        print(f"{args.images} images {args.size}x{args.size}, batch {args.batch}, "
              f"transform {args.transform}, best of {args.repeats}")
        print(f"{'source':<28} {'workers':>7} {'images/s':>10} {'vs 0 workers':>13} "
              f"{'first batch':>12}")
        for name, spec in sources.items():
            base = 0.0
            for workers in (0, 1, 2):
                rate, startup = images_per_second(spec, workers, args.batch, args.images,
                                                  transform, args.repeats)
                base = base or rate
                print(f"{name:<28} {workers:>7} {rate:>10.0f} {rate / base:>12.2f}x "
                      f"{startup * 1000:>10.0f}ms")


if __name__ == "__main__":
    main()

"""``nncompress inspect FILE.ncz``: per-tensor sizes of a compact model file."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from nncompress.cli._options import add_json_argument
from nncompress.export import CompactInfo

__all__ = ["add_parser", "format_info", "run"]


def add_parser(parser: argparse.ArgumentParser) -> None:
    """Register the arguments of ``inspect``."""
    parser.add_argument("file", type=Path, help="a .ncz file")
    add_json_argument(parser, "the sizes")


def format_info(info: CompactInfo) -> str:
    """A table: per tensor entries, kept, bits per kept entry (positions, values) and bytes.

    Example:
        >>> # print(format_info(inspect_compact("model.ncz")))
    """
    header = ["tensor", "shape", "values", "layout", "entries", "kept", "pos bits/kept",
              "val bits/kept", "bytes"]
    rows = [header]
    for t in info.tensors:
        values = f"{t.values}+{t.mantissa}m" if t.mantissa else t.values  # mantissa bits
        rows.append([t.name, "x".join(map(str, t.shape)) or "scalar", values, t.layout,
                     f"{t.entries:,}", f"{t.kept:,}", f"{t.position_bits_per_kept:.2f}",
                     f"{t.value_bits_per_kept:.2f}", f"{t.bytes:,}"])
    kept = sum(t.kept for t in info.tensors)
    pos = sum(t.position_bytes for t in info.tensors)
    val = sum(t.value_bytes for t in info.tensors)
    rows.append(["total", "", "", "", f"{sum(t.entries for t in info.tensors):,}", f"{kept:,}",
                 f"{8 * pos / kept if kept else 0:.2f}", f"{8 * val / kept if kept else 0:.2f}",
                 f"{pos + val:,}"])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    kwargs = {k: f"<{len(v):,} characters>" if isinstance(v, str) and len(v) > 60 else v
              for k, v in info.arch["kwargs"].items()}  # a Caffe net's text: not in the header
    lines = [f"{info.path}: format {info.version}, model {info.arch['ref']} "
             f"{json.dumps(kwargs)}, floats stored as {info.float_dtype}"]
    for i, r in enumerate(rows):
        if i == len(rows) - 1:
            lines.append("  ".join("-" * w for w in widths))
        lines.append("  ".join(c.ljust(w) if j < 4 else c.rjust(w)
                               for j, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip())
    lines.append(f"header and metadata {info.file_bytes - pos - val:,} bytes; file "
                 f"{info.file_bytes:,} bytes; fp32 weights {info.fp32_bytes:,} bytes "
                 f"({info.ratio:.1f}x smaller)")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Print the sizes of ``file``; 0 on success."""
    from nncompress.export import inspect_compact

    info = inspect_compact(args.file)
    print(json.dumps(info.to_dict(), indent=2) if args.json else format_info(info))
    return 0

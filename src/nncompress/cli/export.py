"""``nncompress export PATH -o model.ncz [--onnx model.onnx]``: write a run's final model."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from nncompress.cli._misuse import check_output_file, writing
from nncompress.cli._options import add_allow_import_argument, add_model_path_argument
from nncompress.errors import ConfigError

__all__ = ["add_parser", "run"]


def add_parser(parser: argparse.ArgumentParser) -> None:
    """Register the arguments of ``export``."""
    add_model_path_argument(parser)
    parser.add_argument("-o", "--output", type=Path, default=None,
                        help="compact model file to write (.ncz)")
    parser.add_argument("--onnx", type=Path, default=None, help="ONNX file to write")
    floats = parser.add_mutually_exclusive_group()
    floats.add_argument("--float32", dest="float_dtype", action="store_const", const="float32",
                        help="store non-INQ floats in their own precision (default, lossless)")
    floats.add_argument("--float16", dest="float_dtype", action="store_const", const="float16",
                        help="store non-INQ floats as float16 (smaller, rounded)")
    parser.set_defaults(float_dtype="float32")
    parser.add_argument("--input-shape", default=None, metavar="C,H,W",
                        help="ONNX input shape of one example (default: the model's "
                             "in_channels and input_size, given or its defaults, e.g. "
                             "3,224,224 for resnet18; else 1,28,28)")
    add_allow_import_argument(parser)


def _input_shape(text: str | None, arch: dict[str, Any]) -> tuple[int, ...]:
    if text is None:  # the model's own: its kwargs, else its factory's defaults
        from nncompress.models import default_input_shape

        ref, kwargs = arch.get("ref"), arch.get("kwargs", {})
        known = default_input_shape(ref, kwargs) if isinstance(ref, str) else None
        return known if known is not None else (1, 28, 28)
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError:
        shape = ()
    if not shape or any(d < 1 for d in shape):
        raise ConfigError(f"--input-shape {text!r} must be positive integers separated by "
                          "commas, e.g. 1,28,28")
    return shape


def run(args: argparse.Namespace) -> int:
    """Write the requested files and print their sizes; 0 on success."""
    from nncompress.models import architecture
    from nncompress.run_folder import load_run_model

    if args.output is None and args.onnx is None:
        raise ConfigError("nothing to write: give -o model.ncz and/or --onnx model.onnx")
    if args.output is not None:
        check_output_file(args.output, "-o", (".ncz",))
    if args.onnx is not None:
        check_output_file(args.onnx, "--onnx", (".onnx",))
    model, _ = load_run_model(args.path, allow_import=args.allow_import)
    if args.output is not None:
        from nncompress.export import save_compact

        with writing(args.output, "-o"):
            info = save_compact(model, args.output, float_dtype=args.float_dtype)
        print(f"wrote {args.output}: {info.file_bytes:,} bytes, {info.ratio:.1f}x smaller than "
              f"its fp32 weights ({info.fp32_bytes:,} bytes)")
    if args.onnx is not None:
        from nncompress.export.onnx import export_onnx

        shape = _input_shape(args.input_shape, architecture(model) or {})
        with writing(args.onnx, "--onnx"):
            export_onnx(model, args.onnx, shape)
        print(f"wrote {args.onnx}: {Path(args.onnx).stat().st_size:,} bytes, input "
              f"(batch, {', '.join(map(str, shape))})")
    return 0

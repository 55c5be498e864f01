"""``nncompress report RUN_DIR``: the per-layer compression table of a finished run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from nncompress.cli._options import add_json_argument

__all__ = ["add_parser", "run"]


def add_parser(parser: argparse.ArgumentParser) -> None:
    """Register the arguments of ``report``."""
    parser.add_argument("run_dir", type=Path, help="a run folder (or its report.json)")
    add_json_argument(parser, "the report")


def run(args: argparse.Namespace) -> int:
    """Print the report of ``run_dir``; 0 on success."""
    from nncompress.report import format_report, read_report

    path: Path = args.run_dir
    report = read_report(path if path.suffix == ".json" else path / "report.json")
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0

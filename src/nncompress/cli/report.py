"""``nncompress report RUN_DIR``: the per-layer compression table of a finished run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

__all__ = ["add_parser", "run"]


def add_parser(parser: argparse.ArgumentParser) -> None:
    """Register the arguments of ``report``."""
    parser.add_argument("run_dir", type=Path, help="a run folder (or its report.json)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args: argparse.Namespace) -> int:
    """Print the report of ``run_dir``; 0 on success."""
    from nncompress.report import format_report, read_report

    path: Path = args.run_dir
    report = read_report(path if path.suffix == ".json" else path / "report.json")
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0

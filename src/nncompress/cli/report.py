"""``nncompress report RUN_DIR``: the per-layer compression table of a finished run."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from nncompress.cli._options import add_json_argument

__all__ = ["add_parser", "run"]


def add_parser(parser: argparse.ArgumentParser) -> None:
    """Register the arguments of ``report``."""
    parser.add_argument("run_dir", type=Path, help="a run folder (or its report.json)")
    add_json_argument(parser, "the report")


def run(args: argparse.Namespace) -> int:
    """Print the report of ``run_dir`` and where its plots are; 0 on success."""
    from nncompress.report import format_report, read_report
    from nncompress.report.plots import PLOTS_DIR, existing_plots

    path: Path = args.run_dir
    run_dir = path.parent if path.suffix == ".json" else path
    report = read_report(run_dir / "report.json" if path.suffix != ".json" else path)
    plots = existing_plots(run_dir)
    where = (f"plots:       {run_dir / PLOTS_DIR} ({', '.join(p.name for p in plots)})" if plots
             else f"plots:       none yet (nncompress plot {run_dir})")
    if args.json:  # stdout: the versioned report as it is; where the plots are goes to stderr
        print(json.dumps(report, indent=2))
        print(where, file=sys.stderr)
    else:
        print(format_report(report))
        print(where)
    return 0

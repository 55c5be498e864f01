"""``nncompress plot RUN_DIR``: PNG plots of a run (training curves, per-layer statistics)."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_parser", "plots_after_run", "run"]


def add_parser(parser: argparse.ArgumentParser) -> None:
    """Register the arguments of ``plot``."""
    parser.add_argument("run_dir", type=Path, help="a run folder")
    parser.add_argument("-o", "--out", type=Path, default=None,
                        help="folder for the PNG files (default: RUN_DIR/plots)")


def run(args: argparse.Namespace) -> int:
    """Write the plots and list them; 0 on success, 1 without matplotlib."""
    from nncompress.report.plots import write_plots

    for path in write_plots(args.run_dir, args.out):
        print(path)
    return 0


def plots_after_run(run_dir: Path) -> str | None:
    """Write a finished run's plots when matplotlib is installed; a line saying where, or None.

    Example:
        >>> plots_after_run(Path("/nonexistent"))  # no metrics: nothing to plot
    """
    import importlib.util

    from nncompress.errors import NNCompressError
    from nncompress.report.plots import PLOTS_DIR, write_plots

    if importlib.util.find_spec("matplotlib") is None:
        return None
    try:
        written = write_plots(run_dir)
    except NNCompressError:
        return None
    names = ", ".join(p.name for p in written)
    return f"plots:       {run_dir / PLOTS_DIR} ({names})"

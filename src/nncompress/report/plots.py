"""PNG plots of a run folder (matplotlib, an optional extra: ``pip install nncompress[plot]``).

:func:`write_plots` reads a run folder's ``metrics.jsonl``, ``report.json`` and final weights
(``model.safetensors``, else ``model.ncz``) and writes, with matplotlib's Agg backend (no
display needed):

* ``curves.png``: training loss and evaluation loss, accuracy, kept fraction and learning rate
  against the run's iteration (stages and INQ steps laid end to end, boundaries marked);
* ``kept.png``: kept % per layer;
* ``histograms.png``: the kept weights of each layer, with the INQ levels ``±2**e`` marked;
* ``bits.png``: bits per kept weight, per layer.

Example:
    >>> # write_plots("runs/lenet5")  ->  [runs/lenet5/plots/curves.png, ...]
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from nncompress.errors import ConfigError, FormatError

__all__ = ["PLOTS_DIR", "PLOT_NAMES", "existing_plots", "read_metrics", "write_plots"]

PLOT_NAMES = ("curves", "kept", "histograms", "bits")
PLOTS_DIR = "plots"


def _require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ConfigError("plots need matplotlib, which is not installed: "
                          "pip install nncompress[plot]") from None


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a ``metrics.jsonl``, each with ``run_iteration`` added.

    Iterations restart at each stage and INQ step; ``run_iteration`` lays the segments end to
    end (each starts where the previous one's last row ended).

    Raises:
        FormatError: the file is missing or a line is not a JSON object.

    Example:
        >>> import tempfile, pathlib
        >>> file = pathlib.Path(tempfile.mkdtemp()) / "metrics.jsonl"
        >>> _ = file.write_text('{"stage": "a", "step": 0, "iteration": 5}\\n'
        ...                     '{"stage": "b", "step": 0, "iteration": 2}\\n')
        >>> [row["run_iteration"] for row in read_metrics(file)]
        [5, 7]
    """
    file = Path(path)
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise FormatError(f"{file}: no metrics here; is this a run folder?") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise FormatError(f"{file}: not readable ({exc})") from None
    rows, offset, last, segment = [], 0, 0, None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if not isinstance(row, dict) or not isinstance(row.get("iteration"), int):
            raise FormatError(f"{file}, line {number}: not a metrics record")
        key = (row.get("stage_index", row.get("stage")), row.get("step", 0))
        if segment is not None and key != segment:
            offset += last
        segment, last = key, row["iteration"]
        rows.append(row | {"run_iteration": offset + row["iteration"]})
    return rows


def _final_weights(run_dir: Path) -> dict[str, torch.Tensor] | None:
    weights = run_dir / "model.safetensors"
    if weights.is_file():
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(weights)))
        except Exception as exc:  # safetensors raises its own error types
            raise FormatError(f"{weights}: not a readable safetensors file ({exc})") from None
    compact = run_dir / "model.ncz"
    if compact.is_file():
        from nncompress.export import load_compact

        return dict(load_compact(compact).state_dict())
    return None


def existing_plots(run_dir: str | Path) -> list[Path]:
    """The plot files already in ``run_dir/plots``, in :data:`PLOT_NAMES` order.

    Example:
        >>> existing_plots("/nonexistent")
        []
    """
    folder = Path(run_dir) / PLOTS_DIR
    return [folder / f"{n}.png" for n in PLOT_NAMES if (folder / f"{n}.png").is_file()]


def write_plots(run_dir: str | Path, out_dir: str | Path | None = None, *,
                dpi: int = 100) -> list[Path]:
    """Write the PNG plots of a run folder (atomically, one file per plot).

    Args:
        run_dir: the run folder.
        out_dir: where to write (default ``run_dir/plots``).
        dpi: pixels per inch (the curves are 10 x 7 inches).

    Returns:
        The files written: the curves and the per-layer plots; ``histograms.png`` only when
        the folder holds final weights.

    Raises:
        ConfigError: matplotlib is not installed (the message says what to install).
        FormatError: ``metrics.jsonl`` or ``report.json`` is missing or unreadable.
    """
    _require_matplotlib()
    from nncompress._io import atomic_path
    from nncompress.report import read_report
    from nncompress.report._plot_figures import FIGURES

    run = Path(run_dir)
    out = run / PLOTS_DIR if out_dir is None else Path(out_dir)
    data = {"metrics": read_metrics(run / "metrics.jsonl"),
            "report": read_report(run / "report.json"), "weights": _final_weights(run)}
    written = []
    for name in PLOT_NAMES:
        figure = FIGURES[name](data)
        if figure is None:
            continue
        target = out / f"{name}.png"
        with atomic_path(target) as tmp:
            figure.savefig(tmp, format="png", dpi=dpi)
        written.append(target)
    return written

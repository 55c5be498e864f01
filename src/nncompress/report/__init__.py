"""Run reports: compression statistics as versioned JSON and as a text table.

``report.json`` (format ``nncompress-report``, version 1) holds one row per compressible layer
(entries, kept, sparsity, levels, bits, fixed fraction), totals (kept, compression, the weight
storage estimate) and the test loss, accuracy and error. Reports are plain data: the table is
made from the JSON, so ``nncompress report`` needs neither the model nor torch. The rows come
from :func:`nncompress.report.summary.summarize` of a model (not imported here, for that reason).

Example:
    >>> report = build_report([{"name": "fc", "layer_type": "Linear", "mode": "plain",
    ...     "entries": 10, "kept": 5, "levels": None, "bits": 32, "fixed_fraction": 0.0}])
    >>> report["totals"]["compression"]
    2.0
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nncompress.errors import FormatError

__all__ = [
    "REPORT_FORMAT",
    "REPORT_VERSION",
    "build_report",
    "format_report",
    "read_report",
    "write_report",
]

REPORT_FORMAT = "nncompress-report"
REPORT_VERSION = 1
_LAYER_KEYS = ("name", "layer_type", "mode", "entries", "kept", "sparsity", "levels", "bits",
               "fixed_fraction")


def _layer_row(row: Mapping[str, Any]) -> dict[str, Any]:
    entries, kept = int(row["entries"]), int(row["kept"])
    out = {k: row.get(k) for k in _LAYER_KEYS}
    out.update(entries=entries, kept=kept, sparsity=1.0 - kept / entries if entries else 0.0)
    if out["mode"] == "plain" and out["levels"] is not None:
        out["fixed_fraction"] = 1.0  # finalized after INQ: every value sits on a level
    return out


def _totals(layers: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    entries = sum(r["entries"] for r in layers)
    kept = sum(r["kept"] for r in layers)
    # Weight storage: every entry as float32 before, every kept entry at its bit width after
    # (positions of the kept entries are not counted; the compact file's size covers them).
    stored_bits = sum(r["kept"] * r["bits"] for r in layers)
    bits = sorted({r["bits"] for r in layers})
    return {
        "entries": entries,
        "kept": kept,
        "kept_fraction": kept / entries if entries else 1.0,
        "compression": entries / kept if kept else None,
        "bits": bits,
        "storage_compression": 32 * entries / stored_bits if stored_bits else None,
    }


def build_report(layers: Sequence[Mapping[str, Any]], *, test: Mapping[str, Any] | None = None,
                 **extra: Any) -> dict[str, Any]:
    """Assemble the report data.

    Args:
        layers: per-layer rows, e.g. ``Summary.to_dict()["layers"]``.
        test: ``{"loss": ..., "accuracy": ...}`` on the test set; ``error`` is added.
        **extra: further top-level entries (recipe name, stages, compact file...).

    Returns:
        A JSON-ready dict with ``format``, ``version``, ``layers``, ``totals`` and ``test``.

    Example:
        >>> build_report([], test={"loss": 0.1, "accuracy": 0.99})["test"]["error"]
        0.01...
    """
    rows = [_layer_row(r) for r in layers]
    test_out = None
    if test is not None:
        accuracy = test.get("accuracy")
        test_out = {**test, "error": None if accuracy is None else 1.0 - accuracy}
    return {"format": REPORT_FORMAT, "version": REPORT_VERSION, **extra, "layers": rows,
            "totals": _totals(rows), "test": test_out}


def write_report(path: str | Path, report: Mapping[str, Any]) -> None:
    """Write ``report`` as indented JSON, atomically.

    Example:
        >>> import tempfile, pathlib
        >>> file = pathlib.Path(tempfile.mkdtemp()) / "report.json"
        >>> write_report(file, build_report([])); read_report(file)["version"]
        1
    """
    from nncompress._io import atomic_write_text

    atomic_write_text(path, json.dumps(report, indent=2, allow_nan=False) + "\n")


def read_report(path: str | Path) -> dict[str, Any]:
    """Read a ``report.json``, checking its format and version.

    Raises:
        FormatError: the file is missing, not JSON, or not a report of a known version.

    Example:
        >>> # see write_report
    """
    file = Path(path)
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FormatError(f"{file}: no report here; is this a finished run folder?") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"{file}: not a readable report ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != REPORT_FORMAT:
        raise FormatError(f"{file}: not an nncompress report")
    if data.get("version") != REPORT_VERSION:
        raise FormatError(f"{file}: report version {data.get('version')!r} is not supported "
                          f"(this nncompress reads version {REPORT_VERSION})")
    return data


def _percent(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{100 * value:.{digits}f}"


def format_report(report: Mapping[str, Any]) -> str:
    """The per-layer table and the totals, as text.

    Example:
        >>> print(format_report(build_report([{"name": "fc", "layer_type": "Linear",
        ...     "mode": "plain", "entries": 10, "kept": 5, "levels": 9, "bits": 5,
        ...     "fixed_fraction": 1.0}], test={"loss": 0.1, "accuracy": 0.98})))
        layer  type    entries  kept  kept %  sparsity %  levels  bits  fixed %
        ...
    """
    head = ("layer", "type", "entries", "kept", "kept %", "sparsity %", "levels", "bits",
            "fixed %")
    rows = [(r["name"], r["layer_type"] or "", f"{r['entries']:,}", f"{r['kept']:,}",
             _percent(r["kept"] / r["entries"] if r["entries"] else None),
             _percent(r["sparsity"]), "-" if r["levels"] is None else str(r["levels"]),
             str(r["bits"]), _percent(r["fixed_fraction"], 1)) for r in report["layers"]]
    totals = report["totals"]
    total = ("total", "", f"{totals['entries']:,}", f"{totals['kept']:,}",
             _percent(totals["kept_fraction"]), _percent(1 - totals["kept_fraction"]), "", "", "")
    table = [head, *rows, total]
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                       for i, (c, w) in enumerate(zip(row, widths))).rstrip() for row in table]
    rule = "-" * max(len(line) for line in lines)
    lines = [lines[0], rule, *lines[1:-1], rule, lines[-1], ""]
    lines.extend(_total_lines(report))
    return "\n".join(lines)


def _total_lines(report: Mapping[str, Any]) -> list[str]:
    totals = report["totals"]
    ratio = totals["compression"]
    lines = [f"kept:        {totals['kept']:,} of {totals['entries']:,} "
             f"({_percent(totals['kept_fraction'])}%)",
             f"compression: {'inf' if ratio is None else f'{ratio:.1f}'}x fewer non-zero entries"]
    bits = totals["bits"]
    if bits:
        storage = totals["storage_compression"]
        shown = "-" if storage is None or math.isinf(storage) else f"{storage:.1f}x"
        lines.append(f"bits:        {'/'.join(str(b) for b in bits)} per kept value "
                     f"(weight storage {shown} smaller than float32, indices not counted)")
    compact = report.get("compact")
    if compact:
        lines.append(f"compact:     {compact['file']} {compact['bytes']:,} bytes")
    test = report.get("test")
    if test and test.get("error") is not None:
        lines.append(f"test error:  {100 * test['error']:.2f}% "
                     f"(accuracy {100 * test['accuracy']:.2f}%)")
    return lines

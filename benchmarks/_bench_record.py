"""The benchmark record: every row ``benchmarks/reproduce.py`` showed, kept by run folder.

A run folder is large and local, and BENCHMARKS.md only shows rounded numbers; the record keeps
each row's exact values in a small JSON file next to the Markdown, so the tables can be written
again after a folder is gone: a folder that still holds ``report.json`` is read from it (and its
row recorded again); one that does not is taken from the record. Each entry says where its row
came from (``source``).

Format (``nncompress-benchmark-record``, version 1)::

    {"format": ..., "version": 1,
     "runs":  {FOLDER: {"source": TEXT, "row": ROW}},   # rows of the tables (reference measured)
     "pairs": {FOLDER: {"source": TEXT, "row": ROW}}}   # rows of the effect-of-each-mean table

where ROW holds every field of :class:`~_bench_runs.RunRow` (``layers`` as a list of
``{name, entries, kept, bits}``).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from _bench_runs import LayerRow, RunRow
from nncompress._io import atomic_write_text
from nncompress.errors import FormatError

__all__ = ["KINDS", "RECORD_FORMAT", "Record", "row_from_json", "row_to_json"]

RECORD_FORMAT = "nncompress-benchmark-record"
KINDS = ("runs", "pairs")
_FIELDS = {f.name: f for f in dataclasses.fields(RunRow)}
_TUPLES = ("stages", "inq_k", "labels", "prerequisites")


def row_to_json(row: RunRow) -> dict[str, Any]:
    """``row`` as JSON values (tuples as lists, without ``recorded``).

    Example:
        >>> r = RunRow("runs/a", "a", "m", ("dns",), (), 0, 0.01, None, 10, 2,
        ...            (LayerRow("fc", 10, 2, 5),), 100, 60.0, 1, "c", "", "h")
        >>> row_to_json(r)["layers"]
        [{'name': 'fc', 'entries': 10, 'kept': 2, 'bits': 5}]
    """
    out = dataclasses.asdict(row)
    out.pop("recorded")
    return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


def row_from_json(data: Any, where: str) -> RunRow:
    """The row a :func:`row_to_json` value holds, marked ``recorded``.

    Raises:
        FormatError: a field is missing, unknown or of the wrong kind (named with ``where``).

    Example:
        >>> r = RunRow("runs/a", "a", "m", ("dns",), (), 0, 0.01, None, 10, 2,
        ...            (LayerRow("fc", 10, 2, 5),), 100, 60.0, 1, "c", "", "h")
        >>> row_from_json(row_to_json(r), "x") == dataclasses.replace(r, recorded=True)
        True
    """
    if not isinstance(data, dict):
        raise FormatError(f"{where}: expected an object of row fields, got {data!r:.60}")
    needed = {name for name, f in _FIELDS.items() if f.default is dataclasses.MISSING
              and f.default_factory is dataclasses.MISSING}
    missing = sorted(needed - set(data))
    unknown = sorted(set(data) - set(_FIELDS))
    if missing or unknown:
        raise FormatError(f"{where}: " + "; ".join(
            ([f"missing field(s) {', '.join(missing)}"] if missing else [])
            + ([f"unknown field(s) {', '.join(unknown)}"] if unknown else []))
            + " (write the record again with benchmarks/reproduce.py)")
    values = dict(data)
    try:
        values["layers"] = tuple(LayerRow(str(x["name"]), int(x["entries"]), int(x["kept"]),
                                          int(x["bits"])) for x in data["layers"])
        for name in _TUPLES:
            if name in values:
                values[name] = tuple(values[name])
    except (KeyError, TypeError, ValueError) as exc:
        raise FormatError(f"{where}: a malformed layer or list ({exc})") from None
    return RunRow(**{**values, "recorded": True})


class Record:
    """The rows of a record file, by kind and folder; :meth:`save` writes it atomically."""

    def __init__(self, path: Path, entries: dict[str, dict[str, dict[str, Any]]]):
        self.path = path
        self.entries = entries

    @classmethod
    def load(cls, path: str | Path) -> Record:
        """The record at ``path`` (empty when there is no file yet).

        Raises:
            FormatError: the file is not a readable record.
        """
        file = Path(path)
        if not file.exists():
            return cls(file, {kind: {} for kind in KINDS})
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise FormatError(f"{file}: not a readable benchmark record ({exc})") from None
        if (not isinstance(data, dict) or data.get("format") != RECORD_FORMAT
                or data.get("version") != 1):
            raise FormatError(f"{file}: not a {RECORD_FORMAT} file of version 1; give the "
                              "record benchmarks/reproduce.py wrote, or a new path")
        entries = {}
        for kind in KINDS:
            part = data.get(kind, {})
            if not isinstance(part, dict) or not all(
                    isinstance(e, dict) and "row" in e for e in part.values()):
                raise FormatError(f"{file}: {kind!r} must map folders to "
                                  '{"source": ..., "row": {...}}')
            entries[kind] = part
        return cls(file, entries)

    def has(self, kind: str, folder: str) -> bool:
        """Whether the record holds ``folder``'s row of ``kind``."""
        return folder in self.entries[kind]

    def row(self, kind: str, folder: str) -> RunRow:
        """The recorded row (``recorded`` set).

        Raises:
            FormatError: not recorded, or a damaged entry.
        """
        if folder not in self.entries[kind]:
            raise FormatError(f"{folder}: no report.json and not in {self.path}; give a "
                              "finished run folder (or --run to run the recipes)")
        return row_from_json(self.entries[kind][folder]["row"], f"{self.path}: {kind}.{folder}")

    def put(self, kind: str, row: RunRow, source: str) -> None:
        """Record ``row`` (read from its folder) under its folder; an entry that already holds
        the same values keeps its ``source``, so reading a folder again changes nothing."""
        values = row_to_json(row)
        if self.entries[kind].get(row.folder, {}).get("row") != values:
            self.entries[kind][row.folder] = {"source": source, "row": values}

    def save(self) -> None:
        """Write the record atomically (folders sorted, so a diff shows what changed)."""
        data = {"format": RECORD_FORMAT, "version": 1,
                **{kind: dict(sorted(self.entries[kind].items())) for kind in KINDS}}
        atomic_write_text(self.path, json.dumps(data, indent=1, ensure_ascii=False) + "\n")

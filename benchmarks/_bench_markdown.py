"""BENCHMARKS.md and README's results block, as Markdown, from benchmark rows.

Every number is formatted here, once: test error in percent with two decimals (0.01% is one
of 10,000 test images), compression with one decimal, bytes with thousands separators.
"""

from __future__ import annotations

import platform
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from _bench_goals import ANCHORS, GOALS, achieved, check_goal
from _bench_runs import RunRow

__all__ = ["Ablation", "ablation_table", "benchmarks_markdown", "summary_table"]

MODEL_NAMES = {"lenet5": "LeNet-5", "lenet300_100": "LeNet-300-100"}
_HIDDEN_STAGES = ("finalize", "export")


@dataclass(frozen=True)
class Ablation:
    """Run ``b`` is run ``a`` plus one mean."""

    mean: str
    a: RunRow
    b: RunRow


def _percent(value: float | None) -> str:
    """``0.0096`` -> ``0.96%``; ``-`` for no value."""
    return "-" if value is None else f"{100 * value:.2f}%"


def _times(value: float | None, digits: int = 1) -> str:
    """``106.57`` -> ``106.6x``; ``-`` for no value."""
    return "-" if value is None else f"{value:,.{digits}f}x"


def _size(value: int | None) -> str:
    """``3466`` -> ``3,466 B``; ``-`` for no file."""
    return "-" if value is None else f"{value:,} B"


def _minutes(row: RunRow) -> str:
    """Wall time in minutes, with the number of sessions of a resumed run."""
    if row.wall_s is None:
        return "-"
    more = f" ({row.sessions} sessions)" if row.sessions > 1 else ""
    if row.weights_wall_s is not None:
        more += f" + {row.weights_wall_s / 60:.1f} min for its starting weights"
    return f"{row.wall_s / 60:.1f} min{more}"


def _bits(row: RunRow) -> str:
    """The bit widths of the kept values, e.g. ``4-5``."""
    found = sorted({layer.bits for layer in row.layers})
    return "-" if not found else str(found[0]) if len(found) == 1 else f"{found[0]}-{found[-1]}"


def _folder(row: RunRow) -> str:
    """The run folder, marked when its row comes from the benchmark record."""
    return f"`{row.folder}`" + (" (recorded)" if row.recorded else "")


def _pipeline(row: RunRow) -> str:
    """The stages that train or compress, e.g. ``train → dns (distilled) → inq K=8``."""
    return " → ".join(label for label in row.labels if label not in _HIDDEN_STAGES)


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return lines + ["| " + " | ".join(cells) + " |" for cells in rows]


def _models(rows: Sequence[RunRow]) -> list[str]:
    """The models of the rows, then those only the anchors name."""
    return list(dict.fromkeys([*(row.model for row in rows), *(a.model for a in ANCHORS)]))


def summary_table(rows: Sequence[RunRow]) -> str:
    """Our runs and the published anchors, per model: the table README shows too.

    Example:
        >>> summary_table([]).splitlines()[0].startswith("| model |")
        True
    """
    body: list[list[str]] = []
    for model in _models(rows):
        shown = MODEL_NAMES.get(model, model)
        body += [[shown, f"`{r.name}`: {_pipeline(r)}", f"{r.kept:,} of {r.entries:,}",
                  _times(r.compression), _percent(r.error), _size(r.ncz_bytes),
                  _times(r.fp32_ratio, 0)] for r in rows if r.model == model]
        body += [[shown, f"{a.method} ({a.citation})", "", a.compression, a.error, a.file, ""]
                 for a in ANCHORS if a.model == model]
    head = ("model", "run / published", "kept of entries", "compression", "test error",
            "`.ncz` file", "fp32 / `.ncz`")
    return "\n".join(_table(head, body)) + "\n"


def _details(rows: Sequence[RunRow]) -> list[str]:
    out: list[str] = []
    for model in _models(rows):
        mine = [r for r in rows if r.model == model]
        if not mine:
            continue
        out += ["", f"### {MODEL_NAMES.get(model, model)}", ""]
        out += _table(("run", "folder", "test error", "reference error", "bits", "`.ncz` file",
                       "held out for validation", "validation accuracy", "wall time"),
                      [[f"`{r.name}`", _folder(r), _percent(r.error),
                        _percent(r.reference_error), _bits(r), _size(r.ncz_bytes),
                        f"{r.validation:,}", _percent(r.validation_accuracy), _minutes(r)]
                       for r in mine])
        names = list(dict.fromkeys(layer.name for r in mine for layer in r.layers))
        cells = []
        for r in mine:
            by_name = {layer.name: layer for layer in r.layers}
            cells.append([f"`{r.name}`"] + [
                f"{100 * by_name[n].kept / by_name[n].entries:.2f}% ({by_name[n].bits} b)"
                if n in by_name and by_name[n].entries else "-" for n in names])
        out += ["", "Kept % per layer (bits per kept value):", ""]
        out += _table(("run", *names), cells)
    return out


def _goals(rows: Sequence[RunRow]) -> list[str]:
    body = []
    for result in (check_goal(goal, list(rows)) for goal in GOALS):
        if result.row is None:
            body.append([result.goal.text, "-", "-", "not run"])
            continue
        status = "met" if result.met else "missed: " + "; ".join(result.misses)
        body.append([result.goal.text, f"`{result.row.name}`",
                     achieved(result.goal, result.row), status])
    return _table(("goal", "run", "reached", "status"), body)


def ablation_table(ablations: Sequence[Ablation]) -> list[str]:
    """The effect of each mean: the change from run a to run b (a plus the mean).

    Example:
        >>> ablation_table([])[0].startswith("No pairs")
        True
    """
    if not ablations:
        return ["No pairs of runs were given (`--ablation MEAN=RUN_A:RUN_B`)."]
    body = []
    for ab in ablations:
        a, b = ab.a, ab.b
        error = ("-" if a.error is None or b.error is None
                 else f"{100 * (b.error - a.error):+.2f} points")
        nbytes = ("-" if a.ncz_bytes is None or b.ncz_bytes is None
                  else f"{b.ncz_bytes - a.ncz_bytes:+,} B")
        body.append([ab.mean, f"{_folder(a)} → {_folder(b)}",
                     f"{_percent(a.validation_accuracy)} → {_percent(b.validation_accuracy)}",
                     f"{_percent(a.error)} → {_percent(b.error)}", error,
                     f"{a.kept:,} → {b.kept:,}", f"{b.kept - a.kept:+,}",
                     f"{_size(a.ncz_bytes)} → {_size(b.ncz_bytes)}", nbytes])
    return _table(("mean", "runs (a → a + mean)", "validation accuracy", "test error", "change",
                   "kept", "change",
                   "`.ncz` file", "change"), body)


def _commands(rows: Sequence[RunRow], regenerate: str) -> list[str]:
    out, seen = ["```bash"], set[str]()
    for r in rows:
        note = f"  ({r.command_note})" if r.command_note else ""
        out += [f"# {r.name}{note}", *(p for p in r.prerequisites if p not in seen), r.command]
        seen.update(r.prerequisites)
    out += ["# this file", regenerate, "```"]
    return out


def _recipes(rows: Sequence[RunRow]) -> list[str]:
    out: list[str] = []
    for r in rows:
        text = r.header or "(the recipe has no header comment)"
        out += ["", f"<details><summary><code>{r.name}</code></summary>", "", "```text",
                text, "```", "", "</details>"]
    return out


def _machine() -> str:
    name = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                name = line.partition(":")[2].strip()
                break
    return name or "unknown CPU"


def _preamble(recorded: bool) -> list[str]:
    return [
        "# Benchmarks", "",
        "Generated by `benchmarks/reproduce.py` from each run folder's `report.json`, "
        "`recipe.yaml` and `metrics.jsonl`; do not edit by hand (the command that wrote it is "
        "under Commands).", "",
        "- **test error**: on the data's test split (the 10,000 MNIST test images). \"held out "
        "for validation\" is how many training examples a recipe held out to choose its "
        "hyper-parameters on (0: none); each recipe's header, at the end, says how it was tuned.",
        "- **compression**: entries per kept (non-zero) entry of the compressible layers; "
        "**fp32 / `.ncz`**: their float32 bytes (4 per entry) over the compact file's bytes.",
        "- **reference error**: the test error of the model that ends the last training stage "
        "before compression (`nncompress eval` of its checkpoint), or of the weights the recipe "
        "starts from.",
        "- **wall time**: elapsed at the run's last evaluation, from `metrics.jsonl` (summed over "
        "the sessions of a resumed run), plus that of the run folder that made the weights it "
        "starts from, if any; measured on the machine that made the run. This file was "
        f"generated on: {_machine()}.",
        *(["- **(recorded)**: the run folder was not on that machine; the row comes from the "
           "benchmark record (`--record`), which keeps each row's exact values and where they "
           "were read. Its `.ncz` size is that of the file the run wrote, in the compact "
           "format of its time: the others were re-read from files of format version 3, "
           "which are 54-102 bytes smaller than version 2 files of the same LeNet models "
           "(`benchmarks/compact_size.py`)."] if recorded else []),
    ]


def benchmarks_markdown(rows: Sequence[RunRow], ablations: Sequence[Ablation],
                        regenerate: str, notes: str = "") -> str:
    """The whole BENCHMARKS.md.

    Args:
        rows: one per run folder, in the order given.
        ablations: pairs of runs, each the effect of one mean.
        regenerate: the command that wrote this file.
        notes: Markdown added as a closing "Notes" section (what was tried, for example).

    Returns:
        The Markdown text.

    Example:
        >>> benchmarks_markdown([], [], "python benchmarks/reproduce.py --from").startswith("#")
        True
    """
    lines = [
        *_preamble(any(r.recorded for r in rows)
                   or any(r.recorded for ab in ablations for r in (ab.a, ab.b))),
        "", "## Results", "", summary_table(rows).rstrip("\n"), "", "## Per run", *_details(rows),
        "", "## Goals", "", *_goals(rows),
        "", "## Effect of each mean", "",
        *ablation_table(ablations),
        *(["", "## Notes", "", notes.strip()] if notes.strip() else []),
        "", "## Commands", "", *_commands(rows, regenerate),
        "", "## How each recipe was tuned (its header comment)", *_recipes(rows), "",
    ]
    return "\n".join(lines)

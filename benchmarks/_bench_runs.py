"""Read a finished run folder into one benchmark row (for ``benchmarks/reproduce.py``).

A row comes from the folder's ``report.json`` (totals, layers, test error, compact file size),
its ``recipe.yaml`` (stages, INQ K, validation split; the command that reproduces it) and its
``metrics.jsonl`` (wall time). The reference's test error, when asked for, is measured by
``nncompress eval`` on the checkpoint that ends the last training stage before compression (or,
for a recipe without one, on the ``model.weights`` it starts from).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _bench_command import reproduce_command
from nncompress.errors import FormatError
from nncompress.recipe import packaged_recipes
from nncompress.report import read_report
from nncompress.run_resume import read_saved_recipe

__all__ = ["LayerRow", "RunRow", "header_comment", "read_run", "wall_time"]

_COMPRESSING = ("dns", "vd", "retrain", "inq")


@dataclass(frozen=True)
class LayerRow:
    """One compressible layer of a run: kept of entries and bits per kept value."""

    name: str
    entries: int
    kept: int
    bits: int


@dataclass(frozen=True)
class RunRow:
    """Everything the benchmark tables show about one run folder."""

    folder: str
    name: str
    model: str
    stages: tuple[str, ...]
    inq_k: tuple[int, ...]
    validation: int
    error: float | None
    reference_error: float | None
    entries: int
    kept: int
    layers: tuple[LayerRow, ...]
    ncz_bytes: int | None
    wall_s: float | None
    sessions: int
    command: str
    command_note: str
    header: str
    labels: tuple[str, ...] = ()  # per stage: "dns", "inq K=8", "dns (distilled)"...
    prerequisites: tuple[str, ...] = ()  # commands that make the model.weights it starts from
    weights_wall_s: float | None = None  # wall time of the run folder that made those weights
    validation_accuracy: float | None = None  # at the last evaluation, when examples were held out
    recorded: bool = False  # taken from the benchmark record: the folder is no longer here

    @property
    def compression(self) -> float | None:
        """Entries per kept entry (``None`` when nothing is kept)."""
        return self.entries / self.kept if self.kept else None

    @property
    def fp32_ratio(self) -> float | None:
        """float32 weight bytes (4 per entry) over the compact file's bytes."""
        return 4 * self.entries / self.ncz_bytes if self.ncz_bytes else None


def wall_time(metrics: Path) -> tuple[float | None, int]:
    """Seconds of training to the last evaluation, summed over the sessions of a resumed run.

    Each row of ``metrics.jsonl`` holds ``elapsed_s`` since its process started; a resumed run
    keeps the rows up to its checkpoint and counts from zero again, so every drop starts a new
    session, whose last value is added.

    Returns:
        The seconds (``None`` without rows) and the number of sessions.

    Raises:
        FormatError: a line is not JSON.

    Example:
        >>> # wall_time(Path("runs/lenet5/metrics.jsonl")) -> (3830.6, 1)
    """
    if not metrics.is_file():
        return None, 0
    values: list[float] = []
    for number, line in enumerate(metrics.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise FormatError(f"{metrics}: line {number} is not JSON") from None
        if isinstance(row, dict) and isinstance(row.get("elapsed_s"), (int, float)):
            values.append(float(row["elapsed_s"]))
    if not values:
        return None, 0
    total, sessions = 0.0, 1
    for before, now in zip(values, values[1:]):
        if now < before:
            total, sessions = total + before, sessions + 1
    return total + values[-1], sessions


def header_comment(file: Path) -> str:
    """The comment lines at the top of a YAML file, without their ``#`` (empty if none).

    Example:
        >>> # header_comment(Path("recipes/lenet5_dns_inq.yaml")).splitlines()[0]
    """
    lines: list[str] = []
    for line in file.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        lines.append(line[1:].removeprefix(" "))
    return "\n".join(lines).strip()


def _saved_recipe(folder: Path) -> dict[str, Any]:
    file = folder / "recipe.yaml"
    if not file.is_file():
        raise FormatError(f"{file}: missing; is {folder} a run folder?")
    data = read_saved_recipe(file)  # a mapping, or a FormatError naming the damage
    if not isinstance(data.get("stages"), list):
        raise FormatError(f"{file}: not a run's recipe (no stages)")
    return data


def _inq_k(recipe: dict[str, Any]) -> tuple[int, ...]:
    values: set[int] = set()
    for stage in recipe["stages"]:
        if isinstance(stage, dict) and stage.get("stage") == "inq":
            values.add(int((stage.get("defaults") or {}).get("num_quantum_values", 0)))
            for layer in (stage.get("layers") or {}).values():
                if isinstance(layer, dict) and "num_quantum_values" in layer:
                    values.add(int(layer["num_quantum_values"]))
    return tuple(sorted(values))


def _labels(recipe: dict[str, Any]) -> tuple[str, ...]:
    out = []
    for stage in recipe["stages"]:
        label = str(stage["stage"])
        if label == "inq":
            label += f" K={'/'.join(str(k) for k in _inq_k({'stages': [stage]}))}"
            defaults = stage.get("defaults")
            if isinstance(defaults, dict) and defaults.get("levels") == "mse":
                label += " mse levels"
            if isinstance(defaults, dict) and defaults.get("mantissa_bits"):
                label += f" +{defaults['mantissa_bits']} mantissa bit"
                label += "s" if defaults["mantissa_bits"] > 1 else ""
        out.append(label + (" (distilled)" if stage.get("distill") else ""))
    return tuple(out)


def _reference_model(folder: Path, recipe: dict[str, Any], stages: list[str]) -> Path | None:
    """The checkpoint ending the last training stage before compression, else the weights the
    recipe starts from (``model.weights``: a run's checkpoint or model.safetensors)."""
    first = next((i for i, kind in enumerate(stages) if kind in _COMPRESSING), None)
    if first is None:
        return None
    trains = [i for i, kind in enumerate(stages[:first]) if kind == "train"]
    if trains:
        found = sorted((folder / "checkpoints").glob(f"s{trains[-1]:02d}-*-end.safetensors"))
        return found[-1] if found else None
    weights = _weights(recipe)
    if not weights:
        return None
    return next((p for p in (Path(weights), folder / weights) if p.is_file()), None)


def _weights(recipe: dict[str, Any]) -> str | None:
    """The recipe's ``model.weights`` (the file it starts from), if any."""
    model = recipe.get("model")
    weights = model.get("weights") if isinstance(model, dict) else None
    return str(weights) if weights else None


def reference_error(checkpoint: Path) -> float:
    """Test error of a checkpoint, measured by ``nncompress eval --json`` on one thread.

    Raises:
        FormatError: the evaluation failed.
    """
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "nncompress", "eval", str(checkpoint), "--json"],
                          capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise FormatError(f"{checkpoint}: nncompress eval failed ({done.stderr.strip()})")
    return float(json.loads(done.stdout)["error"])


def _prerequisites(recipe: dict[str, Any]) -> tuple[tuple[str, ...], float | None]:
    """The command that makes the ``model.weights`` a recipe starts from, when they come from
    a run folder (``RUN/model.safetensors`` or ``RUN/checkpoints/...``), and its wall time."""
    weights = _weights(recipe)
    if not weights:
        return (), None
    file = Path(weights)
    for run in (file.parent, file.parent.parent):
        if (run / "recipe.yaml").is_file():
            saved = _saved_recipe(run)
            shipped = packaged_recipes().get(str(saved.get("name")))
            command = reproduce_command(str(run), saved, shipped)[0]
            return (f"{command}  # makes {weights}",), wall_time(run / "metrics.jsonl")[0]
    return (f"# starts from {weights}, not made by a run folder",), None


def _measured(model: Path, folder: Path) -> float | None:
    """The test error of the reference; a starting weights file that ``nncompress eval``
    cannot read alone (a bare state dict) leaves it unknown, with a warning."""
    try:
        return reference_error(model)
    except FormatError as exc:
        if model.is_relative_to(folder / "checkpoints"):
            raise
        print(f"reproduce: warning: {folder}: reference error unknown ({exc})", file=sys.stderr)
        return None


def _layers(report: dict[str, Any]) -> tuple[LayerRow, ...]:
    return tuple(LayerRow(str(r["name"]), int(r["entries"]), int(r["kept"]), int(r["bits"]))
                 for r in report["layers"])


def read_run(folder: str | Path, *, evaluate_reference: bool = True,
             recipe_file: Path | None = None) -> RunRow:
    """Read one finished run folder.

    Args:
        folder: the run folder (as written in the commands shown).
        evaluate_reference: measure the reference's test error with ``nncompress eval``.
        recipe_file: the recipe file the run was made from (its header comment and the
            command); default: the shipped recipe of the run's name, if any.

    Returns:
        The row.

    Raises:
        FormatError: no readable ``report.json`` or ``recipe.yaml``, or a damaged one.

    Example:
        >>> # read_run("runs/lenet5_dns_inq").compression -> 106.57...
    """
    path = Path(folder)
    report = read_report(path / "report.json")
    recipe = _saved_recipe(path)
    try:
        stages = [str(s["stage"]) for s in recipe["stages"]]
        layers, totals, test = _layers(report), report["totals"], report.get("test") or {}
    except (KeyError, TypeError, ValueError) as exc:
        raise FormatError(f"{path / 'report.json'}: a field is missing ({exc})") from None
    name = str(report.get("recipe") or recipe.get("name") or path.name)
    shipped = recipe_file or packaged_recipes().get(name)
    own = header_comment(path / "recipe.yaml")
    command, note = reproduce_command(str(folder), recipe, shipped)
    reference = _reference_model(path, recipe, stages) if evaluate_reference else None
    wall, sessions = wall_time(path / "metrics.jsonl")
    before, weights_wall = _prerequisites(recipe)
    compact = report.get("compact") or {}
    data = recipe.get("data")
    held_out = int(data.get("validation") or 0) if isinstance(data, dict) else 0
    evaluated = [s["accuracy"] for s in report.get("stages") or []
                 if isinstance(s, dict) and isinstance(s.get("accuracy"), (int, float))]
    return RunRow(
        folder=str(folder), name=name, model=str(report.get("model", "")), stages=tuple(stages),
        inq_k=_inq_k(recipe), validation=held_out,
        error=test.get("error"),
        reference_error=None if reference is None else _measured(reference, path),
        entries=int(totals["entries"]), kept=int(totals["kept"]), layers=layers,
        ncz_bytes=compact.get("bytes"), wall_s=wall, sessions=sessions, command=command,
        command_note=note,
        header=own or (header_comment(shipped) if shipped is not None else ""),
        labels=_labels(recipe), prerequisites=before, weights_wall_s=weights_wall,
        validation_accuracy=float(evaluated[-1]) if held_out and evaluated else None)

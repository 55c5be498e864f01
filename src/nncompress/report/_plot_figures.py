"""The figures of :mod:`nncompress.report.plots`, drawn on Agg canvases (no pyplot state)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from nncompress.inq import level_grid

__all__ = ["FIGURES"]

_CURVES = (("loss", "loss"), ("accuracy", "accuracy"), ("kept_fraction", "kept fraction"),
           ("lr", "learning rate"))


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    return figure


def _boundaries(rows: list[dict[str, Any]]) -> list[tuple[float, str]]:
    """Where each stage (and each INQ step) starts, with its label."""
    marks, previous = [], None
    for row in rows:
        key = (row.get("stage"), row.get("step", 0))
        if key != previous:
            label = str(row.get("stage", ""))
            if row.get("step"):
                label += f" {row['step']}"
            start = row["run_iteration"] - row["iteration"]
            marks.append((float(start), label))
            previous = key
    return marks


def curves(data: dict[str, Any]) -> Figure:
    """Loss (training and evaluation), accuracy, kept fraction and lr against iteration."""
    rows = data["metrics"]
    figure = _figure(10, 7)
    axes = figure.subplots(2, 2, sharex=True).ravel()
    marks = _boundaries(rows)
    for ax, (key, title) in zip(axes, _CURVES):
        series = [(r["run_iteration"], r[key]) for r in rows if r.get(key) is not None]
        if key == "loss":
            evals = [(r["run_iteration"], r["eval_loss"]) for r in rows
                     if r.get("eval_loss") is not None]
            if evals:
                ax.plot(*zip(*evals), marker=".", label="evaluation")
        if series:
            ax.plot(*zip(*series), marker=".", label="training" if key == "loss" else None)
        if key == "loss" and ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        for x, label in marks:
            ax.axvline(x, color="0.6", linestyle="--", linewidth=0.8)
            ax.text(x, 1.0, f" {label}", transform=ax.get_xaxis_transform(), fontsize=7,
                    va="top", color="0.35")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    for ax in axes[2:]:
        ax.set_xlabel("iteration (stages end to end)")
    figure.tight_layout()
    return figure


def _bars(data: dict[str, Any], value: Callable[[dict[str, Any]], float], title: str,
          label: str) -> Figure:
    layers = data["report"]["layers"]
    figure = _figure(max(5.0, 0.7 * len(layers) + 2), 4)
    ax = figure.subplots()
    names = [row["name"] for row in layers]
    values = [value(row) for row in layers]
    bars = ax.bar(range(len(names)), values, color="tab:blue")
    ax.bar_label(bars, fmt="%.3g", fontsize=8)
    ax.set_xticks(range(len(names)), names, rotation=30 if len(names) > 6 else 0, fontsize=8)
    ax.set_ylabel(label)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    return figure


def kept(data: dict[str, Any]) -> Figure:
    """Kept % of each layer's entries."""
    return _bars(data, lambda r: 100 * r["kept"] / r["entries"] if r["entries"] else 0.0,
                 "kept weights per layer", "kept %")


def bits(data: dict[str, Any]) -> Figure:
    """Bits per kept weight of each layer."""
    return _bars(data, lambda r: float(r["bits"]), "bits per kept weight", "bits")


def histograms(data: dict[str, Any]) -> Figure | None:
    """Each layer's non-zero weights; INQ levels as vertical lines."""
    weights = data["weights"]
    layers = [r for r in data["report"]["layers"] if f"{r['name']}.weight" in (weights or {})]
    if not layers:
        return None
    columns = min(3, len(layers))
    rows = math.ceil(len(layers) / columns)
    figure = _figure(4 * columns, 3 * rows)
    axes = [figure.add_subplot(rows, columns, i + 1) for i in range(len(layers))]
    for ax, layer in zip(axes, layers):
        values = weights[f"{layer['name']}.weight"].detach().double().flatten()
        values = values[values != 0]
        ax.hist(values.numpy(), bins=80, color="tab:blue")
        for level in _pow2_levels(values):
            ax.axvline(level, color="tab:red", linewidth=0.8, zorder=0)
        ax.set_title(f"{layer['name']} ({values.numel():,} kept)", fontsize=9)
        ax.tick_params(labelsize=7)
    figure.suptitle("kept weights (red: INQ levels)" if any(
        _pow2_levels(weights[f"{r['name']}.weight"].double().flatten()) for r in layers)
        else "kept weights", fontsize=10)
    figure.tight_layout()
    return figure


def _pow2_levels(values: torch.Tensor) -> list[float]:
    """``±(1 + j/2^M) 2^e`` for each exponent between the smallest and largest, if all values
    are INQ levels (M = 0: powers of two)."""
    grid = level_grid(values)
    if grid is None:
        return []
    low, high, bits = grid
    return [sign * (1 + j / (1 << bits)) * 2.0 ** e for e in range(low, high + 1)
            for j in range(1 << bits) for sign in (1.0, -1.0)]


FIGURES: dict[str, Callable[[dict[str, Any]], Figure | None]] = {
    "curves": curves, "kept": kept, "histograms": histograms, "bits": bits}

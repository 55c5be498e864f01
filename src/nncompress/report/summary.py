"""Per-layer statistics of a prepared or plain model: entries, kept, levels, bits, fixed share.

The statistics read compression state through the accessors of
:class:`~nncompress.layers.CompressedLayer` (``mask``, ``free_entries``, ``inq_levels``), never
by buffer names. :mod:`nncompress.report` turns their ``to_dict()`` rows into ``report.json``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from nncompress.inq import level_grid
from nncompress.layers import COMPRESSIBLE, CompressedLayer

__all__ = ["LayerSummary", "Summary", "summarize"]


@dataclass(frozen=True)
class LayerSummary:
    """One compressible layer.

    Attributes:
        name: qualified module name.
        layer_type: ``Linear``, ``Conv2d``, ...
        mode: ``dns``, ``inq``, ``vd`` (kept: ``log alpha < threshold``) or ``plain``.
        entries: weights plus biases.
        kept: entries whose effective value is non-zero.
        levels: distinct allowed values including 0 when the layer is quantized to powers of
            two (``2K + 1``), else None.
        bits: bits per value: ``2 + ceil(log2 K)`` for K exponents (the INQ paper's count,
            5 for K = 8), else the float width.
        fixed_fraction: share of INQ-participating entries fixed so far (0 outside INQ).
    """

    name: str
    layer_type: str
    mode: str
    entries: int
    kept: int
    levels: int | None
    bits: int
    fixed_fraction: float

    @property
    def sparsity(self) -> float:
        """Share of entries that are zero."""
        return 1.0 - self.kept / self.entries if self.entries else 0.0


@dataclass(frozen=True)
class Summary:
    """All compressible layers of a model, with totals over them."""

    layers: list[LayerSummary] = field(default_factory=list)

    @property
    def total_entries(self) -> int:
        return sum(row.entries for row in self.layers)

    @property
    def total_kept(self) -> int:
        return sum(row.kept for row in self.layers)

    @property
    def compression(self) -> float:
        """Entries over kept entries (``inf`` when nothing is kept)."""
        return self.total_entries / self.total_kept if self.total_kept else math.inf

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON: per-layer rows (with sparsity) and totals."""
        rows = [{**asdict(row), "sparsity": row.sparsity} for row in self.layers]
        compression = self.compression
        return {"layers": rows, "total_entries": self.total_entries,
                "total_kept": self.total_kept,
                "compression": None if math.isinf(compression) else compression}

    def table(self) -> str:
        """A fixed-width text table, one row per layer and a total row."""
        head = ("layer", "type", "mode", "entries", "kept", "kept %", "levels", "bits", "fixed %")
        rows = [(r.name, r.layer_type, r.mode, f"{r.entries:,}", f"{r.kept:,}",
                 f"{100 * r.kept / max(r.entries, 1):.2f}",
                 "-" if r.levels is None else str(r.levels),
                 str(r.bits), f"{100 * r.fixed_fraction:.1f}") for r in self.layers]
        total = ("total", "", "", f"{self.total_entries:,}", f"{self.total_kept:,}",
                 f"{100 * self.total_kept / max(self.total_entries, 1):.2f}", "", "", "")
        widths = [max(len(row[i]) for row in [head, *rows, total]) for i in range(len(head))]
        lines = ["  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in
                           enumerate(zip(row, widths))) for row in [head, *rows, total]]
        lines.insert(1, "-" * len(lines[0]))
        lines.insert(len(lines) - 1, "-" * len(lines[0]))
        ratio = self.compression
        lines.append(f"compression: {ratio:.1f}x ({self.total_entries:,} -> {self.total_kept:,})")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def _levels_and_bits(layer: nn.Module, values: list[torch.Tensor]) -> tuple[int | None, int]:
    float_bits = torch.finfo(values[0].dtype).bits
    if isinstance(layer, CompressedLayer) and layer.inq_config is not None:
        k = layer.inq_config.num_quantum_values
        mantissa = layer.inq_config.mantissa_bits
        if layer.next_portion() is not None:  # quantize steps still to come
            return 2 * k * (1 << mantissa) + 1, float_bits
    else:
        grid = level_grid(values[0])
        if grid is None:
            return None, float_bits
        k, mantissa = grid[1] - grid[0] + 1, grid[2]
    return 2 * k * (1 << mantissa) + 1, 2 + math.ceil(math.log2(k)) + mantissa


def _level_count(layer: CompressedLayer, blob: str) -> int:
    levels = layer.inq_levels(blob)
    assert levels is not None
    return levels[2]


def _free(layer: CompressedLayer, blob: str) -> torch.Tensor:
    free = layer.free_entries(blob)
    assert free is not None
    return free


def _layer_summary(name: str, layer: nn.Module) -> LayerSummary:
    weight, bias = layer.weight, layer.bias
    assert isinstance(weight, torch.Tensor)
    values = [weight.detach()]
    if isinstance(bias, torch.Tensor):
        values.append(bias.detach())
    mode, fixed_fraction = "plain", 0.0
    if isinstance(layer, CompressedLayer):
        if layer.dns_config is not None:
            mode = "dns"
            masks = [layer.mask(b) for b in ("weight", "bias")]
            values = [v if m is None else v * m for v, m in zip(values, masks)]
        elif layer.vd_config is not None:
            mode = "vd"
            values[0] = values[0] * layer.vd_mask()
            if len(values) > 1 and layer.vd_config.include_bias:
                values[1] = values[1] * layer.vd_mask("bias")
        elif layer.inq_config is not None:
            mode = "inq"
            blobs = layer.blobs(layer.inq_config.include_bias)
            n0 = sum(_level_count(layer, b) for b in blobs)
            free = sum(int(_free(layer, b).sum()) for b in blobs)
            fixed_fraction = (n0 - free) / n0 if n0 else 1.0
    levels, bits = _levels_and_bits(layer, values)
    return LayerSummary(
        name=name, layer_type=next(c for c in type(layer).__mro__ if c in COMPRESSIBLE).__name__,
        mode=mode, entries=sum(v.numel() for v in values),
        kept=sum(int((v != 0).sum()) for v in values), levels=levels, bits=bits,
        fixed_fraction=fixed_fraction)


def summarize(model: nn.Module) -> Summary:
    """Summarize every nn.Linear / nn.ConvNd of ``model``, prepared or plain.

    Example:
        >>> summarize(nn.Linear(3, 2)).total_entries
        8
    """
    rows = [_layer_summary(name, module) for name, module in model.named_modules()
            if isinstance(module, CompressedLayer) or type(module) in COMPRESSIBLE]
    return Summary(layers=rows)

"""Format version 2 tensors: the writer's layout choice and the reader's whole-state decode.

A floating tensor's positions (live rows, live columns, kept entries) and its INQ level codes
go to the file's shared coded stream (:mod:`._shared`); other float values are byte planes in
a value stream of the tensor's own, and integer tensors are stored whole as in version 1. The
writer estimates each layout (every factoring, dense or sparse) and keeps the smallest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from nncompress.errors import FormatError
from nncompress.export._codec import (
    _MAX_LEVELS,
    DTYPES,
    _read_values,
    decode_tensor,
    level_table,
    sparse_floats,
    tensor_values,
)
from nncompress.export._context import columns_of, context_of, flag_counts, with_context
from nncompress.export._entropy import StaticModel
from nncompress.export._lanes import STEPS
from nncompress.export._positions import Factoring, GapCode, _split, best_gaps, factorings
from nncompress.export._shared import Group, GroupSpec, decode_groups, encode_groups
from nncompress.export._streams import read_int

# a lane (about 3 bits: its state at the head of the stream) per STEPS symbols, and decoding
# time: each coded symbol counts this much more in the layout choice
_SYMBOL_BITS = 3 / STEPS

__all__ = ["TensorPlan", "decode_state", "encode_state", "plan_tensor", "stream_sizes"]


@dataclass
class TensorPlan:
    """A tensor's metadata, its groups in the shared stream and its own value stream (and the
    live rows and columns it codes, if it codes them)."""

    meta: dict[str, Any]
    groups: list[Group] = field(default_factory=list)
    values: bytes = b""
    sets: tuple[np.ndarray, np.ndarray] | None = None


def _sets(f: Factoring, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray] | None:
    """The live rows and columns of a factoring that codes either."""
    if not f.extra:
        return None
    ncols = _split(shape)[1]
    width = f.extra.get("cols", ncols)
    return f.sub_flat[::max(width, 1)] // ncols, f.sub_flat[:width] % ncols


def _gap_group(code: GapCode) -> Group:
    return Group(code.model, code.symbols, code.d, code.extra, code.nextra)


def plan_tensor(name: str, tensor: torch.Tensor, float_dtype: str) -> TensorPlan:
    """Choose the layout of one tensor and make its groups and value stream.

    Raises:
        ConfigError: the entry is not a tensor of a dtype the format stores, or a value
            float16 cannot hold.

    Example:
        >>> plan = plan_tensor("w", torch.tensor([0.0, 0.5, 0.0, -2.0]), "float32")
        >>> plan.meta["values"], plan.meta["layout"], len(plan.groups)
        ('pow2', 'dense', 1)
    """
    v = tensor_values(name, tensor, float_dtype)
    if v.codes is not None:
        return _plan_pow2(v.meta, v.codes, v.nonzero, v.shape)
    dense = TensorPlan(v.meta | {"layout": "dense"}, [], v.whole)
    if v.stored is None or v.nonzero.size == v.stored.numel():
        return dense
    best, kept_code, values = sparse_floats(v)
    if 8 * len(dense.values) <= best.sets_bits + kept_code.bits + 8 * len(values):
        return dense
    return TensorPlan(v.meta | {"layout": "sparse"} | best.extra,
                      [*map(_gap_group, best.sets), _gap_group(kept_code)], values,
                      _sets(best, v.shape))


def _plan_pow2(meta: dict[str, Any], codes: np.ndarray, nonzero: np.ndarray,
               shape: tuple[int, ...]) -> TensorPlan:
    """Cheapest (factoring, dense or sparse) by estimated bits; signs cost one bit each."""
    levels = meta["levels"]
    signs = (codes[nonzero] - 1) % 2
    kept_mags = (codes[nonzero] - 1) // 2
    kept_model = StaticModel.fit(kept_mags, levels)
    kept_bits = kept_model.cost_bits(kept_mags)
    options: list[tuple[float, dict[str, Any], list[Group], Factoring]] = []
    for f in factorings(nonzero, shape):
        sub = codes[f.sub_flat]
        mags = np.where(sub > 0, 1 + (sub - 1) // 2, 0)
        model = StaticModel.fit(mags, levels + 1)
        groups = [*map(_gap_group, f.sets), Group(model, mags, None, signs, np.ones_like(signs))]
        symbols = sum(g.symbols.size for g in groups)
        options.append((f.sets_bits + model.cost_bits(mags) + _SYMBOL_BITS * symbols,
                        f.extra | {"layout": "dense"}, groups, f))
        options.append(_sparse_option(f, kept_model, kept_mags, signs, kept_bits))
    _, extra, groups, best = min(options, key=lambda o: o[0])
    return TensorPlan(meta | extra, groups, b"", _sets(best, shape))


def _sparse_option(f: Factoring, model: StaticModel, mags: np.ndarray, signs: np.ndarray,
                   mag_bits: float) -> tuple[float, dict[str, Any], list[Group], Factoring]:
    kept_code = best_gaps(f.kept_sub)
    groups = [*map(_gap_group, f.sets), _gap_group(kept_code),
              Group(model, mags, None, signs, np.ones_like(signs))]
    symbols = sum(g.symbols.size for g in groups)
    return (f.sets_bits + kept_code.bits + mag_bits + _SYMBOL_BITS * symbols,
            f.extra | {"layout": "sparse"}, groups, f)


# ----------------------------------------------------------------------------- reading
def _specs(t: dict[str, Any], before: list[dict[str, Any]], what: str) -> list[GroupSpec]:
    """The groups a (schema-checked) tensor entry has in the shared stream (``before``: the
    entries before it)."""
    if t["values"] == "raw":
        return []
    shape = tuple(t["shape"])
    nrows, ncols = _split(shape)
    n_rows = read_int(t, "rows", what, 0, nrows, nrows)
    n_cols = read_int(t, "cols", what, 0, ncols, ncols)
    sparse = t["layout"] == "sparse"
    specs = [GroupSpec(n_rows, nrows, True)] if "rows" in t else []
    if "cols_ctx" in t:
        specs += [GroupSpec(n, 2, False, flags=True) for n in flag_counts(before, t, what)]
    elif "cols" in t:
        specs.append(GroupSpec(n_cols, ncols, True))
    kept = read_int(t, "kept", what, 0, n_rows * n_cols if sparse else math.prod(shape))
    if sparse:
        specs.append(GroupSpec(kept, n_rows * n_cols, True))
    if t["values"] == "pow2":
        levels = read_int(t, "levels", what, 1, _MAX_LEVELS)
        count = kept if sparse else n_rows * n_cols
        specs.append(GroupSpec(count, levels + (0 if sparse else 1), False, not sparse))
    return specs


def encode_state(state: dict[str, torch.Tensor], float_dtype: str
                 ) -> tuple[list[dict[str, Any]], int, list[bytes]]:
    """Tensor entries, the coded stream's length and the streams of a version 2 file.

    Example:
        >>> metas, coded, streams = encode_state({"w": torch.tensor([0.0, 0.5])}, "float32")
        >>> metas[0]["bytes"], coded == len(streams[0])
        ([0, 0], True)
    """
    plans: list[TensorPlan] = []
    for name, tensor in state.items():
        plans.append(plan_tensor(name, tensor, float_dtype))
        _use_context(plans)
    coded = encode_groups([g for p in plans for g in p.groups])
    metas = [p.meta | {"bytes": [0, len(p.values)]} for p in plans]
    return metas, len(coded), [coded] + [p.values for p in plans]


def _use_context(plans: list[TensorPlan]) -> None:
    """Code the last plan's live columns against the previous layer's rows when cheaper."""
    plan, meta = plans[-1], plans[-1].meta
    context = context_of([p.meta for p in plans[:-1]], meta)
    if context is None or "cols" not in meta or plan.sets is None:
        return
    prev_sets = plans[context[0]].sets
    assert prev_sets is not None
    at = 1 if "rows" in meta else 0
    old = plan.groups[at]
    flags = with_context(plan.sets[1], prev_sets[0], context[1], _split(tuple(meta["shape"]))[1])
    new = [Group(StaticModel.fit(f, 2), f) for f in flags]
    cost = sum(g.model.cost_bits(g.symbols) + _SYMBOL_BITS * g.symbols.size for g in new
               if g.symbols.size)
    if cost < old.model.cost_bits(old.symbols) + 3 + float(old.raw_nbits.sum()) + (
            _SYMBOL_BITS * old.symbols.size):
        plan.groups[at:at + 1] = new
        meta["cols_ctx"] = True


def decode_state(meta: dict[str, Any], tensors: list[dict[str, Any]], data: bytes,
                 what: str) -> dict[str, torch.Tensor]:
    """Every tensor of a file (version 1 or 2) from its checked entries and stream bytes."""
    if "coded" not in meta:  # version 1: two streams per tensor
        state, offset = {}, 0
        for t in tensors:
            pos_len, val_len = t["bytes"]
            state[t["name"]] = decode_tensor(t, data[offset:offset + pos_len],
                                             data[offset + pos_len:offset + pos_len + val_len],
                                             what)
            offset += pos_len + val_len
        return state
    coded_len = meta["coded"]
    specs = [_specs(t, tensors[:i], f"{what}: tensor {t['name']!r}")
             for i, t in enumerate(tensors)]
    decoded = iter(decode_groups(data[:coded_len], [s for ts in specs for s in ts],
                                 f"{what}: coded stream"))
    state, offset, rows_of = {}, coded_len, {}
    for i, (t, tspecs) in enumerate(zip(tensors, specs, strict=True)):
        parts = [next(decoded) for _ in tspecs]
        length = t["bytes"][1]
        values = data[offset:offset + length]
        offset += length
        name = f"{what}: tensor {t['name']!r}"
        if "rows" in t:
            rows_of[i] = parts[0]
        if "cols_ctx" in t:  # the live columns from their two flag groups
            at = 1 if "rows" in t else 0
            index, per_row = context_of(tensors[:i], t) or (0, 0)
            ncols = _split(tuple(t["shape"]))[1]
            cols = columns_of(parts[at], parts[at + 1], rows_of[index], per_row, ncols)
            if cols.size != t["cols"]:
                raise FormatError(f"{name}: {cols.size} live columns decoded, {t['cols']} "
                                  "recorded")
            parts[at:at + 2] = [cols]
        state[t["name"]] = _assemble(t, parts, values, name)
    return state


def stream_sizes(meta: dict[str, Any], tensors: list[dict[str, Any]], data: bytes,
                 what: str) -> list[tuple[int, int]]:
    """(position bytes, value bytes) of each tensor entry.

    Version 1 lists them; in version 2 the coded stream is shared out in proportion to each
    group's bits (its table, the information of its symbols, its raw bits), so the sizes add
    up to the file's streams.
    """
    if "coded" not in meta:
        return [(t["bytes"][0], t["bytes"][1]) for t in tensors]
    specs = [_specs(t, tensors[:i], f"{what}: tensor {t['name']!r}")
             for i, t in enumerate(tensors)]
    costs: list[float] = []
    decode_groups(data[:meta["coded"]], [s for ts in specs for s in ts],
                  f"{what}: coded stream", costs)
    scale = meta["coded"] / max(sum(costs), 1.0)
    out, done, spent, i = [], 0.0, 0, 0
    for t, tspecs in zip(tensors, specs, strict=True):
        shares = []
        for _ in tspecs:
            done += costs[i] * scale
            i += 1
            shares.append(round(done) - spent)  # running rounding: the total stays exact
            spent += shares[-1]
        pos = sum(s for s, spec in zip(shares, tspecs, strict=True) if spec.gaps or spec.flags)
        out.append((pos, sum(shares) - pos + t["bytes"][1]))
    return out


_NUMPY = {torch.float16: np.float16, torch.float32: np.float32, torch.float64: np.float64}


def _assemble(t: dict[str, Any], parts: list[np.ndarray], values: bytes,
              what: str) -> torch.Tensor:
    dtype, shape = DTYPES[t["dtype"]], tuple(t["shape"])
    numel = math.prod(shape)
    if t["values"] == "raw":
        raw = _read_values(values, numel, dtype, what)
        if dtype == torch.bool and bool((raw.view(torch.uint8) > 1).any()):
            raise FormatError(f"{what}: a bool tensor holds bytes other than 0 and 1")
        return raw.reshape(shape)
    nrows, ncols = _split(shape)
    rows = parts.pop(0) if "rows" in t else np.arange(nrows)
    cols = parts.pop(0) if "cols" in t else np.arange(ncols)
    kept_sub = parts.pop(0) if t["layout"] == "sparse" else None
    whole = kept_sub is None and "rows" not in t and "cols" not in t
    if whole:
        where = None
    elif kept_sub is None:
        where = (rows[:, None] * ncols + cols[None, :]).reshape(-1)
    else:  # the kept entries' places in the sub-matrix, then in the tensor
        r, c = np.divmod(kept_sub, max(cols.size, 1))
        where = rows[r] * ncols + cols[c]
    count = numel if where is None else where.size
    if t["values"] == "pow2":
        codes = parts.pop(0)
        table = level_table(t["exp_min"], t["levels"], t.get("mantissa", 0))
        if t["kept"] != int(np.count_nonzero(codes)):
            raise FormatError(f"{what}: decodes to another number of non-zero entries than "
                              "recorded")
        if dtype in _NUMPY:  # built in numpy: fewer, cheaper calls
            flat = np.zeros(numel, dtype=_NUMPY[dtype])
            flat[slice(None) if where is None else where] = table[codes]
            return torch.from_numpy(flat).reshape(shape)
        kept_tensor = torch.from_numpy(table[codes]).to(dtype)
        kept = t["kept"]
    else:
        kept_tensor = _read_values(values, count, DTYPES[t["values"]], what).to(dtype)
        kept = int(torch.count_nonzero(kept_tensor))
    if where is None:
        out = kept_tensor
    else:
        out = torch.zeros(numel, dtype=dtype)
        out[torch.from_numpy(where)] = kept_tensor
    if kept != t["kept"]:
        raise FormatError(f"{what}: decodes to another number of non-zero entries than recorded")
    return out.reshape(shape)

"""Incremental Network Quantization: configuration and the pure tensor math.

Zhou, Yao, Guo, Xu, Chen, "Incremental Network Quantization", ICLR 2017. A layer's level set is
``{0} ∪ {±2^e : n2 <= e <= n1}`` with ``n1 = floor(log2(4s/3))``, ``s = max|w|`` and
``n2 = n1 - K + 1`` (or, with ``levels="mse"``, the ``n1`` among that one and the 16 below it
whose level set rounds the layer with the least squared error). Rounding follows the paper's
Eq. 4: ``|w|`` in ``[0.75*2^e, 1.5*2^e)`` goes to ``2^e``; the smallest level takes
``[2^(n2-1), 1.5*2^n2)``; below ``2^(n2-1)`` is 0; at or above ``1.5*2^n1`` clamps to ``2^n1``.

Fixed entries are stored as their value in a bfloat16 tensor with NaN marking free entries, 2
bytes per entry. bfloat16 holds every ``±2^e`` with ``MIN_EXPONENT = -133 <= e <= MAX_EXPONENT =
127`` exactly (below 2^-126 as a subnormal); float32's subnormal powers 2^-134 ... 2^-149 it does
not. So the exponents of a level set are clamped to that range: ``n1 <= 127`` (``2^128``, which
``4/3 * 3e38`` would ask for, is infinite) and ``n2 >= -133`` (a layer whose levels would reach
below 2^-133 gets fewer of them; its entries below 2^-134 round to 0). A layer held in a
narrower dtype clamps to that dtype's powers too (float16: 2^-24 ... 2^15). Every fixed value is
then exact in the state and in the layer's own dtype.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal

import torch

from nncompress._config import check, config_class
from nncompress.errors import NonFiniteError, did_you_mean

__all__ = ["FIXED_DTYPE", "LEVEL_RULES", "MAX_EXPONENT", "MAX_MANTISSA_BITS", "MIN_EXPONENT",
           "MSE_SEARCH", "STRATEGIES", "INQConfig", "check_finite", "exponent_range",
           "fit_level_range", "fix_count", "level_grid", "level_range", "portion_steps",
           "quantize", "select_largest"]

STRATEGIES = ("magnitude", "random")
LEVEL_RULES = ("max", "mse")
MAX_MANTISSA_BITS = 3  # levels (1 + j/8) * 2^e at most; the compact file codes up to 127 per blob
MSE_SEARCH = 16  # levels="mse" tries the paper's n1 and the 16 exponents below it
FIXED_DTYPE = torch.bfloat16
MIN_EXPONENT = -133  # 2^-133: the smallest bfloat16 subnormal, the least power it holds
MAX_EXPONENT = 127   # 2^127: the largest power of two float32 and bfloat16 hold
MAX_PORTION_STEPS = 1000  # the most steps portion_steps makes (a step of 0.001)


@config_class
@dataclass(frozen=True)
class INQConfig:
    """How INQ quantizes a layer.

    Attributes:
        portions: accumulated fractions of each layer's participating entries to fix, increasing,
            ending at 1.0 (the paper's ResNet schedule by default): the schedule each layer
            steps through when :func:`nncompress.quantize_step` is called without a portion,
            as the recipe runner does (an INQ stage's ``portions`` are given here).
        num_quantum_values: K, the number of exponents; 8 is the paper's 5-bit setting,
            4 is 4-bit, 2 is 3-bit, 1 is ternary.
        strategy: ``"magnitude"`` fixes the largest free entries first (the paper);
            ``"random"`` a seeded random choice (the paper's ablation).
        include_bias: quantize biases too, with their own level set (the seed does).
        levels: how ``n1`` is chosen when INQ starts on a blob: ``"max"``, the paper's
            ``floor(log2(4/3 * max|w|))``; ``"mse"``, the exponent from that one down to 16
            below it whose level set rounds the blob's entries with the least sum of squared
            errors (ties: the larger). ``"mse"`` suits small K, where the paper's levels sit
            near the largest weight and round most entries to 0. See :func:`fit_level_range`.
        seed: seed of the ``random`` strategy; each layer mixes in a hash of its name.
        mantissa_bits: M, from 0 (the paper's ``±2^e``) to 3: each exponent also holds
            ``(1 + j/2^M) * 2^e`` (M = 1 adds ``±1.5 * 2^e``), a finer grid at the same range
            that rounds with about half the error per added bit (see the module docstring).

    Example:
        >>> INQConfig(portions=(0.3, 0.6, 0.8, 1.0), num_quantum_values=7).portions[-1]
        1.0
    """

    portions: tuple[float, ...] = (0.5, 0.75, 0.875, 1.0)
    num_quantum_values: int = 8
    strategy: str = "magnitude"
    include_bias: bool = True
    seed: int = 0
    levels: str = "max"
    mantissa_bits: int = 0

    def __post_init__(self) -> None:
        own = "INQConfig"
        portions = self.portions
        check(isinstance(portions, (tuple, list)) and len(portions) > 0, own, "portions",
              portions, "use a non-empty list of increasing fractions in (0, 1] ending at 1.0")
        object.__setattr__(self, "portions", tuple(portions))
        for value in portions:
            check(isinstance(value, (int, float)) and not isinstance(value, bool)
                  and 0 < value <= 1, own, "portions", portions,
                  f"{value!r} is outside (0, 1]; use increasing fractions ending at 1.0")
        for before, after in zip(portions, portions[1:]):
            check(after > before, own, "portions", portions,
                  f"{after!r} follows {before!r}; portions must increase")
        check(portions[-1] == 1, own, "portions", portions,
              "the last portion must be 1.0 so every entry ends quantized")
        k = self.num_quantum_values
        check(isinstance(k, int) and not isinstance(k, bool) and 1 <= k <= 64, own,
              "num_quantum_values", k, "use an integer from 1 to 64 (8 = 5-bit, 1 = ternary)")
        check(self.strategy in STRATEGIES, own, "strategy", self.strategy,
              "use 'magnitude' or 'random'")
        check(isinstance(self.include_bias, bool), own, "include_bias", self.include_bias,
              "use true or false")
        check(isinstance(self.seed, int) and not isinstance(self.seed, bool) and self.seed >= 0,
              own, "seed", self.seed, "use an integer >= 0")
        hint = did_you_mean(self.levels, LEVEL_RULES) if isinstance(self.levels, str) else ""
        check(self.levels in LEVEL_RULES, own, "levels", self.levels,
              f"use 'max' (the paper's rule) or 'mse' (fitted to the weights){hint}")
        m = self.mantissa_bits
        check(isinstance(m, int) and not isinstance(m, bool) and 0 <= m <= MAX_MANTISSA_BITS,
              own, "mantissa_bits", m, f"use an integer from 0 (powers of two, the paper) to "
              f"{MAX_MANTISSA_BITS}")


def portion_steps(step: float) -> tuple[float, ...]:
    """Accumulated portions in equal steps: ``step, 2*step, ...`` below 1.0, then 1.0.

    Each value is the exact decimal multiple of ``step`` as written (0.05 gives 0.15, not
    ``3 * 0.05 = 0.15000000000000002``). A step that does not divide 1 ends with a shorter last
    step to 1.0: 0.3 gives 0.3, 0.6, 0.9, 1.0. The INQ authors advise steps of 0.05 after
    pruning; recipes write ``portions: {step: 0.05}``.

    Args:
        step: the share of each layer's participating entries fixed per step, in (0, 1],
            at least 0.001 (1,000 steps).

    Returns:
        The schedule for :attr:`INQConfig.portions`.

    Raises:
        ConfigError: ``step`` is not a number, is outside (0, 1] or makes over 1,000 steps.

    Example:
        >>> portion_steps(0.25), portion_steps(0.3)
        ((0.25, 0.5, 0.75, 1.0), (0.3, 0.6, 0.9, 1.0))
        >>> len(portion_steps(0.05)), portion_steps(0.05)[2]
        (20, 0.15)
    """
    own, fix = "portions", "use a fraction in (0, 1], e.g. 0.05 for 20 steps"
    check(isinstance(step, (int, float)) and not isinstance(step, bool), own, "step", step, fix)
    check(math.isfinite(step) and 0 < step <= 1, own, "step", step, fix)
    exact = Decimal(repr(float(step)))  # the shortest decimal that reads back as ``step``
    count = int((1 / exact).to_integral_value(rounding=ROUND_CEILING))
    check(count <= MAX_PORTION_STEPS, own, "step", step,
          f"it makes {count:,} steps; use a step of at least 0.001 ({MAX_PORTION_STEPS:,} steps)")
    return (*(float(exact * k) for k in range(1, count)), 1.0)


def check_finite(tensor: torch.Tensor, where: str, when: str) -> None:
    """Raise NonFiniteError if ``tensor`` holds NaN or infinity."""
    if not bool(torch.isfinite(tensor).all()):
        raise NonFiniteError(f"layer {where!r} holds NaN or infinite values {when}; "
                             "check the learning rate and the data")


def exponent_range(dtype: torch.dtype) -> tuple[int, int]:
    """The least and greatest ``e`` with ``2^e`` exact and finite in both ``dtype`` and the
    bfloat16 state.

    Example:
        >>> exponent_range(torch.float32), exponent_range(torch.float16)
        ((-133, 127), (-24, 15))
    """
    info = torch.finfo(dtype)
    least = math.frexp(info.tiny * info.eps)[1] - 1  # the smallest subnormal
    greatest = math.frexp(info.max)[1] - 1
    return max(least, MIN_EXPONENT), min(greatest, MAX_EXPONENT)


def level_range(max_abs: float, num_quantum_values: int,
                dtype: torch.dtype = torch.float32, mantissa_bits: int = 0) -> tuple[int, int]:
    """Exponents ``(n1, n2)`` of the level set for a largest magnitude ``max_abs > 0``.

    Both lie in :func:`exponent_range` of ``dtype`` (the layer's), so every level is finite and
    exact in the layer and in the bfloat16 state (see the module docstring): for float32,
    ``n1`` is at most 127 and ``n2`` at least -133 (``-133 + mantissa_bits`` with a finer grid).

    Example:
        >>> level_range(0.75, 8)   # 4/3 * 0.75 = 1 = 2^0
        (0, -7)
        >>> level_range(3e38, 8), level_range(2.0 ** -130, 8)  # clamped at both ends
        ((127, 120), (-130, -133))
        >>> level_range(0.87, 2, mantissa_bits=1), level_range(0.88, 2, mantissa_bits=1)
        ((-1, -2), (0, -1))
    """
    least, greatest = exponent_range(dtype)
    least += mantissa_bits
    if mantissa_bits == 0:
        _, exponent = math.frexp(4.0 * max_abs / 3.0)  # x = m * 2^exponent, m in [0.5, 1)
        n1 = exponent - 1
    else:  # the exponent of max_abs rounded to M mantissa bits (ties away from 0)
        mantissa, exponent = math.frexp(max_abs)
        scale = 1 << (mantissa_bits + 1)
        n1 = exponent - 1 + int(math.floor(mantissa * scale + 0.5) >= scale)
    n1 = min(max(n1, least), greatest)
    return n1, max(n1 - num_quantum_values + 1, least)


def fit_level_range(values: torch.Tensor, num_quantum_values: int,
                    levels: str = "max", mantissa_bits: int = 0) -> tuple[int, int]:
    """Exponents ``(n1, n2)`` of the level set of a blob, by the rule ``levels``.

    ``"max"`` is :func:`level_range` of ``max|values|``. ``"mse"`` takes each ``n1`` from that
    one down to ``MSE_SEARCH`` below it (not below :func:`exponent_range`), with ``n2 = n1 - K +
    1`` clamped as :func:`level_range` clamps it, and keeps the one with the least
    ``sum((w - quantize(w, n1, n2))**2)``; exact ties go to the larger ``n1``. Entries that
    are 0 add nothing to that sum, so it runs over the participating entries. The errors are
    summed in float64 on the values' device (on the CPU for MPS, which has no float64), and the
    totals are read back to the host once.

    Args:
        values: the blob's entries, finite, at least one of them non-zero.
        num_quantum_values: K, the number of exponents.
        levels: ``"max"`` or ``"mse"`` (see :attr:`INQConfig.levels`).
        mantissa_bits: M, the grid's mantissa bits (see :attr:`INQConfig.mantissa_bits`).

    Returns:
        ``(n1, n2)``, both within :func:`exponent_range` of ``values.dtype``.

    Raises:
        ConfigError: ``levels`` is neither ``"max"`` nor ``"mse"``.

    Example:
        >>> w = torch.tensor([0.3, -0.35, 0.4, 0.45, 1.0])  # ternary: {0, +-2^n1}
        >>> fit_level_range(w, 1), fit_level_range(w, 1, "mse")  # +-1 or +-0.5
        ((0, 0), (-1, -1))
    """
    check(levels in LEVEL_RULES, "fit_level_range", "levels", levels, "use 'max' or 'mse'")
    n1, n2 = level_range(float(values.abs().max()), num_quantum_values, values.dtype,
                         mantissa_bits)
    if levels == "max":
        return n1, n2
    least = exponent_range(values.dtype)[0] + mantissa_bits
    if values.device.type == "mps":
        values = values.cpu()
    values = values.detach()
    exact = values.double()
    candidates = range(n1, max(n1 - MSE_SEARCH, least) - 1, -1)
    totals = torch.stack([
        (exact - quantize(values, top, max(top - num_quantum_values + 1, least),
                          mantissa_bits).double())
        .square().sum() for top in candidates]).tolist()  # the one host read
    best = candidates[totals.index(min(totals))]  # the first minimum: the larger n1
    return best, max(best - num_quantum_values + 1, least)


def quantize(values: torch.Tensor, n1: int, n2: int, mantissa_bits: int = 0) -> torch.Tensor:
    """Round ``values`` to the level set of ``(n1, n2)`` (paper Eq. 4, clamped at the top).

    The exponent comes from ``frexp``, so the boundaries ``0.75*2^e``, ``1.5*2^e`` and
    ``2^(n2-1)`` are decided exactly, with no logarithm rounding. With ``mantissa_bits = M``
    the levels are ``(1 + j/2^M) * 2^e`` and each value goes to the nearest (ties away from 0).

    Example:
        >>> quantize(torch.tensor([0.74, 0.75, -1.49, 1.5, 9.0, 0.004]), 1, -6).tolist()
        [0.5, 1.0, -1.0, 2.0, 2.0, 0.0]
        >>> quantize(torch.tensor([0.74, 0.8, -1.2, 1.3, 9.0, 0.3]), 1, -1, 1).tolist()
        [0.75, 0.75, -1.0, 1.5, 3.0, 0.5]
    """
    if values.dtype == torch.float32 and n2 - mantissa_bits >= -125 and n1 <= 127:
        return _quantize_float32_bits(values, n1, n2, mantissa_bits)
    return _quantize_frexp(values, n1, n2, mantissa_bits)


def _quantize_frexp(values: torch.Tensor, n1: int, n2: int, mantissa_bits: int) -> torch.Tensor:
    """:func:`quantize` for any dtype and range, in float64 (every step exact; at M = 0 a
    mantissa in ``[0.5, 0.75)`` stays at ``2^(e-1)``, one in ``[0.75, 1)`` goes up to ``2^e``)."""
    magnitude = values.double().abs()
    mantissa, exponent = torch.frexp(magnitude)  # mantissa in [0.5, 1)
    steps = torch.floor(mantissa * float(1 << (mantissa_bits + 1)) + 0.5)  # exact scaling
    rounded = torch.ldexp(steps, exponent - mantissa_bits - 1)
    top = math.ldexp(2.0 - math.ldexp(1.0, -mantissa_bits), n1)
    rounded = rounded.clamp(math.ldexp(1.0, n2), top).copysign(values.double())
    below = magnitude < math.ldexp(1.0, n2 - 1)
    return torch.where(below, 0.0, rounded).to(values.dtype)


def _quantize_float32_bits(values: torch.Tensor, n1: int, n2: int,
                           mantissa_bits: int = 0) -> torch.Tensor:
    """:func:`quantize` on the IEEE-754 bits of float32 values with normal-range levels.

    A float32 magnitude is ``2^E * (1 + m/2^23)``. Adding half of the last kept mantissa bit
    (bit ``22 - M``) and clearing the bits below it rounds to M mantissa bits, nearest with ties
    up, and carries into the exponent field exactly when the value rounds up to ``2^(E+1)``. At
    M = 0 that leaves the power of two: ``|w| >= 1.5 * 2^E`` goes up.
    """
    bits = values.view(torch.int32)
    magnitude = bits & 0x7FFFFFFF
    drop = 23 - mantissa_bits
    top = ((n1 + 127) << 23) | (((1 << mantissa_bits) - 1) << drop)  # (2 - 2^-M) * 2^n1
    power = ((magnitude + (1 << (drop - 1))) & (-1 << drop)).clamp_((n2 + 127) << 23, top)
    power |= bits & -(1 << 31)  # the sign bit
    zero_below = (n2 - 1 + 127) << 23  # bits of 2^(n2-1)
    return torch.where(magnitude < zero_below, 0, power).view(torch.float32)


def level_grid(values: torch.Tensor, max_bits: int = MAX_MANTISSA_BITS
               ) -> tuple[int, int, int] | None:
    """``(e_min, e_max, M)`` if every non-zero value is a level ``±(1 + j/2^M) 2^e`` with the
    fewest mantissa bits ``M <= max_bits`` (0: powers of two), else None (also when no value
    is non-zero or one is not finite).

    Example:
        >>> level_grid(torch.tensor([0.0, 0.5, -4.0])), level_grid(torch.tensor([0.75, 2.0]))
        ((-1, 2, 0), (-1, 1, 1))
        >>> level_grid(torch.tensor([0.3])) is None
        True
    """
    nonzero = values[values != 0].double()
    if nonzero.numel() == 0 or not bool(torch.isfinite(nonzero).all()):
        return None
    mantissa, exponent = torch.frexp(nonzero.abs())
    for bits in range(max_bits + 1):
        steps = mantissa * (1 << (bits + 1))
        if bool((steps == steps.floor()).all()):
            return int(exponent.min()) - 1, int(exponent.max()) - 1, bits
    return None


def fix_count(portion: float, participating: int) -> int:
    """How many participating entries are fixed at accumulated ``portion``: nearest, halves up.

    Example:
        >>> fix_count(0.3, 5), fix_count(0.5, 5), fix_count(1.0, 5)
        (2, 3, 5)
    """
    return min(participating, math.floor(portion * participating + 0.5))


def select_largest(keys: torch.Tensor, count: int) -> torch.Tensor:
    """Boolean mask of the ``count`` largest ``keys``, ties broken by lower flat index.

    Entries that must not be chosen carry a key below every candidate's (e.g. -1 for
    magnitudes). Runs in a few vectorised passes: ``topk`` finds the cut value, then ties at
    the cut are taken in index order.

    Example:
        >>> select_largest(torch.tensor([1.0, 3.0, 2.0, 3.0, 2.0]), 3).tolist()
        [False, True, True, True, False]
    """
    flat = keys.reshape(-1)
    if count <= 0:
        return torch.zeros_like(flat, dtype=torch.bool).reshape(keys.shape)
    cut = torch.topk(flat, count, sorted=False).values.min()
    chosen = flat > cut
    remaining = count - int(torch.count_nonzero(chosen))
    ties = flat == cut
    if int(torch.count_nonzero(ties)) > remaining:  # keep the first ``remaining`` ties only
        ties &= torch.cumsum(ties, 0, dtype=torch.int64) <= remaining
    return (chosen | ties).reshape(keys.shape)

"""Dynamic Network Surgery: configuration and the pure tensor math of one surgery step.

Guo, Yao, Chen, "Dynamic Network Surgery for Efficient DNNs", NIPS 2016. Per layer, a 0/1 mask
``T`` multiplies every entry. Once per stage the layer's statistics are taken over its non-zero
masked entries; then, before the forward of training iteration ``i`` and with probability
``(1 + gamma*i)^(-power)``, entries are pruned or spliced back against a hysteresis band::

    t = max(mu + c_rate * sigma, 0)
    T = 0  where T = 1 and |w| <= alpha_low  * t     (prune)
    T = 1  where T = 0 and |w| >  alpha_high * t     (splice)

With ``ramp = R > 0`` (an extension; the original surgery prunes to its full threshold at once),
``t`` at iteration ``i < R`` is scaled by ``(i + 1) / R``: the layer is pruned gradually.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from nncompress._config import check, check_real, config_class
from nncompress.errors import NonFiniteError

__all__ = [
    "DNSConfig",
    "mask_statistics",
    "mix_seed",
    "ramp_factor",
    "straight_through_mask",
    "surgery_probability",
    "thresholds",
    "uniform_draw",
    "update_mask",
]

_MASK64 = (1 << 64) - 1


@config_class
@dataclass(frozen=True)
class DNSConfig:
    """How Dynamic Network Surgery prunes and splices a layer.

    Defaults are the seed's ``dns_*_param`` defaults. Guo's own code used ``alpha_low=0.9`` and
    ``alpha_high=1.1``; the recipes that reproduce his numbers set them.

    Attributes:
        c_rate: threshold in standard deviations above the mean magnitude; larger prunes more.
        gamma: decay of the surgery probability ``(1 + gamma*i)^(-power)``.
        power: exponent of that decay.
        iter_stop: masks change only while the stage iteration is below it; a negative value
            freezes the masks (the seed used this to prune conv and FC layers in separate stages).
        alpha_low: prune entries at or below ``alpha_low * t``.
        alpha_high: splice back entries above ``alpha_high * t``.
        include_bias: mask biases too (the seed does).
        seed: seed of the per-layer draws; each layer mixes in a hash of its name.
        advance: ``"forward"`` runs one surgery iteration at every training-mode forward;
            ``"manual"`` leaves it to :func:`nncompress.surgery_step` (for gradient accumulation).
        ramp: gradual surgery: for stage iterations ``i < ramp`` both thresholds are scaled by
            ``(i + 1) / ramp``, so the layer is pruned a little at a time instead of at once
            (0, the default, is the original surgery).

    Example:
        >>> DNSConfig(c_rate=2.5, gamma=1e-4).c_rate
        2.5
    """

    c_rate: float = 1.0
    gamma: float = 0.001
    power: float = 1.0
    iter_stop: int = 10_000_000
    alpha_low: float = 0.95
    alpha_high: float = 1.05
    include_bias: bool = True
    seed: int = 0
    advance: str = "forward"
    ramp: int = 0

    def __post_init__(self) -> None:
        own = "DNSConfig"
        check_real(own, "c_rate", self.c_rate, lambda v: True, "use a finite number")
        check_real(own, "gamma", self.gamma, lambda v: v >= 0, "use a finite number >= 0")
        check_real(own, "power", self.power, lambda v: v >= 0, "use a finite number >= 0")
        check(isinstance(self.iter_stop, int) and not isinstance(self.iter_stop, bool), own,
              "iter_stop", self.iter_stop, "use an integer (negative freezes the masks)")
        check_real(own, "alpha_low", self.alpha_low, lambda v: v >= 0, "use a number >= 0")
        check_real(own, "alpha_high", self.alpha_high, lambda v: v >= 0, "use a number >= 0")
        check(self.alpha_low <= self.alpha_high, own, "alpha_low", self.alpha_low,
              f"must not exceed alpha_high={self.alpha_high!r}")
        check(isinstance(self.include_bias, bool), own, "include_bias", self.include_bias,
              "use true or false")
        check(isinstance(self.seed, int) and not isinstance(self.seed, bool) and self.seed >= 0,
              own, "seed", self.seed, "use an integer >= 0")
        check(self.advance in ("forward", "manual"), own, "advance", self.advance,
              "use 'forward' or 'manual'")
        check(isinstance(self.ramp, int) and not isinstance(self.ramp, bool) and self.ramp >= 0,
              own, "ramp", self.ramp, "use an integer >= 0 (iterations; 0 prunes at once)")
        check(self.iter_stop < 0 or self.ramp <= self.iter_stop, own, "ramp", self.ramp,
              f"the masks stop changing at iter_stop={self.iter_stop}, before the ramp ends; "
              "use ramp <= iter_stop")


def surgery_probability(iteration: int, gamma: float, power: float) -> float:
    """Probability ``(1 + gamma*iteration)^(-power)`` that surgery runs at ``iteration``.

    Example:
        >>> surgery_probability(10000, 1e-4, 1.0)
        0.5
    """
    return float((1.0 + gamma * iteration) ** (-power))


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def uniform_draw(seed: int, iteration: int) -> float:
    """A uniform number in [0, 1) that depends only on ``(seed, iteration)``.

    Being a pure function of its inputs, the draw needs no generator state: a resumed run and
    every rank of a distributed run see the same sequence.

    Example:
        >>> uniform_draw(7, 3) == uniform_draw(7, 3)
        True
    """
    mixed = _splitmix64(_splitmix64(seed & _MASK64) ^ (iteration & _MASK64))
    return (mixed >> 11) * 2.0**-53


def mix_seed(seed: int, name: str) -> int:
    """Derive a layer's own 63-bit seed from a config seed and the layer's qualified name.

    Example:
        >>> mix_seed(0, "ip1") == mix_seed(0, "ip1") != mix_seed(0, "ip2")
        True
    """
    value = seed
    for byte in name.encode():
        value = _splitmix64(value ^ byte)
    return _splitmix64(value) >> 1


def mask_statistics(masked: Sequence[torch.Tensor], where: str) -> tuple[float, float] | None:
    """Mean and population std of ``|v|`` over the non-zero entries of the masked tensors.

    Args:
        masked: the layer's masked blobs ``T*w`` (weights and biases together).
        where: the layer's name, for error messages.

    Returns:
        ``(mu, sigma)``, or None when no entry is non-zero (then no surgery happens).

    Raises:
        NonFiniteError: a masked entry is NaN or infinite.

    Example:
        >>> mask_statistics([torch.tensor([0.0, 1.0, -3.0])], "fc")
        (2.0, 1.0)
    """
    values = torch.cat([t.detach().reshape(-1) for t in masked]).double().abs()
    if not bool(torch.isfinite(values).all()):
        raise NonFiniteError(f"layer {where!r} holds NaN or infinite weights when DNS takes its "
                             "statistics; check the learning rate and the data")
    nonzero = values[values != 0]
    if nonzero.numel() == 0:
        return None
    mu = float(nonzero.mean())
    sigma = float(nonzero.std(correction=0))
    return mu, sigma


def ramp_factor(iteration: int, ramp: int) -> float:
    """The scale ``(iteration + 1) / ramp`` of the thresholds while ``iteration < ramp``, else 1.

    Example:
        >>> ramp_factor(0, 4), ramp_factor(1, 4), ramp_factor(3, 4), ramp_factor(9, 4)
        (0.25, 0.5, 1.0, 1.0)
    """
    return (iteration + 1) / ramp if 0 <= iteration < ramp else 1.0


def thresholds(mu: float, sigma: float, config: DNSConfig,
               iteration: int | None = None) -> tuple[float, float]:
    """Prune and splice thresholds ``(alpha_low*t, alpha_high*t)``, ``t = max(mu + c*sigma, 0)``.

    Given the stage ``iteration``, both are scaled by :func:`ramp_factor` (``config.ramp``).

    Example:
        >>> thresholds(1.0, 0.5, DNSConfig(c_rate=2.0, alpha_low=0.5, alpha_high=1.5))
        (1.0, 3.0)
        >>> thresholds(1.0, 0.5, DNSConfig(c_rate=2.0, alpha_low=0.5, alpha_high=1.5, ramp=4), 1)
        (0.5, 1.5)
    """
    t = max(mu + config.c_rate * sigma, 0.0)
    low, high = config.alpha_low * t, config.alpha_high * t
    if iteration is None:
        return low, high
    factor = ramp_factor(iteration, config.ramp)
    return low * factor, high * factor


def update_mask(weight: torch.Tensor, mask: torch.Tensor, low: float | torch.Tensor,
                high: float | torch.Tensor) -> None:
    """Prune and splice ``mask`` in place from the magnitudes of ``weight``.

    Kept entries stay while ``|w| > low``; pruned ones come back when ``|w| > high``. The
    thresholds are numbers (a NaN one changes nothing) or 0-dimensional tensors on the
    weight's device (compared as they are: the caller excludes NaN, so nothing is read back).

    Example:
        >>> m = torch.tensor([True, True, False, False])
        >>> update_mask(torch.tensor([0.5, 2.0, 1.5, 3.0]), m, 1.0, 2.0)
        >>> m.tolist()
        [False, True, False, True]
    """
    if isinstance(low, float) and isinstance(high, float) and (math.isnan(low) or
                                                               math.isnan(high)):
        return
    magnitude = weight.detach().abs()
    # Comparisons written as numbers (1.0/0.0) and combined by arithmetic: on the CPU these
    # kernels are vectorised, where bool results and ``torch.where`` go element by element.
    splice = torch.gt(magnitude, high, out=torch.empty_like(magnitude))
    kept = magnitude.gt_(low).mul_(_as_numbers(mask)).add_(splice)  # 0, 1 or 2: nonzero keeps
    if mask.dtype != torch.bool:
        kept.clamp_max_(1)
    mask.copy_(kept)


def _as_numbers(mask: torch.Tensor) -> torch.Tensor:
    """A bool mask viewed as uint8 0/1 (no copy): arithmetic with it casts cheaply."""
    return mask.view(torch.uint8) if mask.dtype == torch.bool else mask


def straight_through_mask(weight: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``weight * mask``, whose gradient reaches pruned entries too, so they can be spliced.

    Example:
        >>> w = torch.tensor([1.0, 2.0], requires_grad=True)
        >>> straight_through_mask(w, torch.tensor([True, False])).sum().backward()
        >>> w.grad.tolist()
        [1.0, 1.0]
    """
    if not (weight.requires_grad and torch.is_grad_enabled()):
        return weight * _as_numbers(mask)  # no gradient to route
    # A copy's gradient reaches ``weight`` unchanged (CloneBackward0, no kernel); the product
    # is then taken in place where autograd does not see it (through a detached alias, which
    # costs less than entering no_grad). Being all built-in, the backward has no Python node:
    # one of those per layer costs more than the product itself.
    out = weight.clone()
    out.detach().mul_(_as_numbers(mask))
    return out

"""Sparse Variational Dropout: configuration and the pure tensor math.

Molchanov, Ashukha, Vetrov, "Variational Dropout Sparsifies Deep Neural Networks", ICML 2017.
Each weight ``w`` gets its own Gaussian multiplicative noise, parametrized by the additive
variance ``sigma^2`` (``log_sigma2`` is learned next to ``w``); its dropout rate is
``alpha = sigma^2 / w^2``. Training minimizes the data loss plus the KL divergence from the
log-uniform prior, divided by the number of training examples; the KL term pushes ``alpha``
up wherever the data allow, and a weight with ``log alpha >= threshold`` (3 in the paper: a
noise variance twenty times the squared weight) carries only noise and is pruned.

The training forward samples each output from its exact Gaussian (the local
reparameterization trick)::

    mean = x @ w.T + b,   var = (x * x) @ exp(log_sigma2).T,   out = mean + sqrt(var) * eps

(with ``include_bias``, the bias gets its own ``log_sigma2`` and adds its variance to ``var``)

and the evaluation forward computes with ``w * [log alpha < threshold]``. The KL term uses the
paper's approximation ``-KL = k1 sigmoid(k2 + k3 log alpha) - 0.5 log(1 + 1/alpha) - k1``.

When a stage of variational dropout ends (:func:`nncompress.vd_to_masks`), each layer keeps
the mask ``log alpha < threshold`` as a frozen DNS mask and drops ``log_sigma2``: fixed-mask
retraining, INQ and finalize then treat it like a model pruned by surgery.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from nncompress._config import check, check_real, config_class

__all__ = ["KL_CONSTANTS", "LOG_ALPHA_RANGE", "VDConfig", "kl_approximation", "kl_factor",
           "log_alpha", "noisy_output"]

# k1, k2, k3 of Molchanov et al.'s fit of the KL divergence
KL_CONSTANTS = (0.63576, 1.87320, 1.48695)
LOG_ALPHA_RANGE = (-10.0, 10.0)  # log alpha is clipped to this range, as in the paper's code
_EPS = 1e-8


@config_class
@dataclass(frozen=True)
class VDConfig:
    """How Sparse Variational Dropout trains and prunes a layer's weights.

    Attributes:
        threshold: prune a weight where ``log alpha >= threshold`` (the paper's 3.0); lower
            prunes more.
        kl_weight: multiplies the KL term (1.0 is the variational bound; above it prunes
            harder, below it keeps more).
        kl_ramp: the KL term's factor rises linearly from 0 to ``kl_weight`` over the first
            ``kl_ramp`` training iterations of the layer (0: the full weight at once).
        init_log_sigma2: the starting ``log sigma^2`` of every weight (-10: almost no noise,
            so a trained model starts where it was).
        include_bias: give the bias its own noise and prune it by the same rule (the paper
            prunes weights only, the default).

    Example:
        >>> VDConfig(threshold=2.5).threshold
        2.5
    """

    threshold: float = 3.0
    kl_weight: float = 1.0
    kl_ramp: int = 0
    init_log_sigma2: float = -10.0
    include_bias: bool = False

    def __post_init__(self) -> None:
        own = "VDConfig"
        low, high = LOG_ALPHA_RANGE
        check_real(own, "threshold", self.threshold, lambda v: low < v < high,
                   f"use a number between {low:g} and {high:g} (log alpha; the paper uses 3)")
        check_real(own, "kl_weight", self.kl_weight, lambda v: v >= 0,
                   "use a finite number >= 0 (1.0 is the variational bound)")
        check(isinstance(self.kl_ramp, int) and not isinstance(self.kl_ramp, bool)
              and self.kl_ramp >= 0, own, "kl_ramp", self.kl_ramp,
              "use an integer >= 0 (iterations; 0 applies the full KL weight at once)")
        check_real(own, "init_log_sigma2", self.init_log_sigma2, lambda v: v <= 0,
                   "use a number <= 0, e.g. -10 (almost no noise at the start)")
        check(isinstance(self.include_bias, bool), own, "include_bias", self.include_bias,
              "use true or false")


def log_alpha(weight: torch.Tensor, log_sigma2: torch.Tensor) -> torch.Tensor:
    """``log(sigma^2 / w^2)`` per weight, clipped to [-10, 10].

    Example:
        >>> float(log_alpha(torch.tensor([1.0]), torch.tensor([0.0]))[0])
        0.0
    """
    value = log_sigma2 - torch.log(weight * weight + _EPS)
    return torch.clamp(value, *LOG_ALPHA_RANGE)


def kl_approximation(alpha_log: torch.Tensor) -> torch.Tensor:
    """The approximate KL divergence of each weight's posterior from the log-uniform prior.

    Near 0 for a weight with much noise (large ``log alpha``), large for a precise one.

    Example:
        >>> round(float(kl_approximation(torch.tensor([10.0]))[0]), 4)
        0.0
    """
    k1, k2, k3 = KL_CONSTANTS
    negative = k1 * torch.sigmoid(k2 + k3 * alpha_log) - 0.5 * F.softplus(-alpha_log) - k1
    return -negative


def kl_factor(iteration: int | torch.Tensor, config: VDConfig) -> torch.Tensor:
    """The KL term's factor after ``iteration`` training forwards (``kl_ramp`` applied).

    ``iteration`` may be a tensor on the model's device: the factor is then computed there,
    without reading the count back.

    Example:
        >>> float(kl_factor(50, VDConfig(kl_ramp=100, kl_weight=2.0)))
        1.0
    """
    count = torch.as_tensor(iteration, dtype=torch.float32)
    if not config.kl_ramp:
        return torch.full_like(count, config.kl_weight)
    return config.kl_weight * torch.clamp(count / config.kl_ramp, max=1.0)


def noisy_output(mean: torch.Tensor, variance: torch.Tensor) -> torch.Tensor:
    """``mean + sqrt(variance) * eps`` with standard normal ``eps`` (local reparameterization)."""
    # in float32: under float16 autocast the epsilon would vanish and sqrt's gradient blow up
    noise = torch.sqrt(variance.float() + _EPS) * torch.randn_like(mean, dtype=torch.float32)
    return (mean.float() + noise).to(mean.dtype)

"""Compressible layers: nn.Linear / nn.ConvNd subclasses carrying DNS, INQ or VD state.

A prepared layer keeps the Parameter objects of the layer it replaced, so an optimizer made
before :func:`nncompress.prepare` still updates the right tensors. Its state lives in buffers,
hence in ``state_dict``, under these keys (``<blob>`` is ``weight`` or ``bias``):

DNS
    ``<blob>_mask`` (bool): the surgery mask ``T``; 1 keeps the entry.
    ``dns_iteration`` (int64): the stage iteration ``i`` of the next surgery.
    ``dns_stats`` (float64, 3): ``mu``, ``sigma`` and 1.0 once taken at ``i = 0`` (else 0.0).
    ``dns_seed`` (int64): the layer's seed; the draw of iteration ``i`` is a pure function of both.
INQ
    ``<blob>_fixed`` (bfloat16): the value of each fixed entry, NaN for a free one.
    ``<blob>_levels`` (int64, 3): ``n1``, ``n2`` and ``N0`` (participating entries); with
    ``mantissa_bits`` M > 0 a fourth entry, M.
    ``inq_portion`` (float64): the accumulated portion reached by the last quantize step.
    ``inq_steps`` (int64): how many quantize steps ran (seeds the ``random`` strategy).
    ``inq_seed`` (int64): the layer's seed.
Sparse variational dropout (:mod:`nncompress.vd`)
    ``weight_log_sigma2``, ``bias_log_sigma2`` (Parameters): each entry's learned
    ``log sigma^2`` (the bias's only with ``include_bias``).
    ``vd_iteration`` (int64): training-mode forwards so far (the KL ramp's clock).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nncompress import _inq_hooks, _surgery
from nncompress import dns as _dns
from nncompress import inq as _inq
from nncompress import vd as _vd
from nncompress.dns import DNSConfig
from nncompress.errors import ConfigError
from nncompress.inq import INQConfig
from nncompress.vd import VDConfig

__all__ = ["COMPRESSIBLE", "CompressedConv1d", "CompressedConv2d", "CompressedConv3d",
           "CompressedLayer", "CompressedLinear", "compressed_class"]

COMPRESSIBLE: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_DNS_BUFFERS = ("weight_mask", "bias_mask", "dns_iteration", "dns_stats", "dns_seed")
_INQ_BUFFERS = ("weight_fixed", "bias_fixed", "weight_levels", "bias_levels", "inq_portion",
                "inq_steps", "inq_seed")


def _vd_parameter(blob: str) -> str:
    return f"{blob}_log_sigma2"


class CompressedLayer(nn.Module):
    """Mixin of the prepared layers; see the module docstring for its state."""

    layer_name: str
    dns_config: DNSConfig | None
    inq_config: INQConfig | None
    vd_config: VDConfig | None
    dns_iteration: torch.Tensor
    dns_stats: torch.Tensor
    dns_seed: torch.Tensor
    inq_portion: torch.Tensor
    inq_steps: torch.Tensor
    inq_seed: torch.Tensor
    vd_iteration: torch.Tensor
    _step_keep: dict[str, tuple[torch.Tensor, torch.Tensor]]  # pre- to post-step hook

    def param(self, blob: str) -> torch.Tensor:
        """The Parameter ``weight`` or ``bias``."""
        value = self._parameters[blob]
        assert value is not None
        return value

    def buffer(self, name: str) -> torch.Tensor:
        """A state buffer by key (``weight_mask``, ``bias_fixed``, ...)."""
        value = self._buffers[name]
        assert value is not None
        return value

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_plain(cls, module: nn.Module, name: str) -> CompressedLayer:
        """Wrap ``module`` (same Parameters, hooks and attributes) without any state yet."""
        layer = cls.__new__(cls)
        layer.__dict__.update(module.__dict__)
        for key in ("_parameters", "_buffers", "_modules"):
            layer.__dict__[key] = dict(module.__dict__[key])
        layer.layer_name = name
        layer.dns_config = None
        layer.inq_config = None
        layer.vd_config = None
        layer._step_keep = {}
        return layer

    def to_plain(self) -> nn.Module:
        """A plain module of the base type with the same Parameters and no compression state."""
        base = next(c for c in type(self).__mro__ if c in COMPRESSIBLE)
        plain = base.__new__(base)
        plain.__dict__.update(self.__dict__)
        plain.__dict__["_buffers"] = {k: v for k, v in self._buffers.items()
                                      if k not in _DNS_BUFFERS + _INQ_BUFFERS + ("vd_iteration",)}
        plain.__dict__["_parameters"] = {k: v for k, v in self._parameters.items()
                                         if not k.endswith("_log_sigma2")}
        plain.__dict__["_modules"] = dict(self._modules)
        for key in ("layer_name", "dns_config", "inq_config", "vd_config", "_step_keep",
                    "_dns_host", _surgery.MASK_COPIES):
            plain.__dict__.pop(key, None)
        return plain

    # -- state accessors: the only way other modules read or change compression state -------
    def mask(self, blob: str) -> torch.Tensor | None:
        """The DNS mask of ``blob`` (bool, 1 keeps the entry), or None when it has none."""
        return self._buffers.get(f"{blob}_mask")

    def set_mask(self, blob: str, mask: torch.Tensor) -> None:
        """Copy ``mask`` (0/1 or bool, the blob's shape) into the DNS mask of ``blob``."""
        current = self.mask(blob)
        if current is None:
            raise ConfigError(f"layer {self.layer_name!r}: {blob} has no DNS mask to set")
        current.copy_(mask.to(torch.bool))

    def fixed_values(self, blob: str) -> torch.Tensor | None:
        """INQ values of ``blob``: each fixed entry's value, NaN while free; None if not INQ."""
        return self._buffers.get(f"{blob}_fixed")

    def free_entries(self, blob: str) -> torch.Tensor | None:
        """Bool tensor, True where an INQ entry of ``blob`` is still free; None if not INQ."""
        fixed = self.fixed_values(blob)
        return None if fixed is None else torch.isnan(fixed)

    def inq_levels(self, blob: str) -> tuple[int, int, int] | None:
        """``(n1, n2, N0)`` of ``blob``'s INQ level set, or None if it is not under INQ."""
        levels = self._buffers.get(f"{blob}_levels")
        if levels is None:
            return None
        n1, n2, count = (int(v) for v in levels[:3])
        return n1, n2, count

    def inq_mantissa_bits(self, blob: str) -> int:
        """``mantissa_bits`` of ``blob``'s INQ level set (0: powers of two, or not under INQ)."""
        levels = self._buffers.get(f"{blob}_levels")
        return 0 if levels is None or levels.numel() < 4 else int(levels[3])

    def fix_entries(self, blob: str, chosen: torch.Tensor) -> None:
        """Fix the free entries of ``blob`` selected by ``chosen`` at their rounded values.

        Each chosen free entry takes the nearest value of the blob's level set (INQ's rounding)
        and keeps it from then on; entries already fixed keep theirs.
        """
        fixed = self.fixed_values(blob)
        levels = self.inq_levels(blob)
        if fixed is None or levels is None:
            raise ConfigError(f"layer {self.layer_name!r}: {blob} is not under INQ")
        n1, n2, _ = levels
        rounded = _inq.quantize(self.param(blob).detach(), n1, n2,
                                self.inq_mantissa_bits(blob)).to(fixed.dtype)
        fixed.copy_(torch.where(chosen & torch.isnan(fixed), rounded, fixed))
        self._step_keep.pop(blob, None)  # the set of fixed entries changed
        self.restore_fixed(blob)

    def blobs(self, include_bias: bool) -> list[str]:
        """The blobs that take part: ``weight``, and ``bias`` if asked for and present."""
        return ["weight"] + (["bias"] if include_bias and self.bias is not None else [])

    def _keep_include_bias(self, current: DNSConfig | VDConfig | None, include_bias: bool,
                           what: str) -> None:
        if current is not None and include_bias != current.include_bias:
            raise ConfigError(f"layer {self.layer_name!r}: include_bias cannot change between "
                              f"{what} stages")

    # -- DNS ----------------------------------------------------------------------------------
    def start_dns(self, config: DNSConfig) -> None:
        """Start a DNS stage: iteration 0, new statistics; masks are kept when present."""
        if self.vd_config is not None:
            raise ConfigError(f"layer {self.layer_name!r} is under variational dropout; end it "
                              "with vd_to_masks(model) before a DNS stage")
        if self.inq_config is not None:
            raise ConfigError(f"layer {self.layer_name!r} is under INQ; DNS cannot follow INQ "
                              "(finalize the model first to prune a quantized model)")
        self._keep_include_bias(self.dns_config, config.include_bias, "DNS")
        for blob in self.blobs(config.include_bias):
            if f"{blob}_mask" not in self._buffers:
                param = self.param(blob)
                self.register_buffer(f"{blob}_mask", torch.ones_like(param, dtype=torch.bool))
        seed = _dns.mix_seed(config.seed, self.layer_name)
        device = self.param("weight").device  # the scalar state lives with the weights
        self.register_buffer("dns_iteration", torch.zeros((), dtype=torch.int64, device=device))
        self.register_buffer("dns_stats", torch.zeros(3, dtype=torch.float64, device=device))
        self.register_buffer("dns_seed", torch.tensor(seed, dtype=torch.int64, device=device))
        self.dns_config = config
        _surgery.start(self, seed)

    def surgery(self) -> None:
        """One DNS iteration (statistics at ``i = 0``, then no device read: see ``_surgery``)."""
        _surgery.surgery(self)

    def bake_masks(self) -> None:
        """Zero the pruned entries (as +0.0, whatever their sign) and drop the DNS state."""
        with torch.no_grad():
            for blob in ("weight", "bias"):
                mask = self._buffers.pop(f"{blob}_mask", None)
                if mask is not None:
                    self.param(blob).masked_fill_(~mask, 0.0)
        for key in _DNS_BUFFERS:
            self._buffers.pop(key, None)
        self.dns_config = None
        _surgery.forget(self)

    # -- INQ ----------------------------------------------------------------------------------
    def start_inq(self, config: INQConfig) -> None:
        """Start INQ: bake DNS masks, fix zeros, and fix each blob's level set."""
        if self.vd_config is not None:
            self.stop_vd()
        if self.inq_config is not None:
            if any(getattr(config, key) != getattr(self.inq_config, key)
                   for key in ("num_quantum_values", "include_bias", "levels",
                               "mantissa_bits")):
                raise ConfigError(f"layer {self.layer_name!r} is already under INQ with "
                                  f"{self.inq_config}; its level set cannot change")
            self.inq_config = config
            return
        if self.dns_config is not None:
            self.bake_masks()
        for blob in self.blobs(config.include_bias):
            self._start_inq_blob(blob, config)
        device = self.param("weight").device
        self.register_buffer("inq_portion", torch.zeros((), dtype=torch.float64, device=device))
        self.register_buffer("inq_steps", torch.zeros((), dtype=torch.int64, device=device))
        seed = _dns.mix_seed(config.seed, self.layer_name)
        self.register_buffer("inq_seed", torch.tensor(seed, dtype=torch.int64, device=device))
        self.inq_config = config

    def _start_inq_blob(self, blob: str, config: INQConfig) -> None:
        param = self.param(blob).detach()
        _inq.check_finite(param, self.layer_name, f"in {blob} when INQ starts")
        participating = param != 0
        count = int(participating.sum())
        n1 = n2 = 0
        if count:
            n1, n2 = _inq.fit_level_range(param, config.num_quantum_values, config.levels,
                                          config.mantissa_bits)
        fixed = torch.where(participating, math.nan, 0.0).to(_inq.FIXED_DTYPE)
        self.register_buffer(f"{blob}_fixed", fixed)
        state = [n1, n2, count] + ([config.mantissa_bits] if config.mantissa_bits else [])
        self.register_buffer(f"{blob}_levels", torch.tensor(state, dtype=torch.int64,
                                                            device=param.device))
        _inq_hooks.track(self, blob)

    def next_portion(self) -> float | None:
        """The first portion of ``inq_config.portions`` above the one reached, None at the end."""
        assert self.inq_config is not None
        reached = float(self.inq_portion)
        return next((p for p in self.inq_config.portions if p > reached), None)

    def quantize_to(self, portion: float) -> None:
        """Fix entries until ``round(portion * N0)`` of each blob's participating ones are fixed."""
        config = self.inq_config
        assert config is not None
        if portion < float(self.inq_portion):
            reached = float(self.inq_portion)
            raise ConfigError(f"portion {portion!r} is below the portion {reached!r} layer "
                              f"{self.layer_name!r} already reached; portions only increase")
        for index, blob in enumerate(self.blobs(config.include_bias)):
            self._quantize_blob(blob, index, portion, config)
        self.inq_portion.fill_(portion)
        self.inq_steps.add_(1)

    def _quantize_blob(self, blob: str, index: int, portion: float, config: INQConfig) -> None:
        free, levels = self.free_entries(blob), self.inq_levels(blob)
        assert free is not None and levels is not None
        count = levels[2]
        add = _inq.fix_count(portion, count) - (count - int(torch.count_nonzero(free)))
        if add <= 0:
            return
        weights = self.param(blob).detach()
        magnitude = torch.where(free, weights.abs(), -1.0)
        _inq.check_finite(magnitude, self.layer_name, f"in {blob} at a quantize step")
        if config.strategy == "magnitude":
            keys = magnitude
        else:
            generator = torch.Generator().manual_seed(
                _dns.mix_seed(int(self.inq_seed) + int(self.inq_steps), f"{blob}:{index}"))
            draws = torch.rand(weights.shape, generator=generator).to(weights.device)
            keys = torch.where(free, draws, -1.0)
        self.fix_entries(blob, _inq.select_largest(keys, add))

    def mask_fixed_gradient(self, blob: str, keep_for_restore: bool = False) -> None:
        """Zero the gradient of the fixed entries of ``blob`` (no-op without a gradient)."""
        split = _inq_hooks.mask_gradient(self.param(blob), self.buffer(f"{blob}_fixed"))
        if split is not None and keep_for_restore:  # the post-step restore reuses it once
            self._step_keep[blob] = split

    def restore_fixed(self, blob: str) -> None:
        """Write the exact fixed values of ``blob`` back into its Parameter."""
        _inq_hooks.restore_values(self.param(blob), self.buffer(f"{blob}_fixed"),
                                  self._step_keep.pop(blob, None))

    def forget_inq(self) -> None:
        """Restore fixed values and drop the INQ state."""
        for blob in ("weight", "bias"):
            if f"{blob}_fixed" in self._buffers:
                self.restore_fixed(blob)
                _inq_hooks.untrack(self.param(blob))
        for key in _INQ_BUFFERS:
            self._buffers.pop(key, None)
        self.inq_config = None

    # -- sparse variational dropout ------------------------------------------------------------
    def start_vd(self, config: VDConfig) -> None:
        """Start variational dropout: each blob's ``log sigma^2`` starts at ``init_log_sigma2``.

        The blobs are the weight, and the bias with ``include_bias``. Preparing again (a
        second stage) keeps the learned ``log sigma^2`` and restarts the KL ramp's clock.
        """
        if self.inq_config is not None or self.dns_config is not None:
            mode = "INQ" if self.inq_config is not None else "DNS"
            raise ConfigError(f"layer {self.layer_name!r} is under {mode}; variational dropout "
                              "starts from a plain or finalized model (finalize it first)")
        self._keep_include_bias(self.vd_config, config.include_bias, "variational dropout")
        for blob in self.blobs(config.include_bias):
            if _vd_parameter(blob) not in self._parameters:
                self.register_parameter(_vd_parameter(blob), nn.Parameter(
                    torch.full_like(self.param(blob).detach(), config.init_log_sigma2)))
        device = self.param("weight").device
        self.register_buffer("vd_iteration", torch.zeros((), dtype=torch.int64, device=device))
        self.vd_config = config

    def vd_log_alpha(self, blob: str = "weight") -> torch.Tensor:
        """``log alpha`` of each entry of ``blob`` (clipped), differentiable in both tensors."""
        return _vd.log_alpha(self.param(blob), self.param(_vd_parameter(blob)))

    def vd_mask(self, blob: str = "weight") -> torch.Tensor:
        """Bool tensor of the entries of ``blob`` kept: ``log alpha < threshold``."""
        assert self.vd_config is not None
        with torch.no_grad():
            return self.vd_log_alpha(blob) < self.vd_config.threshold

    def vd_kl(self) -> torch.Tensor:
        """The layer's KL term: the ramped factor times the summed KL of its entries."""
        config = self.vd_config
        assert config is not None
        total = sum(_vd.kl_approximation(self.vd_log_alpha(blob)).sum()
                    for blob in self.blobs(config.include_bias))
        return _vd.kl_factor(self.vd_iteration, config) * total

    def stop_vd(self) -> None:
        """End variational dropout: keep ``log alpha < threshold`` as frozen DNS masks.

        ``log sigma^2`` is dropped; the layer continues under DNS with ``iter_stop = -1``
        (with a bias mask only under ``include_bias``), which fixed-mask retraining, INQ and
        finalize understand.
        """
        config = self.vd_config
        if config is None:
            return
        blobs = self.blobs(config.include_bias)
        masks = {blob: self.vd_mask(blob) for blob in blobs}
        for blob in blobs:
            del self._parameters[_vd_parameter(blob)]
        self._buffers.pop("vd_iteration", None)
        self.vd_config = None
        self.start_dns(DNSConfig(iter_stop=-1, include_bias=config.include_bias))
        for blob, mask in masks.items():
            self.set_mask(blob, mask)

    def _vd_forward(self, input: torch.Tensor, op: Any) -> torch.Tensor:
        config = self.vd_config
        assert config is not None
        weight: torch.Tensor = self.param("weight")
        bias: torch.Tensor | None = self._parameters.get("bias")
        if not self.training:
            weight = weight * self.vd_mask().to(weight.dtype)
            if bias is not None and config.include_bias:
                bias = bias * self.vd_mask("bias").to(bias.dtype)
            return op(input, weight, bias)  # type: ignore[no-any-return]
        self.vd_iteration.add_(1)
        mean = op(input, weight, bias)
        bias_variance = None
        if bias is not None and config.include_bias:
            bias_variance = torch.exp(self.param(_vd_parameter("bias")))
        variance = op(input * input, torch.exp(self.param(_vd_parameter("weight"))),
                      bias_variance)
        return _vd.noisy_output(mean, variance)

    def _load_from_state_dict(self, state_dict: Any, prefix: str, *args: Any) -> None:
        for blob in ("weight", "bias"):
            theirs = state_dict.get(f"{prefix}{blob}_levels")
            if theirs is None or f"{blob}_levels" not in self._buffers or \
                    theirs.numel() not in (3, 4):
                continue  # nothing to compare; other mismatches are torch's to report
            held = int(theirs[3]) if theirs.numel() == 4 else 0
            if held != self.inq_mantissa_bits(blob):
                raise ConfigError(
                    f"layer {self.layer_name!r}: the state's {blob} levels were made with "
                    f"mantissa_bits {held}, this layer's INQ uses "
                    f"{self.inq_mantissa_bits(blob)}; prepare it with mantissa_bits={held}")
        super()._load_from_state_dict(state_dict, prefix, *args)
        _surgery.load_from_state(self, state_dict, prefix)

    def _apply(self, fn: Any, recurse: bool = True) -> Any:  # .to(), .cuda(), .half()...
        with _surgery.moving(self, _DNS_BUFFERS + _INQ_BUFFERS):
            return super()._apply(fn, recurse)  # type: ignore[no-untyped-call]

    # -- forward ------------------------------------------------------------------------------
    def effective(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The weight and bias the forward computes with (masked, or with frozen gradients)."""
        weight: torch.Tensor = self.param("weight")
        bias: torch.Tensor | None = self._parameters.get("bias")
        dns_config = self.dns_config
        if dns_config is not None:
            if self.training and dns_config.advance == "forward":
                self.surgery()
            mask = _surgery.float_mask  # the mask in the blob's dtype, kept between forwards
            weight = _dns.straight_through_mask(weight, mask(self, "weight", weight.dtype))
            if bias is not None and dns_config.include_bias:
                bias = _dns.straight_through_mask(bias, mask(self, "bias", bias.dtype))
        elif self.inq_config is not None and self.training:
            # A deep copy or a re-made Parameter is new to the hooks: track it before its step.
            for blob in self.blobs(self.inq_config.include_bias):
                if not _inq_hooks.is_tracked(self, blob):
                    _inq_hooks.track(self, blob)
        return weight, bias

    def extra_repr(self) -> str:
        mode = ("dns" if self.dns_config is not None else "inq" if self.inq_config else
                "vd" if self.vd_config is not None else "idle")
        return f"{super().extra_repr()}, compression={mode}"


class CompressedLinear(CompressedLayer, nn.Linear):
    """nn.Linear with DNS or INQ state."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if self.vd_config is not None:
            return self._vd_forward(input, F.linear)
        weight, bias = self.effective()
        return F.linear(input, weight, bias)


class _CompressedConv(CompressedLayer):
    def forward(self, input: torch.Tensor) -> torch.Tensor:
        conv_forward: Any = self._conv_forward  # type: ignore[attr-defined]
        if self.vd_config is not None:
            return self._vd_forward(input, conv_forward)
        weight, bias = self.effective()
        result: torch.Tensor = conv_forward(input, weight, bias)
        return result


class CompressedConv1d(_CompressedConv, nn.Conv1d):
    """nn.Conv1d with DNS or INQ state."""


class CompressedConv2d(_CompressedConv, nn.Conv2d):
    """nn.Conv2d with DNS or INQ state."""


class CompressedConv3d(_CompressedConv, nn.Conv3d):
    """nn.Conv3d with DNS or INQ state."""


_CLASSES: dict[type[nn.Module], type[CompressedLayer]] = {
    nn.Linear: CompressedLinear,
    nn.Conv1d: CompressedConv1d,
    nn.Conv2d: CompressedConv2d,
    nn.Conv3d: CompressedConv3d,
}


def compressed_class(module: nn.Module) -> type[CompressedLayer] | None:
    """The prepared class for a plain compressible ``module``, or None if it is not one."""
    return _CLASSES.get(type(module))

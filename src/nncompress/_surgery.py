"""One DNS surgery step without host-device synchronisation: host mirrors of a layer's counters.

A prepared layer's DNS state lives in buffers (``dns_iteration``, ``dns_stats``, ``dns_seed``),
which sit on the layer's device. Deciding whether surgery runs at iteration ``i`` needs ``i``,
the seed and whether the statistics were taken; reading those from a CUDA buffer at every
forward would stall the host until the GPU catches up. The layer therefore keeps a
:class:`HostMirror`: the iteration, the seed and an ``active`` flag as Python values, plus the
prune and splice thresholds as 0-dimensional float64 tensors on the layer's device (and their
copies in the weights' dtype, made once). The draw, the probability and the branch are
computed on the host from the mirror; the mask update compares magnitudes against the device
thresholds. The only read from the device is the statistics at ``i = 0``.

The mirror follows its buffers: :func:`current` compares the buffers' identities and version
counters (plain attributes, no device access) with those recorded, and re-reads the buffers
only when something outside the layer changed them. The same test guards each mask's copy in
the weight's dtype (:func:`float_mask`, 4 more bytes per entry for float32 weights): the
forward multiplies by it, and the mask update compares against it, without converting the bool
mask at every use; a mask update makes the new copy as it goes, and a deep copy or pickle of
the layer leaves the copies out. ``load_state_dict`` (values read from the state dict's own
tensors) and ``.to()`` (values kept, tensors re-bound) update the mirror without any read,
through :meth:`CompressedLayer._load_from_state_dict` and ``_apply``
(:func:`moving`, which also keeps the state's dtypes through ``.half()``).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from nncompress import dns as _dns

if TYPE_CHECKING:
    from nncompress.layers import CompressedLayer

__all__ = ["MASK_COPIES", "HostMirror", "current", "float_mask", "forget", "load_from_state",
           "moving", "start", "surgery"]

_KEYS = ("dns_iteration", "dns_stats", "dns_seed")
_ATTR = "_dns_host"
# layer attribute: blob -> (its bool mask, that mask's version, the mask in a weight dtype)
MASK_COPIES = "_dns_float_masks"


@dataclass
class HostMirror:
    """Host copies of a layer's DNS counters and the device thresholds derived from them."""

    iteration: int
    seed: int
    active: bool  # statistics taken and the thresholds are numbers: surgery may run
    low: torch.Tensor  # prune threshold, float64, 0-dim, on the layer's device
    high: torch.Tensor  # splice threshold
    limit: float = math.inf  # the splice threshold as a host number (inf while not active)
    tensors: tuple[torch.Tensor, ...] = ()  # the buffers mirrored, by identity
    versions: tuple[int, ...] = ()  # and their version counters when last in sync
    typed: dict[torch.dtype, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)

    def thresholds(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """``(low, high)`` in a weight's ``dtype``, converted once (on the device, no read).

        A comparison of a ``dtype`` tensor with a 0-dim float64 one converts the latter to
        ``dtype`` first, so comparing with the converted copy gives the same masks.
        """
        pair = self.typed.get(dtype)
        if pair is None:
            pair = self.typed[dtype] = (self.low.to(dtype), self.high.to(dtype))
        return pair


def _buffers(layer: CompressedLayer) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    found = layer._buffers  # once per layer and forward: no generator, no accessor
    return found["dns_iteration"], found["dns_stats"], found["dns_seed"]  # type: ignore[return-value]


def _record(layer: CompressedLayer, mirror: HostMirror) -> HostMirror:
    mirror.tensors = a, b, c = _buffers(layer)
    mirror.versions = a._version, b._version, c._version
    layer.__dict__[_ATTR] = mirror
    return mirror


def _device_thresholds(stats: torch.Tensor,
                       layer: CompressedLayer) -> tuple[torch.Tensor, torch.Tensor]:
    """``(alpha_low*t, alpha_high*t)``, ``t = max(mu + c*sigma, 0)``, computed where ``stats`` is.

    The same float64 operations in the same order as :func:`nncompress.dns.thresholds`.
    """
    config = layer.dns_config
    assert config is not None
    t = (stats[0] + stats[1] * config.c_rate).clamp_min(0.0)
    return t * config.alpha_low, t * config.alpha_high


def _active(stats: list[float], layer: CompressedLayer) -> bool:
    config = layer.dns_config
    assert config is not None
    if stats[2] != 1:
        return False
    low, high = _dns.thresholds(stats[0], stats[1], config)
    return not (math.isnan(low) or math.isnan(high))


def _mirror_from(layer: CompressedLayer, iteration: int, seed: int,
                 stats: list[float]) -> HostMirror:
    low, high = _device_thresholds(layer.buffer("dns_stats"), layer)
    active = _active(stats, layer)
    config = layer.dns_config
    assert config is not None
    limit = _dns.thresholds(stats[0], stats[1], config)[1] if active else math.inf
    return _record(layer, HostMirror(iteration, seed, active, low, high, limit))


def start(layer: CompressedLayer, seed: int) -> None:
    """A new stage's mirror: iteration 0, no statistics (no device read)."""
    _mirror_from(layer, 0, seed, [0.0, 0.0, 0.0])


def forget(layer: CompressedLayer) -> None:
    """Drop the mirror and the masks' copies (the layer leaves DNS)."""
    layer.__dict__.pop(_ATTR, None)
    layer.__dict__.pop(MASK_COPIES, None)


class _Copies(dict[str, tuple[torch.Tensor, int, torch.Tensor]]):
    """A layer's mask copies; a deep copy or pickle of the layer starts without any.

    A copied mask is a new tensor whose version counter starts again at 0, so a copied entry
    could pass for current while it is not: copies are made again from the copied masks.
    """

    def __deepcopy__(self, memo: dict[int, Any]) -> _Copies:
        return _Copies()

    def __reduce__(self) -> tuple[type[_Copies], tuple[()]]:
        return _Copies, ()


def float_mask(layer: CompressedLayer, blob: str, dtype: torch.dtype) -> torch.Tensor:
    """``blob``'s mask as 1/0 in ``dtype``: converted once, again only after the mask changed.

    Multiplying by it gives the same numbers as multiplying by the bool mask, which converts
    it to ``dtype`` first. Do not change it in place: it is the layer's, shared across forwards.
    """
    mask = layer.buffer(f"{blob}_mask")
    copies: _Copies = layer.__dict__.setdefault(MASK_COPIES, _Copies())
    entry = copies.get(blob)
    if entry is not None and entry[0] is mask and entry[1] == mask._version and \
            entry[2].dtype == dtype:
        return entry[2]
    value = mask.to(dtype)
    copies[blob] = (mask, mask._version, value)
    return value


def current(layer: CompressedLayer) -> HostMirror:
    """The layer's mirror, re-read from the buffers only when they changed behind its back."""
    mirror: HostMirror | None = layer.__dict__.get(_ATTR)
    buffers = _buffers(layer)
    if mirror is not None and len(mirror.tensors) == 3:
        (a, b, c), (va, vb, vc) = mirror.tensors, mirror.versions
        x, y, z = buffers
        if a is x and b is y and c is z and x._version == va and y._version == vb and \
                z._version == vc:
            return mirror
    iteration, stats, seed = buffers  # changed outside the layer: one read from the device
    return _mirror_from(layer, int(iteration), int(seed), stats.tolist())


@contextlib.contextmanager
def moving(layer: CompressedLayer, state_keys: tuple[str, ...]) -> Iterator[None]:
    """Around ``Module._apply``: the state keeps its dtypes, the mirror its values.

    ``.to(device)`` moves the state buffers; a dtype change (``.half()``, ``.to(float16)``)
    would round the bfloat16 INQ values and the float64 statistics, so each buffer whose
    dtype changed is replaced by the old one, unrounded, on the new device.
    """
    mirror = current(layer) if all(k in layer._buffers for k in _KEYS) else None
    before = {k: v for k, v in layer._buffers.items() if k in state_keys and v is not None}
    yield
    layer.__dict__.pop(MASK_COPIES, None)  # made again where the masks are now
    for key, old in before.items():
        new = layer._buffers.get(key)
        if new is not None and new.dtype != old.dtype:
            layer._buffers[key] = old.to(new.device)
    if mirror is not None:
        mirror.low = mirror.low.to(layer.buffer("dns_stats").device)
        mirror.high = mirror.high.to(mirror.low.device)
        mirror.typed = {}
        _record(layer, mirror)


def load_from_state(layer: CompressedLayer, state: Mapping[str, torch.Tensor],
                    prefix: str) -> None:
    """After ``load_state_dict``: the mirror from the loaded values (read where they came from)."""
    if not all(k in layer._buffers for k in _KEYS):
        return
    source = [state.get(prefix + k) for k in _KEYS]
    if any(s is None for s in source):
        forget(layer)  # not all given: the next surgery reads the buffers
        return
    iteration, stats, seed = (s for s in source if s is not None)
    _mirror_from(layer, int(iteration), int(seed), [float(v) for v in stats.tolist()])


def _statistics(layer: CompressedLayer, mirror: HostMirror, blobs: list[str]) -> HostMirror:
    """Take the stage's statistics (``i = 0``): the stage's one read from the device."""
    masked = [layer.param(b).detach() * layer.buffer(f"{b}_mask") for b in blobs]
    stats = _dns.mask_statistics(masked, layer.layer_name)
    values = [*(stats or (0.0, 0.0)), float(stats is not None)]
    layer.buffer("dns_stats").copy_(torch.tensor(values, dtype=torch.float64))
    return _mirror_from(layer, 0, mirror.seed, values)


def _update(layer: CompressedLayer, mirror: HostMirror, blob: str,
            ramped: tuple[torch.Tensor, torch.Tensor] | None) -> None:
    """:func:`nncompress.dns.update_mask` of ``blob`` in three kernels, keeping the float copy.

    Each entry keeps ``|w| > thr`` with ``thr`` the prune threshold where the mask keeps it
    and the splice threshold where it does not: ``torch.lerp(high, low, m)`` with ``m`` the
    float mask is exactly ``high`` at 0 and ``low`` at 1 (its formula for weights >= 0.5 is
    ``low - (low - high) * (1 - m)``) while both are finite in the weight's dtype, which the
    host knows from the statistics; otherwise :func:`~nncompress.dns.update_mask` runs.
    During a ramp, ``ramped`` holds both thresholds already scaled in float64 (as
    :func:`nncompress.dns.thresholds` scales them); they take the weight's dtype here.
    """
    weight = layer.param(blob)
    mask = layer.buffer(f"{blob}_mask")
    if ramped is None:
        low, high = mirror.thresholds(weight.dtype)
    else:
        low, high = ramped[0].to(weight.dtype), ramped[1].to(weight.dtype)
    if not mirror.limit < torch.finfo(weight.dtype).max / 2:
        _dns.update_mask(weight, mask, low, high)
        return
    kept = weight.detach().abs().gt_(torch.lerp(high, low, float_mask(layer, blob, weight.dtype)))
    mask.copy_(kept)
    layer.__dict__[MASK_COPIES][blob] = (mask, mask._version, kept)


def surgery(layer: CompressedLayer) -> None:
    """One DNS iteration: statistics at ``i = 0``, a probabilistic mask update, ``i += 1``.

    Per iteration: host arithmetic for the draw; the mask kernels only on iterations whose
    draw says so; one increment of ``dns_iteration`` on the device.
    """
    config = layer.dns_config
    assert config is not None
    mirror = current(layer)
    iteration = mirror.iteration
    blobs = layer.blobs(config.include_bias)
    if iteration == 0:
        mirror = _statistics(layer, mirror, blobs)
    if mirror.active and 0 <= iteration < config.iter_stop and \
            _dns.uniform_draw(mirror.seed, iteration) < \
            _dns.surgery_probability(iteration, config.gamma, config.power):
        factor = _dns.ramp_factor(iteration, config.ramp)
        ramped = None if factor == 1.0 else (mirror.low * factor, mirror.high * factor)
        for blob in blobs:
            _update(layer, mirror, blob, ramped)
    counter, stats, seed = mirror.tensors  # as current() or _statistics() just recorded them
    counter.add_(1)
    mirror.iteration = iteration + 1
    mirror.versions = counter._version, stats._version, seed._version

"""The public verbs: prepare / finalize / is_prepared, quantize_step and surgery_step.

Layer selection (``layers=`` of :func:`prepare`) maps selectors to a per-layer override. For each
compressible layer, the first matching key of the most specific kind wins:

1. the exact qualified module name (``"features.0"``);
2. a glob over qualified names (``"features.*"``, ``"ip?"``);
3. a regular expression, prefixed ``re:`` and matched in full (``"re:ip[12]"``);
4. a module type (``nn.Conv2d``), matched exactly;
5. otherwise the ``config`` given to :func:`prepare` as is.

An override is a config of the same kind (only the fields given when it was made replace the
default's), a dict of field names to values, or ``None`` to leave the layer untouched.
"""

from __future__ import annotations

import fnmatch
import re
import warnings
from collections.abc import Iterator, Mapping
from typing import Any, TypeVar

import torch
from torch import nn

from nncompress._config import merge
from nncompress.dns import DNSConfig
from nncompress.errors import ConfigError, NonFiniteError, did_you_mean
from nncompress.inq import INQConfig
from nncompress.layers import CompressedLayer, compressed_class
from nncompress.vd import VDConfig

__all__ = [
    "compressed_layers",
    "finalize",
    "is_prepared",
    "mask_fixed_gradients",
    "prepare",
    "quantize_step",
    "surgery_step",
    "vd_kl",
    "vd_to_masks",
]

M = TypeVar("M", bound=nn.Module)
Config = DNSConfig | INQConfig | VDConfig
Selector = str | type[nn.Module]
Override = Config | Mapping[str, Any] | None


def compressed_layers(model: nn.Module) -> list[tuple[str, CompressedLayer]]:
    """The prepared layers of ``model`` with their qualified names, in module order.

    Example:
        >>> compressed_layers(nn.Linear(2, 2))
        []
    """
    return [(n, m) for n, m in model.named_modules() if isinstance(m, CompressedLayer)]


def is_prepared(model: nn.Module) -> bool:
    """True when ``model`` holds at least one layer prepared by :func:`prepare`.

    Example:
        >>> is_prepared(nn.Linear(2, 2))
        False
    """
    return any(True for _ in compressed_layers(model))


def _kind(key: Selector) -> int:
    if not isinstance(key, str):
        return 4
    if key.startswith("re:"):
        return 3
    return 2 if any(ch in key for ch in "*?[") else 1


def _matches(key: Selector, name: str, module: nn.Module) -> bool:
    if not isinstance(key, str):
        return type(module) is key or (isinstance(module, CompressedLayer)
                                       and key in type(module).__mro__)
    if key.startswith("re:"):
        return re.fullmatch(key[3:], name) is not None
    if _kind(key) == 2:
        return fnmatch.fnmatchcase(name, key)
    return name == key


def _candidates(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    for name, module in model.named_modules():
        if isinstance(module, CompressedLayer) or compressed_class(module) is not None:
            yield name, module


def _check_selectors(model: nn.Module, layers: Mapping[Selector, Override]) -> None:
    names = dict(model.named_modules())
    layer_names = [n for n, _ in _candidates(model)]
    for key in layers:
        if isinstance(key, str) and key.startswith("re:"):
            try:
                re.compile(key[3:])
            except re.error as exc:
                raise ConfigError(f"layer selector {key!r} is not a valid regular expression: "
                                  f"{exc}") from None
        if isinstance(key, str) and _kind(key) == 1 and key in names and key not in layer_names:
            raise ConfigError(f"layer selector {key!r} names a {type(names[key]).__name__}, which "
                              "cannot be compressed; compressible layers are nn.Linear and "
                              "nn.Conv1d/2d/3d")
        if not isinstance(key, (str, type)):
            raise ConfigError(f"layer selector {key!r} must be a name, a glob, 're:<regex>' or "
                              "a module type")
        if not any(_matches(key, n, m) for n, m in _candidates(model)):
            hint = did_you_mean(key, layer_names) if isinstance(key, str) else ""
            raise ConfigError(f"layer selector {key!r} matches no compressible layer{hint}; "
                              f"compressible layers are: {', '.join(layer_names) or 'none'}")


def _resolve(config: Config, layers: Mapping[Selector, Override], name: str,
             module: nn.Module) -> Config | None:
    for kind in (1, 2, 3, 4):
        for key, override in layers.items():
            if _kind(key) == kind and _matches(key, name, module):
                return None if override is None else merge(config, override)
    return config


def _replace(model: nn.Module, old: nn.Module, new: nn.Module) -> None:
    for parent in model.modules():
        for child_name, child in list(parent._modules.items()):
            if child is old:
                parent._modules[child_name] = new


def prepare(model: M, config: Config, layers: Mapping[Selector, Override] | None = None) -> M:
    """Put the compressible layers of ``model`` under DNS, INQ or variational dropout, in place.

    Layers keep their Parameter objects, so an existing optimizer keeps working. Preparing
    DNS again starts a new DNS stage (iteration 0, masks kept); preparing INQ on DNS layers
    bakes their masks in, so pruned entries are fixed at 0 and excluded from quantization.

    Args:
        model: any module holding nn.Linear or nn.Conv1d/2d/3d layers.
        config: the default DNSConfig or INQConfig.
        layers: per-layer overrides by selector (see the module docstring for precedence).

    Returns:
        ``model`` itself, or the prepared layer when ``model`` is itself a compressible layer.

    Raises:
        ConfigError: a selector matches nothing, names a layer that cannot be compressed, or
            no layer was selected.

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> net = prepare(net, DNSConfig(c_rate=2.0), layers={"2": {"c_rate": 1.0}})
        >>> is_prepared(net)
        True
    """
    if not isinstance(config, (DNSConfig, INQConfig, VDConfig)):
        raise ConfigError("config must be a DNSConfig, an INQConfig or a VDConfig, "
                          f"got {type(config).__name__}")
    layers = dict(layers or {})
    _check_selectors(model, layers)
    chosen = [(n, m, c) for n, m in list(_candidates(model))
              if (c := _resolve(config, layers, n, m)) is not None]
    if not chosen:
        raise ConfigError("no layer was selected; check the selectors in layers=")
    result: nn.Module = model
    for name, module, layer_config in chosen:
        if isinstance(module, CompressedLayer):
            layer = module
        else:
            layer_class = compressed_class(module)
            assert layer_class is not None
            layer = layer_class.from_plain(module, name)
            if module is model:
                result = layer
            else:
                _replace(model, module, layer)
        if isinstance(layer_config, DNSConfig):
            layer.start_dns(layer_config)
        elif isinstance(layer_config, VDConfig):
            layer.start_vd(layer_config)
        else:
            layer.start_inq(layer_config)
    return result  # type: ignore[return-value]


def quantize_step(model: nn.Module, portion: float | None = None) -> None:
    """Fix the next share of every INQ layer: ``round(portion * N0)`` entries fixed in all.

    Without ``portion``, each INQ layer steps to the next portion of its own schedule,
    ``INQConfig.portions`` (the recipe runner steps this way; the schedule has one owner).

    Args:
        model: a model prepared with an INQConfig.
        portion: the accumulated portion in (0, 1], not below the previous step's; None for
            the next portion of each layer's ``INQConfig.portions``.

    Raises:
        ConfigError: ``portion`` is outside (0, 1] or below the last one, a layer's schedule
            has no portion left, or no layer is under INQ.

    Example:
        >>> net = prepare(nn.Linear(4, 4), INQConfig(portions=(0.5, 1.0)))
        >>> quantize_step(net)  # 0.5, the first portion of the schedule
        >>> quantize_step(net, 1.0)
        >>> bool(((net.weight.abs().log2() % 1) == 0).all())
        True
    """
    if portion is not None and (isinstance(portion, bool) or
                                not isinstance(portion, (int, float)) or not 0 < portion <= 1):
        raise ConfigError(f"portion={portion!r} is invalid: use an accumulated fraction in (0, 1]")
    targets = [layer for _, layer in compressed_layers(model) if layer.inq_config is not None]
    if not targets:
        raise ConfigError("no layer is under INQ; call prepare(model, INQConfig(...)) first")
    steps = [(layer, float(portion) if portion is not None else layer.next_portion())
             for layer in targets]
    for layer, step in steps:
        if step is None:
            assert layer.inq_config is not None
            raise ConfigError(f"layer {layer.layer_name!r} has reached the last portion of its "
                              f"schedule {list(layer.inq_config.portions)}; nothing to quantize")
    for layer, step in steps:
        assert step is not None
        layer.quantize_to(step)


def surgery_step(model: nn.Module) -> None:
    """Run one DNS iteration on every layer whose DNSConfig has ``advance="manual"``.

    With gradient accumulation, call it once per optimizer step, before that step's forwards.

    Example:
        >>> net = prepare(nn.Linear(4, 4), DNSConfig(advance="manual"))
        >>> surgery_step(net)
        >>> int(net.dns_iteration)
        1
    """
    for _, layer in compressed_layers(model):
        if layer.dns_config is not None and layer.dns_config.advance == "manual":
            layer.surgery()


def _vd_layers(model: nn.Module, verb: str) -> list[CompressedLayer]:
    layers = [layer for _, layer in compressed_layers(model) if layer.vd_config is not None]
    if not layers:
        raise ConfigError(f"{verb} needs layers under variational dropout; call "
                          "prepare(model, VDConfig(...)) first")
    return layers


def vd_kl(model: nn.Module) -> torch.Tensor:
    """The KL term of every layer under variational dropout, summed (ramps applied).

    Add ``vd_kl(model) / N`` to the mean data loss of a batch, ``N`` being the number of
    training examples: that is the (negative) variational lower bound per example.

    Raises:
        ConfigError: no layer of ``model`` is under variational dropout.

    Example:
        >>> net = prepare(nn.Linear(4, 4), VDConfig())
        >>> bool(vd_kl(net) > 0)
        True
    """
    terms = [layer.vd_kl() for layer in _vd_layers(model, "vd_kl")]
    return torch.stack(terms).sum()


def vd_to_masks(model: M) -> M:
    """End variational dropout: each layer keeps ``log alpha < threshold`` as a frozen DNS mask.

    ``log sigma^2`` is dropped. The model then behaves as one pruned by DNS: fixed-mask
    retraining (:func:`nncompress.freeze_masks`), INQ (which bakes the masks) and
    :func:`finalize` follow as after surgery. The optimizer holding ``log sigma^2`` is done.

    Raises:
        ConfigError: no layer of ``model`` is under variational dropout.

    Example:
        >>> net = vd_to_masks(prepare(nn.Linear(4, 4), VDConfig()))
        >>> net.dns_config.iter_stop, int(net.weight_mask.sum())
        (-1, 16)
    """
    for layer in _vd_layers(model, "vd_to_masks"):
        layer.stop_vd()
    return model


def mask_fixed_gradients(model: nn.Module) -> None:
    """Zero the gradients of fixed INQ entries now.

    Every ``torch.optim`` optimizer step does this by itself just before it reads the
    gradients; call it yourself when something reads them earlier, such as gradient clipping.

    Example:
        >>> net = prepare(nn.Linear(4, 4), INQConfig())
        >>> quantize_step(net, 1.0)
        >>> net(net.weight.new_ones(1, 4)).sum().backward()
        >>> mask_fixed_gradients(net)
        >>> float(net.weight.grad.abs().sum())
        0.0
    """
    for _, layer in compressed_layers(model):
        if layer.inq_config is not None:
            for blob in layer.blobs(layer.inq_config.include_bias):
                layer.mask_fixed_gradient(blob)


def finalize(model: M, *, allow_nonfinite: bool = False) -> M:
    """Bake masks and quantized values in and return plain layers, in place.

    The plain layers keep the Parameter objects and carry no buffers, hooks or subclasses of
    nncompress; their outputs equal the prepared model's eval-mode outputs.

    Args:
        model: the prepared model.
        allow_nonfinite: warn, instead of failing, when a layer's weights hold NaN or infinite
            values (baking would turn pruned ones into 0 and hide that training diverged).

    Returns:
        The model with plain layers (the model itself when it was one layer).

    Raises:
        NonFiniteError: a compressed layer holds NaN or infinite values, naming the layer, the
            blob and how many (nothing is changed).

    Example:
        >>> net = finalize(prepare(nn.Linear(4, 4), DNSConfig()))
        >>> type(net) is nn.Linear
        True
    """
    layers = compressed_layers(model)
    for name, layer in layers:
        _check_finite(name or layer.layer_name, layer, allow_nonfinite)
    result: nn.Module = model
    for _, layer in layers:
        layer.stop_vd()
        layer.bake_masks()
        layer.forget_inq()
        plain = layer.to_plain()
        if layer is model:
            result = plain
        else:
            _replace(model, layer, plain)
    return result  # type: ignore[return-value]


def _check_finite(name: str, layer: CompressedLayer, allow: bool) -> None:
    for blob in layer.blobs(True):
        bad = ~torch.isfinite(layer.param(blob).detach())
        count = int(bad.sum())
        if not count:
            continue
        mask = layer.mask(blob)
        pruned = int((bad & ~mask).sum()) if mask is not None else 0
        text = (f"layer {name!r}: {blob} holds {count:,} NaN or infinite value(s) at finalize"
                + (f" ({pruned:,} of them pruned by DNS, which baking would make 0)"
                   if pruned else ""))
        if not allow:
            raise NonFiniteError(f"{text}; training diverged: lower the learning rate or go "
                                 "back to an earlier checkpoint (finalize(..., "
                                 "allow_nonfinite=True) bakes them)")
        warnings.warn(text, stacklevel=3)


"""Fixed-mask retraining after Dynamic Network Surgery: the masks stay, the kept weights train.

Guo's practice after surgery (the original system's ``lenet_solver_DNS_retrain``): once the
masks are found, train again with every mask frozen, so the kept weights adapt to the pruned
network. :func:`freeze_masks` starts that stage on a prepared model: each layer under DNS
continues with its own DNSConfig and ``iter_stop = -1``, the setting with which a DNS stage
never changes a mask (:mod:`nncompress.dns`). Like any new DNS stage, its iteration counter
starts at 0 and the masks are kept. The forward still computes with ``W * T``, and pruned
entries keep receiving gradients (the straight-through rule), but with surgery off they can
never come back: finalize bakes them to 0. Layers not under DNS are left as they are.
"""

from __future__ import annotations

import dataclasses
from typing import TypeVar

from torch import nn

from nncompress.errors import ConfigError
from nncompress.prepare import compressed_layers

__all__ = ["freeze_masks"]

M = TypeVar("M", bound=nn.Module)


def freeze_masks(model: M) -> M:
    """Start a fixed-mask stage on every layer of ``model`` under DNS, in place.

    Args:
        model: a model prepared with a DNSConfig (after its pruning stage).

    Returns:
        ``model`` itself.

    Raises:
        ConfigError: no layer of ``model`` is under DNS (prepare it with a DNSConfig and prune
            first; after INQ or finalize the masks are baked in and there is nothing to freeze).

    Example:
        >>> import nncompress as nnc
        >>> net = nnc.prepare(nn.Linear(4, 4), nnc.DNSConfig(c_rate=0.5))
        >>> net = freeze_masks(net)
        >>> net.dns_config.iter_stop, net.dns_config.c_rate
        (-1, 0.5)
    """
    layers = [(name, layer) for name, layer in compressed_layers(model)
              if layer.dns_config is not None]
    if not layers:
        under_inq = any(layer.inq_config is not None for _, layer in compressed_layers(model))
        why = ("its layers are under INQ, which baked the masks in" if under_inq else
               "no layer is under DNS")
        raise ConfigError(f"fixed-mask retraining needs a model pruned by DNS, but {why}; "
                          "retrain after a dns stage (prepare(model, DNSConfig(...)) and train), "
                          "before INQ and finalize")
    for _, layer in layers:
        config = layer.dns_config
        assert config is not None
        layer.start_dns(dataclasses.replace(config, iter_stop=-1))
    return model

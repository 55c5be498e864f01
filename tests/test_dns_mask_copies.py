"""A DNS layer's masks in the weights' dtype: the three-kernel update and the kept copies."""

from __future__ import annotations

import copy
import pickle

import torch
from torch import nn

import nncompress as nnc
from nncompress import dns as _dns


def _layer(**config: float) -> nn.Module:
    torch.manual_seed(0)
    options = {"c_rate": 0.5, "gamma": 0.0, **config}
    layer = nnc.prepare(nn.Linear(30, 20), nnc.DNSConfig(**options))
    layer(torch.randn(2, 30))  # i = 0: statistics and a first update
    return layer


def test_update_matches_update_mask_with_ties_at_both_thresholds() -> None:
    layer = _layer()
    low, high = layer.__dict__["_dns_host"].thresholds(torch.float32)
    with torch.no_grad():  # entries exactly at the thresholds, kept and pruned, both signs
        layer.weight[0, :4] = torch.stack([low, -low, high, -high])
        layer.weight[1, :4] = torch.stack([low, -low, high, -high])
        layer.weight[2, 0] = float("nan")
    layer.set_mask("weight", torch.rand(20, 30, generator=torch.Generator().manual_seed(1)) < 0.5)
    layer.weight_mask[0, :4] = True
    layer.weight_mask[1, :4] = False
    expected = {b: layer.buffer(f"{b}_mask").clone() for b in ("weight", "bias")}
    for blob, mask in expected.items():
        _dns.update_mask(getattr(layer, blob), mask, low.item(), high.item())
    layer(torch.randn(2, 30))  # gamma 0: an update at every step
    assert torch.equal(layer.weight_mask, expected["weight"])
    assert torch.equal(layer.bias_mask, expected["bias"])
    assert layer.weight_mask[0, :4].tolist() == [False, False, True, True]
    assert layer.weight_mask[1, :4].tolist() == [False, False, False, False]


def test_a_splice_threshold_beyond_the_dtype_takes_the_exact_update() -> None:
    # high overflows float32 while low is 0: the kept entries (all non-zero) stay kept, as
    # update_mask says; the arithmetic form of the threshold would give NaN and prune them.
    layer = _layer(c_rate=1e41, alpha_low=0.0, alpha_high=1.0)
    assert torch.isinf(layer.__dict__["_dns_host"].thresholds(torch.float32)[1])
    for _ in range(3):
        layer(torch.randn(2, 30))
    assert bool(layer.weight_mask.all()) and bool(layer.bias_mask.all())


def test_the_forward_follows_a_mask_set_from_outside() -> None:
    layer = _layer().eval()
    x = torch.randn(3, 30)
    layer(x)  # the copies are made
    layer.set_mask("weight", torch.zeros(20, 30, dtype=torch.bool))
    expected = layer.bias * layer.bias_mask
    assert torch.equal(layer(x), expected.expand(3, 20))


def test_copies_of_the_layer_do_not_take_its_mask_copies() -> None:
    torch.manual_seed(0)
    layer = nnc.prepare(nn.Linear(30, 20), nnc.DNSConfig()).eval()
    x = torch.randn(3, 30)
    layer(x)  # copies made from the masks at version 0
    layer.set_mask("weight", torch.zeros(20, 30, dtype=torch.bool))  # version 1
    # a copied mask starts again at version 0, where the copied entry was made: it must go
    for twin in (copy.deepcopy(layer), pickle.loads(pickle.dumps(layer))):
        assert torch.equal(twin(x), layer.bias.detach().expand(3, 20))

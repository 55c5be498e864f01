"""prepare / finalize: selection, layer types, parameter identity, state round trips."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

import nncompress as nnc
from nncompress.layers import CompressedLayer


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3)
        self.conv2 = nn.Conv2d(4, 4, 3, groups=2, bias=False)
        self.dw = nn.Conv2d(4, 4, 3, groups=4, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.ip1 = nn.Linear(4 * 4 * 4, 16)
        self.ip2 = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.dw(torch.relu(self.conv2(torch.relu(self.conv1(x))))))
        return self.ip2(torch.relu(self.ip1(x.flatten(1))))


def make_net(seed: int = 0) -> Net:
    torch.manual_seed(seed)
    return Net()


def test_selection_precedence() -> None:
    net = make_net()
    nnc.prepare(net, nnc.DNSConfig(c_rate=1.0, gamma=1e-4), layers={
        "ip1": nnc.DNSConfig(c_rate=4.0),       # exact name beats the glob below
        "ip*": {"c_rate": 3.0},
        "re:conv[12]": nnc.DNSConfig(c_rate=2.0),
        nn.Conv2d: {"c_rate": 0.5},
        "dw": None,                                 # left untouched
    })
    rates = {n: m.dns_config.c_rate for n, m in nnc.compressed_layers(net)}
    assert rates == {"conv1": 2.0, "conv2": 2.0, "ip1": 4.0, "ip2": 3.0}
    assert type(net.dw) is nn.Conv2d
    # a per-layer config overrides only the fields it was given
    assert net.ip1.dns_config.gamma == 1e-4


@pytest.mark.parametrize(("layers", "message"), [
    ({"ip3": {}}, "layer selector 'ip3' matches no compressible layer (did you mean 'ip2'?); "
                  "compressible layers are: conv1, conv2, dw, ip1, ip2"),
    ({"bn": {}}, "layer selector 'bn' names a BatchNorm2d, which cannot be compressed; "
                 "compressible layers are nn.Linear and nn.Conv1d/2d/3d"),
    ({"re:(": {}}, "layer selector 're:(' is not a valid regular expression: missing ), "
                   "unterminated subpattern at position 0"),
    ({"ip1": {"c_rat": 1}}, "DNSConfig has no field 'c_rat' (did you mean 'c_rate'?); fields "
                            "are: advance, alpha_high, alpha_low, c_rate, gamma, include_bias, "
                            "iter_stop, power, ramp, seed"),
    ({"*": None}, "no layer was selected; check the selectors in layers="),
])
def test_selection_errors(layers: dict[str, object], message: str) -> None:
    with pytest.raises(nnc.ConfigError) as info:
        nnc.prepare(make_net(), nnc.DNSConfig(), layers=layers)  # type: ignore[arg-type]
    assert str(info.value) == message


@pytest.mark.parametrize("layer", [
    nn.Linear(6, 5), nn.Linear(6, 5, bias=False), nn.Conv1d(4, 6, 3, groups=2),
    nn.Conv2d(4, 4, 3, groups=4, bias=False), nn.Conv3d(2, 3, 2, stride=2),
], ids=["linear", "linear-nobias", "conv1d-grouped", "conv2d-depthwise", "conv3d"])
def test_every_layer_type_prepares_and_finalizes(layer: nn.Module) -> None:
    torch.manual_seed(1)
    shape = {nn.Linear: (3, 6), nn.Conv1d: (2, 4, 9), nn.Conv2d: (2, 4, 7, 7),
             nn.Conv3d: (2, 2, 6, 6, 6)}[type(layer)]
    x = torch.randn(shape)
    plain_type = type(layer)
    params = [id(p) for p in layer.parameters()]
    layer = nnc.prepare(layer, nnc.DNSConfig(c_rate=0.5))
    assert [id(p) for p in layer.parameters()] == params
    layer(x)  # one training forward: prunes
    layer.eval()
    out = layer(x)
    nnc.prepare(layer, nnc.INQConfig())
    nnc.quantize_step(layer, 1.0)
    out = layer(x)
    final = nnc.finalize(layer)
    assert type(final) is plain_type
    assert dict(final.named_buffers()) == {}
    assert [id(p) for p in final.parameters()] == params
    assert torch.equal(final(x), out)


def test_optimizer_made_before_prepare_still_trains_the_layers() -> None:
    net = make_net()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    nnc.prepare(net, nnc.DNSConfig(c_rate=0.1))
    before = net.ip1.weight.detach().clone()
    x = torch.randn(4, 1, 8, 8)
    net(x).sum().backward()
    optimizer.step()
    assert not torch.equal(before, net.ip1.weight)


def test_finalize_gives_plain_modules_and_same_outputs() -> None:
    net = make_net()
    nnc.prepare(net, nnc.DNSConfig(c_rate=0.8))
    x = torch.randn(4, 1, 8, 8)
    net(x)
    net.eval()
    out = net(x)
    summary = nnc.summarize(net)
    net = nnc.finalize(net)
    assert not nnc.is_prepared(net)
    assert all(not isinstance(m, CompressedLayer) for m in net.modules())
    assert set(net.state_dict()) == set(make_net().state_dict())
    assert torch.equal(net(x), out)
    assert nnc.summarize(net).total_kept == summary.total_kept < summary.total_entries
    zeros = net.ip1.weight[net.ip1.weight == 0]
    assert not bool(torch.signbit(zeros).any())  # pruned entries are +0.0, as a file keeps them


def _train(net: nn.Module, optimizer: torch.optim.Optimizer, steps: int, seed: int,
           skip: int = 0) -> None:
    """``steps`` SGD steps on a seeded stream of random batches, after skipping ``skip``."""
    gen = torch.Generator().manual_seed(seed)
    for _ in range(skip):  # replay the data stream up to a stop
        torch.randn(8, 1, 8, 8, generator=gen)
        torch.randint(0, 3, (8,), generator=gen)
    for _ in range(steps):
        x = torch.randn(8, 1, 8, 8, generator=gen)
        y = torch.randint(0, 3, (8,), generator=gen)
        optimizer.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        optimizer.step()


def _save(obj: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    loaded: dict[str, torch.Tensor] = torch.load(buffer, weights_only=True)
    return loaded


def _pipeline(stop_at: int | None, ramp: int) -> dict[str, torch.Tensor]:
    """DNS 30 steps -> INQ 0.5 (10 steps) -> 1.0; optionally stopped and resumed at a step."""
    config = nnc.DNSConfig(c_rate=0.5, gamma=0.01, ramp=ramp)
    net = nnc.prepare(make_net(), config)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    if stop_at is None:
        _train(net, optimizer, 30, seed=1)
    else:
        _train(net, optimizer, stop_at, seed=1)
        saved, saved_opt = _save(net.state_dict()), _save(optimizer.state_dict())
        net = nnc.prepare(make_net(seed=7), config)  # a fresh model, other initial weights
        net.load_state_dict(saved)
        optimizer = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
        optimizer.load_state_dict(saved_opt)
        _train(net, optimizer, 30 - stop_at, seed=1, skip=stop_at)
    inq_config = nnc.INQConfig(strategy="random")
    nnc.prepare(net, inq_config)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    nnc.quantize_step(net, 0.5)
    _train(net, optimizer, 5, seed=2)
    saved, saved_opt = _save(net.state_dict()), _save(optimizer.state_dict())
    net = nnc.prepare(nnc.prepare(make_net(seed=8), config), inq_config)
    net.load_state_dict(saved)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    optimizer.load_state_dict(saved_opt)
    nnc.quantize_step(net, 1.0)
    return {k: v.clone() for k, v in nnc.finalize(net).state_dict().items()}


@pytest.mark.parametrize("ramp", [0, 20])  # 20: stopped at 17, inside the ramp
def test_save_load_continue_is_bit_identical(ramp: int) -> None:
    straight = _pipeline(None, ramp)
    for stop in (0, 1, 17):
        resumed = _pipeline(stop, ramp)
        assert straight.keys() == resumed.keys()
        for key in straight:
            assert torch.equal(straight[key], resumed[key]), (stop, key)


def test_dns_then_inq_keeps_pruned_entries_zero() -> None:
    net = nnc.prepare(make_net(), nnc.DNSConfig(c_rate=0.7))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    _train(net, optimizer, 10, seed=3)
    pruned = {n: ~m.mask("weight") for n, m in nnc.compressed_layers(net)}
    assert all(bool(p.any()) for p in pruned.values())
    nnc.prepare(net, nnc.INQConfig())
    for name, layer in nnc.compressed_layers(net):
        assert layer.inq_levels("weight")[2] == int((~pruned[name]).sum())
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    for q in (0.3, 0.6, 1.0):
        nnc.quantize_step(net, q)
        _train(net, optimizer, 5, seed=4)
        for name, layer in nnc.compressed_layers(net):
            assert bool((layer.weight[pruned[name]] == 0).all())
    net = nnc.finalize(net)
    for name, mask in pruned.items():
        assert bool((net.get_submodule(name).weight[mask] == 0).all())


def test_summary_rows() -> None:
    net = nnc.prepare(nn.Sequential(nn.Linear(4, 3)), nnc.INQConfig(num_quantum_values=8))
    nnc.quantize_step(net, 1.0)
    (row,) = nnc.summarize(net).layers
    assert (row.name, row.layer_type, row.mode, row.entries, row.levels, row.bits) == (
        "0", "Linear", "inq", 15, 17, 5)
    assert row.fixed_fraction == 1.0
    data = nnc.summarize(net).to_dict()
    assert data["total_entries"] == 15
    assert data["layers"][0]["sparsity"] == pytest.approx(1 - row.kept / 15)


def test_state_keys_are_the_documented_ones_and_the_accessors_read_them() -> None:
    dns = nnc.prepare(nn.Linear(3, 2), nnc.DNSConfig())
    assert set(dns.state_dict()) == {"weight", "bias", "weight_mask", "bias_mask",
                                     "dns_iteration", "dns_stats", "dns_seed"}
    assert dns.mask("weight") is dns.state_dict(keep_vars=True)["weight_mask"]
    inq = nnc.prepare(nn.Linear(3, 2), nnc.INQConfig())
    assert set(inq.state_dict()) == {"weight", "bias", "weight_fixed", "bias_fixed",
                                     "weight_levels", "bias_levels", "inq_portion", "inq_steps",
                                     "inq_seed"}
    assert inq.fixed_values("bias") is inq.state_dict(keep_vars=True)["bias_fixed"]
    assert inq.inq_levels("weight") == tuple(inq.state_dict()["weight_levels"].tolist())
    assert inq.mask("weight") is None and dns.fixed_values("weight") is None
    assert dns.inq_levels("weight") is None and dns.free_entries("weight") is None

"""The DNS/INQ hot path reads nothing back from the device after DNS's statistics at i = 0.

Tensors on the ``meta`` device have shapes but no values: any ``.item()``, ``int(t)``,
``float(t)`` or ``bool(t)`` raises. Running surgery steps, INQ forwards and optimizer steps on
such a layer proves the path makes no host-device synchronisation; on CUDA the same path runs
under ``torch.cuda.set_sync_debug_mode("error")``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch import nn

import nncompress as nnc
from nncompress import _inq_hooks

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _dns_layer(**config: Any) -> nn.Module:
    torch.manual_seed(0)
    options = {"c_rate": 0.5, "gamma": 0.0, "iter_stop": 100, **config}
    layer = nnc.prepare(nn.Linear(20, 10), nnc.DNSConfig(**options))
    layer(torch.randn(2, 20))  # i = 0: the statistics, the stage's one read
    return layer


def _inq_net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(20, 10), nn.ReLU(), nn.Linear(10, 3))
    nnc.prepare(net, nnc.INQConfig(num_quantum_values=4))
    nnc.quantize_step(net, 0.5)
    return net


@pytest.fixture
def hook_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, int]]:
    calls = {"mask": 0, "restore": 0}
    mask, restore = _inq_hooks.mask_gradient, _inq_hooks.restore_values

    def counted_mask(*args: Any) -> Any:
        calls["mask"] += 1
        return mask(*args)

    def counted_restore(*args: Any) -> Any:
        calls["restore"] += 1
        return restore(*args)

    monkeypatch.setattr(_inq_hooks, "mask_gradient", counted_mask)
    monkeypatch.setattr(_inq_hooks, "restore_values", counted_restore)
    yield calls


def test_meta_tensors_refuse_every_read() -> None:
    value = torch.zeros((), device="meta")
    for read in (int, float, bool, torch.Tensor.item):
        with pytest.raises(RuntimeError, match="meta"):
            read(value)


def test_surgery_steps_on_meta_tensors_run_without_reads() -> None:
    layer = _dns_layer().to("meta")
    x = torch.randn(2, 20, device="meta")
    before = layer.weight_mask._version
    for _ in range(5):
        layer(x).sum().backward()
    assert layer.weight_mask._version - before == 5  # gamma 0: a mask update at every step
    assert layer.__dict__["_dns_host"].iteration == 6
    assert layer.dns_iteration.device.type == "meta"


def test_manual_surgery_steps_on_meta_tensors() -> None:
    layer = _dns_layer(advance="manual")
    nnc.surgery_step(layer)  # i = 0 on the CPU
    layer.to("meta")
    for _ in range(3):
        nnc.surgery_step(layer)
    assert layer.__dict__["_dns_host"].iteration == 4


def test_a_buffer_changed_outside_the_layer_is_read_again() -> None:
    # The control: a stale mirror makes the layer read its buffers, which meta refuses.
    layer = _dns_layer().to("meta")
    layer.dns_iteration.fill_(3)
    with pytest.raises(RuntimeError, match="meta"):
        layer(torch.randn(2, 20, device="meta"))


@pytest.mark.filterwarnings("ignore:.*meta parameter")
def test_loading_a_cpu_state_into_a_meta_layer_reads_the_state_not_the_device() -> None:
    source = _dns_layer()
    for _ in range(4):
        source(torch.randn(2, 20))
    target = nnc.prepare(nn.Linear(20, 10, device="meta"), nnc.DNSConfig(
        c_rate=0.5, gamma=0.0, iter_stop=100))
    target.load_state_dict(source.state_dict())
    mirror = target.__dict__["_dns_host"]
    assert (mirror.iteration, mirror.seed, mirror.active) == (5, int(source.dns_seed), True)
    target(torch.randn(2, 20, device="meta"))
    assert target.__dict__["_dns_host"].iteration == 6


def test_inq_forward_and_optimizer_step_on_meta_tensors(hook_calls: dict[str, int]) -> None:
    net = _inq_net().to("meta")
    hook_calls.update(mask=0, restore=0)  # quantize_step restored the values once
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    x = torch.randn(4, 20, device="meta")
    for _ in range(3):
        optimizer.zero_grad()
        net(x).sum().backward()
        optimizer.step()
    # two INQ layers, weight and bias each, three steps: the hooks ran on the meta tensors
    assert hook_calls == {"mask": 12, "restore": 12}


@CUDA
def test_cuda_hot_path_makes_no_synchronisation() -> None:
    device = torch.device("cuda")
    dns = _dns_layer().to(device)
    inq = _inq_net().to(device)
    optimizer = torch.optim.SGD([*dns.parameters(), *inq.parameters()], lr=0.01, momentum=0.9)
    x = torch.randn(4, 20, device=device)
    inq(x)  # trains once outside the check: first-use set-up of the kernels
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(5):
            optimizer.zero_grad()
            (dns(x).sum() + inq(x).sum()).backward()
            optimizer.step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert int(dns.dns_iteration) == 6

"""Devices and precision: names, what this machine has, autocast, the fp16 scaler with INQ."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

import nncompress as nnc
from nncompress.errors import ConfigError
from nncompress.train.device import (
    Precision,
    check_device_name,
    check_precision_name,
    resolve_device,
    tensors_to,
)

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="the machine has CUDA")


@pytest.mark.parametrize("name", ["auto", "cpu", "cuda", "cuda:0", "cuda:12", "mps"])
def test_device_names(name: str) -> None:
    assert check_device_name(name) == name


@pytest.mark.parametrize(("name", "message"), [
    ("cdua", "unknown device 'cdua' (did you mean 'cuda'?)"),
    ("gpu", "unknown device 'gpu'"),
    ("cuda:", "unknown device 'cuda:'"),
    ("cuda:-1", "unknown device 'cuda:-1'"),
    (3, "unknown device 3"),
])
def test_bad_device_names(name: object, message: str) -> None:
    with pytest.raises(ConfigError, match="use one of auto, cpu, cuda, cuda:N, mps") as info:
        check_device_name(name)
    assert str(info.value).startswith(message)


def test_bad_precision_names() -> None:
    assert check_precision_name("fp16") == "fp16"
    with pytest.raises(ConfigError, match=r"unknown precision 'bf61' \(did you mean 'bf16'\?\); "
                                          "use one of fp32, bf16, fp16"):
        check_precision_name("bf61")


def test_cpu_and_auto_resolve_on_a_machine_without_cuda() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto", "bf16").type == expected


@NO_CUDA
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_without_cuda_is_refused(name: str) -> None:
    with pytest.raises(ConfigError, match=f"device '{name}': .*; use device cpu"):
        resolve_device(name)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_missing_gpu_index_is_refused() -> None:
    count = torch.cuda.device_count()
    with pytest.raises(ConfigError, match=f"has {count} CUDA device"):
        resolve_device(f"cuda:{count}")


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="the machine has MPS")
def test_mps_without_mps_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"device 'mps': .* not available"):
        resolve_device("mps")


def test_fp16_on_the_cpu_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"precision fp16 on the CPU: .*use precision bf16"):
        resolve_device("cpu", "fp16")
    with pytest.raises(ConfigError, match="precision fp16 on the CPU"):
        Precision("fp16", "cpu")


def test_bf16_autocast_runs_the_forward_in_bfloat16_and_keeps_fp32_weights() -> None:
    torch.manual_seed(0)
    net = nnc.prepare(nn.Linear(4, 3), nnc.DNSConfig(c_rate=0.5))
    amp = Precision("bf16", "cpu")
    with amp.autocast():
        out = net(torch.randn(2, 4))
    assert out.dtype == torch.bfloat16
    assert net.weight.dtype == torch.float32
    assert net.dns_stats.dtype == torch.float64 and net.weight_mask.dtype == torch.bool
    with Precision("fp32").autocast():
        assert net(torch.randn(2, 4)).dtype == torch.float32


def _inq_pair() -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(1)
    net = nnc.prepare(nn.Linear(6, 4), nnc.INQConfig(num_quantum_values=4))
    nnc.quantize_step(net, 0.5)
    return net, torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01)


def test_scaled_step_equals_the_plain_step_and_keeps_fixed_values() -> None:
    # The scaler multiplies the loss by 2^10 and unscales before optimizer.step(): the INQ
    # hooks inside the step see the true gradients, so the result is the unscaled step's.
    x = torch.randn(5, 6, generator=torch.Generator().manual_seed(2))
    plain, plain_opt = _inq_pair()
    scaled, scaled_opt = _inq_pair()
    amp = Precision("fp32")
    amp.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    for _ in range(3):
        for net, opt, step in ((plain, plain_opt, Precision().backward_step),
                               (scaled, scaled_opt, amp.backward_step)):
            opt.zero_grad()
            step(net(x).square().sum(), opt)
    assert torch.equal(plain.weight, scaled.weight) and torch.equal(plain.bias, scaled.bias)
    fixed = scaled.fixed_values("weight")
    held = ~torch.isnan(fixed)
    assert int(held.sum()) > 0
    assert torch.equal(scaled.weight[held], fixed[held].float())


def test_a_step_the_scaler_skips_moves_nothing() -> None:
    net, opt = _inq_pair()
    amp = Precision("fp32")
    amp.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    before = net.weight.detach().clone()
    loss = net(torch.full((1, 6), math.inf)).sum()  # inf gradients
    amp.backward_step(loss, opt)
    assert torch.equal(net.weight, before)
    assert net._step_keep == {}  # the pre-step hook never ran
    assert amp.state()["scale"] == 2.0**9  # backed off, ready to be checkpointed
    fresh = Precision("fp32")
    fresh.scaler = torch.amp.GradScaler("cpu")
    fresh.load_state(amp.state())
    assert fresh.state() == amp.state()


def _trained(layer: nn.Module, steps: int) -> list[list[bool]]:
    gen = torch.Generator().manual_seed(5)
    masks = []
    for _ in range(steps):
        layer(torch.randn(2, 8, generator=gen))
        with torch.no_grad():
            layer.weight.add_(torch.randn(layer.weight.shape, generator=gen) * 0.05)
        masks.append(layer.weight_mask.flatten().tolist())
    return masks


def _surgery_layer() -> nn.Module:
    torch.manual_seed(3)
    return nnc.prepare(nn.Linear(8, 6), nnc.DNSConfig(c_rate=0.2, gamma=0.1, iter_stop=30))


def test_host_mirror_follows_load_state_dict_deepcopy_and_to() -> None:
    reference = _surgery_layer()
    expected = _trained(reference, 12)
    first = _surgery_layer()
    _trained(first, 5)
    restored = _surgery_layer()
    restored.load_state_dict(first.state_dict())
    assert restored.__dict__["_dns_host"].iteration == 5
    copied = copy.deepcopy(first).to(torch.device("cpu"))
    gen = torch.Generator().manual_seed(5)  # replay the data of the first 5 steps
    for _ in range(5):
        torch.randn(2, 8, generator=gen), torch.randn(6, 8, generator=gen)
    for layer in (restored, copied):
        state = gen.get_state()
        tail = []
        for _ in range(7):
            layer(torch.randn(2, 8, generator=gen))
            with torch.no_grad():
                layer.weight.add_(torch.randn(layer.weight.shape, generator=gen) * 0.05)
            tail.append(layer.weight_mask.flatten().tolist())
        gen.set_state(state)
        assert tail == expected[5:]


def test_a_counter_changed_in_place_is_honoured() -> None:
    layer = _surgery_layer()
    layer(torch.randn(2, 8))
    layer.dns_iteration.fill_(40)  # past iter_stop: the masks stop changing
    mask = layer.weight_mask.clone()
    with torch.no_grad():
        layer.weight.mul_(0.0)
    layer(torch.randn(2, 8))
    assert torch.equal(layer.weight_mask, mask)
    assert int(layer.dns_iteration) == 41


def test_tensors_to_moves_dataclass_tensors_only() -> None:
    from nncompress.data import load_data

    splits = load_data("synthetic")
    moved = tensors_to(splits, torch.device("cpu"))
    assert moved.name == splits.name and torch.equal(moved.train_x, splits.train_x)
    assert tensors_to("text", torch.device("cpu")) == "text"


def test_cuda_under_torchrun_is_the_local_rank_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert resolve_device("cuda") == torch.device("cuda", 1)
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    monkeypatch.setenv("LOCAL_RANK", "2")
    with pytest.raises(ConfigError, match="LOCAL_RANK 2 but the machine has 2 CUDA device"):
        resolve_device("cuda")
    with pytest.raises(ConfigError, match=r"device 'cuda:2': this machine has 2 CUDA device\(s\), "
                                          "cuda:0 to cuda:1"):
        resolve_device("cuda:2")


def test_half_keeps_the_compression_state_exact() -> None:
    torch.manual_seed(4)
    dns = nnc.prepare(nn.Linear(8, 6), nnc.DNSConfig(c_rate=0.2))
    dns(torch.randn(2, 8))
    stats = dns.dns_stats.clone()
    dns.half()
    assert dns.weight.dtype == torch.float16
    assert dns.dns_stats.dtype == torch.float64 and torch.equal(dns.dns_stats, stats)
    assert dns.weight_mask.dtype == torch.bool
    dns(torch.randn(2, 8, dtype=torch.float16))
    assert int(dns.dns_iteration) == 2
    inq = nnc.prepare(nn.Linear(8, 6), nnc.INQConfig(num_quantum_values=8))
    nnc.quantize_step(inq, 1.0)
    fixed = inq.fixed_values("weight").clone()
    inq.to(torch.float16)
    assert inq.fixed_values("weight").dtype == torch.bfloat16
    assert torch.equal(inq.fixed_values("weight"), fixed)

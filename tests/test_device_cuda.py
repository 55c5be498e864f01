"""DNS and INQ on a CUDA device against the same training on the CPU (skipped without CUDA)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import nncompress as nnc
from nncompress.layers import CompressedLayer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.fixture(autouse=True)
def _exact_matmuls() -> Iterator[None]:
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _data(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(256, 16, generator=gen)
    return x.to(device), x[:, :4].argmax(dim=1).to(device)


def _train(net: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float) -> None:
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    for i in range(steps):
        start = (i * 32) % len(y)
        optimizer.zero_grad()
        F.cross_entropy(net(x[start:start + 32]), y[start:start + 32]).backward()
        optimizer.step()


def _compress(device: torch.device) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor],
                                              dict[str, torch.Tensor]]:
    """DNS then INQ on ``device``; the masks, the fixed values and the final weights on the CPU."""
    torch.manual_seed(0)  # initialised on the CPU, then moved: both runs start alike
    net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)).to(device)
    x, y = _data(device)
    nnc.prepare(net, nnc.DNSConfig(c_rate=0.5, gamma=0.01, iter_stop=200))
    _train(net, x, y, 100, 0.05)
    masks = {n: m.weight_mask.cpu() for n, m in net.named_modules()
             if isinstance(m, CompressedLayer)}
    net = nnc.finalize(net)
    nnc.prepare(net, nnc.INQConfig(num_quantum_values=5))
    for portion in (0.5, 0.75, 1.0):
        nnc.quantize_step(net, portion)
        _train(net, x, y, 20, 0.01)
    fixed = {n: m.fixed_values("weight").cpu() for n, m in net.named_modules()
             if isinstance(m, CompressedLayer)}
    net = nnc.finalize(net)
    return masks, fixed, {k: v.cpu() for k, v in net.state_dict().items()}


def _powers_of_two_or_zero(values: torch.Tensor) -> bool:
    magnitudes = values[values != 0].abs().double()
    return bool(torch.all(torch.log2(magnitudes) == torch.round(torch.log2(magnitudes))))


def test_dns_and_inq_on_cuda_match_the_cpu() -> None:
    cpu_masks, cpu_fixed, cpu_weights = _compress(torch.device("cpu"))
    gpu_masks, gpu_fixed, gpu_weights = _compress(torch.device("cuda"))
    for name, mask in cpu_masks.items():
        agree = (mask == gpu_masks[name]).double().mean().item()
        assert agree >= 0.99, f"{name}: masks agree on {agree:.4f} of the entries"
        assert mask.dtype == gpu_masks[name].dtype == torch.bool
        assert 0 < int(mask.sum()) < mask.numel()  # the surgery pruned, and kept some
    for name, fixed in gpu_fixed.items():
        assert not bool(torch.isnan(fixed).any())  # portion 1.0: every entry fixed
        assert _powers_of_two_or_zero(fixed.float())
        assert (fixed == cpu_fixed[name]).double().mean().item() >= 0.95
    for key, value in gpu_weights.items():
        if key.endswith("weight"):
            assert _powers_of_two_or_zero(value), key
            assert (value == cpu_weights[key]).double().mean().item() >= 0.95, key


def test_fp16_autocast_keeps_fixed_values_exact() -> None:
    from nncompress.train.device import Precision

    device = torch.device("cuda")
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)).to(device)
    x, y = _data(device)
    nnc.prepare(net, nnc.INQConfig(num_quantum_values=5))
    nnc.quantize_step(net, 0.5)
    amp = Precision("fp16", "cuda")
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    for _ in range(20):
        optimizer.zero_grad()
        with amp.autocast():
            loss = F.cross_entropy(net(x[:32]), y[:32])
        amp.backward_step(loss, optimizer)
    for layer in (net[0], net[2]):
        fixed = layer.fixed_values("weight")
        held = ~torch.isnan(fixed)
        assert layer.weight.dtype == torch.float32
        assert torch.equal(layer.weight[held], fixed[held].float())
        assert _powers_of_two_or_zero(fixed[held].float())
    assert math.isfinite(amp.state()["scale"])


def test_a_prepared_layer_keeps_its_state_on_its_device() -> None:
    layer = nnc.prepare(nn.Linear(4, 3).cuda(), nnc.DNSConfig())
    assert {b.device.type for b in layer.buffers()} == {"cuda"}
    layer(torch.randn(2, 4, device="cuda"))
    state = layer.state_dict()
    cpu_layer = nnc.prepare(nn.Linear(4, 3), nnc.DNSConfig())
    cpu_layer.load_state_dict(state)  # a CUDA state loads into a CPU layer
    assert int(cpu_layer.dns_iteration) == 1
    assert cpu_layer.__dict__["_dns_host"].iteration == 1


TINY = {
    "version": 1, "name": "tiny_cuda",
    "model": {"ref": "tiny_mlp", "kwargs": {"input_size": 8, "hidden": 12}},
    "data": {"spec": "synthetic:n=128,test=32,size=8"}, "seed": 2, "device": "cuda",
    "stages": [
        {"stage": "dns", "iterations": 6, "batch_size": 16, "eval_interval": 0,
         "checkpoint_interval": 3, "defaults": {"c_rate": 0.5}},
        {"stage": "inq", "portions": [0.5, 1.0], "iterations_per_step": [4, 2],
         "batch_size": 16, "eval_interval": 0, "checkpoint_interval": 2,
         "defaults": {"num_quantum_values": 4}},
        {"stage": "finalize"},
        {"stage": "export"},
    ],
}


def test_run_on_cuda_in_fp16_then_resume_on_the_cpu(tmp_path: Path) -> None:
    from nncompress.pipeline import RunInterrupted, run_recipe
    from nncompress.recipe import parse_recipe
    from nncompress.train.checkpoint import list_checkpoints, load_checkpoint

    out = tmp_path / "run"
    with pytest.raises(RunInterrupted):
        run_recipe(parse_recipe({**TINY, "precision": "fp16"}), out, progress="none",
                   stop_after=9)  # in INQ's first step, after a periodic checkpoint
    newest = load_checkpoint(list_checkpoints(out / "checkpoints")[-1])
    assert {t.device.type for t in newest.model_state.values()} == {"cpu"}
    assert newest.metadata["grad_scaler"]["scale"] > 0
    assert "cuda" in newest.rng_state
    resumed = run_recipe(parse_recipe({**TINY, "device": "cpu"}), out, progress="none",
                         resume=True).model
    for name, value in resumed.state_dict().items():
        assert value.device.type == "cpu"
        if name.endswith("weight"):
            assert _powers_of_two_or_zero(value), name


def test_run_on_cuda_matches_the_cpu_run(tmp_path: Path) -> None:
    from nncompress.pipeline import run_recipe
    from nncompress.recipe import parse_recipe

    gpu = run_recipe(parse_recipe(TINY), tmp_path / "gpu", progress="none")
    cpu = run_recipe(parse_recipe({**TINY, "device": "cpu"}), tmp_path / "cpu", progress="none")
    assert next(gpu.model.parameters()).device.type == "cuda"
    assert (tmp_path / "gpu" / "model.ncz").stat().st_size == gpu.report["compact"]["bytes"]
    for (name, a), b in zip(gpu.model.state_dict().items(), cpu.model.state_dict().values()):
        if name.endswith("weight"):
            assert _powers_of_two_or_zero(a.cpu()), name
            assert (a.cpu() == b).double().mean().item() >= 0.95, name
    assert gpu.report["test"]["accuracy"] == pytest.approx(cpu.report["test"]["accuracy"],
                                                           abs=0.1)

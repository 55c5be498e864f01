"""The fused forward of chain models: which models get it, its values, and when it steps aside."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

from nncompress import runtime
from nncompress.export import compact as compact_module
from nncompress.export import load_compact, save_compact
from nncompress.models import _registry, build_model
from nncompress.runtime import FusedForward, fused, sparsify
from nncompress.runtime._chain import chain_of
from nncompress.runtime._fused import kernel_available

pytestmark = pytest.mark.skipif(not kernel_available(), reason="the fused path needs SciPy")


def _sparse_(module: nn.Module, density: float, seed: int = 0) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, (nn.Linear, nn.Conv1d, nn.Conv2d)):
                keep = torch.rand(layer.weight.shape, generator=gen) < density
                layer.weight.mul_(keep)
    return module


class Functional(nn.Module):
    """A chain spelled with torch.relu, torch.flatten, F.relu and x.relu()."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 3 * 3, 5)
        self.out = nn.Linear(5, 3, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(torch.relu(self.conv(x)), 1)
        return self.out(nn.functional.relu(self.fc(x)).relu())  # type: ignore[no-any-return]


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc(x)


CHAINS = {
    "linear": lambda: nn.Sequential(nn.Flatten(), nn.Linear(24, 16), nn.ReLU(),
                                    nn.Linear(16, 3)),
    "conv": lambda: nn.Sequential(
        nn.Conv2d(2, 6, 3, stride=2, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2),
        nn.Conv2d(6, 4, (2, 3), padding=(1, 0), dilation=(1, 2), groups=2), nn.Flatten(),
        nn.Linear(4 * 4 * 1, 5)),
    "ceil_pool": lambda: nn.Sequential(nn.Conv2d(2, 3, 3), nn.MaxPool2d(2, 2, ceil_mode=True),
                                       nn.Flatten(), nn.Linear(3 * 2 * 2, 2)),
    "conv1d": lambda: nn.Sequential(nn.Conv1d(2, 5, 3, stride=2, padding=2, bias=False),
                                    nn.ReLU(), nn.Flatten(), nn.Linear(5 * 4, 2)),
    "dense_tail": lambda: nn.Sequential(nn.Flatten(), nn.Linear(24, 8), nn.ReLU(),
                                        nn.Linear(8, 2)),
    "functional": Functional,
    "conv_pool": lambda: nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.MaxPool2d(2, 2), nn.Conv2d(4, 4, 2, stride=2, padding=1),
        nn.MaxPool2d(2, 2), nn.Flatten(), nn.Linear(4, 3)),
}
INPUTS = {"linear": (2, 3, 4), "conv": (2, 12, 20), "ceil_pool": (2, 6, 6),
          "conv1d": (2, 6), "dense_tail": (2, 3, 4), "functional": (2, 3, 3),
          "conv_pool": (3, 7, 9)}  # floor-mode pools over odd sizes


def _pair(name: str) -> tuple[nn.Module, nn.Module]:
    """(dense model, its sparse and fused form); dense_tail's last layer stays dense."""
    torch.manual_seed(1)
    dense = _sparse_(CHAINS[name](), 0.2).eval()
    if name == "dense_tail":
        with torch.no_grad():
            dense[3].weight.normal_()  # type: ignore[operator]
    return dense, sparsify(copy.deepcopy(dense))


@pytest.mark.parametrize("name", sorted(CHAINS))
@pytest.mark.parametrize("batch", [1, 3])
def test_fused_outputs_equal_a_float64_reference(name: str, batch: int) -> None:
    dense, fast = _pair(name)
    plan_holder = fused(fast)
    assert isinstance(plan_holder, FusedForward)
    x = torch.randn(batch, *INPUTS[name], generator=torch.Generator().manual_seed(batch))
    want = copy.deepcopy(dense).double()(x.double())
    with torch.inference_mode():
        got = fast(x)
    assert got.dtype == torch.float32 and got.shape == want.shape and got.is_contiguous()
    assert torch.allclose(got.double(), want, rtol=1e-5, atol=1e-5)
    compiled = plan_holder._plans[x.shape]
    assert compiled is not None, "the fused path ran"
    relus_folded = sum(a.kind == "linear" and b.kind == "relu"
                       for a, b in zip(plan_holder.chain(), plan_holder.chain()[1:]))
    assert len(compiled[0]) == len(plan_holder.chain()) - relus_folded
    if name == "dense_tail":
        assert [op.kind for op in plan_holder.ops][-1] == "dense_linear"


def test_a_hand_computed_chain() -> None:
    layer = nn.Linear(4, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.0, 2.0, 0.0, 0.0], [-0.5, 0.0, 0.0, 0.0]]))
        layer.bias.copy_(torch.tensor([1.0, 0.25]))
    model = sparsify(nn.Sequential(nn.Flatten(), layer, nn.ReLU()))
    assert fused(model) is not None
    x = torch.tensor([[[1.0, 3.0, 5.0, 9.0]], [[4.0, -1.0, 0.0, 2.0]]])
    assert model(x[:1]).tolist() == [[7.0, 0.0]]
    assert model(x).tolist() == [[7.0, 0.0], [0.0, 0.0]]  # 2*-1+1 < 0; -0.5*4+0.25 < 0


def test_which_models_are_chains() -> None:
    chains = [chain_of(sparsify(_sparse_(build_model(name), 0.1)))
              for name in ("lenet5", "lenet300_100", "tiny_mlp")]
    assert [[op.kind for op in ops or []] for ops in chains] == [
        ["conv", "pool", "conv", "pool", "flatten", "linear", "relu", "linear"],
        ["flatten", "linear", "relu", "linear", "relu", "linear"],
        ["flatten", "linear", "relu", "linear"]]
    assert chain_of(build_model("tiny_conv1d")) is None  # branches on the input's shape
    assert chain_of(build_model("lenet5")) is None  # dense convolutions are not taken
    assert chain_of(Residual()) is None
    assert chain_of(nn.Sequential(nn.Linear(2, 2), nn.Sigmoid())) is None
    assert chain_of(nn.Sequential(nn.Flatten(0))) is None
    not_chain = sparsify(_sparse_(build_model("tiny_conv1d", width=4), 0.1))
    holder = fused(not_chain)
    assert holder is not None and holder.ops is None  # traced on first use
    x = torch.rand(2, 1, 6, 6)
    assert torch.allclose(not_chain(x), not_chain.fc(not_chain.pool(torch.relu(not_chain.conv2(
        torch.relu(not_chain.conv1(x.flatten(2)))))).flatten(1)), atol=1e-6)
    assert holder.chain() == [] and not holder._plans


def test_the_fused_path_steps_aside() -> None:
    dense, fast = _pair("conv")
    holder = fused(fast)
    assert holder is not None
    x = torch.randn(2, *INPUTS["conv"])
    # gradients: the model's own forward (whose sparse layers go dense)
    xg = x.clone().requires_grad_()
    fast(xg).sum().backward()
    assert xg.grad is not None and x.shape not in holder._plans
    # a layer set to a fixed mode
    fast[0].mode = "dense"  # type: ignore[index]
    assert torch.allclose(fast(x), dense(x), atol=1e-5) and x.shape not in holder._plans
    fast[0].mode = "auto"  # type: ignore[index]
    # batches above the rule's limit
    big = torch.randn(holder.max_batch + 1, *INPUTS["conv"])
    assert torch.allclose(fast(big), dense(big), atol=1e-5) and big.shape not in holder._plans
    # float64 after .double(): the steps are compiled again for the new buffers
    assert torch.allclose(fast(x), dense(x), atol=1e-5) and holder._plans[x.shape] is not None
    fast.double()
    want = dense.double()(x.double())
    assert torch.equal(fast(x.double()), fast(x.double()))
    assert torch.allclose(fast(x.double()), want, atol=1e-10)
    assert holder._dtype == torch.float64


def test_odd_sizes_under_a_ceil_mode_pool_run_module_by_module() -> None:
    dense, fast = _pair("ceil_pool")
    x = torch.randn(1, 2, 5, 6)  # conv output 3x4: a partial window
    assert torch.allclose(fast(x), dense(x), atol=1e-5)
    holder = fused(fast)
    assert holder is not None and holder._plans[x.shape] is None


def test_results_are_new_tensors() -> None:
    _, fast = _pair("linear")
    x = torch.randn(1, *INPUTS["linear"])
    first = fast(x)
    kept = first.clone()
    second = fast(x * 2)
    assert torch.equal(first, kept) and not torch.equal(first, second)


def test_copies_and_pickles_run_fused() -> None:
    dense, fast = _pair("conv")
    x = torch.randn(1, *INPUTS["conv"])
    fast(x)
    for twin in (copy.deepcopy(fast), pickle.loads(pickle.dumps(fast))):
        holder = fused(twin)
        assert holder is not None and holder.model is twin and not holder._plans
        assert torch.allclose(twin(x), dense(x), atol=1e-5)
        assert holder._plans[x.shape] is not None


def test_fuse_off_and_the_torch_backend(tmp_path: Path) -> None:
    path = tmp_path / "m.ncz"
    save_compact(_sparse_(build_model("tiny_mlp", input_size=8, hidden=16), 0.1), path)
    assert fused(runtime.load(path)) is not None
    assert fused(runtime.load(path, fuse=False)) is None
    assert fused(runtime.load(path, backend="torch")) is None
    x = torch.rand(1, 1, 8, 8)
    assert torch.allclose(runtime.load(path)(x), load_compact(path)(x), atol=1e-5)


class _WithScratch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)
        self.register_buffer("scale", torch.full((2,), 3.0), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) * self.scale


def test_registered_models_with_unstored_buffers_build_for_real(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(_registry._MODELS, "scratch_test_model", _WithScratch)
    model = build_model("scratch_test_model")
    path = tmp_path / "m.ncz"
    save_compact(model, path)
    loaded = load_compact(path)
    assert loaded.scale.tolist() == [3.0, 3.0]  # built, not a meta tensor
    x = torch.randn(3, 4)
    assert torch.equal(loaded(x), model(x))
    assert compact_module._all_stored(build_model("lenet5"))
    assert not compact_module._all_stored(model)


def test_replaced_weights_are_seen() -> None:
    dense, fast = _pair("linear")
    x = torch.randn(1, *INPUTS["linear"])
    before = fast(x)
    state = {k: -v if k.endswith("weight_values") else v for k, v in fast.state_dict().items()}
    fast.load_state_dict(state, assign=True)  # new tensors, not copies into the old ones
    reference = sparsify(copy.deepcopy(dense), fuse=False)
    reference.load_state_dict(state)
    holder = fused(fast)
    assert holder is not None
    assert torch.allclose(fast(x), reference(x), atol=1e-6)
    assert not torch.allclose(fast(x), before, atol=1e-3)
    assert holder._plans[x.shape] is not None
    with torch.no_grad():
        fast[1].weight_values.zero_()  # type: ignore[index]  # in place: the same memory
        fast[1].bias.zero_()  # type: ignore[index]
    assert torch.equal(fast(x), fast[3].bias.view(1, -1))  # type: ignore[index]


def test_inputs_that_need_care() -> None:
    dense, fast = _pair("conv")
    holder = fused(fast)
    assert holder is not None
    wide = torch.randn(3, 20, 12, 2).permute(0, 3, 2, 1)  # (3, 2, 12, 20), not contiguous
    assert not wide.is_contiguous()
    for x in (wide, wide[:1]):
        assert torch.allclose(fast(x), dense(x), atol=1e-5)
        assert holder._plans[x.shape] is not None
    with torch.no_grad():  # a tensor that requires grad, with grad off: the fused path
        x = torch.randn(2, *INPUTS["conv"], requires_grad=True)
        assert torch.allclose(fast(x), dense(x), atol=1e-5)
    assert holder._plans[x.shape] is not None

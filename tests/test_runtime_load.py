"""runtime.load on .ncz files: models compressed in the test, the golden files, bad files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import nncompress as nnc
from nncompress import runtime
from nncompress.errors import ConfigError, FormatError
from nncompress.export import load_compact, save_compact
from nncompress.models import build_model
from nncompress.runtime import SparseConv, SparseLinear, weight_bytes

DATA = Path(__file__).parent / "data"


def _compressed(name: str, **kwargs: object) -> nn.Module:
    """A few DNS then INQ training steps on random data, finalized."""
    torch.manual_seed(0)
    model = build_model(name, **kwargs)
    x, y = torch.rand(32, 1, 12, 12), torch.randint(0, 10, (32,))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

    def train(steps: int) -> None:
        for _ in range(steps):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()

    nnc.prepare(model, nnc.DNSConfig(c_rate=1.5, iter_stop=100))
    train(6)
    model = nnc.finalize(model)
    nnc.prepare(model, nnc.INQConfig(num_quantum_values=5))
    for portion in (0.5, 1.0):
        nnc.quantize_step(model, portion)
        train(2)
    return nnc.finalize(model).eval()


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.allclose(a, b, rtol=1e-5, atol=1e-6 * float(b.abs().max()) + 1e-7)


@pytest.mark.parametrize(("name", "kwargs"), [
    ("tiny_mlp", {"input_size": 12, "hidden": 40}),
    ("tiny_cnn", {"width": 6}),
    ("tiny_conv1d", {"width": 6}),
])
@pytest.mark.parametrize("backend", ["scipy", "torch"])
def test_compressed_models_give_the_dense_outputs(tmp_path: Path, name: str,
                                                  kwargs: dict[str, object],
                                                  backend: str) -> None:
    path = tmp_path / "m.ncz"
    save_compact(_compressed(name, **kwargs), path)
    dense, fast = load_compact(path), runtime.load(path, backend=backend)
    converted = [m for m in fast.modules() if isinstance(m, (SparseLinear, SparseConv))]
    assert converted, "DNS left the layers sparse enough to convert"
    x = torch.rand(5, 1, 12, 12)
    with torch.inference_mode():
        for mode in ("auto", "sparse"):
            for m in converted:
                m.mode = mode
            for batch in (1, 5):
                assert _close(fast(x[:batch]), dense(x[:batch])), (mode, batch)
    assert weight_bytes(fast) < weight_bytes(dense)


def test_inq_values_in_the_runtime_are_the_file_values(tmp_path: Path) -> None:
    path = tmp_path / "m.ncz"
    save_compact(_compressed("tiny_mlp", input_size=12, hidden=40), path)
    dense, fast = load_compact(path), runtime.load(path)
    assert isinstance(fast.fc1, SparseLinear)
    assert torch.equal(fast.fc1.dense_weight(), dense.fc1.weight.detach())
    mantissa, _ = torch.frexp(fast.fc1.weight_values)
    assert torch.all(mantissa.abs() == 0.5)


@pytest.mark.parametrize(("name", "shape"), [("golden_v1_mlp.ncz", (3, 1, 8, 8)),
                                             ("golden_v1_cnn.ncz", (3, 1, 10, 10)),
                                             ("golden_v2_mantissa.ncz", (3, 1, 8, 8))])
def test_golden_files(name: str, shape: tuple[int, ...]) -> None:
    dense, fast = load_compact(DATA / name), runtime.load(DATA / name)
    assert any(isinstance(m, (SparseLinear, SparseConv)) for m in fast.modules())
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        for batch in (1, 3):
            assert _close(fast(x[:batch]), dense(x[:batch]))


def test_golden_file_without_sparse_layers_loads_unchanged() -> None:
    fast = runtime.load(DATA / "golden_v1_bn.ncz", allow_import=True)
    assert type(fast) is nn.BatchNorm1d and not fast.training


def test_bad_files_raise_format_error(tmp_path: Path) -> None:
    good = (DATA / "golden_v1_mlp.ncz").read_bytes()
    for i, data in enumerate([good[: len(good) // 2], b"not a model file", good[:-1] + b"\0"]):
        path = tmp_path / f"bad{i}.ncz"
        path.write_bytes(data)
        with pytest.raises(FormatError) as fast_error:
            runtime.load(path)
        with pytest.raises(FormatError) as dense_error:
            load_compact(path)
        assert str(fast_error.value) == str(dense_error.value)


def test_import_paths_and_backends_are_checked_first(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="allow_import"):
        runtime.load(DATA / "golden_v1_bn.ncz")
    with pytest.raises(ConfigError, match="backend="):
        runtime.load(tmp_path / "missing.ncz", backend="gpu")


@pytest.mark.slow  # encodes and decodes the full-size models
@pytest.mark.parametrize(("name", "densities"), [
    ("lenet5", {"conv1": 0.127, "conv2": 0.029, "ip1": 0.0075, "ip2": 0.05}),
    ("lenet300_100", {"ip1": 0.018, "ip2": 0.018, "ip3": 0.055}),
])
def test_shipped_architectures_at_published_densities(tmp_path: Path, name: str,
                                                      densities: dict[str, float]) -> None:
    gen = torch.Generator().manual_seed(6)
    model = build_model(name)
    with torch.no_grad():
        for layer, density in densities.items():
            w = model.get_submodule(layer).weight
            keep = torch.rand(w.shape, generator=gen) < density
            w.copy_(torch.where(keep, torch.sign(w) * 2.0 ** torch.round(torch.log2(w.abs())), 0.0))
    path = tmp_path / f"{name}.ncz"
    save_compact(model, path)
    dense, fast = load_compact(path), runtime.load(path)
    sparse_layers = [m for m in fast.modules() if isinstance(m, (SparseLinear, SparseConv))]
    assert len(sparse_layers) == len(densities)
    assert weight_bytes(fast) < 0.1 * weight_bytes(dense)
    x = torch.rand(64, 1, 28, 28, generator=gen)
    with torch.inference_mode():
        for mode in ("auto", "sparse"):
            for m in sparse_layers:
                m.mode = mode
            for batch in (1, 64):
                assert _close(fast(x[:batch]), dense(x[:batch])), (mode, batch)


def test_the_allocation_guard_plans_only_calls_that_can_allocate() -> None:
    from nncompress.export._guard import AllocationGuard

    plan = AllocationGuard._plan
    t = torch.zeros(10)
    assert plan(torch.zeros, ((25,),), {}) == 100
    assert plan(torch.Tensor.__add__, (t, t), {}) == 40
    assert plan(torch.Tensor.uniform_, (t,), {}) == 0  # in place: no new tensor
    assert plan(torch.Tensor.size, (t,), {}) == 0
    with pytest.raises(FormatError, match="more than 1048576 bytes"), \
            AllocationGuard(1 << 20, "test"):
        nn.Linear(1000, 1000)  # refused at its torch.empty, before the in-place init
    with AllocationGuard(1 << 20, "test") as guard:
        layer = nn.Linear(100, 100)
    assert guard.live == 4 * (100 * 100 + 100) and layer.weight.abs().sum() > 0

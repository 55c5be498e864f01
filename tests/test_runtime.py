"""Sparse inference layers against slow references written here, on tiny seeded tensors."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nncompress.errors import ConfigError
from nncompress.runtime import (
    CSRMatrix,
    MaxPool2x2,
    SparseConv,
    SparseLinear,
    _base,
    sparsify,
    use_sparse,
)
from nncompress.runtime._rule import CONV_MIN_REDUCTION, conv_reduction

BACKENDS = ["scipy", "torch"]


def _sparse_(module: nn.Module, density: float, seed: int = 0) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        module.weight.mul_((torch.rand(module.weight.shape, generator=gen) < density).float())
    return module


def _reference_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    # entry by entry, in float64: obviously right and slow
    out = torch.zeros(x.shape[0], weight.shape[0], dtype=torch.float64)
    for n in range(x.shape[0]):
        for o in range(weight.shape[0]):
            out[n, o] = sum(float(x[n, i]) * float(weight[o, i]) for i in range(weight.shape[1])
                            if weight[o, i] != 0) + float(bias[o])
    return out


def test_csr_of_a_hand_matrix() -> None:
    m = CSRMatrix.from_dense(torch.tensor([[0.0, 0.5, 0.0], [0.0, 0.0, 0.0], [-2.0, 0.0, 4.0]]))
    assert m.values.tolist() == [0.5, -2.0, 4.0]
    assert m.col_indices.tolist() == [1, 0, 2]
    assert m.row_ptr.tolist() == [0, 1, 1, 3]
    assert m.col_indices.dtype == torch.int32 and m.row_ptr.dtype == torch.int32
    assert m.nbytes == 3 * 4 + 3 * 4 + 4 * 4
    assert torch.equal(m.to_dense(), torch.tensor([[0.0, 0.5, 0.0], [0.0] * 3, [-2.0, 0.0, 4.0]]))
    x = torch.tensor([[1.0], [2.0], [3.0]])
    assert (m.scipy() @ x.numpy()).ravel().tolist() == [1.0, 0.0, 10.0]
    assert torch.sparse.mm(m.torch(), x).flatten().tolist() == [1.0, 0.0, 10.0]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["sparse", "dense", "auto"])
def test_linear_matches_the_reference(backend: str, mode: str) -> None:
    torch.manual_seed(1)
    layer = _sparse_(nn.Linear(12, 5), 0.3)
    fast = SparseLinear.from_linear(layer, backend)
    fast.mode = mode
    for batch in (1, 3):
        x = torch.randn(batch, 12)
        want = _reference_linear(x, layer.weight.detach(), layer.bias.detach())
        got = fast(x)
        assert got.shape == (batch, 5) and got.is_contiguous()
        assert torch.allclose(got.double(), want, atol=1e-5)
    x3 = torch.randn(2, 4, 12)  # leading dimensions are kept
    assert torch.allclose(fast(x3), layer(x3), atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_linear_without_bias_and_empty_rows(backend: str) -> None:
    layer = nn.Linear(4, 3, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.0, 0, 0, 0], [0.25, 0, 0, -1.0], [0.0, 2.0, 0, 0]]))
    fast = SparseLinear.from_linear(layer, backend)
    fast.mode = "sparse"
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    assert fast(x).tolist() == [[0.0, 0.25 - 4.0, 4.0]]
    assert fast.weight_bytes() == 3 * 4 + 3 * 4 + 4 * 4


CONVS = [
    lambda: nn.Conv2d(3, 4, 3),
    lambda: nn.Conv2d(3, 4, 3, stride=2, padding=1),
    lambda: nn.Conv2d(4, 6, (3, 2), padding=(2, 1), dilation=2, groups=2),
    lambda: nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False),
    lambda: nn.Conv1d(3, 4, 5, stride=2, padding=2),
]


def _reference_conv2d(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    # one output channel and group at a time, in float64, through F.conv2d of a single filter
    w, per = conv.weight.double(), conv.in_channels // conv.groups
    outs = []
    for o in range(conv.out_channels):
        g = o // (conv.out_channels // conv.groups)
        xs = x.double()[:, g * per:(g + 1) * per]
        out = F.conv2d(xs, w[o:o + 1], None, conv.stride, conv.padding, conv.dilation)
        outs.append(out + (0.0 if conv.bias is None else float(conv.bias.detach()[o])))
    return torch.cat(outs, 1)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("make", CONVS)
def test_conv_matches_the_reference(backend: str, make: object) -> None:
    torch.manual_seed(2)
    conv = _sparse_(make(), 0.4)  # type: ignore[operator]
    fast = SparseConv.from_conv(conv, backend)
    for batch in (1, 3):
        shape = (batch, conv.in_channels, 9) if isinstance(conv, nn.Conv1d) else (
            batch, conv.in_channels, 9, 8)
        x = torch.randn(*shape)
        one_d = isinstance(conv, nn.Conv1d)
        want = conv(x).double() if one_d else _reference_conv2d(x, conv)
        for mode in ("sparse", "dense"):
            fast.mode = mode
            got = fast(x)
            assert got.shape == want.shape and got.is_contiguous()
            assert torch.allclose(got.double(), want, atol=1e-5), (mode, batch)


def test_conv_csr_columns_and_the_rebuilt_weight() -> None:
    conv = nn.Conv2d(2, 2, 2, groups=2)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[1, 0, 1, 0] = 0.5  # group 1: input channel 1, kernel (1, 0)
    fast = SparseConv.from_conv(conv)
    assert fast.used_columns == 1
    assert fast.weight_cols.tolist() == [1 * 4 + 1 * 2 + 0]  # (input channel, kh, kw)
    assert fast.weight_row_ptr.tolist() == [0, 0, 1]
    assert fast.weight_values.tolist() == [0.5]
    assert torch.equal(fast.dense_weight(), conv.weight)


def test_inq_values_stay_exact_powers_of_two() -> None:
    layer = nn.Linear(64, 8)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        exps = torch.randint(-9, 0, (8, 64), generator=gen).float()
        signs = torch.randint(0, 2, (8, 64), generator=gen).float() * 2 - 1
        keep = torch.rand(8, 64, generator=gen) < 0.2
        layer.weight.copy_(torch.where(keep, signs * 2.0 ** exps, 0.0))
    values = SparseLinear.from_linear(layer).weight_values
    mantissa, _ = torch.frexp(values)
    assert values.numel() == int(keep.sum())
    assert torch.all(mantissa.abs() == 0.5)
    assert torch.equal(values, layer.weight[keep])


def test_gradients_take_the_dense_path() -> None:
    layer = _sparse_(nn.Linear(6, 3), 0.5)
    fast = SparseLinear.from_linear(layer)
    fast.mode = "sparse"
    x = torch.randn(2, 6, requires_grad=True)
    fast(x).sum().backward()
    assert x.grad is not None
    assert torch.allclose(x.grad, layer.weight.sum(0).expand(2, 6), atol=1e-6)


def test_moving_to_float64_rebuilds_the_kernels() -> None:
    layer = _sparse_(nn.Linear(6, 3), 0.5)
    fast = SparseLinear.from_linear(layer)
    fast.mode = "sparse"
    x = torch.randn(2, 6)
    fast(x)
    fast.double()
    assert fast(x.double()).dtype == torch.float64
    assert torch.allclose(fast(x.double()), layer.double()(x.double()))


def test_sparsify_replaces_sparse_layers_only() -> None:
    model = nn.Sequential(_sparse_(nn.Linear(8, 8), 0.2), nn.ReLU(),
                          nn.Sequential(_sparse_(nn.Conv1d(4, 8, 3), 0.1)), nn.Linear(6, 2),
                          nn.Conv2d(1, 1, 3, padding="same"))
    sparsify(model)
    assert [type(m).__name__ for m in model.modules()][1:] == [
        "SparseLinear", "ReLU", "Sequential", "SparseConv", "Linear", "Conv2d"]
    assert not model.training


def test_rule_table_and_mode_checks() -> None:
    assert use_sparse("linear", 10**4, 1.0)
    for largest_batch, min_reduction in CONV_MIN_REDUCTION:
        assert use_sparse("conv", largest_batch, min_reduction)
        assert not use_sparse("conv", largest_batch, min_reduction - 0.01)
    assert not use_sparse("conv", 10**4, CONV_MIN_REDUCTION[-1][1] - 0.01)
    assert conv_reduction(100, 10, 5, 1) == 100 / 19
    conv = nn.Conv2d(2, 4, 3, groups=2)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0, 0, 0] = conv.weight[3, 0, 2, 2] = 1.0
    assert SparseConv.from_conv(conv).reduction() == conv_reduction(36, 2, 2, 4)
    layer = nn.Linear(2, 4)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 0], [0, 0], [0, 0], [0, 2.0]]))
    fast = SparseLinear.from_linear(layer)
    assert math.isclose(fast.density, 0.25)
    with pytest.raises(ConfigError, match="mode='fast'"):
        fast.mode = "fast"


def test_backend_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="backend='numba'"):
        SparseLinear.from_linear(nn.Linear(2, 2), "numba")
    monkeypatch.setattr(_base, "scipy_available", lambda: False)
    assert SparseLinear.from_linear(nn.Linear(2, 2)).backend == "torch"
    with pytest.raises(ConfigError, match="pip install scipy"):
        SparseLinear.from_linear(nn.Linear(2, 2), "scipy")


@pytest.mark.parametrize("ceil_mode", [False, True])
@pytest.mark.parametrize("shape", [(2, 3, 6, 8), (1, 2, 7, 5), (3, 4, 4), (1, 16, 24, 26),
                                   (1, 16, 25, 27)])  # the last two: above SMALL
def test_max_pool_2x2_equals_max_pool2d(ceil_mode: bool, shape: tuple[int, ...]) -> None:
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(5))
    x[..., 0, 0] = float("nan")
    want = nn.MaxPool2d(2, 2, ceil_mode=ceil_mode)(x)
    got = MaxPool2x2(ceil_mode)(x)
    assert got.shape == want.shape
    assert torch.equal(got.isnan(), want.isnan())
    assert torch.equal(got.nan_to_num(), want.nan_to_num())


def test_sparsify_swaps_only_2x2_pools_unless_told_not_to() -> None:
    def model() -> nn.Sequential:
        return nn.Sequential(nn.MaxPool2d(2, 2, ceil_mode=True), nn.MaxPool2d(3, 2),
                             nn.MaxPool2d(2, 1), nn.MaxPool2d(2))
    swapped = [type(m).__name__ for m in sparsify(model())]
    assert swapped == ["MaxPool2x2", "MaxPool2d", "MaxPool2d", "MaxPool2x2"]
    assert {type(m).__name__ for m in sparsify(model(), fast_pool=False)} == {"MaxPool2d"}


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_batches(backend: str) -> None:
    conv, layer = _sparse_(nn.Conv2d(4, 3, 3), 0.1), _sparse_(nn.Linear(40, 4), 0.1)
    for module, x in ((conv, torch.zeros(0, 4, 6, 6)), (layer, torch.zeros(0, 40))):
        fast = sparsify(nn.Sequential(copy.deepcopy(module)), backend=backend)
        assert isinstance(fast[0], (SparseConv, SparseLinear))
        fast[0].mode = "sparse"
        assert fast(x).shape == module(x).shape

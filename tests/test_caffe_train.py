"""caffe train on the seed's LeNet DNS and INQ files (synthetic data, a few iterations) and the
solver's update rule against a hand-written reference."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import nncompress as nnc
from nncompress.interop.caffemodel import read_caffemodel
from nncompress.interop.solver import CaffeSolver, read_solver
from nncompress.interop.solver_train import train_from_solver

FIXTURES = Path(__file__).parents[1].parent / "shared" / "fixtures" / "caffe" / "mnist"
needs_fixtures = pytest.mark.skipif(not FIXTURES.is_dir(), reason="shared Caffe fixtures absent")
DATA = "synthetic:n=256,test=100"


def _solver(tmp_path: Path, name: str, net: str, **overrides: object) -> Path:
    """A copy of a seed solver pointing at the fixture net, with small test settings."""
    lines = []
    for line in (FIXTURES / name).read_text().splitlines():
        key = line.split(":")[0].strip()
        if key == "net":
            line = f'net: "{FIXTURES / net}"'
        elif key in overrides:
            line = f"{key}: {overrides.pop(key)}"
        lines.append(line)
    lines += [f"{k}: {v}" for k, v in overrides.items()]
    path = tmp_path / name
    path.write_text("\n".join(lines))
    return path


@needs_fixtures
@pytest.mark.slow
def test_seed_dns_files_run_with_their_layer_parameters(tmp_path: Path) -> None:
    solver = _solver(tmp_path, "lenet_solver_DNS.prototxt", "lenet_train_test_DNS.prototxt",
                     max_iter=3, test_iter=1, test_interval=3, snapshot=0, random_seed=1)
    settings = read_solver(solver)
    assert (settings.base_lr, settings.lr_policy, settings.gamma, settings.power) == \
        (0.01, "inv", 0.0001, 0.75)
    lines: list[str] = []
    result = train_from_solver(solver, data=DATA, out_dir=tmp_path / "out", log=lines.append)
    layers = dict(nnc.compressed_layers(result.net))
    assert {k: v.dns_config.c_rate for k, v in layers.items()} == \
        {"conv1": 0.4, "conv2": 2.5, "ip1": 2.5, "ip2": 3.0}  # type: ignore[union-attr]
    assert {(v.dns_config.gamma, v.dns_config.iter_stop) for v in layers.values()} == \
        {(1e-5, 140000)}  # type: ignore[union-attr]
    assert {int(v.dns_iteration) for v in layers.values()} == {3}  # one surgery per iteration
    assert [it for it, _ in result.tests] == [0, 3]
    assert set(result.tests[-1][1]) == {"accuracy", "loss"}
    plain, raw = result.snapshots
    assert plain.name == "lenet_DNS_iter_3.caffemodel" and raw.name.endswith(".masks.caffemodel")
    by_name = {e.name: e for e in read_caffemodel(raw)}
    conv1 = layers["conv1"]
    assert by_name["conv1"].type == "DNSConvolution" and len(by_name["conv1"].blobs) == 4
    assert torch.equal(torch.from_numpy(by_name["conv1"].blobs[2]).bool(), conv1.weight_mask)
    plain_conv = next(e for e in read_caffemodel(plain) if e.name == "conv1")
    masked = (conv1.weight * conv1.weight_mask).detach()
    assert torch.equal(torch.from_numpy(plain_conv.blobs[0]), masked)


@needs_fixtures
@pytest.mark.slow
def test_seed_inq_step_fixes_its_portion(tmp_path: Path) -> None:
    solver = _solver(tmp_path, "lenet_solver_inq_30.prototxt", "lenet_train_test_inq_30.prototxt",
                     max_iter=2, test_interval=0, snapshot=0)
    result = train_from_solver(solver, data=DATA, out_dir=tmp_path, log=lambda s: None)
    for name, layer in nnc.compressed_layers(result.net):
        assert layer.inq_config is not None and layer.inq_config.num_quantum_values == 7
        fixed = ~torch.isnan(layer.weight_fixed.float())
        n0 = int(layer.weight_levels[2])
        assert int(fixed.sum()) == round(0.3 * n0), name
        values = layer.weight.detach()[fixed]
        assert torch.equal(values, layer.weight_fixed.float()[fixed])  # unchanged by 2 updates


def test_caffe_sgd_and_nesterov_match_the_reference() -> None:
    torch.manual_seed(0)
    w0 = torch.randn(5)
    grads = [torch.randn(5) for _ in range(3)]
    lrs = [0.1, 0.05, 0.02]
    for kind in ("SGD", "Nesterov"):
        w = torch.nn.Parameter(w0.clone())
        opt = CaffeSolver([{"params": [w], "weight_decay": 0.01}], lr=0.0, momentum=0.9,
                          kind=kind)
        ref, hist = w0.clone(), torch.zeros(5)
        for g, lr in zip(grads, lrs):
            w.grad = g.clone()
            opt.param_groups[0]["lr"] = lr
            opt.step()
            step = g + 0.01 * ref
            new_hist = 0.9 * hist + lr * step
            ref = ref - (new_hist if kind == "SGD" else 1.9 * new_hist - 0.9 * hist)
            hist = new_hist
        torch.testing.assert_close(w.detach(), ref)


def test_cli_reports_a_missing_file_by_path(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    from nncompress.cli import main

    net = tmp_path / "net.prototxt"
    net.write_text('input: "x" input_shape { dim: 1 dim: 3 }\n'
                   'layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y" '
                   'inner_product_param { num_output: 2 } }')
    missing = tmp_path / "nope.caffemodel"
    assert main(["caffe", "convert", str(net), str(missing), "-o", str(tmp_path / "o.ncz")]) == 1
    assert capsys.readouterr().err.strip() == f"nncompress: error: caffemodel not found: {missing}"

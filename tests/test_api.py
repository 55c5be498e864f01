"""The public surface of ``import nncompress``: names, and the README's example end to end."""

from __future__ import annotations

from pathlib import Path

import torch

import nncompress as nnc
from nncompress.models import build_model


def test_public_names() -> None:
    for name in nnc.__all__:
        assert getattr(nnc, name) is not None


def test_readme_flow_dns_inq_compact_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("lenet300_100")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    nnc.prepare(model, nnc.DNSConfig(c_rate=1.0), layers={"ip3": {"c_rate": 0.5}})
    x, y = torch.rand(16, 1, 28, 28), torch.randint(0, 10, (16,))
    for _ in range(3):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    model = nnc.finalize(model)
    nnc.prepare(model, nnc.INQConfig(num_quantum_values=8))
    for portion in (0.5, 1.0):
        nnc.quantize_step(model, portion)
    model = nnc.finalize(model).eval()
    summary = nnc.summarize(model)
    assert summary.total_kept < summary.total_entries // 2
    assert all(row.bits <= 5 for row in summary.layers)
    path = tmp_path / "model.ncz"
    nnc.save_compact(model, path)
    loaded = nnc.load_compact(path)
    assert torch.equal(loaded(x), model(x))
    assert path.stat().st_size < 266_610 * 4 / 20

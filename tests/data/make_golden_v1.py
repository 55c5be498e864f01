"""How tests/data/golden_v1_*.ncz were made (format version 1). Do not regenerate them.

The golden files stay as committed: every later nncompress must keep loading them
(tests/test_compact_golden.py). This script documents their content; running it writes the
files and the expected tensor digests into a folder given on the command line::

    python tests/data/make_golden_v1.py /tmp/golden

The files are written by the version 1 writer (``save_v1`` in ``_golden_common.py``: the
version 1 tensor encoder the package keeps, two streams per tensor), not by ``save_compact``,
which writes version 2; they come out byte for byte as committed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

import nncompress as nnc
from nncompress.models import build_model

sys.path.insert(0, str(Path(__file__).parent))

from _golden_common import BN_KWARGS, write_golden


def cnn() -> nn.Module:
    """tiny_cnn(width=4): INQ level codes (sparse and dense) and float32 (sparse and dense)."""
    torch.manual_seed(0)
    model = build_model("tiny_cnn", width=4)
    keep = {"conv1": 0.5, "conv2": 0.3, "conv3": 0.4, "fc": 0.08}
    with torch.no_grad():
        model.conv1.bias.normal_()
        for name, p in model.named_parameters():
            p.mul_(torch.rand_like(p) < keep[name.split(".")[0]])
    nnc.prepare(model, nnc.INQConfig(num_quantum_values=4), layers={"conv3": None})
    nnc.quantize_step(model, 1.0)
    return nnc.finalize(model)


def mlp() -> nn.Module:
    """tiny_mlp(input_size=8, hidden=24): very sparse INQ fc1 with dead rows and columns."""
    torch.manual_seed(2)
    model = build_model("tiny_mlp", input_size=8, hidden=24)
    with torch.no_grad():
        model.fc1.weight.mul_(torch.rand_like(model.fc1.weight) < 0.1)
        model.fc1.weight[::2] = 0  # dead neurons
        model.fc1.weight[:, 40:] = 0  # dead inputs
        model.fc2.weight.mul_(torch.rand_like(model.fc2.weight) < 0.2)
        model.fc2.bias.normal_()
    nnc.prepare(model, nnc.INQConfig(num_quantum_values=8), layers={"fc2": None})
    nnc.quantize_step(model, 1.0)
    return nnc.finalize(model)


def batch_norm() -> nn.Module:
    """BatchNorm1d(3) after two training batches: float16 storage and an int64 counter."""
    torch.manual_seed(1)
    model = nn.BatchNorm1d(3)
    for _ in range(2):
        model(torch.randn(8, 3))
    return model


def main(folder: Path) -> None:
    """Write the golden files and ``golden_v1_expected.json``."""
    write_golden(folder, [("golden_v1_cnn.ncz", cnn(), {}), ("golden_v1_mlp.ncz", mlp(), {}),
                          ("golden_v1_bn.ncz", batch_norm(), BN_KWARGS)],
                 "golden_v1_expected.json", version=1)


if __name__ == "__main__":
    main(Path(sys.argv[1]))

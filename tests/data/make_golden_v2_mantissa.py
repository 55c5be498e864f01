"""How tests/data/golden_v2_mantissa.ncz was made (format version 2, INQ levels with mantissa
bits). Do not regenerate it: every later nncompress must keep loading it
(tests/test_compact_golden.py). tiny_mlp(input_size=8, hidden=32): fc1 4-bit INQ with one
mantissa bit (levels ``±2^e`` and ``±1.5 * 2^e``), sparse; fc2 with three mantissa bits,
dense. Running it writes the file and the expected tensor digests into a folder::

    python tests/data/make_golden_v2_mantissa.py /tmp/golden
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

import nncompress as nnc
from nncompress.models import build_model

sys.path.insert(0, str(Path(__file__).parent))

from _golden_common import write_golden


def mantissa_mlp() -> nn.Module:
    """fc1 ``mantissa_bits=1`` (K = 4, 10% kept), fc2 ``mantissa_bits=3`` (K = 2, all kept)."""
    torch.manual_seed(5)
    model = build_model("tiny_mlp", input_size=8, hidden=32)
    with torch.no_grad():
        model.fc1.weight.mul_(torch.rand_like(model.fc1.weight) < 0.1)
    nnc.prepare(model, nnc.INQConfig(num_quantum_values=4, mantissa_bits=1),
                layers={"fc2": {"num_quantum_values": 2, "mantissa_bits": 3}})
    nnc.quantize_step(model, 1.0)
    return nnc.finalize(model)


def main(folder: Path) -> None:
    """Write the golden file and ``golden_v2_mantissa_expected.json``."""
    write_golden(folder, [("golden_v2_mantissa.ncz", mantissa_mlp(), {})],
                 "golden_v2_mantissa_expected.json")


if __name__ == "__main__":
    main(Path(sys.argv[1]))

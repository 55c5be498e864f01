"""How tests/data/golden_v2_*.ncz were made (format version 2). Do not regenerate them.

The golden files stay as committed: every later nncompress must keep loading them
(tests/test_compact_golden.py). The models are those of ``make_golden_v1.py`` (INQ level codes
sparse and dense, float32 sparse and dense, dead rows and columns, float16 storage, an int64
counter) plus a ternary (K=1) layer, a float layer pruned without INQ, and a layer whose live
columns are coded against the previous layer's live rows. Running it writes the
files and the expected tensor digests into a folder given on the command line::

    python tests/data/make_golden_v2.py /tmp/golden

``golden_v2_mantissa.ncz`` (INQ levels with mantissa bits, added later, with its own digests in
``golden_v2_mantissa_expected.json``) is written by::

    python tests/data/make_golden_v2.py /tmp/golden mantissa
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

import nncompress as nnc
from nncompress.models import build_model

sys.path.insert(0, str(Path(__file__).parent))

from _golden_common import BN_KWARGS, chain_model, write_golden
from make_golden_v1 import batch_norm, cnn, mlp


def ternary() -> nn.Module:
    """tiny_mlp(input_size=8, hidden=32): ternary (K=1) fc1, fc2 pruned floats (no INQ)."""
    torch.manual_seed(3)
    model = build_model("tiny_mlp", input_size=8, hidden=32)
    with torch.no_grad():
        model.fc1.weight.mul_(torch.rand_like(model.fc1.weight) < 0.05)
        model.fc2.weight.mul_(torch.rand_like(model.fc2.weight) < 0.3)
    nnc.prepare(model, nnc.INQConfig(num_quantum_values=1), layers={"fc2": None})
    nnc.quantize_step(model, 1.0)
    return nnc.finalize(model)


def chain() -> nn.Module:
    """tiny_mlp(input_size=8, hidden=96), 5-bit INQ: three quarters of fc1's neurons dead and
    fc2's inputs from them too (fc2's live columns coded against fc1's live rows)."""
    return chain_model(seed=4, hidden=96, dead=0.75, keep=0.2)


def mantissa_mlp() -> nn.Module:
    """tiny_mlp(input_size=8, hidden=32): fc1 4-bit INQ with one mantissa bit (levels ``±2^e``
    and ``±1.5 * 2^e``; 10% kept, sparse), fc2 K = 2 with three mantissa bits (dense)."""
    torch.manual_seed(5)
    model = build_model("tiny_mlp", input_size=8, hidden=32)
    with torch.no_grad():
        model.fc1.weight.mul_(torch.rand_like(model.fc1.weight) < 0.1)
    nnc.prepare(model, nnc.INQConfig(num_quantum_values=4, mantissa_bits=1),
                layers={"fc2": {"num_quantum_values": 2, "mantissa_bits": 3}})
    nnc.quantize_step(model, 1.0)
    return nnc.finalize(model)


def main(folder: Path, which: str = "") -> None:
    """Write the golden files and ``golden_v2_expected.json`` (``which="mantissa"``: the
    mantissa-bit file and ``golden_v2_mantissa_expected.json``)."""
    if which == "mantissa":
        write_golden(folder, [("golden_v2_mantissa.ncz", mantissa_mlp(), {})],
                     "golden_v2_mantissa_expected.json", 2)
        return
    write_golden(folder, [("golden_v2_cnn.ncz", cnn(), {}), ("golden_v2_mlp.ncz", mlp(), {}),
                          ("golden_v2_ternary.ncz", ternary(), {}),
                          ("golden_v2_chain.ncz", chain(), {}),
                          ("golden_v2_bn.ncz", batch_norm(), BN_KWARGS)],
                 "golden_v2_expected.json", 2)


if __name__ == "__main__":
    main(Path(sys.argv[1]), *sys.argv[2:3])

"""How tests/data/golden_v3_*.ncz were made (format version 3). Do not regenerate them.

The golden files stay as committed: every later nncompress must keep loading them
(tests/test_compact_golden.py). The models are those of ``make_golden_v2.py``: INQ level codes
sparse and dense, float32 and float16 storage, dead rows and columns, a ternary layer, live
columns coded against the previous layer's live rows, mantissa bits, and a model saved by its
import path (``torch.nn:BatchNorm1d``), whose file names its tensors; the others are registered
models, whose files leave their tensors' names, dtypes and shapes out. Running it writes the
files and the expected tensor digests into a folder given on the command line::

    python tests/data/make_golden_v3.py /tmp/golden
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _golden_common import BN_KWARGS, write_golden
from make_golden_v1 import batch_norm, cnn, mlp
from make_golden_v2 import chain, mantissa_mlp, ternary


def main(folder: Path) -> None:
    """Write the golden files and ``golden_v3_expected.json``."""
    write_golden(folder, [("golden_v3_cnn.ncz", cnn(), {}), ("golden_v3_mlp.ncz", mlp(), {}),
                          ("golden_v3_ternary.ncz", ternary(), {}),
                          ("golden_v3_chain.ncz", chain(), {}),
                          ("golden_v3_mantissa.ncz", mantissa_mlp(), {}),
                          ("golden_v3_bn.ncz", batch_norm(), BN_KWARGS)],
                 "golden_v3_expected.json", 3)


if __name__ == "__main__":
    main(Path(sys.argv[1]))

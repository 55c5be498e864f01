"""nncompress: Dynamic Network Surgery and Incremental Network Quantization for PyTorch.

Example:
    >>> import torch.nn as nn
    >>> import nncompress as nnc
    >>> net = nnc.prepare(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)),
    ...                   nnc.DNSConfig(c_rate=1.0))
    >>> net = nnc.finalize(net)
"""

from __future__ import annotations

from nncompress.dns import DNSConfig
from nncompress.errors import ConfigError, FormatError, NNCompressError, NonFiniteError
from nncompress.inq import INQConfig
from nncompress.prepare import (
    compressed_layers,
    finalize,
    is_prepared,
    mask_fixed_gradients,
    prepare,
    quantize_step,
    surgery_step,
)
from nncompress.summary import LayerSummary, Summary, summarize

__version__ = "0.1.0"
__all__ = [
    "ConfigError",
    "DNSConfig",
    "FormatError",
    "INQConfig",
    "LayerSummary",
    "NNCompressError",
    "NonFiniteError",
    "Summary",
    "__version__",
    "compressed_layers",
    "finalize",
    "is_prepared",
    "mask_fixed_gradients",
    "prepare",
    "quantize_step",
    "summarize",
    "surgery_step",
]

"""nncompress: Dynamic Network Surgery and Incremental Network Quantization for PyTorch.

Example:
    >>> import torch.nn as nn
    >>> import nncompress as nnc
    >>> net = nnc.prepare(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)),
    ...                   nnc.DNSConfig(c_rate=1.0))
    >>> net = nnc.finalize(net)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nncompress._version import __version__
from nncompress.dns import DNSConfig
from nncompress.errors import ConfigError, FormatError, NNCompressError, NonFiniteError
from nncompress.inq import INQConfig, portion_steps
from nncompress.prepare import (
    compressed_layers,
    finalize,
    is_prepared,
    mask_fixed_gradients,
    prepare,
    quantize_step,
    surgery_step,
    vd_kl,
    vd_to_masks,
)
from nncompress.report.summary import LayerSummary, Summary, summarize
from nncompress.retrain import freeze_masks
from nncompress.train.distill import distillation_loss
from nncompress.vd import VDConfig

if TYPE_CHECKING:
    from nncompress.export import load_compact, save_compact

__all__ = [
    "ConfigError",
    "DNSConfig",
    "FormatError",
    "INQConfig",
    "LayerSummary",
    "NNCompressError",
    "NonFiniteError",
    "Summary",
    "VDConfig",
    "__version__",
    "compressed_layers",
    "distillation_loss",
    "finalize",
    "freeze_masks",
    "is_prepared",
    "load_compact",
    "mask_fixed_gradients",
    "portion_steps",
    "prepare",
    "quantize_step",
    "save_compact",
    "summarize",
    "surgery_step",
    "vd_kl",
    "vd_to_masks",
]


def __getattr__(name: str) -> Any:
    # The compact file format loads on first use, keeping ``import nncompress`` light.
    if name in ("save_compact", "load_compact"):
        from nncompress import export

        return getattr(export, name)
    raise AttributeError(f"module 'nncompress' has no attribute {name!r}")

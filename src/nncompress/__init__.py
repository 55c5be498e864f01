"""nncompress: Dynamic Network Surgery and Incremental Network Quantization for PyTorch."""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]

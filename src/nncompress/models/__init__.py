"""Model registry: ``lenet5``, ``lenet300_100``, tiny test models, or ``package.module:callable``.

Example:
    >>> from nncompress.models import build_model, architecture
    >>> model = build_model("lenet5")
    >>> architecture(model)
    {'ref': 'lenet5', 'kwargs': {}}
"""

from __future__ import annotations

from nncompress.models._registry import (
    ARCHITECTURE_ATTR,
    architecture,
    build_model,
    list_models,
    register_model,
)

# Importing the model modules registers their factories.
from nncompress.models.lenet import caffe_xavier_, lenet5, lenet300_100
from nncompress.models.tiny import tiny_cnn, tiny_conv1d, tiny_mlp

__all__ = [
    "ARCHITECTURE_ATTR",
    "architecture",
    "build_model",
    "caffe_xavier_",
    "lenet5",
    "lenet300_100",
    "list_models",
    "register_model",
    "tiny_cnn",
    "tiny_conv1d",
    "tiny_mlp",
]

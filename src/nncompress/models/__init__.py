"""Model registry: ``lenet5``, ``lenet300_100``, tiny test models, or ``package.module:callable``.

ImageNet-class models: ``alexnet`` (Caffe's BVLC layout and layer names), ``resnet18``,
``resnet50``, ``vgg16``, ``squeezenet1_1``, ``mobilenet_v2`` (torchvision's parameter names, so
its pretrained files load with :func:`load_state_dict_file`), and the CIFAR-size ``resnet20``.

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
    default_input_shape,
    list_models,
    locate_ref,
    register_model,
)

# Importing the model modules registers their factories.
from nncompress.models.alexnet import alexnet
from nncompress.models.lenet import caffe_xavier_, lenet5, lenet300_100
from nncompress.models.mobilenet import mobilenet_v2
from nncompress.models.resnet import resnet18, resnet50
from nncompress.models.resnet_cifar import resnet20
from nncompress.models.squeezenet import squeezenet1_1
from nncompress.models.tiny import tiny_cnn, tiny_conv1d, tiny_mlp
from nncompress.models.vgg import vgg16
from nncompress.models.weights import load_state_dict_file, read_state_dict

__all__ = [
    "ARCHITECTURE_ATTR",
    "alexnet",
    "architecture",
    "build_model",
    "caffe_xavier_",
    "default_input_shape",
    "lenet5",
    "lenet300_100",
    "list_models",
    "load_state_dict_file",
    "locate_ref",
    "mobilenet_v2",
    "read_state_dict",
    "register_model",
    "resnet18",
    "resnet20",
    "resnet50",
    "squeezenet1_1",
    "tiny_cnn",
    "tiny_conv1d",
    "tiny_mlp",
    "vgg16",
]

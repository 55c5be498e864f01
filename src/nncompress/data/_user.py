"""A user's ``package.module:callable`` data: ``(train, test)`` datasets of ``(image, label)``."""

from __future__ import annotations

import importlib
from typing import Any

import torch

from nncompress.data._feed import ImageSource
from nncompress.data._registry import DatasetError, DatasetNotFoundError

__all__ = ["UserImages", "user_datasets"]


class UserImages:
    """A user's ``Dataset`` of ``(image, label)`` as an image source."""

    def __init__(self, dataset: Any, name: str, num_classes: int) -> None:
        self.dataset, self.name, self.num_classes = dataset, name, num_classes

    def __len__(self) -> int:
        return len(self.dataset)

    def where(self, index: int) -> str:
        """The example, as errors name it."""
        return f"example {index} of {self.name}"

    def load(self, index: int) -> tuple[torch.Tensor, int]:
        """The dataset's item ``index``, checked.

        Raises:
            DatasetError: the item is not ``(image tensor (C, H, W), integer label)``.
        """
        item = self.dataset[index]
        if not (isinstance(item, (tuple, list)) and len(item) == 2
                and isinstance(item[0], torch.Tensor) and item[0].dim() == 3):
            raise DatasetError(f"{self.where(index)} must be (image tensor (C, H, W), label); "
                               f"got {type(item).__name__}")
        return item[0], int(item[1])


def user_datasets(spec: str, num_classes: int | None) -> tuple[ImageSource, ImageSource]:
    """Import and call ``spec``'s function; check and wrap the two datasets it returns.

    Args:
        spec: ``package.module:callable``.
        num_classes: the class count; None: the training dataset's ``num_classes`` attribute,
            or the length of its ``classes``.

    Returns:
        The training and test sources.

    Raises:
        DatasetNotFoundError: the module or the callable does not exist.
        DatasetError: the callable does not return two sized datasets, or no class count.

    Example:
        >>> user_datasets("no_such_module_xyz:make", None)
        Traceback (most recent call last):
        ...
        nncompress.data._registry.DatasetNotFoundError: data spec 'no_such_module_xyz:make': \
module 'no_such_module_xyz' cannot be imported (No module named 'no_such_module_xyz')
    """
    module_name, _, attr = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except ModuleNotFoundError as exc:
        raise DatasetNotFoundError(f"data spec {spec!r}: module {module_name!r} cannot be "
                                   f"imported ({exc})") from exc
    except AttributeError:
        raise DatasetNotFoundError(f"data spec {spec!r}: module {module_name!r} has no "
                                   f"{attr!r}") from None
    result = factory()
    if not (isinstance(result, (tuple, list)) and len(result) == 2
            and all(hasattr(d, "__getitem__") and hasattr(d, "__len__") for d in result)):
        raise DatasetError(f"{spec} must return (train_dataset, test_dataset) of "
                           f"torch.utils.data.Dataset with a length; got {type(result).__name__}")
    if num_classes is None:
        first = result[0]
        num_classes = getattr(first, "num_classes", None) or len(getattr(first, "classes", ()))
    if not num_classes:
        raise DatasetError(f"the training dataset of {spec} has no num_classes or classes "
                           "attribute; give num_classes")
    return (UserImages(result[0], f"{spec} (train)", num_classes),
            UserImages(result[1], f"{spec} (test)", num_classes))

"""Image folders in the ImageNet layout: ``DIR/train/<class>/*.jpg`` and ``DIR/val/<class>/...``.

The class index is the position of the class folder's name among the sorted names of the
training split's class folders; the test split (``val``, or ``test`` when there is no ``val``)
uses the same index, so it may miss classes but not add any. Files are taken in sorted order;
only ``.jpg``, ``.jpeg`` and ``.png`` files (any case) count, other files and hidden ones are
ignored. Images are decoded with Pillow to RGB (3 channels, greyscale files replicated), or to
one grey channel when asked: a whole set has one channel count, whatever its files hold.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from nncompress.data._decode import decode_image
from nncompress.data._registry import DatasetError, DatasetNotFoundError
from nncompress.errors import FormatError

__all__ = ["IMAGE_SUFFIXES", "FolderImages", "open_folder"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


class FolderImages:
    """The images of one split of an image folder: ``(path, class index)`` pairs.

    Args:
        paths: image files, in order.
        labels: their class indices.
        classes: the class names; index ``i`` names class ``i``.
        grey: decode to one grey channel instead of RGB.
    """

    def __init__(self, paths: list[str], labels: list[int], classes: list[str],
                 grey: bool = False) -> None:
        self.paths, self.labels, self.classes, self.grey = paths, labels, classes, grey

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def num_classes(self) -> int:
        """The number of classes (class folders of the training split)."""
        return len(self.classes)

    def where(self, index: int) -> str:
        """The file of example ``index``, as errors name it."""
        return f"image {self.paths[index]!r}"

    def load(self, index: int) -> tuple[torch.Tensor, int]:
        """Decode example ``index``: uint8 ``(C, H, W)`` pixels and its class index.

        Raises:
            FormatError: the file cannot be read or decoded.
        """
        try:
            with open(self.paths[index], "rb") as handle:
                data = handle.read()
        except OSError as exc:
            raise FormatError(f"cannot read the file ({exc.strerror or exc})") from exc
        return decode_image(data, grey=self.grey), self.labels[index]


def _class_folders(split: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(split) if e.is_dir() and not e.name.startswith("."))


def _images_of(folder: Path) -> list[str]:
    names = sorted(e.name for e in os.scandir(folder) if e.is_file() and not e.name.startswith(".")
                   and e.name.lower().endswith(IMAGE_SUFFIXES))
    return [str(folder / name) for name in names]


def _scan(split: Path, classes: list[str], grey: bool) -> FolderImages:
    present = _class_folders(split)
    index = {name: i for i, name in enumerate(classes)}
    extra = [name for name in present if name not in index]
    if extra:
        raise DatasetError(f"{str(split)!r} has class folders that the training split lacks: "
                           f"{', '.join(map(repr, extra[:5]))}; both splits must use the "
                           "training split's class names")
    paths: list[str] = []
    labels: list[int] = []
    for name in present:
        files = _images_of(split / name)
        paths += files
        labels += [index[name]] * len(files)
    if not paths:
        raise DatasetError(f"{str(split)!r} has no images: its class folders hold no "
                           f"{'/'.join(IMAGE_SUFFIXES)} files")
    return FolderImages(paths, labels, classes, grey)


def open_folder(root: str | Path, *, grey: bool = False) -> tuple[FolderImages, FolderImages]:
    """Scan ``root/train`` and ``root/val`` (or ``root/test``).

    Args:
        root: the folder holding the splits.
        grey: decode to one grey channel instead of RGB.

    Returns:
        The training and test splits.

    Raises:
        DatasetNotFoundError: ``root`` or one of its split folders does not exist.
        DatasetError: a split has no class folders or no images.

    Example:
        >>> open_folder("/nonexistent")
        Traceback (most recent call last):
        ...
        nncompress.data._registry.DatasetNotFoundError: image folder '/nonexistent' does not exist
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetNotFoundError(f"image folder {str(root)!r} does not exist")
    layout = f"expected {str(root / 'train')!r} and {str(root / 'val')!r}, each with one folder " \
             "of images per class"
    train_dir = root / "train"
    test_dir = next((root / n for n in ("val", "test") if (root / n).is_dir()), None)
    if not train_dir.is_dir() or test_dir is None:
        missing = "train" if not train_dir.is_dir() else "val"
        raise DatasetNotFoundError(
            f"image folder {str(root)!r} has no {missing!r} folder; {layout}")
    classes = _class_folders(train_dir)
    if not classes:
        raise DatasetError(f"{str(train_dir)!r} has no class folders; {layout}")
    return _scan(train_dir, classes, grey), _scan(test_dir, classes, grey)

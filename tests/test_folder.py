"""Image folders: layout, class indices, decoding, and each bad folder's message."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nncompress.data import DatasetError, DatasetNotFoundError
from nncompress.data.folder import open_folder


def make_folder(root: Path, classes: tuple[str, ...] = ("cat", "dog"), per_class: int = 3,
                size: tuple[int, int] = (4, 5), fmt: str = "png",
                seed: int = 0) -> dict[str, np.ndarray]:
    """Write ``root/{train,val}/<class>/<n>.<fmt>`` with seeded pixels; return path -> HxWx3."""
    rng = np.random.default_rng(seed)
    written = {}
    for split in ("train", "val"):
        for name in classes:
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for j in range(per_class):
                pixels = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
                path = folder / f"{j}.{fmt}"
                Image.fromarray(pixels).save(path, quality=95) if fmt == "jpg" else \
                    Image.fromarray(pixels).save(path)
                written[str(path)] = pixels
    return written


def test_classes_sorted_files_sorted_and_pixels_exact(tmp_path: Path) -> None:
    written = make_folder(tmp_path, classes=("zebra", "ant"), per_class=2)
    (tmp_path / "train" / "ant" / "notes.txt").write_text("not an image")
    (tmp_path / "train" / "ant" / "10.PNG").write_bytes(
        (tmp_path / "train" / "ant" / "1.png").read_bytes())
    train, test = open_folder(tmp_path)
    assert train.classes == ["ant", "zebra"] and train.num_classes == 2
    names = [Path(p).relative_to(tmp_path / "train").as_posix() for p in train.paths]
    assert names == ["ant/0.png", "ant/1.png", "ant/10.PNG", "zebra/0.png", "zebra/1.png"]
    assert train.labels == [0, 0, 0, 1, 1] and test.labels == [0, 0, 1, 1]
    x, label = train.load(3)
    expected = written[str(tmp_path / "train" / "zebra" / "0.png")]
    assert label == 1 and x.dtype == torch.uint8
    assert torch.equal(x, torch.from_numpy(expected).permute(2, 0, 1))


def test_grey_files_become_rgb_and_grey_option_gives_one_channel(tmp_path: Path) -> None:
    make_folder(tmp_path, classes=("a",), per_class=1)
    grey = np.array([[0, 50], [100, 250]], dtype=np.uint8)
    Image.fromarray(grey, mode="L").save(tmp_path / "train" / "a" / "0.png")
    train, _ = open_folder(tmp_path)
    x, _ = train.load(0)
    assert x.shape == (3, 2, 2) and all(torch.equal(x[c], torch.from_numpy(grey)) for c in range(3))
    train_grey, _ = open_folder(tmp_path, grey=True)
    assert torch.equal(train_grey.load(0)[0], torch.from_numpy(grey)[None])


def test_test_split_may_be_named_test(tmp_path: Path) -> None:
    make_folder(tmp_path, classes=("a", "b"), per_class=1)
    (tmp_path / "val").rename(tmp_path / "test")
    _, test = open_folder(tmp_path)
    assert test.labels == [0, 1] and "/test/" in test.paths[0]


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match=r"image folder '.*nope' does not exist"):
        open_folder(tmp_path / "nope")


def test_missing_val_split(tmp_path: Path) -> None:
    (tmp_path / "train" / "a").mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError, match=r"has no 'val' folder; expected .*/train'"):
        open_folder(tmp_path)


def test_no_class_folders(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    (tmp_path / "val").mkdir()
    Image.new("RGB", (2, 2)).save(tmp_path / "train" / "loose.png")
    with pytest.raises(DatasetError, match=re.escape(f"{str(tmp_path / 'train')!r} has no class "
                                                     "folders; expected")):
        open_folder(tmp_path)


def test_no_images(tmp_path: Path) -> None:
    for split in ("train", "val"):
        (tmp_path / split / "a").mkdir(parents=True)
    (tmp_path / "train" / "a" / "x.txt").write_text("x")
    with pytest.raises(DatasetError, match=r"has no images: its class folders hold no "
                                           r"\.jpg/\.jpeg/\.png files"):
        open_folder(tmp_path)


def test_val_class_unknown_to_train(tmp_path: Path) -> None:
    make_folder(tmp_path, classes=("a",), per_class=1)
    (tmp_path / "val" / "b").mkdir()
    with pytest.raises(DatasetError, match="class folders that the training split lacks: 'b'"):
        open_folder(tmp_path)


def test_jpeg_decodes_close_to_its_pixels(tmp_path: Path) -> None:
    smooth = np.full((8, 8, 3), (200, 100, 30), dtype=np.uint8)
    (tmp_path / "train" / "a").mkdir(parents=True)
    (tmp_path / "val" / "a").mkdir(parents=True)
    for split in ("train", "val"):
        Image.fromarray(smooth).save(tmp_path / split / "a" / "0.jpeg", quality=95)
    x, _ = open_folder(tmp_path)[0].load(0)
    assert x.shape == (3, 8, 8)
    assert (x.to(torch.int32) - torch.tensor([200, 100, 30]).view(3, 1, 1)).abs().max() <= 3

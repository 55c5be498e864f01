"""Generated JPEG image folders in the ImageNet layout, learnable: each class has its own colour."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def make_jpeg_folder(root: Path, classes: int = 4, per_class: int = 4, size: int = 16,
                     test_per_class: int = 2, seed: int = 0) -> Path:
    """Write ``root/{train,val}/c<k>/<n>.jpg``: class ``k``'s colour plus seeded noise.

    Returns:
        ``root``, for the data spec ``folder:root``.
    """
    rng = np.random.default_rng(seed)
    colours = rng.integers(40, 216, (classes, 3))
    for split, count in (("train", per_class), ("val", test_per_class)):
        for k in range(classes):
            folder = root / split / f"c{k}"
            folder.mkdir(parents=True, exist_ok=True)
            for j in range(count):
                noise = rng.integers(-40, 41, (size, size, 3))
                pixels = np.clip(colours[k] + noise, 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{j}.jpg", quality=90)
    return root

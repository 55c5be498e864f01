"""Image decoding with Pillow and the lazy imports of the ``images`` extra (Pillow, lmdb).

Decoded images are uint8 tensors ``(C, H, W)``. Colour images have 3 channels; ``grey`` asks
for 1. Channel order is a caller's choice: ``bgr=True`` gives Caffe's order (its LMDB tools decode
with OpenCV, whose order is blue, green, red), so nets converted from Caffe and their
``mean_value``s see what they saw in Caffe.
"""

from __future__ import annotations

import io
from types import ModuleType

import numpy as np
import torch

from nncompress.errors import FormatError

__all__ = ["IMAGES_HINT", "decode_image", "import_lmdb", "import_pil"]

#: How to install what streaming image data needs.
IMAGES_HINT = "pip install nncompress[images]"


def import_pil() -> ModuleType:
    """Return ``PIL.Image``, or explain how to install it.

    Raises:
        ImportError: Pillow is not installed (the message gives the install command).

    Example:
        >>> import_pil().__name__
        'PIL.Image'
    """
    try:
        from PIL import Image
    except ImportError as exc:
        raise ImportError(f"image folders and encoded LMDB records need Pillow: {IMAGES_HINT}"
                          ) from exc
    return Image


def import_lmdb() -> ModuleType:
    """Return the ``lmdb`` module, or explain how to install it.

    Raises:
        ImportError: lmdb is not installed (the message gives the install command).

    Example:
        >>> import_lmdb().__name__
        'lmdb'
    """
    try:
        import lmdb
    except ImportError as exc:
        raise ImportError(f"LMDB databases need the lmdb package: {IMAGES_HINT}") from exc
    return lmdb


def decode_image(data: bytes, *, grey: bool = False, bgr: bool = False) -> torch.Tensor:
    """Decode a JPEG/PNG (any format Pillow reads) into a uint8 ``(C, H, W)`` tensor.

    Args:
        data: the file's bytes.
        grey: one luminance channel instead of three colour channels.
        bgr: colour channels in blue, green, red order (Caffe's) instead of red, green, blue.

    Returns:
        The pixels; palette, alpha, 16-bit and CMYK images are converted first.

    Raises:
        FormatError: Pillow cannot decode the bytes (the message gives its reason).

    Example:
        >>> image = import_pil().new("RGB", (3, 2), (10, 20, 30))
        >>> buf = io.BytesIO(); image.save(buf, format="PNG")
        >>> decode_image(buf.getvalue(), bgr=True)[:, 0, 0].tolist()
        [30, 20, 10]
    """
    pil = import_pil()
    try:
        with pil.open(io.BytesIO(data)) as image:
            array = np.asarray(image.convert("L" if grey else "RGB"))
    except (OSError, ValueError, SyntaxError, pil.DecompressionBombError) as exc:
        raise FormatError(f"not a readable image ({exc})") from exc
    if grey:
        return torch.from_numpy(array.copy()).unsqueeze(0)
    if bgr:
        array = array[:, :, ::-1]
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))

"""Per-image transforms of streamed data: none, Caffe's ``transform_param``, or ImageNet's.

``kind: none`` (the default) keeps images at their stored size and multiplies uint8 pixels by
``scale`` (1/256, as :func:`~nncompress.data.load_data` does, so pixels land in [0, 1));
floating-point images are taken as already scaled.

``kind: caffe`` is Caffe's DataTransformer: ``(x - mean) * scale`` where the mean is
``mean_value`` (one value for every channel, or one per channel) or a ``mean_file``
binaryproto (a per-pixel mean of the stored image size, cropped with the image); ``crop_size``
crops at random while training and at the centre for testing; ``mirror`` flips half of the
training images left-right (never test images). ``scale`` defaults to 1, as in Caffe.

``kind: imagenet``: training images get a random crop of ``area`` (a fraction of the image's
area) and aspect ``ratio`` (log-uniform), resized to ``size`` x ``size``, and a left-right flip
with probability 1/2 (``flip``); test images are resized so their shorter side is ``resize`` and
cropped to ``size`` x ``size`` at the centre. Then ``(x * scale - mean) / std`` per channel, with
``scale`` 1/255 and the usual ImageNet ``mean``/``std`` by default.

Random choices come from the ``random.Random`` the caller passes for each image (see
:mod:`nncompress.data.stream`), never from global or worker state.
"""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from nncompress.errors import ConfigError

__all__ = ["ImageTransform", "TransformConfig"]

_CAFFE = ("mean_value", "mean_file", "crop_size", "mirror")
_IMAGENET = ("size", "resize", "area", "ratio", "flip", "mean", "std")
_DEFAULT_SCALE = {"none": 1 / 256, "caffe": 1.0, "imagenet": 1 / 255}


@dataclass(frozen=True, kw_only=True)
class TransformConfig:
    """What to do to each image; fields of the other kinds must stay at their defaults.

    Example:
        >>> TransformConfig(kind="caffe", crop_size=227, mean_value=(104.0, 117.0, 123.0)).scale
        1.0
        >>> TransformConfig(kind="imagenet", crop_size=224)
        Traceback (most recent call last):
        ...
        nncompress.errors.ConfigError: transform: crop_size applies to kind 'caffe', not \
'imagenet'; for kind 'imagenet' use size, resize, area, ratio, flip, mean, std
    """

    kind: Literal["none", "caffe", "imagenet"] = "none"
    scale: float | None = None  # None: 1/256 (none), 1 (caffe, as Caffe), 1/255 (imagenet)
    mean_value: tuple[float, ...] = ()
    mean_file: str | None = None
    crop_size: int = 0
    mirror: bool = False
    size: int = 224
    resize: int = 256
    area: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: bool = True
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)

    def __post_init__(self) -> None:
        if self.kind not in _DEFAULT_SCALE:
            raise ConfigError(f"transform: kind={self.kind!r} must be one of "
                              + ", ".join(map(repr, _DEFAULT_SCALE)))
        if self.scale is None:
            object.__setattr__(self, "scale", _DEFAULT_SCALE[self.kind])
        own = {"caffe": _CAFFE, "imagenet": _IMAGENET}.get(self.kind, ())
        for f in dataclasses.fields(self):
            if f.name in _CAFFE + _IMAGENET and f.name not in own \
                    and getattr(self, f.name) != f.default:
                kind = "caffe" if f.name in _CAFFE else "imagenet"
                hint = f"; for kind {self.kind!r} use {', '.join(own)}" if own else ""
                raise ConfigError(f"transform: {f.name} applies to kind {kind!r}, not "
                                  f"{self.kind!r}{hint}")
        self._check_values()

    def _check_values(self) -> None:
        problems = [
            (not (isinstance(self.scale, (int, float)) and self.scale > 0), "scale",
             "a positive number"),
            (self.crop_size < 0, "crop_size", "an integer >= 0 (0: no crop)"),
            (self.mean_file is not None and bool(self.mean_value), "mean_file",
             "left out when mean_value is given (Caffe takes one or the other)"),
            (self.size < 1 or self.resize < self.size, "resize",
             f"an integer >= size ({self.size})"),
            (not 0 < self.area[0] <= self.area[1] <= 1, "area", "two numbers 0 < low <= high <= 1"),
            (not 0 < self.ratio[0] <= self.ratio[1], "ratio", "two numbers 0 < low <= high"),
            (len(self.mean) != len(self.std) or min(self.std, default=1) <= 0, "std",
             "as many positive numbers as mean has"),
        ]
        for bad, name, allowed in problems:
            if bad:
                raise ConfigError(f"transform: {name}={getattr(self, name)!r} must be {allowed}")


class ImageTransform:
    """A :class:`TransformConfig` made ready to run (its mean file read once).

    Args:
        config: the settings.
        train: training (random crops and flips) or testing (deterministic) behaviour.

    Example:
        >>> t = ImageTransform(TransformConfig(kind="caffe", mean_value=(1.0,), scale=0.5),
        ...                    train=False)
        >>> t(torch.tensor([[[3, 5]]], dtype=torch.uint8), None).tolist()
        [[[1.0, 2.0]]]
    """

    def __init__(self, config: TransformConfig, *, train: bool) -> None:
        self.config, self.train = config, train
        self.mean_image: torch.Tensor | None = None
        if config.mean_file is not None:
            from nncompress.interop.binaryproto import read_mean_file

            self.mean_image = read_mean_file(config.mean_file).to(torch.float32)

    def __call__(self, x: torch.Tensor, rng: random.Random | None) -> torch.Tensor:
        """Transform one ``(C, H, W)`` image; ``rng`` is needed for training only.

        Raises:
            ConfigError: the image and the settings do not fit (crop larger than the image,
                mean of another shape or channel count).
        """
        kind, scale = self.config.kind, float(self.config.scale or 1)
        if kind == "none":
            return x.to(torch.float32) * scale if x.dtype == torch.uint8 else x.to(torch.float32)
        if self.train and rng is None:
            raise ValueError("a training transform needs a random.Random")
        x = x.to(torch.float32)
        return self._caffe(x, scale, rng) if kind == "caffe" else self._imagenet(x, scale, rng)

    def _caffe(self, x: torch.Tensor, scale: float, rng: random.Random | None) -> torch.Tensor:
        c, h, w = x.shape
        mean = _channel_values(self.config.mean_value, c, "mean_value")
        if self.mean_image is not None:
            if tuple(self.mean_image.shape) != (c, h, w):
                raise ConfigError(f"transform: mean_file {self.config.mean_file!r} is "
                                  f"{tuple(self.mean_image.shape)} but the image is {(c, h, w)}; "
                                  "the mean must have the stored images' size")
            mean = self.mean_image
        crop = self.config.crop_size
        if crop:
            top, left = _crop_at(h, w, crop, crop, rng if self.train else None)
            x = x[:, top:top + crop, left:left + crop]
            if self.mean_image is not None:  # per-pixel: the same window as the image
                mean = mean[:, top:top + crop, left:left + crop]
        out = (x - mean) * scale
        if self.config.mirror and self.train and rng is not None and rng.random() < 0.5:
            out = out.flip(2)
        return out

    def _imagenet(self, x: torch.Tensor, scale: float, rng: random.Random | None) -> torch.Tensor:
        cfg = self.config
        _, h, w = x.shape
        if self.train and rng is not None:
            top, left, bh, bw = random_box(h, w, cfg.area, cfg.ratio, rng)
            x = _resized(x[:, top:top + bh, left:left + bw], cfg.size, cfg.size)
            if cfg.flip and rng.random() < 0.5:
                x = x.flip(2)
        else:
            short, long = (h, w) if h <= w else (w, h)
            other = int(cfg.resize * long / short)
            x = _resized(x, cfg.resize, other) if h <= w else _resized(x, other, cfg.resize)
            top, left = _crop_at(x.shape[1], x.shape[2], cfg.size, cfg.size, None)
            x = x[:, top:top + cfg.size, left:left + cfg.size]
        c = x.shape[0]
        mean = _channel_values(cfg.mean, c, "mean")
        std = _channel_values(cfg.std, c, "std")
        return (x * scale - mean) / std


def _channel_values(values: tuple[float, ...], channels: int, name: str) -> torch.Tensor:
    if len(values) not in (0, 1, channels):
        raise ConfigError(f"transform: {name} has {len(values)} values but the images have "
                          f"{channels} channel(s); give one value or one per channel")
    return torch.tensor(values or (0.0,), dtype=torch.float32).view(-1, 1, 1)


def _crop_at(h: int, w: int, ch: int, cw: int, rng: random.Random | None) -> tuple[int, int]:
    if ch > h or cw > w:
        raise ConfigError(f"transform: a {ch}x{cw} crop does not fit in a {h}x{w} image")
    if rng is None:
        return (h - ch) // 2, (w - cw) // 2
    return int(rng.random() * (h - ch + 1)), int(rng.random() * (w - cw + 1))


def random_box(h: int, w: int, area: tuple[float, float], ratio: tuple[float, float],
               rng: random.Random) -> tuple[int, int, int, int]:
    """A random crop box ``(top, left, height, width)`` of ``area`` and aspect ``ratio``.

    Up to ten draws of (area fraction, log-uniform width/height ratio); when none fits, the
    largest centred box whose ratio is within ``ratio``.

    Example:
        >>> random_box(10, 10, (1.0, 1.0), (1.0, 1.0), random.Random(0))
        (0, 0, 10, 10)
    """
    log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target = h * w * (area[0] + rng.random() * (area[1] - area[0]))
        aspect = math.exp(log_low + rng.random() * (log_high - log_low))
        bw, bh = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < bw <= w and 0 < bh <= h:
            top, left = _crop_at(h, w, bh, bw, rng)
            return top, left, bh, bw
    aspect = min(max(w / h, ratio[0]), ratio[1])
    bw, bh = (w, min(h, round(w / aspect))) if w / h <= aspect else (min(w, round(h * aspect)), h)
    return (h - bh) // 2, (w - bw) // 2, bh, bw


def _resized(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    if tuple(x.shape[1:]) == (h, w):
        return x
    return F.interpolate(x[None], size=(h, w), mode="bilinear", align_corners=False,
                         antialias=True)[0]

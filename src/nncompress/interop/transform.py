"""Caffe's input transform (``transform_param``) as one module used everywhere.

The same transform feeds training (:class:`~nncompress.interop.solver_train.DataFeed`), scores a
net (``caffe eval``) and travels with converted files (``.ncz`` architecture arguments and
``.safetensors`` metadata), so every path sees the same inputs. As in Caffe's DataTransformer:
subtract the mean (a per-pixel mean image from ``mean_file``, or ``mean_value`` per channel),
crop (random while training, centered otherwise), mirror (training only), multiply by ``scale``.
An empty ``mean_file: ""`` means no mean.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nncompress.errors import ConfigError
from nncompress.interop.binaryproto import read_mean_file
from nncompress.interop.prototxt import Message

__all__ = ["CaffeTransform", "TransformSpec"]


@dataclass
class TransformSpec:
    """The settings of a ``transform_param``.

    Attributes:
        scale: multiplies the input after the mean is subtracted.
        mean_values: one value for all channels, or one per channel.
        mean_file: a ``.binaryproto`` mean image (None: none).
        crop: crop size (0: none).
        mirror: random horizontal flips while training.
    """

    scale: float = 1.0
    mean_values: list[float] = field(default_factory=list)
    mean_file: str | None = None
    crop: int = 0
    mirror: bool = False

    @classmethod
    def from_param(cls, param: Message | None, where: str) -> TransformSpec:
        """Read a ``transform_param`` message (None: the identity).

        Raises:
            ConfigError: both ``mean_file`` and ``mean_value`` are given, or a value is invalid.
        """
        t = param or Message(where=where)
        spec = cls(scale=t.get_float("scale", 1.0) or 0.0, mean_values=t.floats("mean_value"),
                   mean_file=t.get_str("mean_file") or None, crop=t.get_int("crop_size", 0) or 0,
                   mirror=bool(t.get_bool("mirror", False)))
        if spec.mean_file and spec.mean_values:
            raise ConfigError(f"{t.where}: transform_param gives both mean_file and mean_value; "
                              "Caffe takes one of them")
        if spec.crop < 0:
            raise ConfigError(f"{t.where}: crop_size {spec.crop} must be >= 0")
        return spec

    def is_identity(self) -> bool:
        """True when the transform changes nothing."""
        return (self.scale == 1.0 and not self.mean_values and not self.mean_file
                and not self.crop and not self.mirror)

    def describe(self) -> str:
        """A short human-readable form, e.g. ``scale 0.00390625, mean 104,117,123``."""
        parts = [f"scale {self.scale:g}"]
        if self.mean_values:
            parts.append("mean " + ",".join(f"{v:g}" for v in self.mean_values))
        if self.mean_file:
            parts.append(f"mean file {self.mean_file}")
        if self.crop:
            parts.append(f"crop {self.crop}")
        return ", ".join(parts)


def _resolve(name: str, base: Path | None) -> Path:
    """Caffe opens ``mean_file`` from its working directory; files moved beside the net are
    found there too."""
    path = Path(name)
    if path.is_file() or base is None:
        return path
    for candidate in (base / name, base / path.name):
        if candidate.is_file():
            return candidate
    return path


class CaffeTransform(nn.Module):
    """Caffe's DataTransformer on batches ``(N, C, H, W)`` in pixel units.

    Args:
        spec: the settings.
        mean_image: the per-pixel mean (C, H, W); read from ``spec.mean_file`` when None.
        base: the folder a relative ``mean_file`` is also looked up in (the net's).
        seed: seed of the random crops and mirrors of training.

    Raises:
        FormatError: the mean file is missing or not a mean file.

    Example:
        >>> t = CaffeTransform(TransformSpec(scale=0.5, mean_values=[2.0]))
        >>> t(torch.full((1, 1, 2, 2), 4.0)).flatten().tolist()
        [1.0, 1.0, 1.0, 1.0]
    """

    mean_image: torch.Tensor

    def __init__(self, spec: TransformSpec, mean_image: torch.Tensor | None = None,
                 base: Path | None = None, seed: int = 0) -> None:
        super().__init__()
        self.spec = spec
        if mean_image is None and spec.mean_file:
            mean_image = read_mean_file(_resolve(spec.mean_file, base))
        if mean_image is not None:
            self.register_buffer("mean_image", mean_image.to(torch.float32))
        self.has_mean_image = mean_image is not None
        self.gen = torch.Generator().manual_seed(seed)

    def to_json(self) -> dict[str, Any]:
        """The settings as JSON values; a mean image is recorded by its shape (its values are
        the ``mean_image`` buffer of the state)."""
        out: dict[str, Any] = {"scale": self.spec.scale, "mean_values": list(self.spec.mean_values),
                               "crop": self.spec.crop, "mirror": self.spec.mirror}
        if self.has_mean_image:
            out["mean_shape"] = list(self.mean_image.shape)
        return out

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> CaffeTransform:
        """Rebuild from :meth:`to_json` (the mean image, if any, is zeros until the state loads).

        Raises:
            ConfigError: an unknown key or a value of the wrong kind.
        """
        known = {"scale", "mean_values", "crop", "mirror", "mean_shape"}
        if not isinstance(values, dict) or set(values) - known:
            raise ConfigError(f"transform {values!r}: expected keys among {sorted(known)}")
        try:
            spec = TransformSpec(scale=float(values.get("scale", 1.0)),
                                 mean_values=[float(v) for v in values.get("mean_values", [])],
                                 crop=int(values.get("crop", 0)),
                                 mirror=bool(values.get("mirror", False)))
            shape = values.get("mean_shape")
            mean = torch.zeros([int(d) for d in shape]) if shape is not None else None
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"transform {values!r}: {exc}") from None
        return cls(spec, mean_image=mean)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Transform a batch: random crop and mirror in training mode, center crop otherwise."""
        x = x.to(torch.float32)
        if self.has_mean_image:
            if tuple(x.shape[1:]) != tuple(self.mean_image.shape):
                raise ConfigError(f"the mean image has shape {list(self.mean_image.shape)} but "
                                  f"the images have shape {list(x.shape[1:])}; they must match")
            x = x - self.mean_image
        elif self.spec.mean_values:
            mean = torch.tensor(self.spec.mean_values, dtype=x.dtype)
            if len(mean) > 1 and len(mean) != x.shape[1]:
                raise ConfigError(f"{len(mean)} mean values for images of {x.shape[1]} channels")
            x = x - (mean.view(1, -1, 1, 1) if len(mean) > 1 else mean)
        if self.spec.crop:
            x = self._crop(x, self.spec.crop)
        if self.spec.mirror and self.training:
            flip = torch.rand(x.shape[0], generator=self.gen) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        return x * self.spec.scale if self.spec.scale != 1.0 else x

    def _crop(self, x: torch.Tensor, crop: int) -> torch.Tensor:
        h, w = x.shape[-2:]
        if crop > h or crop > w:
            raise ConfigError(f"crop_size {crop} is larger than the images ({h}x{w})")
        if self.training:
            top = int(torch.randint(h - crop + 1, (1,), generator=self.gen))
            left = int(torch.randint(w - crop + 1, (1,), generator=self.gen))
        else:
            top, left = (h - crop) // 2, (w - crop) // 2
        return x[..., top:top + crop, left:left + crop]

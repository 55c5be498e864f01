"""Image transforms against hand-computed values on tiny tensors."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from nncompress.data.transforms import ImageTransform, TransformConfig, random_box
from nncompress.errors import ConfigError


class FixedRandom(random.Random):
    """A ``random.Random`` whose ``random()`` returns the given values in turn."""

    def __init__(self, *values: float) -> None:
        super().__init__(0)
        self.values = list(values)

    def random(self) -> float:
        return self.values.pop(0)


def image(c: int, h: int, w: int) -> torch.Tensor:
    return torch.arange(c * h * w, dtype=torch.uint8).view(c, h, w)


def test_no_transform_scales_pixels_by_1_over_256() -> None:
    t = ImageTransform(TransformConfig(), train=True)
    x = torch.tensor([[[0, 128, 255]]], dtype=torch.uint8)
    assert t(x, random.Random(0)).tolist() == [[[0.0, 0.5, 255 / 256]]]
    floats = torch.tensor([[[0.25, 7.0]]])
    assert t(floats, None).tolist() == [[[0.25, 7.0]]]  # already scaled: kept


def test_caffe_mean_value_per_channel_then_scale() -> None:
    t = ImageTransform(TransformConfig(kind="caffe", mean_value=(1.0, 10.0), scale=0.5),
                       train=False)
    x = image(2, 1, 2)  # [[0, 1]], [[2, 3]]
    assert t(x, None).tolist() == [[[-0.5, 0.0]], [[-4.0, -3.5]]]


def test_caffe_centre_crop_for_testing() -> None:
    t = ImageTransform(TransformConfig(kind="caffe", crop_size=2), train=False)
    x = image(1, 4, 5)  # rows 0-4, 5-9, 10-14, 15-19
    # top = (4-2)//2 = 1, left = (5-2)//2 = 1
    assert t(x, None).tolist() == [[[6.0, 7.0], [11.0, 12.0]]]


def test_caffe_random_crop_and_mirror_for_training() -> None:
    t = ImageTransform(TransformConfig(kind="caffe", crop_size=2, mirror=True), train=True)
    x = image(1, 4, 5)
    # top = int(0.99 * 3) = 2, left = int(0.0 * 4) = 0; 0.3 < 0.5 flips
    assert t(x, FixedRandom(0.99, 0.0, 0.3)).tolist() == [[[11.0, 10.0], [16.0, 15.0]]]
    assert t(x, FixedRandom(0.0, 0.99, 0.7)).tolist() == [[[3.0, 4.0], [8.0, 9.0]]]


def test_caffe_mirror_never_flips_test_images() -> None:
    t = ImageTransform(TransformConfig(kind="caffe", mirror=True), train=False)
    assert t(image(1, 1, 3), None).tolist() == [[[0.0, 1.0, 2.0]]]


def test_caffe_mean_file_is_cropped_with_the_image(tmp_path: Path) -> None:
    from nncompress.interop.binaryproto import write_mean_file

    mean = torch.arange(20, dtype=torch.float32).view(1, 4, 5) * 0.5
    write_mean_file(tmp_path / "mean.binaryproto", mean)
    config = TransformConfig(kind="caffe", mean_file=str(tmp_path / "mean.binaryproto"),
                             crop_size=2, scale=2.0)
    t = ImageTransform(config, train=True)
    x = image(1, 4, 5)
    # crop at top 1, left 3: pixels 8, 9, 13, 14; mean is half of them
    assert t(x, FixedRandom(0.5, 0.8)).tolist() == [[[8.0, 9.0], [13.0, 14.0]]]
    with pytest.raises(ConfigError, match=r"is \(1, 4, 5\) but the image is \(1, 4, 6\)"):
        t(image(1, 4, 6), FixedRandom(0.5, 0.8))


def test_imagenet_test_resize_shorter_side_and_centre_crop() -> None:
    config = TransformConfig(kind="imagenet", size=2, resize=4, scale=1.0, mean=(1.0,),
                             std=(2.0,))
    t = ImageTransform(config, train=False)
    x = image(1, 4, 6)  # shorter side already 4: no resize; crop top 1, left 2
    assert t(x, None).tolist() == [[[(8 - 1) / 2, (9 - 1) / 2], [(14 - 1) / 2, (15 - 1) / 2]]]


def test_imagenet_test_resize_keeps_aspect_and_constant_images_constant() -> None:
    config = TransformConfig(kind="imagenet", size=3, resize=4)
    x = torch.full((3, 8, 12), 51, dtype=torch.uint8)
    out = ImageTransform(config, train=False)(x, None)
    expected = (51 / 255 - torch.tensor(config.mean)) / torch.tensor(config.std)
    assert out.shape == (3, 3, 3)
    assert torch.allclose(out, expected.view(3, 1, 1).expand(3, 3, 3), atol=1e-6)


def test_imagenet_training_crop_resize_and_flip() -> None:
    config = TransformConfig(kind="imagenet", size=2, resize=2, area=(0.25, 0.25),
                             ratio=(1.0, 1.0), scale=1.0, mean=(0.0,), std=(1.0,))
    t = ImageTransform(config, train=True)
    x = image(1, 4, 4)
    # area 4 of 16, ratio 1 -> a 2x2 box; top int(0.5*3)=1, left int(0.0*3)=0; 0.1 flips
    out = t(x, FixedRandom(0.0, 0.0, 0.5, 0.0, 0.1))
    assert out.tolist() == [[[5.0, 4.0], [9.0, 8.0]]]


def test_random_box_in_bounds_and_fallback() -> None:
    rng = random.Random(3)
    for _ in range(200):
        top, left, h, w = random_box(7, 11, (0.08, 1.0), (3 / 4, 4 / 3), rng)
        assert top >= 0 and left >= 0 and h > 0 and w > 0 and top + h <= 7 and left + w <= 11
    # a ratio no box of the wanted area can have: the centred fallback, as wide as allowed
    assert random_box(4, 40, (1.0, 1.0), (1.0, 2.0), FixedRandom(*[0.5] * 20)) == (0, 16, 4, 8)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"kind": "imagenet", "crop_size": 224}, "crop_size applies to kind 'caffe', not 'imagenet'"),
    ({"mirror": True}, "mirror applies to kind 'caffe', not 'none'"),
    ({"kind": "caffe", "size": 100}, "size applies to kind 'imagenet', not 'caffe'; for kind "
                                     "'caffe' use mean_value, mean_file, crop_size, mirror"),
    ({"scale": 0.0}, "scale=0.0 must be a positive number"),
    ({"kind": "caffe", "mean_value": (1.0,), "mean_file": "m.binaryproto"},
     "mean_file='m.binaryproto' must be left out when mean_value is given"),
    ({"kind": "imagenet", "size": 256, "resize": 224}, "resize=224 must be an integer >= size"),
    ({"kind": "imagenet", "area": (0.5, 0.1)}, "area=(0.5, 0.1) must be two numbers"),
    ({"kind": "imagenet", "std": (1.0,)}, "std=(1.0,) must be as many positive numbers"),
    ({"kind": "resize"}, "kind='resize' must be one of 'none', 'caffe', 'imagenet'"),
])
def test_config_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        TransformConfig(**kwargs)  # type: ignore[arg-type]


def test_transform_errors_name_the_problem() -> None:
    t = ImageTransform(TransformConfig(kind="caffe", crop_size=5), train=False)
    with pytest.raises(ConfigError, match="a 5x5 crop does not fit in a 4x6 image"):
        t(image(1, 4, 6), None)
    grey = ImageTransform(TransformConfig(kind="imagenet", size=2, resize=2), train=False)
    with pytest.raises(ConfigError, match="mean has 3 values but the images have 1 channel"):
        grey(image(1, 2, 2), None)

"""Streaming feeds: batch i is BatchOrder's, with any worker count and from any start."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from nncompress.data import (
    DatasetError,
    DatasetNotFoundError,
    Splits,
    StreamSplits,
    TransformConfig,
    is_stream_spec,
    load_data,
    open_data,
    open_stream,
)
from nncompress.data._datum import Datum, encode_datum
from nncompress.errors import ConfigError
from nncompress.train.loop import BatchOrder
from tests.test_folder import make_folder
from tests.test_lmdb import png_bytes, write_lmdb

CROP = TransformConfig(kind="caffe", crop_size=3, mirror=True, mean_value=(5.0,), scale=0.5)


def reference_batch(stream_train: object, indices: list[int]) -> torch.Tensor:
    """Slow reference: load each example and scale by 1/256 (no transform)."""
    return torch.stack([stream_train.load(i)[0].float() / 256 for i in indices])  # type: ignore[attr-defined]


def test_train_batches_are_batch_orders_examples(tmp_path: Path) -> None:
    make_folder(tmp_path, classes=("a", "b", "c"), per_class=3)
    stream = open_stream(f"folder:{tmp_path}", seed=7)
    assert stream.num_classes == 3 and stream.input_shape == (3, 4, 5)
    order = BatchOrder(9, 4, seed=7)
    batches = list(stream.train_batches(4, start=0, stop=5))
    assert len(batches) == 5
    for i, (x, y) in enumerate(batches):
        indices = order.indices(i).tolist()
        assert torch.equal(x, reference_batch(stream.train, indices))
        assert y.tolist() == [stream.train.load(j)[1] for j in indices]


def test_train_batches_follow_a_given_order(tmp_path: Path) -> None:
    make_folder(tmp_path, classes=("a", "b"), per_class=3)
    stream = open_stream(f"folder:{tmp_path}", seed=0)
    order = BatchOrder(6, 4, seed=123)
    x, _ = next(stream.train_batches(4, start=2, stop=3, order=order))
    assert torch.equal(x, reference_batch(stream.train, order.indices(2).tolist()))
    with pytest.raises(ConfigError, match="the batch order is for 6 examples in batches of 4, "
                                          r"but '.*' has 6 training examples and the batch size "
                                          "is 2"):
        stream.train_batches(2, start=0, stop=1, order=order)


def test_batches_go_to_the_given_device(tmp_path: Path) -> None:
    make_folder(tmp_path, classes=("a", "b"), per_class=2)
    stream = open_stream(f"folder:{tmp_path}", pin_memory=False)
    (x, y), = stream.eval_batches(4, device=torch.device("cpu"))
    assert x.device.type == "cpu" and torch.equal(x, reference_batch(stream.test, [0, 1, 2, 3]))
    assert y.tolist() == [0, 0, 1, 1]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_batches_are_pinned_and_copied_to_cuda(tmp_path: Path) -> None:
    make_folder(tmp_path, classes=("a", "b"), per_class=2)
    stream = open_stream(f"folder:{tmp_path}", workers=2, seed=1)
    assert stream.pin_memory  # the default when CUDA is present
    order = BatchOrder(4, 4, seed=1)
    x, y = next(stream.train_batches(4, 0, 1, order, device=torch.device("cuda")))
    assert x.is_cuda and y.is_cuda
    assert torch.equal(x.cpu(), reference_batch(stream.train, order.indices(0).tolist()))


def test_test_batches_in_order_all_examples(tmp_path: Path) -> None:
    make_folder(tmp_path, classes=("a", "b"), per_class=3)
    stream = open_stream(f"folder:{tmp_path}")
    batches = list(stream.eval_batches(4))
    assert [len(y) for _, y in batches] == [4, 2]
    x = torch.cat([b[0] for b in batches])
    assert torch.equal(x, reference_batch(stream.test, list(range(6))))
    assert torch.cat([b[1] for b in batches]).tolist() == [0, 0, 0, 1, 1, 1]


def test_two_workers_give_the_batches_of_none(tmp_path: Path) -> None:
    make_folder(tmp_path, classes=("a", "b"), per_class=4, size=(5, 6))
    inline = open_stream(f"folder:{tmp_path}", transform=CROP, seed=3)
    pooled = open_stream(f"folder:{tmp_path}", transform=CROP, seed=3, workers=2)
    expected = list(inline.train_batches(3, start=0, stop=6))
    got = list(pooled.train_batches(3, start=0, stop=6))
    assert len(got) == 6
    for (x0, y0), (x2, y2) in zip(expected, got):
        assert torch.equal(x0, x2) and torch.equal(y0, y2)
    # the random crops and flips really differ between samples
    assert len({tuple(x.flatten().tolist()) for x, _ in expected}) == 6


def test_restart_at_k_gives_the_rest_of_the_sequence(tmp_path: Path) -> None:
    make_folder(tmp_path, classes=("a", "b"), per_class=3, size=(5, 6))
    stream = open_stream(f"folder:{tmp_path}", transform=CROP, seed=1)
    whole = list(stream.train_batches(4, start=0, stop=7))
    rest = list(stream.train_batches(4, start=4, stop=7))
    assert len(rest) == 3
    for (xa, ya), (xb, yb) in zip(whole[4:], rest):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_lmdb_raw_train_encoded_test(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, (5, 3, 2, 2), dtype=np.uint8)
    write_lmdb(tmp_path / "train", [encode_datum(Datum(3, 2, 2, raw[i].tobytes(), label=i % 2))
                                    for i in range(5)])
    rgb = rng.integers(0, 256, (2, 2, 3), dtype=np.uint8)
    write_lmdb(tmp_path / "test", [encode_datum(Datum(data=png_bytes(rgb), label=1, encoded=True))])
    stream = open_stream(f"lmdb:{tmp_path / 'train'},{tmp_path / 'test'}", seed=2)
    assert stream.num_classes == 2 and stream.input_shape == (3, 2, 2)
    x, y = next(stream.train_batches(5, start=0, stop=1))
    indices = BatchOrder(5, 5, seed=2).indices(0)
    assert torch.equal(x, torch.from_numpy(raw)[indices].float() / 256)
    assert y.tolist() == (indices % 2).tolist()
    (tx, ty), = stream.eval_batches(10)
    bgr = torch.from_numpy(rgb[:, :, ::-1].copy()).permute(2, 0, 1)
    assert torch.equal(tx[0], bgr.float() / 256) and ty.tolist() == [1]


def test_lmdb_with_workers_and_one_database_for_both_splits(tmp_path: Path) -> None:
    raw = np.random.default_rng(1).integers(0, 256, (6, 1, 4, 4), dtype=np.uint8)
    write_lmdb(tmp_path / "db", [encode_datum(Datum(1, 4, 4, raw[i].tobytes(), label=i % 3))
                                 for i in range(6)])
    spec = f"lmdb:{tmp_path / 'db'}"
    inline = open_stream(spec, transform=CROP, seed=9)
    pooled = open_stream(spec, transform=CROP, seed=9, workers=2)
    for stream in (inline, pooled):  # twice each: reading again after workers is fine
        for _ in range(2):
            got = list(stream.train_batches(4, start=0, stop=3))
            assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
                       for a, b in zip(got, inline.train_batches(4, start=0, stop=3)))
            assert torch.cat([y for _, y in stream.eval_batches(4)]).tolist() == [0, 1, 2] * 2


def _break(path: str) -> None:
    Path(path).write_bytes(b"\xff\xd8 this is not a JPEG")


def test_unreadable_image_is_named(tmp_path: Path) -> None:
    make_folder(tmp_path, classes=("a", "b"), per_class=2)
    stream = open_stream(f"folder:{tmp_path}")
    bad = stream.train.paths[2]  # type: ignore[attr-defined]
    _break(bad)
    for workers in (0, 2):
        stream.workers = workers
        with pytest.raises(DatasetError, match=f"image '{bad}' cannot be read: not a readable "
                                               r"image .*set skip_bad_images: true"):
            list(stream.train_batches(4, start=0, stop=1))


def test_skip_bad_images_substitutes_the_next_readable_example(tmp_path: Path) -> None:
    make_folder(tmp_path, classes=("a", "b"), per_class=3)
    stream = open_stream(f"folder:{tmp_path}", skip_bad_images=True, seed=5)
    good = {i: stream.train.load(i) for i in range(6)}
    bad = [stream.train.paths[i] for i in (2, 3)]  # type: ignore[attr-defined]
    for path in bad:
        _break(path)
    order = BatchOrder(6, 6, seed=5)
    x, y = next(stream.train_batches(6, start=0, stop=1))
    substitute = {2: 4, 3: 4}  # the next readable example in data set order
    indices = [substitute.get(i, i) for i in order.indices(0).tolist()]
    assert torch.equal(x, torch.stack([good[i][0].float() / 256 for i in indices]))
    assert y.tolist() == [good[i][1] for i in indices]
    assert stream.bad_images == {f"image {p!r}" for p in bad}


def test_skip_bad_images_leaves_bad_test_images_out(tmp_path: Path) -> None:
    make_folder(tmp_path, classes=("a", "b"), per_class=2)
    stream = open_stream(f"folder:{tmp_path}", skip_bad_images=True)
    _break(stream.test.paths[1])  # type: ignore[attr-defined]
    ys = torch.cat([y for _, y in stream.eval_batches(3)]).tolist()
    assert ys == [0, 1, 1] and len(stream.bad_images) == 1


def test_images_of_different_sizes_need_a_transform(tmp_path: Path) -> None:
    make_folder(tmp_path, classes=("a",), per_class=2)
    make_folder(tmp_path, classes=("b",), per_class=2, size=(6, 6))
    stream = open_stream(f"folder:{tmp_path}")
    with pytest.raises(DatasetError, match=r"images of different sizes in one batch: "
                                           r"\(3, 4, 5\), \(3, 6, 6\); give a transform"):
        list(stream.eval_batches(4))
    cropped = open_stream(f"folder:{tmp_path}", transform=TransformConfig(kind="caffe",
                                                                          crop_size=4))
    assert [tuple(x.shape) for x, _ in cropped.eval_batches(4)] == [(4, 3, 4, 4)]


def test_crop_larger_than_the_images_names_the_image(tmp_path: Path) -> None:
    make_folder(tmp_path, classes=("a",), per_class=1)
    with pytest.raises(ConfigError, match=r"image '.*0\.png': transform: a 9x9 crop does not "
                                          r"fit in a 4x5 image"):
        open_stream(f"folder:{tmp_path}", transform=TransformConfig(kind="caffe", crop_size=9))


class _Tensors(torch.utils.data.Dataset[tuple[torch.Tensor, int]]):
    num_classes = 4

    def __init__(self, n: int) -> None:
        self.x = torch.arange(n * 4, dtype=torch.uint8).view(n, 1, 2, 2)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.x[i], i % 4


def make_user_data() -> tuple[_Tensors, _Tensors]:
    return _Tensors(6), _Tensors(2)


def not_datasets() -> int:
    return 3


def unlabelled_data() -> tuple[list[int], list[int]]:
    return [1], [2]


def test_user_callable(tmp_path: Path) -> None:
    assert is_stream_spec("tests.test_data_stream:make_user_data")
    stream = open_stream("tests.test_data_stream:make_user_data", seed=4)
    assert stream.num_classes == 4 and stream.input_shape == (1, 2, 2)
    x, y = next(stream.train_batches(3, start=1, stop=2))
    indices = BatchOrder(6, 3, seed=4).indices(1)
    assert torch.equal(x, _Tensors(6).x[indices].float() / 256)
    assert y.tolist() == (indices % 4).tolist()


@pytest.mark.parametrize(("spec", "error", "message"), [
    ("no_such_module_xyz:make", DatasetNotFoundError, "module 'no_such_module_xyz' cannot be"),
    ("tests.test_data_stream:nothing", DatasetNotFoundError, "has no 'nothing'"),
    ("tests.test_data_stream:not_datasets", DatasetError, "must return (train_dataset, "),
    ("tests.test_data_stream:unlabelled_data", DatasetError, "has no num_classes or classes "
                                                             "attribute; give num_classes"),
    ("lmdb:", ConfigError, "must be 'lmdb:TRAIN' or 'lmdb:TRAIN,TEST'"),
    ("folder:", ConfigError, "folder needs a directory"),
    ("mnist", ConfigError, "'mnist' is not a streaming data spec"),
])
def test_bad_specs(spec: str, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=re.escape(message)):
        open_stream(spec)


def test_validation_holds_out_the_examples_load_data_would(tmp_path: Path) -> None:
    make_folder(tmp_path, classes=("a", "b"), per_class=4)
    whole = open_stream(f"folder:{tmp_path}")
    stream = open_stream(f"folder:{tmp_path}", validation=3, seed=11)
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(11))
    val_idx, train_idx = sorted(perm[:3].tolist()), sorted(perm[3:].tolist())
    (vx, vy), = stream.eval_batches(8, split="val")
    assert torch.equal(vx, reference_batch(whole.train, val_idx))
    assert vy.tolist() == [whole.train.load(i)[1] for i in val_idx]
    assert len(stream.train) == 5
    x, _ = next(stream.train_batches(5, start=0, stop=1))
    expected = [train_idx[i] for i in BatchOrder(5, 5, seed=11).indices(0).tolist()]
    assert torch.equal(x, reference_batch(whole.train, expected))
    with pytest.raises(ConfigError, match=r"validation=8 must be an integer in \[0, 8\)"):
        open_stream(f"folder:{tmp_path}", validation=8)
    with pytest.raises(ConfigError, match="split='val' must be 'test', 'train' or, with a "):
        whole.eval_batches(4, split="val")


def test_open_data_chooses_memory_or_stream(tmp_path: Path) -> None:
    make_folder(tmp_path, classes=("a", "b"), per_class=3)
    streamed = open_data(f"folder:{tmp_path}", scale=0.5, validation=2, seed=1, workers=1)
    assert isinstance(streamed, StreamSplits) and streamed.workers == 1
    assert open_data(f"folder:{tmp_path}", grey=True).input_shape == (1, 4, 5)
    assert streamed.transform.scale == 0.5 and streamed.val is not None and len(streamed.val) == 2
    (x, _), = streamed.eval_batches(6)
    assert torch.equal(x, torch.stack([streamed.test.load(i)[0].float() * 0.5 for i in range(6)]))
    raw = np.zeros((2, 1, 1, 1), dtype=np.uint8)
    write_lmdb(tmp_path / "db", [encode_datum(Datum(1, 1, 1, raw[i].tobytes(), label=i))
                                 for i in range(2)])
    assert open_data(f"lmdb:{tmp_path / 'db'}", num_classes=1000).num_classes == 1000
    assert open_data(f"lmdb:{tmp_path / 'db'}").num_classes == 2
    in_memory = open_data("synthetic:n=16,test=4", validation=4)
    assert isinstance(in_memory, Splits) and in_memory.val_x.shape[0] == 4
    with pytest.raises(ConfigError, match="data 'synthetic' is held in memory: workers"):
        open_data("synthetic", skip_bad_images=True)


def test_bad_options_and_in_memory_loading(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="workers=-1 must be an integer >= 0"):
        open_stream(f"folder:{tmp_path}", workers=-1)
    with pytest.raises(ConfigError, match="is streamed from disk, not held in memory"):
        load_data(f"folder:{tmp_path}")
    assert not is_stream_spec("synthetic:n=10") and "tests" in sys.modules

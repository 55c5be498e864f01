"""The databases a Caffe net's Data layers name (``data_param { source: ... }``), read as they are.

``caffe train`` without ``--data`` reads the TRAIN and TEST Data layers' ``source`` LMDBs when
they exist on disk (a relative path from the working directory, as Caffe opens it, else from the
net's folder); ``--data`` replaces them. Images are read batch by batch (nothing is loaded
up front), in the order the solver's cursor asks for them.
"""

from __future__ import annotations

import typing
from pathlib import Path

import torch

from nncompress.data import StreamSplits, open_stream
from nncompress.data._feed import ImageSource
from nncompress.errors import ConfigError
from nncompress.interop.caffe_spec import LayerSpec, layer_specs, phase_included
from nncompress.interop.prototxt import Message

__all__ = ["SourceBatches", "feed_tensors", "source_data"]


def _source(spec: LayerSpec, base: Path) -> Path | None:
    data = spec.msg.message("data_param")
    text = data.get_str("source") if data is not None else None
    if not text:
        return None
    if data is not None and data.has("backend") and \
            data.get_enum("backend", ("LEVELDB", "LMDB"), "LEVELDB") != "LMDB":
        raise ConfigError(f"{spec.where}: Data layer '{spec.name}' reads a LEVELDB database; "
                          "nncompress reads LMDB only: convert it, or give --data")
    for candidate in (Path(text), base / text):
        if candidate.exists():
            return candidate
    raise ConfigError(f"{spec.where}: Data layer '{spec.name}' reads source {text!r}, which is "
                      f"not on disk (looked from the working directory and from {base}); give "
                      "a data set instead: --data mnist, idx:DIR or synthetic")


def source_data(net: Message, base: Path) -> StreamSplits | None:
    """The net's own LMDBs, or None when it has no TRAIN Data layer with a ``source``.

    Args:
        net: the parsed net prototxt.
        base: the net's folder (a relative source not found from here is looked up there).

    Raises:
        ConfigError: a Data layer reads a LevelDB database, or a source that does not exist.
        FormatError: a source is not a Caffe LMDB.
    """
    specs = [s for s in layer_specs(net) if s.type == "Data"]
    train = next((s for s in specs if phase_included(s, "TRAIN")), None)
    test = next((s for s in specs if phase_included(s, "TEST")), None)
    if train is None:
        return None
    train_path = _source(train, base)
    if train_path is None:
        return None
    test_path = _source(test, base) if test is not None else None
    spec = f"lmdb:{train_path},{test_path or train_path}"
    return open_stream(spec, workers=0, pin_memory=False)


def feed_tensors(splits: StreamSplits, phase: str,
                 device: torch.device | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and labels of a phase (``"TRAIN"``/``"TEST"``) that index like tensors."""
    batches = SourceBatches(splits.train if phase == "TRAIN" else splits.test, device)
    return typing.cast(torch.Tensor, batches.images()), typing.cast(torch.Tensor,
                                                                     batches.labels())


class SourceBatches:
    """Images or labels of a source by index tensor, as an in-memory tensor would give them.

    ``images[index]`` reads the examples (pixel values as float32); ``labels[index]`` gives
    their labels, from the same read when the index is the one just asked for.
    """

    def __init__(self, source: ImageSource, device: torch.device | None = None) -> None:
        self.source, self.device = source, device
        self._last: tuple[tuple[int, ...], torch.Tensor, torch.Tensor] | None = None
        self.shape = (len(source),)

    def _read(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        key = tuple(int(i) for i in index.tolist())
        if self._last is None or self._last[0] != key:
            items = [self.source.load(i) for i in key]
            x = torch.stack([image.to(torch.float32) for image, _ in items])
            y = torch.tensor([label for _, label in items], dtype=torch.int64)
            if self.device is not None:
                x, y = x.to(self.device), y.to(self.device)
            self._last = (key, x, y)
        return self._last[1], self._last[2]

    def images(self) -> _Part:
        """What ``x[index]`` reads."""
        return _Part(self, 0)

    def labels(self) -> _Part:
        """What ``y[index]`` reads."""
        return _Part(self, 1)


class _Part:
    def __init__(self, owner: SourceBatches, which: int) -> None:
        self.owner, self.which, self.shape = owner, which, owner.shape

    def __getitem__(self, index: torch.Tensor) -> torch.Tensor:
        return self.owner._read(index)[self.which]

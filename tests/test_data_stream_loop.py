"""The training loop on streamed data: same steps as in memory, bit-identical resume."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from nncompress.data import StreamSplits, TransformConfig, open_stream
from nncompress.train.config import BiasConfig, LRConfig, OptimizerConfig
from nncompress.train.loop import (
    BatchOrder,
    TrainingLoop,
    TrainState,
    build_optimizer,
    build_schedule,
    evaluate,
)
from tests.test_folder import make_folder

CROP = TransformConfig(kind="caffe", crop_size=3, mirror=True, scale=1 / 256)


class Stop(Exception):
    pass


def _model(inputs: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(inputs, 5), nn.ReLU(), nn.Linear(5, 2))


def _loop(model: nn.Module, n: int, *, stream: StreamSplits | None = None,
          x: torch.Tensor | None = None, y: torch.Tensor | None = None,
          records: list[dict[str, Any]] | None = None, iterations: int = 7,
          after: Any = None) -> TrainingLoop:
    empty = torch.empty(0)
    return TrainingLoop(
        model=model, train_x=x if x is not None else empty,
        train_y=y if y is not None else empty, eval_x=x if x is not None else empty,
        eval_y=y if y is not None else empty,
        optimizer=build_optimizer(model, OptimizerConfig(momentum=0.9, weight_decay=1e-3,
                                                         nesterov=False), BiasConfig()),
        schedule=build_schedule(LRConfig(policy="fixed", base_lr=0.1), iterations),
        order=BatchOrder(n, 3, seed=17), iterations=iterations, eval_interval=3,
        progress="none", on_eval=records.append if records is not None else None,
        after_iteration=after, stream=stream, eval_split="train", eval_batch_size=4)


def test_streamed_training_equals_in_memory_training(tmp_path: Path) -> None:
    make_folder(tmp_path, classes=("a", "b"), per_class=4)
    stream = open_stream(f"folder:{tmp_path}")
    x = torch.stack([stream.train.load(i)[0].float() / 256 for i in range(8)])
    y = torch.tensor([stream.train.load(i)[1] for i in range(8)])
    mem_records: list[dict[str, Any]] = []
    stream_records: list[dict[str, Any]] = []
    mem_model, stream_model = _model(60), _model(60)
    _loop(mem_model, 8, x=x, y=y, records=mem_records).run(TrainState())
    _loop(stream_model, 8, stream=stream, records=stream_records).run(TrainState())
    for a, b in zip(mem_model.parameters(), stream_model.parameters()):
        assert torch.equal(a, b)
    assert [r["iteration"] for r in stream_records] == [3, 6, 7]
    assert [r["accuracy"] for r in stream_records] == [r["accuracy"] for r in mem_records]
    assert [r["eval_loss"] for r in stream_records] == \
        pytest.approx([r["eval_loss"] for r in mem_records], rel=1e-6)


def _train(stream: StreamSplits, stop_at: int | None) -> tuple[nn.Module, list[int]]:
    """Train 7 iterations; with ``stop_at``, stop there and resume with the same optimizer.

    Returns the model and the iterations at which a run started.
    """
    model = _model(27)
    state = TrainState()
    starts = [0]

    def kill() -> None:
        if stop_at is not None and state.iteration == stop_at:
            raise Stop

    loop = _loop(model, 8, stream=stream, after=kill)
    try:
        loop.run(state)
    except Stop:
        starts.append(state.iteration)
        resumed = _loop(model, 8, stream=stream)
        resumed.optimizer = loop.optimizer
        resumed.run(state)
    assert state.iteration == 7
    return model, starts


def test_resume_with_workers_is_bit_identical(tmp_path: Path) -> None:
    make_folder(tmp_path, classes=("a", "b"), per_class=4, size=(4, 4))
    whole, starts = _train(open_stream(f"folder:{tmp_path}", transform=CROP), stop_at=None)
    resumed, resumed_starts = _train(open_stream(f"folder:{tmp_path}", transform=CROP,
                                                 workers=2), stop_at=4)
    assert (starts, resumed_starts) == ([0], [0, 4])
    for a, b in zip(whole.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


def test_evaluate_takes_batches(tmp_path: Path) -> None:
    make_folder(tmp_path, classes=("a", "b"), per_class=3)
    stream = open_stream(f"folder:{tmp_path}")
    x = torch.stack([stream.test.load(i)[0].float() / 256 for i in range(6)])
    y = torch.tensor([stream.test.load(i)[1] for i in range(6)])
    model = _model(60)
    loss, accuracy = evaluate(model, stream.eval_batches(4))
    expected_loss, expected_accuracy = evaluate(model, x, y)
    assert loss == pytest.approx(expected_loss, rel=1e-6) and accuracy == expected_accuracy
    assert all(math.isnan(v) for v in evaluate(model, iter([])))

"""A diverging run stops with the iteration and its last checkpoint; losses read without syncs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from nncompress.errors import NonFiniteError
from nncompress.pipeline import run_recipe
from nncompress.recipe import parse_recipe
from nncompress.train._losses import PendingLosses
from nncompress.train.config import BiasConfig, LRConfig, OptimizerConfig
from nncompress.train.loop import (
    BatchOrder,
    TrainingLoop,
    TrainState,
    build_optimizer,
    build_schedule,
)
from tests.test_pipeline import DATA, tiny_recipe


def test_a_diverging_stage_stops_naming_the_iteration_and_the_last_checkpoint(
        tmp_path: Path) -> None:
    raw = tiny_recipe()
    raw["stages"][1]["lr"] = {"policy": "fixed", "base_lr": 1e12}  # DNS explodes
    with pytest.raises(NonFiniteError) as info:
        run_recipe(parse_recipe(raw), tmp_path / "run", progress="none")
    last = tmp_path / "run" / "checkpoints" / "s00-train-p000-i000000012-end.safetensors"
    assert str(info.value) == (
        "dns: the training loss became nan at iteration 2 (lr 1e+12); lower the learning rate "
        f"(lr.base_lr) or check the data scale; the run stopped, its last checkpoint is {last} "
        "(nncompress eval and export take it)")
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_a_run_that_diverges_at_once_says_it_has_no_checkpoint(tmp_path: Path) -> None:
    raw = tiny_recipe(data={"spec": DATA, "validation": 32, "scale": 1e38})
    with pytest.raises(NonFiniteError, match=r"^train: the training loss became nan at "
                       r"iteration 0 \(lr 0.05\); .*; the run stopped before its first "
                       r"checkpoint$"):
        run_recipe(parse_recipe(raw), tmp_path / "run", progress="none")


def test_pending_losses_add_up_like_reading_each_one() -> None:
    losses = torch.rand(50, generator=torch.Generator().manual_seed(0)) * 3
    expected = 0.25
    for value in losses:
        expected += float(value)
    pending = PendingLosses()
    for i, value in enumerate(losses):
        pending.add(value, 100 + i)
    assert pending.read(0.25, "x", lambda i: 0.1) == expected  # bit for bit
    assert pending.read(7.0, "x", lambda i: 0.1) == 7.0  # nothing left


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_pending_losses_name_the_iteration_of_the_first_bad_loss(bad: float) -> None:
    pending = PendingLosses()
    for i, value in enumerate([0.5, 0.7, bad, 0.1]):
        pending.add(torch.tensor(value), 40 + i)
    with pytest.raises(NonFiniteError) as info:
        pending.read(0.0, "dns", lambda i: 0.001 * i)
    assert str(info.value) == (f"dns: the training loss became {bad} at iteration 42 (lr "
                               "0.042); lower the learning rate (lr.base_lr) or check the data "
                               "scale")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_losses_are_read_at_evaluations_not_each_iteration() -> None:
    model = nn.Linear(6, 2).cuda()
    x = torch.randn(40, 6, device="cuda")
    y = (x[:, 0] > 0).long()
    loop = TrainingLoop(
        model=model, train_x=x, train_y=y, eval_x=x, eval_y=y,
        optimizer=build_optimizer(model, OptimizerConfig(momentum=0.0, weight_decay=0.0,
                                                         nesterov=False), BiasConfig()),
        schedule=build_schedule(LRConfig(policy="fixed", base_lr=0.1), 10),
        order=BatchOrder(40, 8, seed=1), iterations=10, eval_interval=5, progress="none")
    state = TrainState()
    loop._step(state)
    loop._step(state)
    assert state.loss_count == 2 and state.loss_sum == 0.0  # not read yet
    with torch.no_grad():
        model.weight.fill_(math.nan)
    loop._step(state)
    with pytest.raises(NonFiniteError, match=r"became nan at iteration 2 \(lr 0.1\)"):
        loop._read_losses(state)

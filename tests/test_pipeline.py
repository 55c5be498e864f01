"""The training loop, checkpoints and the pipeline on synthetic data with a tiny model."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import nncompress as nnc
from nncompress.errors import ConfigError, FormatError
from nncompress.pipeline import RunInterrupted, run_recipe
from nncompress.recipe import RecipeError, parse_recipe
from nncompress.run_folder import load_run_model
from nncompress.train.checkpoint import load_checkpoint, restore_optimizer, save_checkpoint
from nncompress.train.config import BiasConfig, LRConfig, OptimizerConfig
from nncompress.train.loop import (
    BatchOrder,
    TrainingLoop,
    TrainState,
    build_optimizer,
    build_schedule,
)

DATA = "synthetic:n=192,test=64,size=8"


def tiny_recipe(**changes: Any) -> dict[str, Any]:
    """Reference -> DNS -> INQ -> finalize on an 8x8 synthetic set; each interval is odd so
    checkpoints, evaluations and INQ steps fall at different iterations."""
    train = {"batch_size": 16, "eval_interval": 5, "checkpoint_interval": 4}
    raw: dict[str, Any] = {
        "version": 1, "name": "tiny", "model": {"ref": "tiny_mlp",
                                                "kwargs": {"input_size": 8, "hidden": 12}},
        "data": {"spec": DATA, "validation": 32}, "seed": 3,
        "stages": [
            {"stage": "train", "iterations": 12, "lr": {"base_lr": 0.05}, **train},
            {"stage": "dns", "iterations": 11, "defaults": {"gamma": 0.01, "c_rate": 0.3},
             "layers": {"fc2": {"c_rate": 0.1}}, **train},
            {"stage": "inq", "portions": [0.5, 0.8, 1.0], "iterations_per_step": [6, 5, 0],
             "optimizer": {"name": "adam"}, "lr": {"policy": "fixed", "base_lr": 0.001},
             "defaults": {"num_quantum_values": 4}, **train},
            {"stage": "finalize"},
        ],
    }
    raw.update(changes)
    return raw


def _train_loop(model: nn.Module, lr: LRConfig, iterations: int,
                optimizer: torch.optim.Optimizer | None = None) -> TrainingLoop:
    x = torch.randn(40, 6, generator=torch.Generator().manual_seed(0))
    y = (x[:, 0] > 0).long()
    return TrainingLoop(
        model=model, train_x=x, train_y=y, eval_x=x, eval_y=y,
        optimizer=optimizer or build_optimizer(model, OptimizerConfig(
            momentum=0.9, weight_decay=0.0, nesterov=False), BiasConfig()),
        schedule=build_schedule(lr, iterations), order=BatchOrder(40, 8, seed=1),
        iterations=iterations, progress="none")


def test_batch_order_covers_every_example_once_per_epoch_across_batches() -> None:
    order = BatchOrder(10, 3, seed=5)
    stream = torch.cat([order.indices(i) for i in range(10)])  # 30 = three epochs
    for epoch in range(3):
        assert sorted(stream[10 * epoch:10 * (epoch + 1)].tolist()) == list(range(10))
        assert torch.equal(stream[10 * epoch:10 * (epoch + 1)], order.permutation(epoch))
    assert not torch.equal(order.permutation(0), order.permutation(1))
    assert torch.equal(BatchOrder(10, 3, seed=5).indices(7), order.indices(7))


def test_optimizer_groups_carry_the_bias_multipliers() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2, bias=False))
    opt = build_optimizer(model, OptimizerConfig(name="sgd", momentum=0.5, weight_decay=0.01,
                                               nesterov=True), BiasConfig(lr_mult=2, decay_mult=0))
    weights, biases = opt.param_groups
    assert [p.shape for p in weights["params"]] == [torch.Size([4, 3]), torch.Size([2, 4])]
    assert [p.shape for p in biases["params"]] == [torch.Size([4])]
    assert (weights["weight_decay"], biases["weight_decay"]) == (0.01, 0.0)
    assert (weights["lr_mult"], biases["lr_mult"]) == (1.0, 2.0)
    assert weights["nesterov"] and weights["momentum"] == 0.5


def test_lr_each_iteration_follows_inv_with_warm_up_and_bias_mult() -> None:
    seen: list[tuple[float, float]] = []
    model = nn.Linear(6, 2)
    lr = LRConfig(policy="inv", base_lr=0.1, gamma=0.01, power=0.75, rampup_interval=4,
                rampup_lr=0.001, min_lr=0.05)
    loop = _train_loop(model, lr, 8)
    opt = loop.optimizer
    original = opt.step

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append((opt.param_groups[0]["lr"], opt.param_groups[1]["lr"]))
        return original(*args, **kwargs)

    opt.step = spy  # type: ignore[method-assign]
    loop.run(TrainState())
    for it, (weight_lr, bias_lr) in enumerate(seen):
        expected = 0.1 * (1 + 0.01 * it) ** -0.75  # Caffe "inv"
        if it < 4:  # the seed's warm-up: a straight line from rampup_lr
            expected = min(expected, 0.001 + (expected - 0.001) * it / 4)
        expected = max(expected, 0.05)
        assert weight_lr == pytest.approx(expected, rel=1e-12)
        assert bias_lr == pytest.approx(2 * expected, rel=1e-12)
    assert len(seen) == 8 and seen[0][0] == 0.05 and seen[5][0] > 0.09


@pytest.mark.parametrize(("policy", "extra", "formula"), [
    ("step", {"gamma": 0.5, "stepsize": 3}, lambda i: 0.2 * 0.5 ** (i // 3)),
    ("multistep", {"gamma": 0.1, "stepvalues": (2, 5)},
     lambda i: 0.2 * 0.1 ** ((i >= 2) + (i >= 5))),
    ("exp", {"gamma": 0.9}, lambda i: 0.2 * 0.9 ** i),
    ("poly", {"power": 2.0}, lambda i: 0.2 * (1 - i / 7) ** 2),
    ("fixed", {}, lambda i: 0.2),
])
def test_lr_policies_against_hand_formulas(policy: str, extra: dict[str, Any],
                                           formula: Any) -> None:
    schedule = build_schedule(LRConfig(policy=policy, base_lr=0.2, **extra), 7)  # type: ignore[arg-type]
    for it in range(7):
        assert schedule.lr_at(it) == pytest.approx(formula(it), rel=1e-12)


def test_nan_loss_is_a_user_error() -> None:
    model = nn.Linear(6, 2)
    with torch.no_grad():
        model.weight.fill_(math.nan)
    with pytest.raises(nnc.NonFiniteError, match=r"^train: the training loss became nan at "
                       r"iteration 0 \(lr 0.01\); lower the learning rate"):
        _train_loop(model, LRConfig(policy="fixed"), 3).run(TrainState())


def test_checkpoint_round_trip_restores_model_optimizer_and_rng(tmp_path: Path) -> None:
    model = nn.Linear(6, 2)
    loop = _train_loop(model, LRConfig(policy="fixed", base_lr=0.1), 3)
    loop.run(TrainState())
    save_checkpoint(tmp_path / "c.safetensors", model=model, optimizer=loop.optimizer,
                    metadata={"position": [1, 2]})
    expected_next = torch.rand(3)
    copy = nn.Linear(6, 2)
    fresh = build_optimizer(copy, OptimizerConfig(momentum=0.9, weight_decay=0.0,
                                                nesterov=False), BiasConfig())
    checkpoint = load_checkpoint(tmp_path / "c.safetensors")
    copy.load_state_dict(checkpoint.model_state)
    restore_optimizer(fresh, checkpoint)
    torch.set_rng_state(checkpoint.rng_state["torch"])
    assert torch.equal(torch.rand(3), expected_next)
    assert checkpoint.metadata["position"] == [1, 2]
    for a, b in zip(loop.optimizer.state.values(), fresh.state.values()):
        assert torch.equal(a["momentum_buffer"], b["momentum_buffer"])
    assert torch.equal(copy.weight, model.weight)


def test_damaged_checkpoint_is_a_format_error(tmp_path: Path) -> None:
    file = tmp_path / "c.safetensors"
    save_checkpoint(file, model=nn.Linear(2, 2), optimizer=None, metadata={})
    file.write_bytes(file.read_bytes()[:40])
    with pytest.raises(FormatError, match="not a readable checkpoint"):
        load_checkpoint(file)


def test_run_writes_the_folder_and_a_consistent_report(tmp_path: Path) -> None:
    result = run_recipe(parse_recipe(tiny_recipe()), tmp_path / "run", progress="none")
    out = tmp_path / "run"
    assert sorted(p.name for p in out.iterdir()) == [
        "checkpoints", "metrics.jsonl", "model.safetensors", "recipe.yaml", "report.json"]
    report = json.loads((out / "report.json").read_text())
    assert report == result.report and report["version"] == 1
    layers = dict(result.model.named_children())
    for row in report["layers"]:
        layer = layers[row["name"]]
        values = torch.cat([layer.weight.flatten(), layer.bias.flatten()])
        assert row["entries"] == values.numel() and row["kept"] == int((values != 0).sum())
        mantissa, exponent = torch.frexp(values[values != 0].abs())
        assert bool((mantissa == 0.5).all())  # every kept value is +-2^k
        used = int(exponent.max() - exponent.min()) + 1
        assert used <= 4  # K = 4
        assert row["bits"] == 2 + math.ceil(math.log2(used)) and row["fixed_fraction"] == 1.0
    totals = report["totals"]
    assert totals["kept"] == sum(r["kept"] for r in report["layers"]) < totals["entries"]
    assert report["test"]["error"] == pytest.approx(1 - report["test"]["accuracy"])
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    # evaluations: reference at 5, 10, 12; dns at 5, 10, 11; inq steps at 5, 6 / 5 / 0
    assert [(r["stage"], r["step"], r["iteration"]) for r in rows] == [
        ("train", 0, 5), ("train", 0, 10), ("train", 0, 12), ("dns", 0, 5), ("dns", 0, 10),
        ("dns", 0, 11), ("inq", 0, 5), ("inq", 0, 6), ("inq", 1, 5), ("inq", 2, 0)]
    assert rows[0]["kept_fraction"] == 1.0 and rows[5]["kept_fraction"] < 1.0
    assert all(r["split"] == "val" for r in rows)


def _newest_position(out: Path) -> tuple[int, int, int, bool]:
    newest = sorted((out / "checkpoints").glob("*.safetensors"))[-1]
    pos = load_checkpoint(newest).metadata["position"]
    return pos["stage"], pos["step"], pos["iteration"], pos["done"]


def test_resume_after_kills_reaches_the_same_weights_bit_for_bit(tmp_path: Path) -> None:
    recipe = parse_recipe(tiny_recipe())
    straight = run_recipe(recipe, tmp_path / "a", progress="none")
    out, resumed_from = tmp_path / "b", []
    for stop in [7, 9, 6, 10, 5, 5]:
        with pytest.raises(RunInterrupted):
            run_recipe(recipe, out, progress="none", resume=True, stop_after=stop)
        resumed_from.append(_newest_position(out))
    resumed = run_recipe(recipe, out, progress="none", resume=True).model
    # mid reference, reference end, mid DNS, DNS end, mid INQ step 0, INQ step 0 end
    assert resumed_from == [(0, 0, 4, False), (0, 0, 12, True), (1, 0, 4, False),
                            (1, 0, 11, True), (2, 0, 4, False), (2, 0, 6, False)]
    a, b = straight.model.state_dict(), resumed.state_dict()
    assert list(a) == list(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    first = (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()
    second = (out / "metrics.jsonl").read_text().splitlines()
    strip = [{k: v for k, v in json.loads(r).items() if k != "elapsed_s"} for r in first]
    assert strip == [{k: v for k, v in json.loads(r).items() if k != "elapsed_s"}
                     for r in second]


def test_checkpoint_of_an_unfinished_run_loads_for_eval(tmp_path: Path) -> None:
    recipe = parse_recipe(tiny_recipe())
    with pytest.raises(RunInterrupted):
        run_recipe(recipe, tmp_path / "r", progress="none", stop_after=18)  # in DNS, iter 6
    model, loaded = load_run_model(tmp_path / "r")
    assert loaded == recipe
    assert [n for n, _ in nnc.compressed_layers(model)] == ["fc1", "fc2"]
    checkpoint = load_checkpoint(sorted((tmp_path / "r" / "checkpoints").iterdir())[-1])
    assert checkpoint.metadata["position"] == {"stage": 1, "step": 0, "iteration": 4,
                                               "done": False}
    assert torch.equal(model.state_dict()["fc1.weight_mask"],
                       checkpoint.model_state["fc1.weight_mask"])


def test_nothing_is_written_when_a_stage_does_not_fit_the_model(tmp_path: Path) -> None:
    raw = tiny_recipe()
    raw["stages"][1]["layers"] = {"fc3": {"c_rate": 1}}
    with pytest.raises(RecipeError, match=r"^stages\[1\]: "):
        run_recipe(parse_recipe(raw), tmp_path / "run", progress="none")
    assert not (tmp_path / "run").exists()


def test_existing_run_needs_resume_and_the_same_recipe(tmp_path: Path) -> None:
    recipe = parse_recipe(tiny_recipe(stages=[{"stage": "train", "iterations": 2}]))
    run_recipe(recipe, tmp_path, progress="none")
    with pytest.raises(ConfigError) as info:
        run_recipe(recipe, tmp_path, progress="none")
    assert str(info.value) == (f"output folder {str(tmp_path)!r} is not empty (use --resume to "
                               "continue it); or choose another --out")
    other = parse_recipe(tiny_recipe(stages=[{"stage": "train", "iterations": 3}]))
    with pytest.raises(ConfigError) as info:
        run_recipe(other, tmp_path, progress="none", resume=True)
    assert str(info.value) == (f"{tmp_path}: the run was started with a different recipe "
                               "(first difference at stages[0].iterations); resume with the "
                               "same recipe and --set values, or start a new run with another "
                               "--out")
    again = run_recipe(recipe, tmp_path, progress="none", resume=True)  # finished: same report
    assert again.report == json.loads((tmp_path / "report.json").read_text())


def test_a_run_folder_of_an_older_recipe_schema_resumes(tmp_path: Path) -> None:
    import yaml

    recipe = parse_recipe(tiny_recipe(stages=[{"stage": "train", "iterations": 2}]))
    run_recipe(recipe, tmp_path, progress="none")
    saved = yaml.safe_load((tmp_path / "recipe.yaml").read_text())
    for key in ("workers", "transform", "skip_bad_images", "grey"):  # fields added later
        del saved["data"][key]
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(saved))
    again = run_recipe(recipe, tmp_path, progress="none", resume=True)
    assert again.report == json.loads((tmp_path / "report.json").read_text())


def test_recipe_verify_ranks_compares_the_ranks_at_every_evaluation_too(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import nncompress.pipeline as pipeline

    places: list[str] = []
    monkeypatch.setattr(pipeline, "verify_ranks", lambda model, where="": places.append(where))
    stages = [{"stage": "train", "iterations": 8, "eval_interval": 4, "checkpoint_interval": 8}]
    run_recipe(parse_recipe(tiny_recipe(stages=stages)), tmp_path / "a", progress="none")
    at_checkpoints = len(places)
    places.clear()
    run_recipe(parse_recipe(tiny_recipe(stages=stages, verify_ranks=True)), tmp_path / "b",
               progress="none")
    assert at_checkpoints >= 1
    assert len(places) == at_checkpoints + 2  # and at the evaluations of iterations 4 and 8
    assert sum("at iteration" in p for p in places) == 2


def test_initial_weights_from_a_previous_run(tmp_path: Path) -> None:
    first = run_recipe(parse_recipe(tiny_recipe(stages=[{"stage": "train", "iterations": 3}])),
                       tmp_path / "a", progress="none")
    raw = tiny_recipe(stages=[{"stage": "train", "iterations": 0}])
    raw["model"]["weights"] = str(tmp_path / "a" / "model.safetensors")
    second = run_recipe(parse_recipe(raw), tmp_path / "b", progress="none")
    assert torch.equal(first.model.fc1.weight, second.model.fc1.weight)

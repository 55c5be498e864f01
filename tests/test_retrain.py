"""Fixed-mask retraining: ``freeze_masks`` and the recipe's ``retrain`` stage."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from torch import nn

import nncompress as nnc
from nncompress.cli import main
from nncompress.errors import ConfigError
from nncompress.layers import CompressedLinear
from nncompress.pipeline import RunInterrupted, run_recipe
from nncompress.recipe import (
    RecipeError,
    RetrainStage,
    TrainStage,
    parse_recipe,
    resolve_epochs,
)
from nncompress.train.checkpoint import load_checkpoint

DATA = "synthetic:n=192,test=64,size=8"
_EVERY = {"batch_size": 16, "eval_interval": 5, "checkpoint_interval": 4}


def tiny_recipe(*middle: dict[str, Any]) -> dict[str, Any]:
    """Reference -> DNS -> ``middle`` -> finalize on an 8x8 synthetic set."""
    return {
        "version": 1, "name": "tiny", "seed": 3,
        "model": {"ref": "tiny_mlp", "kwargs": {"input_size": 8, "hidden": 12}},
        "data": {"spec": DATA, "validation": 32},
        "stages": [
            {"stage": "train", "iterations": 12, "lr": {"base_lr": 0.05}, **_EVERY},
            {"stage": "dns", "iterations": 11, "defaults": {"gamma": 0.01, "c_rate": 0.3},
             **_EVERY},
            *middle,
            {"stage": "finalize"},
        ],
    }


RETRAIN = {"stage": "retrain", "iterations": 10, "lr": {"policy": "fixed", "base_lr": 0.05},
           **_EVERY}
INQ = {"stage": "inq", "portions": {"step": 0.5}, "iterations_per_step": 3,
       "lr": {"policy": "fixed", "base_lr": 0.001}, **_EVERY}


def _stage_end(out: Path, index: int) -> dict[str, torch.Tensor]:
    (path,) = (out / "checkpoints").glob(f"s{index:02d}-*-end.safetensors")
    return load_checkpoint(path).model_state


def _kept(state: dict[str, torch.Tensor]) -> dict[str, int]:
    return {k: int(v.sum()) for k, v in state.items() if k.endswith("_mask")}


def test_freeze_masks_keeps_every_mask_and_trains_the_kept_weights() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 10), nn.ReLU(), nn.Linear(10, 3))
    config = nnc.DNSConfig(c_rate=0.5, gamma=0.0, seed=4)
    nnc.prepare(net, config)
    x, y = torch.randn(32, 6), torch.randint(0, 3, (32,))
    net(x)  # a training-mode forward: statistics and one surgery
    masks = {k: v.clone() for k, v in net.state_dict().items() if k.endswith("_mask")}
    assert 0 < sum(int(m.sum()) for m in masks.values()) < 6 * 10 + 10 + 10 * 3 + 3
    before = {k: v.clone() for k, v in net.state_dict().items() if k.endswith(("weight", "bias"))}
    assert nnc.freeze_masks(net) is net
    first = net[0]
    assert isinstance(first, CompressedLinear)
    assert first.dns_config == nnc.DNSConfig(c_rate=0.5, gamma=0.0, seed=4, iter_stop=-1)
    assert int(first.dns_iteration) == 0  # a new stage, masks kept
    optimizer = torch.optim.SGD(net.parameters(), lr=0.5, momentum=0.9, weight_decay=1e-3)
    for _ in range(5):
        optimizer.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        optimizer.step()
    state = net.state_dict()
    for key, mask in masks.items():
        assert torch.equal(state[key], mask), key
        weight = key.removesuffix("_mask")
        changed = state[weight][mask] != before[weight][mask]
        assert bool(changed.all()), weight  # every kept entry trained (decay at least)
    plain = nnc.finalize(net)
    for key, mask in masks.items():
        assert int((plain.state_dict()[key.removesuffix("_mask")] != 0).sum()) == int(mask.sum())


@pytest.mark.parametrize(("model", "message"), [
    (nn.Linear(3, 2), "fixed-mask retraining needs a model pruned by DNS, but no layer is under "
     "DNS; retrain after a dns stage (prepare(model, DNSConfig(...)) and train), before INQ "
     "and finalize"),
    (nnc.prepare(nn.Linear(3, 2), nnc.INQConfig()), "fixed-mask retraining needs a model pruned "
     "by DNS, but its layers are under INQ, which baked the masks in; retrain after a dns stage "
     "(prepare(model, DNSConfig(...)) and train), before INQ and finalize"),
])
def test_freeze_masks_needs_layers_under_dns(model: nn.Module, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        nnc.freeze_masks(model)
    assert str(info.value) == message


def test_retrain_stage_keeps_kept_counts_and_changes_kept_values(tmp_path: Path) -> None:
    recipe = parse_recipe(tiny_recipe(RETRAIN, INQ))
    stage = recipe.stages[2]
    assert isinstance(stage, RetrainStage) and isinstance(stage, TrainStage)
    assert stage.iterations == 10 and stage.lr.base_lr == 0.05
    result = run_recipe(recipe, tmp_path / "run", progress="none")
    pruned, retrained = _stage_end(tmp_path / "run", 1), _stage_end(tmp_path / "run", 2)
    assert _kept(pruned) == _kept(retrained)
    assert 0 < sum(_kept(pruned).values()) < sum(v.numel() for k, v in pruned.items()
                                                  if k.endswith("_mask"))
    for key in _kept(pruned):
        assert torch.equal(pruned[key], retrained[key]), key
        weight, mask = key.removesuffix("_mask"), pruned[key]
        if int(mask.sum()):  # (a blob may be pruned whole)
            assert not torch.equal(pruned[weight][mask], retrained[weight][mask]), weight
        assert int(retrained[key.replace("weight_mask", "dns_iteration").replace(
            "bias_mask", "dns_iteration")]) == 10  # counted from 0 in the new stage
    # INQ after it fixes the pruned entries at 0: the final model keeps exactly those entries.
    final = result.model.state_dict()
    for key, count in _kept(pruned).items():
        assert int((final[key.removesuffix("_mask")] != 0).sum()) <= count
    rows = [json.loads(r) for r in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    retrain_rows = [r for r in rows if r["stage"] == "retrain"]
    assert [r["iteration"] for r in retrain_rows] == [5, 10]
    ends = {("dns", 11), ("retrain", 5), ("retrain", 10)}
    assert len({r["kept_fraction"] for r in rows if (r["stage"], r["iteration"]) in ends}) == 1
    # portions {step: 0.5} with 3 iterations per step: 0.5 trains 3, the step to 1.0 trains 0
    assert [(r["step"], r["iteration"]) for r in rows if r["stage"] == "inq"] == [(0, 3), (1, 0)]
    for key in _kept(pruned):
        values = final[key.removesuffix("_mask")]
        mantissa, _ = torch.frexp(values[values != 0].abs())
        assert bool((mantissa == 0.5).all()), key  # every kept value a power of two


def test_resume_inside_a_retrain_stage_is_bit_identical(tmp_path: Path) -> None:
    recipe = parse_recipe(tiny_recipe(RETRAIN))
    straight = run_recipe(recipe, tmp_path / "a", progress="none")
    out, positions = tmp_path / "b", []
    for stop in (12 + 11 + 6, 5):  # retrain iteration 6, then 9 (of 10)
        with pytest.raises(RunInterrupted):
            run_recipe(recipe, out, progress="none", resume=True, stop_after=stop)
        newest = sorted((out / "checkpoints").glob("*.safetensors"))[-1]
        positions.append(load_checkpoint(newest).metadata["position"])
    assert [(p["stage"], p["iteration"], p["done"]) for p in positions] == \
        [(2, 4, False), (2, 8, False)]
    resumed = run_recipe(recipe, out, progress="none", resume=True)
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert list(a) == list(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    strip = [{k: v for k, v in json.loads(r).items() if k != "elapsed_s"}
             for r in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert strip == [{k: v for k, v in json.loads(r).items() if k != "elapsed_s"}
                     for r in (out / "metrics.jsonl").read_text().splitlines()]


_AFTER = "; put it after a dns or vd stage and before inq and finalize (or make it a train stage)"


@pytest.mark.parametrize(("stages", "message"), [
    ([{"stage": "train", "iterations": 3}, {"stage": "retrain", "iterations": 3}],
     "r.yaml: stages[1].stage: a retrain stage trains with the DNS masks frozen, but no dns "
     "or vd stage comes before it" + _AFTER),
    ([{"stage": "dns", "iterations": 3}, {"stage": "inq", "iterations_per_step": 1},
      {"stage": "retrain", "iterations": 3}],
     "r.yaml: stages[2].stage: a retrain stage trains with the DNS masks frozen, but it follows "
     "inq stage 'inq', which baked the masks in" + _AFTER),
    ([{"stage": "dns", "iterations": 3}, {"stage": "finalize", "name": "bake"},
      {"stage": "retrain", "iterations": 3}],
     "r.yaml: stages[2].stage: a retrain stage trains with the DNS masks frozen, but it follows "
     "finalize stage 'bake', which baked the masks in" + _AFTER),
    ([{"stage": "dns", "iterations": 3}, {"stage": "retrain"}],
     "r.yaml: stages[1].iterations: required key missing"),
    ([{"stage": "dns", "iterations": 3}, {"stage": "retrain", "iterations": 3,
                                          "defaults": {"c_rate": 1}}],
     "r.yaml: stages[1].defaults: unknown key"),
])
def test_retrain_stage_errors(stages: list[dict[str, Any]], message: str) -> None:
    raw = {"version": 1, "model": "tiny_mlp", "data": "synthetic", "stages": stages}
    with pytest.raises(RecipeError) as info:
        parse_recipe(raw, source="r.yaml")
    assert str(info.value).startswith(message)


def test_retrain_may_follow_dns_through_train_export_and_retrain() -> None:
    raw = {"version": 1, "model": "tiny_mlp", "data": "synthetic", "stages": [
        {"stage": "dns", "iterations": 3}, {"stage": "train", "iterations": 2},
        {"stage": "export"}, {"stage": "retrain", "iterations": 3},
        {"stage": "retrain", "epochs": 1, "batch_size": 50}]}
    recipe = parse_recipe(raw)
    assert [s.stage for s in recipe.stages][3:] == ["retrain", "retrain"]
    assert [s.name for s in recipe.stages][3:] == ["retrain", "retrain_2"]
    resolved = resolve_epochs(recipe, 200).stages[4]
    assert isinstance(resolved, RetrainStage) and resolved.iterations == 4  # ceil(200 / 50)


def test_validate_accepts_retrain_and_fine_portions_together(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = tmp_path / "r.yaml"
    file.write_text(yaml.safe_dump(tiny_recipe(RETRAIN, INQ)))
    assert main(["validate", str(file)]) == 0
    assert capsys.readouterr().out == (
        f"{file}: valid recipe 'tiny', 5 stages: train (12 iterations), dns (11 iterations), "
        "retrain (10 iterations), inq (3 iterations), finalize\n")
    bad = tmp_path / "bad.yaml"
    raw = tiny_recipe(RETRAIN)
    raw["stages"] = [raw["stages"][0], *raw["stages"][2:]]  # no dns stage
    bad.write_text(yaml.safe_dump(raw))
    assert main(["validate", str(bad)]) == 1
    assert capsys.readouterr().err == (
        f"nncompress: error: {bad}: stages[1].stage: a retrain stage trains with the DNS masks "
        "frozen, but no dns or vd stage comes before it" + _AFTER + "\n")

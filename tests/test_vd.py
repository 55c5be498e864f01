"""Sparse variational dropout: the math, the layers, the API and the recipe's ``vd`` stage."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import nncompress as nnc
from nncompress.errors import ConfigError
from nncompress.layers import CompressedConv2d, CompressedLinear
from nncompress.pipeline import RunInterrupted, run_recipe
from nncompress.recipe import RecipeError, VDStage, parse_recipe
from nncompress.train.checkpoint import load_checkpoint
from nncompress.vd import KL_CONSTANTS, kl_approximation, kl_factor, log_alpha

# -- the math ---------------------------------------------------------------------------------


def test_log_alpha_is_log_of_variance_over_squared_weight_clipped_to_ten() -> None:
    weight = torch.tensor([1.0, 0.5, -2.0, 1e-6, 100.0])
    log_sigma2 = torch.tensor([0.0, math.log(0.25), math.log(0.04), 0.0, -30.0])
    got = log_alpha(weight, log_sigma2)
    want = [0.0, math.log(0.25 / 0.25), math.log(0.04 / 4.0), 10.0, -10.0]
    assert got.tolist() == pytest.approx(want, abs=1e-5)


def test_kl_approximation_at_hand_computed_points() -> None:
    k1, k2, k3 = KL_CONSTANTS
    # log alpha = 0: sigmoid(k2) and log(1 + 1/alpha) = log 2
    at_zero = -(k1 / (1 + math.exp(-k2)) - 0.5 * math.log(2.0) - k1)
    got = kl_approximation(torch.tensor([0.0, 10.0, -10.0]))
    assert float(got[0]) == pytest.approx(at_zero, abs=1e-6)
    assert float(got[1]) == pytest.approx(0.5 * math.log1p(math.exp(-10.0)), abs=1e-6)
    at_minus_ten = -(k1 / (1 + math.exp(-(k2 - 10 * k3))) - 0.5 * math.log1p(math.exp(10.0))
                     - k1)
    assert float(got[2]) == pytest.approx(at_minus_ten, rel=1e-6)
    assert float(got[2]) > float(got[0]) > float(got[1]) > 0  # precise weights cost more


def test_kl_approximation_follows_a_monte_carlo_kl_up_to_its_constant() -> None:
    # -KL(q || log-uniform) = 0.5 log alpha - E log|1 + sqrt(alpha) eps| + C (eps ~ N(0, 1)):
    # estimated by sampling, it differs from the approximation by the same C at every alpha.
    generator = torch.Generator().manual_seed(0)
    eps = torch.randn(2_000_000, generator=generator, dtype=torch.float64)
    offsets = []
    for value in (-4.0, -2.0, 0.0, 2.0, 4.0):
        sampled = 0.5 * value - torch.log(torch.abs(1 + math.exp(value / 2) * eps)).mean()
        approx = -float(kl_approximation(torch.tensor([value], dtype=torch.float64))[0])
        offsets.append(float(sampled) - approx)
    spread = max(offsets) - min(offsets)
    assert spread < 0.03, offsets
    assert sum(offsets) / len(offsets) == pytest.approx(KL_CONSTANTS[0], abs=0.03)


def test_kl_factor_ramps_linearly_then_stays() -> None:
    config = nnc.VDConfig(kl_ramp=4, kl_weight=2.0)
    assert [float(kl_factor(i, config)) for i in range(7)] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.0, 2.0]
    assert float(kl_factor(torch.tensor(3), nnc.VDConfig(kl_weight=0.5))) == 0.5


@pytest.mark.parametrize(("field", "value"), [
    ("threshold", 10.0), ("threshold", float("nan")), ("kl_weight", -1.0), ("kl_ramp", -1),
    ("kl_ramp", 2.5), ("kl_ramp", True), ("init_log_sigma2", 1.0), ("thresold", 3.0),
])
def test_vd_config_rejects_bad_values_naming_the_field(field: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=field):
        nnc.VDConfig(**{field: value})


# -- the layers -------------------------------------------------------------------------------


def _linear(weight: list[list[float]], log_sigma2: list[list[float]],
            bias: list[float]) -> CompressedLinear:
    layer = nn.Linear(len(weight[0]), len(weight))
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight))
        layer.bias.copy_(torch.tensor(bias))
    prepared = nnc.prepare(layer, nnc.VDConfig())
    assert isinstance(prepared, CompressedLinear)
    with torch.no_grad():
        prepared.weight_log_sigma2.copy_(torch.tensor(log_sigma2))
    return prepared


def _draw(layer: nn.Module, x: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A training forward, and the standard normal draws it used for its noise."""
    torch.manual_seed(seed)
    got = layer(x)
    torch.manual_seed(seed)
    return got, torch.randn(got.shape)


def test_training_forward_samples_the_output_gaussian_by_hand() -> None:
    layer = _linear([[1.0, 2.0], [0.5, -1.0]], [[math.log(0.25), 0.0], [-30.0, math.log(4.0)]],
                    [0.5, -0.5])
    x = torch.tensor([[1.0, 2.0]])
    got, eps = _draw(layer, x, seed=7)
    # means 1 + 4 + 0.5 and 0.5 - 2 - 0.5; variances 1*0.25 + 4*1 and ~0 + 4*4
    want = torch.tensor([[5.5, -2.0]]) + torch.sqrt(torch.tensor([[4.25, 16.0]]) + 1e-8) * eps
    assert torch.allclose(got, want, atol=1e-6)
    assert int(layer.vd_iteration) == 1


def test_output_mean_and_variance_over_many_draws() -> None:
    torch.manual_seed(0)
    layer = _linear([[0.3, -0.7, 1.1]], [[-1.0, -2.0, -0.5]], [0.2])
    x = torch.tensor([[1.0, -2.0, 0.5]]).expand(40_000, 3)
    out = layer(x).detach()
    mean = 0.3 - 0.7 * -2 + 1.1 * 0.5 + 0.2
    variance = math.exp(-1.0) + 4 * math.exp(-2.0) + 0.25 * math.exp(-0.5)
    assert float(out.mean()) == pytest.approx(mean, abs=0.02)
    assert float(out.var()) == pytest.approx(variance, rel=0.03)


def test_evaluation_forward_drops_the_weights_at_or_above_the_threshold() -> None:
    # log alpha: 0 (kept), log(1 / 0.01^2) = 9.2 (dropped), log(e^3 / 1) = 3 (dropped: >= 3)
    layer = _linear([[1.0, 0.01, 1.0]], [[0.0, 0.0, 3.0]], [0.0])
    layer.eval()
    x = torch.tensor([[2.0, 100.0, 5.0]])
    assert float(layer(x).detach()[0, 0]) == pytest.approx(2.0)
    assert layer.vd_mask().tolist() == [[True, False, False]]
    assert int(layer.vd_iteration) == 0  # evaluation does not advance the KL clock


def test_convolution_matches_a_reference_in_both_modes() -> None:
    torch.manual_seed(1)
    conv = nn.Conv2d(2, 3, 3, padding=1)
    plain = copy.deepcopy(conv)
    layer = nnc.prepare(conv, nnc.VDConfig(init_log_sigma2=-3.0))
    assert isinstance(layer, CompressedConv2d)
    with torch.no_grad():
        layer.weight_log_sigma2.copy_(torch.randn(3, 2, 3, 3) * 2 - 2)
    x = torch.randn(4, 2, 6, 6)
    torch.manual_seed(5)
    got = layer(x)
    torch.manual_seed(5)
    mean = F.conv2d(x, plain.weight, plain.bias, padding=1)
    variance = F.conv2d(x * x, torch.exp(layer.weight_log_sigma2.detach()), padding=1)
    assert torch.allclose(got, mean + torch.sqrt(variance + 1e-8) * torch.randn_like(mean),
                          atol=1e-5)
    layer.eval()
    keep = (layer.weight_log_sigma2 - torch.log(plain.weight ** 2 + 1e-8) < 3).float()
    assert 0 < int(keep.sum()) < keep.numel()
    assert torch.allclose(layer(x), F.conv2d(x, plain.weight * keep, plain.bias, padding=1),
                          atol=1e-6)


def test_vd_kl_sums_the_layers_with_their_ramps_and_has_gradients() -> None:
    torch.manual_seed(2)
    net = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2))
    nnc.prepare(net, nnc.VDConfig(kl_ramp=4), layers={"2": {"kl_ramp": 0}})
    first, second = net[0], net[2]
    assert isinstance(first, CompressedLinear) and isinstance(second, CompressedLinear)
    net(torch.randn(3, 4))  # one training forward: the first layer's factor is 1/4
    want = 0.25 * kl_approximation(log_alpha(first.weight, first.weight_log_sigma2)).sum() \
        + kl_approximation(log_alpha(second.weight, second.weight_log_sigma2)).sum()
    total = nnc.vd_kl(net)
    assert float(total.detach()) == pytest.approx(float(want.detach()), rel=1e-6)
    total.backward()
    grad = second.weight_log_sigma2.grad
    assert grad is not None and bool((grad < 0).all())  # descending it adds noise


def test_vd_kl_and_vd_to_masks_need_a_layer_under_vd() -> None:
    net = nn.Sequential(nn.Linear(4, 4))
    for verb in (nnc.vd_kl, nnc.vd_to_masks):
        with pytest.raises(ConfigError, match=r"prepare\(model, VDConfig"):
            verb(net)


def test_vd_cannot_start_on_a_layer_under_dns_or_inq_nor_dns_on_one_under_vd() -> None:
    net = nnc.prepare(nn.Linear(4, 4), nnc.DNSConfig())
    with pytest.raises(ConfigError, match="under DNS; variational dropout starts from a plain"):
        nnc.prepare(net, nnc.VDConfig())
    net = nnc.prepare(nn.Linear(4, 4), nnc.VDConfig())
    with pytest.raises(ConfigError, match=r"under variational dropout; end it with vd_to_masks"):
        nnc.prepare(net, nnc.DNSConfig())


def test_vd_to_masks_keeps_the_rule_as_frozen_masks_then_inq_and_finalize_zero_them() -> None:
    # log alpha: 0, 9.2, -5 + 1.39, 5 - 1.39: the second and the last are pruned
    layer = _linear([[1.0, 0.01, -0.5, 2.0]], [[0.0, 0.0, -5.0, 5.0]], [0.1])
    assert nnc.vd_to_masks(layer) is layer
    assert layer.vd_config is None and "weight_log_sigma2" not in dict(layer.named_parameters())
    assert layer.dns_config == nnc.DNSConfig(iter_stop=-1, include_bias=False)
    assert layer.weight_mask.tolist() == [[True, False, True, False]]
    assert "bias_mask" not in layer.state_dict()
    nnc.freeze_masks(layer)
    layer(torch.randn(2, 4))  # a frozen mask does not move
    assert layer.weight_mask.tolist() == [[True, False, True, False]]
    nnc.prepare(layer, nnc.INQConfig(portions=(1.0,)))
    nnc.quantize_step(layer)
    plain = nnc.finalize(layer)
    assert type(plain) is nn.Linear
    assert plain.weight.tolist() == [[1.0, 0.0, -0.5, 0.0]]


def test_finalize_under_vd_applies_the_masks() -> None:
    layer = _linear([[1.0, 0.01]], [[0.0, 0.0]], [0.0])
    plain = nnc.finalize(layer)
    assert type(plain) is nn.Linear and plain.weight.tolist() == [[1.0, 0.0]]
    assert set(dict(plain.named_parameters())) == {"weight", "bias"}


def test_a_deep_copy_and_a_state_dict_round_trip() -> None:
    torch.manual_seed(3)
    net = nnc.prepare(nn.Sequential(nn.Linear(3, 3)), nnc.VDConfig())
    net(torch.randn(2, 3))
    state = net.state_dict()
    assert set(state) == {"0.weight", "0.bias", "0.weight_log_sigma2", "0.vd_iteration"}
    other = nnc.prepare(nn.Sequential(nn.Linear(3, 3)), nnc.VDConfig())
    other.load_state_dict(state)
    assert int(other[0].vd_iteration) == 1
    twin = copy.deepcopy(net)
    twin.eval(), net.eval()
    x = torch.randn(4, 3)
    assert torch.equal(twin(x), net(x))


# -- the recipe's vd stage --------------------------------------------------------------------

DATA = "synthetic:n=192,test=64,size=8"
_EVERY = {"batch_size": 16, "eval_interval": 5, "checkpoint_interval": 4}
VD = {"stage": "vd", "iterations": 14, "optimizer": {"name": "adam"},
      "lr": {"policy": "fixed", "base_lr": 0.02},
      "defaults": {"kl_ramp": 6, "kl_weight": 30.0, "threshold": 1.0}, **_EVERY}


def tiny_recipe(*stages: dict[str, Any]) -> dict[str, Any]:
    """Reference training, then ``stages``, on an 8x8 synthetic set."""
    return {
        "version": 1, "name": "tiny", "seed": 3,
        "model": {"ref": "tiny_mlp", "kwargs": {"input_size": 8, "hidden": 12}},
        "data": {"spec": DATA, "validation": 32},
        "stages": [{"stage": "train", "iterations": 12, "lr": {"base_lr": 0.05}, **_EVERY},
                   *stages],
    }


WHOLE = (VD, {"stage": "retrain", "iterations": 6, **_EVERY},
         {"stage": "inq", "portions": [0.5, 1.0], "iterations_per_step": 3, **_EVERY},
         {"stage": "finalize"}, {"stage": "export"})


def test_a_vd_stage_is_parsed_with_every_default_written_out() -> None:
    recipe = parse_recipe(tiny_recipe(VD, {"stage": "retrain", "iterations": 2}))
    stage = recipe.stages[1]
    assert isinstance(stage, VDStage)
    assert stage.defaults == {"threshold": 1.0, "kl_weight": 30.0, "kl_ramp": 6,
                              "init_log_sigma2": -10.0, "include_bias": False}


@pytest.mark.parametrize(("change", "path", "text"), [
    ({"defaults": {"threshold": 12}}, "stages[1].defaults.threshold", "between -10 and 10"),
    ({"defaults": {"c_rate": 1}}, "stages[1].defaults", "c_rate"),
    ({"threshold": 2.0}, "stages[1]", "put it under 'defaults'"),
    ({"layers": {"fc1": {"kl_ramp": -3}}}, "stages[1].layers.fc1.kl_ramp", "integer >= 0"),
])
def test_a_bad_vd_stage_is_reported_at_its_path(change: dict[str, Any], path: str,
                                                text: str) -> None:
    with pytest.raises(RecipeError) as info:
        parse_recipe(tiny_recipe({**VD, **change}))
    assert info.value.path.startswith(path) and text in str(info.value)


def test_a_retrain_stage_may_follow_vd_but_not_plain_training() -> None:
    parse_recipe(tiny_recipe(VD, {"stage": "retrain", "iterations": 2}))
    with pytest.raises(RecipeError, match="after a dns or vd stage"):
        parse_recipe(tiny_recipe({"stage": "retrain", "iterations": 2}))


def test_a_vd_run_prunes_by_log_alpha_and_its_kl_is_in_the_training_loss(tmp_path: Path) -> None:
    result = run_recipe(parse_recipe(tiny_recipe(*WHOLE)), tmp_path / "a", progress="none")
    vd_end = load_checkpoint(next((tmp_path / "a" / "checkpoints").glob("s01-*-end*")))
    masks = {k: v for k, v in vd_end.model_state.items() if k.endswith("_mask")}
    assert set(masks) == {"fc1.weight_mask", "fc2.weight_mask"}
    assert not any(k.endswith("log_sigma2") for k in vd_end.model_state)
    kept = sum(int(m.sum()) for m in masks.values())
    assert 0 < kept < sum(m.numel() for m in masks.values())
    for key, mask in masks.items():  # the final weights are zero exactly where pruned
        weight = result.model.state_dict()[key.replace("_mask", "")]
        assert torch.equal(weight != 0, mask)
    # the vd stage's last evaluation counted what its masks then kept
    rows = [json.loads(r) for r in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    last_vd = [r for r in rows if r["stage"] == "vd"][-1]
    first_retrain = next(r for r in rows if r["stage"] == "retrain")
    assert last_vd["iteration"] == 14
    assert last_vd["kept_fraction"] == first_retrain["kept_fraction"] < 0.9
    # the same stage without the KL term trains to another, unpruned model
    plain = {**VD, "defaults": {**VD["defaults"], "kl_weight": 0.0}}
    run_recipe(parse_recipe(tiny_recipe(plain)), tmp_path / "b", progress="none")
    no_kl = load_checkpoint(next((tmp_path / "b" / "checkpoints").glob("s01-*-end*")))
    assert sum(int(v.sum()) for k, v in no_kl.model_state.items() if k.endswith("_mask")) > kept


def test_a_vd_run_stopped_mid_stage_resumes_to_the_same_weights(tmp_path: Path) -> None:
    recipe = parse_recipe(tiny_recipe(*WHOLE))
    straight = run_recipe(recipe, tmp_path / "a", progress="none")
    out = tmp_path / "b"
    # vd iteration 9 (its checkpoint at 8), then from 8 past the vd stage's end to retrain's 2nd
    for stop in (12 + 9, 6 + 2):
        with pytest.raises(RunInterrupted):
            run_recipe(recipe, out, progress="none", resume=True, stop_after=stop)
    resumed = run_recipe(recipe, out, progress="none", resume=True)
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert list(a) == list(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert (tmp_path / "a" / "model.ncz").read_bytes() == (out / "model.ncz").read_bytes()


def test_summarize_counts_what_variational_dropout_keeps() -> None:
    layer = _linear([[1.0, 0.01, -0.5, 2.0]], [[0.0, 0.0, -5.0, 5.0]], [0.1])
    (row,) = nnc.summarize(layer).layers
    assert (row.mode, row.entries, row.kept) == ("vd", 5, 3)  # two weights and the bias


@pytest.mark.parametrize("device", [
    "cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                         reason="needs CUDA"))])
def test_low_precision_autocast_keeps_the_noise_and_its_gradients_finite(device: str) -> None:
    torch.manual_seed(4)
    net = nnc.prepare(nn.Sequential(nn.Linear(16, 8)), nnc.VDConfig()).to(device)
    x = torch.randn(32, 16, device=device)
    dtype = torch.bfloat16 if device == "cpu" else torch.float16
    with torch.autocast(device, dtype=dtype):
        out = net(x)
    assert out.dtype == dtype
    (out.float().square().mean() + nnc.vd_kl(net) / 1000).backward()
    for name, param in net.named_parameters():
        assert param.grad is not None and bool(torch.isfinite(param.grad).all()), name
    assert bool((net[0].weight_log_sigma2.grad != 0).all())


def _with_bias_noise(config: nnc.VDConfig) -> CompressedLinear:
    layer = nn.Linear(2, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 2.0], [0.5, -1.0]]))
        layer.bias.copy_(torch.tensor([0.5, -0.01]))
    prepared = nnc.prepare(layer, config)
    assert isinstance(prepared, CompressedLinear)
    with torch.no_grad():
        prepared.weight_log_sigma2.copy_(torch.tensor([[math.log(0.25), 0.0], [-30.0, 0.0]]))
        prepared.bias_log_sigma2.copy_(torch.tensor([math.log(0.09), 0.0]))
    return prepared


def test_include_bias_adds_the_bias_variance_and_prunes_biases_by_the_same_rule() -> None:
    layer = _with_bias_noise(nnc.VDConfig(include_bias=True))
    x = torch.tensor([[1.0, 2.0]])
    got, eps = _draw(layer, x, seed=3)
    # variances 1*0.25 + 4*1 + 0.09 and ~0 + 4*1 + 1
    want = torch.tensor([[5.5, -1.51]]) + torch.sqrt(torch.tensor([[4.34, 5.0]]) + 1e-8) * eps
    assert torch.allclose(got, want, atol=1e-5)
    # bias log alpha: log(0.09 / 0.25) = -1.02 (kept), log(1 / 1e-4) = 9.2 (pruned)
    assert layer.vd_mask("bias").tolist() == [True, False]
    kl = kl_approximation(log_alpha(layer.weight, layer.weight_log_sigma2)).sum() + \
        kl_approximation(log_alpha(layer.bias, layer.bias_log_sigma2)).sum()
    assert float(nnc.vd_kl(layer).detach()) == pytest.approx(float(kl.detach()), rel=1e-6)
    layer.eval()
    assert layer(x).detach()[0].tolist() == pytest.approx([5.5, -1.5])  # 0.5 - 2, no bias
    assert nnc.summarize(layer).layers[0].kept == 5  # every weight and one bias of two
    nnc.vd_to_masks(layer)
    assert layer.bias_mask.tolist() == [True, False]
    assert layer.dns_config == nnc.DNSConfig(iter_stop=-1, include_bias=True)
    plain = nnc.finalize(layer)
    assert plain.bias.tolist() == [0.5, 0.0]
    assert set(dict(plain.named_parameters())) == {"weight", "bias"}


def test_without_include_bias_the_bias_has_no_noise_and_stays() -> None:
    layer = nnc.prepare(nn.Linear(2, 2), nnc.VDConfig())
    assert "bias_log_sigma2" not in dict(layer.named_parameters())
    with pytest.raises(ConfigError, match="include_bias cannot change"):
        nnc.prepare(layer, nnc.VDConfig(include_bias=True))


def test_a_convolution_bias_adds_its_variance_per_channel() -> None:
    torch.manual_seed(6)
    layer = nnc.prepare(nn.Conv2d(1, 2, 3), nnc.VDConfig(include_bias=True, init_log_sigma2=-2))
    assert isinstance(layer, CompressedConv2d)
    x = torch.randn(1, 1, 5, 5)
    torch.manual_seed(8)
    got = layer(x)
    torch.manual_seed(8)
    mean = F.conv2d(x, layer.weight.detach(), layer.bias.detach())
    variance = F.conv2d(x * x, torch.full((2, 1, 3, 3), math.exp(-2))) + math.exp(-2)
    assert torch.allclose(got, mean + torch.sqrt(variance + 1e-8) * torch.randn_like(mean),
                          atol=1e-5)


def _vd_run(out: Path, **change: Any) -> tuple[list[dict[str, Any]], dict[str, torch.Tensor]]:
    """A tiny run with ``change`` merged into its vd stage: its metrics rows and final state."""
    stage = {**VD, **change}
    result = run_recipe(parse_recipe(tiny_recipe(stage)), out, progress="none")
    lines = (out / "metrics.jsonl").read_text().splitlines()
    rows = [{k: v for k, v in json.loads(r).items() if k != "elapsed_s"} for r in lines]
    return rows, result.model.state_dict()


def _kept(state: dict[str, torch.Tensor]) -> int:
    return sum(int(v.sum()) for k, v in state.items() if k.endswith("weight_mask"))


def test_a_vd_stage_distils_and_keeps_its_kl_term(tmp_path: Path) -> None:
    plain_rows, plain = _vd_run(tmp_path / "plain")
    taught = {"teacher": "train", "temperature": 2.0, "alpha": 0.9}
    rows, state = _vd_run(tmp_path / "taught", distill=taught)
    assert [r for r in rows if r["stage"] == "train"] == [
        r for r in plain_rows if r["stage"] == "train"]
    first_vd = next(i for i, r in enumerate(rows) if r["stage"] == "vd")
    assert rows[first_vd]["loss"] != plain_rows[first_vd]["loss"]
    assert any(not torch.equal(state[k], plain[k]) for k in plain)
    # alpha 0: the labels alone, the same training as without distillation
    zero_rows, zero = _vd_run(tmp_path / "zero", distill={**taught, "alpha": 0.0})
    assert zero_rows == plain_rows
    assert all(torch.equal(zero[k], plain[k]) for k in plain)
    # the KL term still prunes under distillation: without it, more weights stay
    no_kl = {**VD["defaults"], "kl_weight": 0.0}
    _, unpruned = _vd_run(tmp_path / "no_kl", distill=taught, defaults=no_kl)
    assert _kept(unpruned) > _kept(state) > 0

"""INQ level sets fitted to the weights (``levels: mse``) against a slow reference and by hand."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from torch import nn

import nncompress as nnc
from nncompress import inq
from nncompress.errors import ConfigError
from nncompress.pipeline import run_recipe
from nncompress.recipe import RecipeError, dump_recipe, parse_recipe, recipe_to_dict
from tests.test_inq import reference_round


def reference_fit(values: list[float], k: int, least: int = inq.MIN_EXPONENT) -> tuple[int, int]:
    """The paper's n1 (by powers of two, no logarithm), then every candidate below it in turn."""
    peak = max(abs(v) for v in values)
    top = least
    while 2.0 ** (top + 1) <= 4 * peak / 3:
        top += 1
    best: tuple[float, int] | None = None
    for n1 in range(top, max(top - 16, least) - 1, -1):
        n2 = max(n1 - k + 1, least)
        error = math.fsum((v - reference_round(v, n1, n2)) ** 2 for v in values if v != 0)
        if best is None or error < best[0]:  # strictly less: a tie keeps the larger n1
            best = (error, n1)
    assert best is not None
    return best[1], max(best[1] - k + 1, least)


@pytest.mark.parametrize("k", [1, 2, 4, 8])
@pytest.mark.parametrize("seed", range(6))
def test_mse_matches_slow_reference(k: int, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    scale = 2.0 ** float(torch.randint(-8, 4, (1,), generator=gen))
    values = torch.randn(300, generator=gen) * scale
    if seed % 2:  # heavy tails and pruned entries, as after DNS
        values = values ** 3
        values[torch.rand(300, generator=gen) < 0.4] = 0.0
    assert inq.fit_level_range(values, k, "mse") == reference_fit(values.tolist(), k)


@pytest.mark.parametrize("dtype, least", [(torch.float32, -133), (torch.float16, -24)])
def test_mse_candidates_stop_at_the_least_exponent(dtype: torch.dtype, least: int) -> None:
    gen = torch.Generator().manual_seed(7)
    values = (torch.rand(64, generator=gen) * 2.0 ** (least + 5)).to(dtype)
    got = inq.fit_level_range(values, 2, "mse")
    assert got == reference_fit(values.tolist(), 2, least)
    assert got[1] >= least


def test_hand_computed_ternary_sets() -> None:
    # w = [0.1, 0.2, -0.3, 1.0], K = 1 (levels {0, +-2^n1}, zero below 2^(n1-1)); the paper: n1 = 0.
    #   n1 =  0: [0, 0, 0, 1]              errors .01 + .04 + .09 + 0     = 0.14  <- least
    #   n1 = -1: [0, 0, -.5, .5]           errors .01 + .04 + .04 + .25   = 0.34
    #   n1 = -2: [0, .25, -.25, .25]       errors .01 + .0025 + .0025 + .5625 = 0.5775
    #   n1 = -3: all +-.125                errors .000625 + .005625 + .030625 + .765625 = 0.8025
    assert inq.fit_level_range(torch.tensor([0.1, 0.2, -0.3, 1.0]), 1, "mse") == (0, 0)
    # w = [0.3, -0.35, 0.4, 0.45, 1.0], K = 1:
    #   n1 =  0: [0, 0, 0, 0, 1]           errors .09 + .1225 + .16 + .2025 + 0 = 0.575
    #   n1 = -1: all +-.5                  errors .04 + .0225 + .01 + .0025 + .25 = 0.325  <- least
    #   n1 = -2: all +-.25                 errors .0025 + .01 + .0225 + .04 + .5625 = 0.6375
    w = torch.tensor([0.3, -0.35, 0.4, 0.45, 1.0])
    assert inq.fit_level_range(w, 1, "mse") == (-1, -1)
    assert inq.fit_level_range(w, 1, "max") == (0, 0)
    # K = 2 on the same w: n1 = 0 gives [.5, -.5, .5, .5, 1] (0.075); n1 = -1 gives
    # [.25, -.25, .5, .5, .5] (.0025 + .01 + .01 + .0025 + .25 = 0.275): the paper's n1 stays.
    assert inq.fit_level_range(w, 2, "mse") == (0, -1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_mse_on_cuda_chooses_as_on_the_cpu(dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(11)
    for k in (1, 2, 4, 8):
        values = (torch.randn(100_000, generator=gen) ** 3 * 0.05).to(dtype)
        assert inq.fit_level_range(values.cuda(), k, "mse") == \
            inq.fit_level_range(values, k, "mse")


def test_exact_tie_keeps_the_larger_exponent() -> None:
    # 0.75 is as far from 1 (n1 = 0) as from 0.5 (n1 = -1): 0.0625 each, exactly.
    assert inq.fit_level_range(torch.tensor([0.75, -0.75]), 1, "mse") == (0, 0)
    assert reference_fit([0.75, -0.75], 1) == (0, 0)


def test_zeros_take_no_part() -> None:
    w = torch.tensor([0.3, -0.35, 0.4, 0.45, 1.0])
    padded = torch.cat([w, torch.zeros(50)])
    assert inq.fit_level_range(padded, 1, "mse") == inq.fit_level_range(w, 1, "mse")


def test_config_checks_levels() -> None:
    assert nnc.INQConfig().levels == "max"
    assert nnc.INQConfig(levels="mse").levels == "mse"
    with pytest.raises(ConfigError, match=r"INQConfig.levels='mes' is invalid: use 'max' .* or "
                                          r"'mse' .* \(did you mean 'mse'\?\)"):
        nnc.INQConfig(levels="mes")
    with pytest.raises(ConfigError, match=r"INQConfig.levels=2 is invalid"):
        nnc.INQConfig(levels=2)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"fit_level_range.levels='min' is invalid"):
        inq.fit_level_range(torch.ones(3), 1, "min")


def _model(seed: int = 3) -> nn.Sequential:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))
    with torch.no_grad():
        net[2].weight.normal_(0.0, 0.05)  # bell-shaped, as trained weights are
        net[2].weight[:, :30] = 0.0  # pruned entries
    return net


@pytest.mark.parametrize("k", [1, 2, 8])
def test_max_is_the_paper_rule_bit_for_bit(k: int) -> None:
    plain = _model()
    weights = {name: p.detach().clone() for name, p in plain.named_parameters()}
    given, default = _model(), _model()
    nnc.prepare(given, nnc.INQConfig(num_quantum_values=k, levels="max"))
    nnc.prepare(default, nnc.INQConfig(num_quantum_values=k))
    for net in (given, default):
        nnc.quantize_step(net, 1.0)
    for index in (0, 2):
        for blob in ("weight", "bias"):
            before = weights[f"{index}.{blob}"]
            n1, n2 = inq.level_range(float(before.abs().max()), k)
            for net in (given, default):
                assert net[index].inq_levels(blob)[:2] == (n1, n2)
                fixed = net[index].buffer(f"{blob}_fixed").float()
                assert torch.equal(fixed, inq.quantize(before, n1, n2))
    assert all(torch.equal(a, b) for a, b in zip(given.state_dict().values(),
                                                  default.state_dict().values(), strict=True))


def test_prepare_uses_mse_per_blob_and_keeps_it() -> None:
    net = _model()
    weight, bias = net[2].weight.detach().clone(), net[2].bias.detach().clone()
    nnc.prepare(net, nnc.INQConfig(num_quantum_values=1, levels="mse"))
    assert net[2].inq_levels("weight")[:2] == inq.fit_level_range(weight, 1, "mse")
    assert net[2].inq_levels("bias")[:2] == inq.fit_level_range(bias, 1, "mse")
    assert net[2].inq_levels("weight")[0] < inq.level_range(float(weight.abs().max()), 1)[0]
    with pytest.raises(ConfigError, match="its level set cannot change"):
        net[2].start_inq(nnc.INQConfig(num_quantum_values=1, levels="max"))


TINY: dict[str, Any] = {
    "version": 1, "name": "tiny_levels",
    "model": {"ref": "tiny_mlp", "kwargs": {"input_size": 8, "hidden": 12}},
    "data": {"spec": "synthetic:n=128,test=32,size=8"}, "seed": 2,
    "stages": [
        {"stage": "train", "iterations": 8, "batch_size": 16, "eval_interval": 0},
        {"stage": "inq", "portions": [0.5, 1.0], "iterations_per_step": [4, 0],
         "batch_size": 16, "eval_interval": 0,
         "defaults": {"num_quantum_values": 1, "levels": "mse"}},
        {"stage": "finalize"},
    ],
}


def _with_levels(defaults: Any, layers: Any = None) -> dict[str, Any]:
    inq_stage = {**TINY["stages"][1], "defaults": defaults}
    if layers is not None:
        inq_stage["layers"] = layers
    return {**TINY, "stages": [TINY["stages"][0], inq_stage, TINY["stages"][2]]}


def test_recipe_levels_parse_round_trip_and_errors() -> None:
    recipe = parse_recipe(_with_levels({"num_quantum_values": 1, "levels": "mse"},
                                       {"fc2": {"levels": "max"}}))
    stage = recipe_to_dict(recipe)["stages"][1]
    assert stage["defaults"]["levels"] == "mse"
    assert stage["layers"] == {"fc2": {"levels": "max"}}
    assert parse_recipe(yaml.safe_load(dump_recipe(recipe))) == recipe
    old = parse_recipe(_with_levels({"num_quantum_values": 1}))
    assert recipe_to_dict(old)["stages"][1]["defaults"]["levels"] == "max"
    with pytest.raises(RecipeError, match=r"stages\[1\]\.defaults\.levels: INQConfig.levels="
                                          r"'mes' is invalid: use 'max' .*'mse'.*did you mean"):
        parse_recipe(_with_levels({"levels": "mes"}))
    with pytest.raises(RecipeError, match=r"stages\[1\]\.layers\.fc1\.levels: expected a "
                                          r"string, got 3"):
        parse_recipe(_with_levels({}, {"fc1": {"levels": 3}}))
    with pytest.raises(RecipeError, match=r"stages\[1\]\.levels: .*put it under 'defaults'"):
        parse_recipe({**TINY, "stages": [TINY["stages"][0], {**TINY["stages"][1],
                                                             "levels": "mse"}]})


def test_run_keeps_more_nonzeros_with_mse_at_k1(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    kept, peaks = {}, {}
    for levels in ("max", "mse"):
        recipe = parse_recipe(_with_levels({"num_quantum_values": 1, "levels": levels}))
        result = run_recipe(recipe, tmp_path / levels, progress="none")
        saved = yaml.safe_load((tmp_path / levels / "recipe.yaml").read_text())
        assert saved["stages"][1]["defaults"]["levels"] == levels
        kept[levels] = result.report["totals"]["kept"]
        params = list(result.model.parameters())
        assert kept[levels] == sum(int(torch.count_nonzero(p)) for p in params)
        weight = result.model.get_submodule("fc1").weight.detach()
        magnitudes = weight.abs()[weight != 0].unique().tolist()
        assert len(magnitudes) == 1  # ternary: one magnitude besides 0
        peaks[levels] = magnitudes[0]
    assert kept["mse"] > 1.3 * kept["max"]  # measured: 629 and 396 of 910 entries
    assert peaks["mse"] < peaks["max"]

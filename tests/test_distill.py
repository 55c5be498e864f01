"""Distillation: the loss against a slow reference, its config, and the teachers a recipe names."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import save_file

import nncompress as nnc
from nncompress._teachers import check_teachers, load_teacher_file
from nncompress.cli import main
from nncompress.errors import ConfigError
from nncompress.models import build_model
from nncompress.recipe import RecipeError, parse_recipe, recipe_to_dict
from nncompress.stages import check_recipe
from nncompress.train.distill import DistillationCriterion, DistillConfig, distillation_loss

MODEL = {"ref": "tiny_mlp", "kwargs": {"input_size": 8, "hidden": 12}}


def _softmax(row: list[float]) -> list[float]:
    exps = [math.exp(v) for v in row]
    return [e / sum(exps) for e in exps]


def _reference(student: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor,
               temperature: float, alpha: float) -> float:
    """The loss written out example by example, in Python floats."""
    kl_sum = ce_sum = 0.0
    rows = zip(student.tolist(), teacher.tolist(), target.tolist())
    for s_row, t_row, label in rows:
        p = _softmax([v / temperature for v in t_row])
        q = _softmax([v / temperature for v in s_row])
        kl_sum += sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q))
        ce_sum += -math.log(_softmax(s_row)[label])
    n = len(target)
    return alpha * temperature ** 2 * kl_sum / n + (1 - alpha) * ce_sum / n


# student [0, ln 3]: softmax [1/4, 3/4]; teacher [0, 0]: softmax [1/2, 1/2]
STUDENT = torch.tensor([[0.0, math.log(3.0)]], dtype=torch.float64)
TEACHER = torch.zeros(1, 2, dtype=torch.float64)
TARGET = torch.tensor([0])


def test_hand_computed_values() -> None:
    hard = distillation_loss(STUDENT, TEACHER, TARGET, temperature=1.0, alpha=0.0)
    assert float(hard) == pytest.approx(math.log(4.0), rel=1e-12)  # -ln(1/4)
    soft = distillation_loss(STUDENT, TEACHER, TARGET, temperature=1.0, alpha=1.0)
    assert float(soft) == pytest.approx(0.5 * math.log(4 / 3), rel=1e-12)  # KL(p || q)
    both = distillation_loss(STUDENT, TEACHER, TARGET, temperature=1.0, alpha=0.25)
    assert float(both) == pytest.approx(0.25 * 0.5 * math.log(4 / 3) + 0.75 * math.log(4),
                                        rel=1e-12)


def test_alpha_zero_is_cross_entropy_and_alpha_one_is_t_squared_kl() -> None:
    gen = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(5, 4, generator=gen), torch.randn(5, 4, generator=gen)
    target = torch.tensor([0, 3, 1, 1, 2])
    assert torch.equal(distillation_loss(student, teacher, target, alpha=0.0),
                       F.cross_entropy(student, target))
    kl = F.kl_div(F.log_softmax(student / 3, 1), F.softmax(teacher / 3, 1),
                  reduction="batchmean")
    assert float(distillation_loss(student, teacher, target, 3.0, 1.0)) == pytest.approx(
        9 * float(kl), rel=1e-6)


@pytest.mark.parametrize(("temperature", "alpha"), [(1.0, 0.5), (4.0, 0.5), (2.5, 0.9),
                                                    (0.5, 0.1), (4.0, 1.0), (4.0, 0.0)])
def test_matches_the_slow_reference(temperature: float, alpha: float) -> None:
    gen = torch.Generator().manual_seed(7)
    student = torch.randn(6, 5, generator=gen, dtype=torch.float64)
    teacher = 3 * torch.randn(6, 5, generator=gen, dtype=torch.float64)
    target = torch.randint(0, 5, (6,), generator=gen)
    got = distillation_loss(student, teacher, target, temperature, alpha)
    assert float(got) == pytest.approx(_reference(student, teacher, target, temperature, alpha),
                                       rel=1e-10)


def test_gradients_are_finite_and_reach_only_the_student() -> None:
    gen = torch.Generator().manual_seed(1)
    student = (20 * torch.randn(4, 3, generator=gen)).requires_grad_()
    teacher = (20 * torch.randn(4, 3, generator=gen)).requires_grad_()
    loss = distillation_loss(student, teacher, torch.tensor([0, 1, 2, 0]), temperature=0.5)
    loss.backward()
    assert student.grad is not None and torch.isfinite(student.grad).all()
    assert student.grad.abs().sum() > 0 and teacher.grad is None
    half = distillation_loss(student.detach().bfloat16(), teacher.detach().bfloat16(),
                             torch.tensor([0, 1, 2, 0]))
    assert half.dtype == torch.float32 and math.isfinite(float(half))


def test_public_api() -> None:
    assert "distillation_loss" in nnc.__all__
    assert nnc.distillation_loss is distillation_loss
    assert float(nnc.distillation_loss(STUDENT, TEACHER, TARGET)) == pytest.approx(
        _reference(STUDENT, TEACHER, TARGET, 4.0, 0.5), rel=1e-12)  # defaults T 4, alpha 0.5


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"alpha": -0.1}, "distillation_loss.alpha: must be a number in [0, 1]"),
    ({"alpha": 1.5}, "distillation_loss.alpha: must be a number in [0, 1]"),
    ({"alpha": math.nan}, "distillation_loss.alpha: must be a number in [0, 1]"),
    ({"temperature": 0.0}, "distillation_loss.temperature: must be a finite number > 0, got 0.0"),
    ({"temperature": -2.0}, "distillation_loss.temperature: must be a finite number > 0"),
    ({"temperature": math.inf}, "distillation_loss.temperature: must be a finite number > 0"),
])
def test_bad_arguments(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        distillation_loss(STUDENT, TEACHER, TARGET, **kwargs)  # type: ignore[arg-type]
    assert str(info.value).startswith(message)


def test_logits_of_other_shapes_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"has shape \[1, 3\], the student's logits \[1, 2\]"):
        distillation_loss(STUDENT, torch.zeros(1, 3), TARGET)


def test_criterion_runs_a_frozen_teacher_in_eval_mode() -> None:
    torch.manual_seed(0)
    teacher = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Dropout(0.5))
    crit = DistillationCriterion(teacher, DistillConfig(teacher="t", temperature=2, alpha=0.7))
    x, logits = torch.randn(5, 3), torch.randn(5, 4)
    y = torch.tensor([0, 1, 2, 3, 0])
    first, second = crit(x, logits, y), crit(x, logits, y)
    assert torch.equal(first, second)  # dropout off: a fixed function
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    assert torch.equal(first, distillation_loss(logits, teacher(x), y, 2.0, 0.7))


# -- recipes ------------------------------------------------------------------------------


def _raw(distill: Any, *, teacher_stage: str = "reference") -> dict[str, Any]:
    return {"version": 1, "model": MODEL, "data": "synthetic:n=64,test=16,size=8",
            "stages": [{"stage": "train", "name": teacher_stage, "iterations": 2},
                       {"stage": "dns", "iterations": 2, "distill": distill},
                       {"stage": "inq", "iterations_per_step": 1},
                       {"stage": "finalize"}]}


def test_recipe_defaults_and_round_trip() -> None:
    recipe = parse_recipe(_raw({"teacher": "reference"}))
    assert recipe.stages[1].distill == DistillConfig(  # type: ignore[union-attr]
        teacher="reference", temperature=4.0, alpha=0.5)
    assert recipe.stages[0].distill is None  # type: ignore[union-attr]
    saved = recipe_to_dict(recipe)
    assert saved["stages"][1]["distill"] == {"teacher": "reference", "temperature": 4.0,
                                             "alpha": 0.5}
    assert parse_recipe(yaml.safe_load(yaml.safe_dump(saved))) == recipe


@pytest.mark.parametrize(("distill", "message"), [
    ({"teacher": "reference", "alpha": 2}, "stages[1].distill.alpha: must be a number in "
     "[0, 1] (the soft term's weight; 1 - alpha weighs the labels), got 2.0"),
    ({"teacher": "reference", "temperature": 0}, "stages[1].distill.temperature: must be a "
     "finite number > 0, got 0.0; e.g. 4"),
    ({"teacher": "reference", "temprature": 2}, "stages[1].distill.temprature: unknown key "
     "(did you mean 'temperature'?); allowed keys: teacher, temperature, alpha"),
    ({"alpha": 0.3}, "stages[1].distill.teacher: required key missing"),
    ({"teacher": ""}, "stages[1].distill.teacher: must name an earlier stage (e.g. "
     "'reference') or a model file, got ''"),
    ("reference", "stages[1].distill: expected a mapping of teacher, temperature and alpha, "
     "e.g. {teacher: reference}, got 'reference' (a string)"),
])
def test_recipe_value_errors(distill: Any, message: str) -> None:
    with pytest.raises(RecipeError) as info:
        parse_recipe(_raw(distill))
    assert str(info.value) == f"recipe: {message}"


def _check(raw: dict[str, Any]) -> None:
    check_recipe(parse_recipe(raw))


@pytest.mark.parametrize(("teacher", "message"), [
    ("dns", "stages[1].distill.teacher: 'dns' is this stage itself; a teacher is the model at "
     "the end of an earlier stage ('reference') or a model file"),
    ("inq", "stages[1].distill.teacher: 'inq' is stage 2, which runs later; a teacher is the "
     "model at the end of an earlier stage ('reference') or a model file"),
    ("referense", "stages[1].distill.teacher: 'referense' is neither a stage of the recipe "
     "(did you mean 'reference'?) nor a model file (.safetensors, .pth, .pt or .ncz); give an "
     "earlier stage ('reference') or a model file"),
])
def test_teacher_must_be_an_earlier_stage(teacher: str, message: str) -> None:
    with pytest.raises(RecipeError) as info:
        _check(_raw({"teacher": teacher}))
    assert str(info.value) == message


def test_missing_teacher_file(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.safetensors")
    with pytest.raises(RecipeError) as info:
        _check(_raw({"teacher": missing}))
    assert str(info.value) == (f"stages[1].distill.teacher: teacher file {missing!r} not found; "
                               "give an existing model file (.safetensors, .pth, .pt or .ncz) "
                               "or an earlier stage ('reference')")


def test_validate_notes_a_teacher_file_that_another_run_writes(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = str(tmp_path / "runs" / "ref" / "model.safetensors")
    file = tmp_path / "r.yaml"
    file.write_text(yaml.safe_dump(_raw({"teacher": missing})))
    assert main(["validate", str(file)]) == 0
    out = capsys.readouterr().out
    assert "which do not exist here (point to them with --set KEY=VALUE):\n  " \
        f"stages[1].distill.teacher: {missing}\n" in out
    recipe = parse_recipe(_raw({"teacher": missing}))
    check_recipe(recipe, require_files=False)  # the file is the one thing not checked
    with pytest.raises(RecipeError, match=r"teacher file .* not found"):
        check_recipe(recipe)
    run_dir = tmp_path / "run"
    assert main(["run", str(file), "--out", str(run_dir), "-q"]) == 1
    assert f"teacher file {missing!r} not found" in capsys.readouterr().err
    assert not run_dir.exists()  # stopped before the run folder was made


def _model(**kwargs: Any) -> torch.nn.Module:
    torch.manual_seed(5)
    return build_model("tiny_mlp", **{**MODEL["kwargs"], **kwargs})  # type: ignore[arg-type]


def test_teacher_files_that_do_not_fit(tmp_path: Path) -> None:
    other = _model(hidden=5)
    file = tmp_path / "other.safetensors"
    save_file(other.state_dict(), str(file))
    with pytest.raises(RecipeError) as info:
        _check(_raw({"teacher": str(file)}))
    text = str(info.value)
    assert text.startswith(f"stages[1].distill.teacher: weights in {str(file)!r} do not fit "
                           "the model: key 'fc1.weight': the file has shape [5, 64], the model "
                           "[12, 64]")
    assert text.endswith("; the teacher must be a model of the recipe's architecture "
                         "(model.ref and model.kwargs)")
    ncz = tmp_path / "other.ncz"
    nnc.save_compact(other, ncz)
    with pytest.raises(RecipeError, match=r"the model in .*other\.ncz' does not fit the model: "
                       r"key 'fc1\.weight': the file has shape \[5, 64\]"):
        _check(_raw({"teacher": str(ncz)}))


def test_teacher_from_a_file_holds_its_weights(tmp_path: Path) -> None:
    saved, template = _model(), _model(hidden=12)
    with torch.no_grad():
        for p in saved.parameters():
            p.add_(1.0)
    x = torch.randn(3, 1, 8, 8)
    torch.save(saved.state_dict(), tmp_path / "t.pth")
    nnc.save_compact(saved, tmp_path / "t.ncz")
    for name in ("t.pth", "t.ncz"):
        _check(_raw({"teacher": str(tmp_path / name)}))  # fits: no error
        teacher = load_teacher_file(tmp_path / name, template)
        assert teacher is not template
        assert torch.equal(teacher.eval()(x), saved.eval()(x)), name
    assert not torch.equal(template(x), saved(x))  # the template is left as it was


def test_check_teachers_leaves_the_model_and_rng_alone(tmp_path: Path) -> None:
    model = _model()
    before = copy.deepcopy(model.state_dict())
    torch.save(model.state_dict(), tmp_path / "t.pth")
    state = torch.get_rng_state()
    check_teachers(parse_recipe(_raw({"teacher": str(tmp_path / "t.pth")})), model)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_validate_reports_a_bad_teacher(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    file = tmp_path / "r.yaml"
    file.write_text(yaml.safe_dump(_raw({"teacher": "inq"})))
    assert main(["validate", str(file)]) == 1
    assert "stages[1].distill.teacher: 'inq' is stage 2, which runs later" in \
        capsys.readouterr().err
    file.write_text(yaml.safe_dump(_raw({"teacher": "reference", "alpha": 0.2})))
    assert main(["validate", str(file)]) == 0


def test_set_overrides_turn_distillation_on_and_off() -> None:
    raw = _raw(None)
    del raw["stages"][1]["distill"]
    on = parse_recipe(raw, overrides=["stages.dns.distill.teacher=reference",
                                      "stages.dns.distill.alpha=0.9"])
    assert on.stages[1].distill == DistillConfig(  # type: ignore[union-attr]
        teacher="reference", alpha=0.9)
    off = parse_recipe(_raw({"teacher": "reference"}), overrides=["stages.dns.distill=null"])
    assert off.stages[1].distill is None  # type: ignore[union-attr]

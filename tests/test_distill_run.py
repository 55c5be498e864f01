"""Distilling stages in a run: the loss they train on, their teachers' files, resume."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from nncompress.errors import ConfigError, FormatError
from nncompress.pipeline import RunInterrupted, run_recipe
from nncompress.recipe import parse_recipe
from nncompress.run_folder import load_run_model
from nncompress.stages import plain_copy
from nncompress.train.checkpoint import load_checkpoint


def _raw(dns_distill: Any = None, inq_distill: Any = None) -> dict[str, Any]:
    """Reference -> DNS (learning from the reference) -> INQ (from the DNS stage) -> finalize."""
    common = {"batch_size": 16, "eval_interval": 5, "checkpoint_interval": 4}
    return {
        "version": 1, "name": "distill", "seed": 2,
        "model": {"ref": "tiny_mlp", "kwargs": {"input_size": 8, "hidden": 12}},
        "data": {"spec": "synthetic:n=128,test=32,size=8", "validation": 16},
        "stages": [
            {"stage": "train", "name": "reference", "iterations": 10,
             "lr": {"base_lr": 0.05}, **common},
            {"stage": "dns", "iterations": 10, "defaults": {"gamma": 0.01, "c_rate": 0.3},
             "distill": dns_distill, **common},
            {"stage": "inq", "portions": [0.5, 1.0], "iterations_per_step": [5, 0],
             "defaults": {"num_quantum_values": 4}, "distill": inq_distill, **common},
            {"stage": "finalize"},
        ],
    }


DISTILLED = _raw({"teacher": "reference", "temperature": 2.0, "alpha": 0.7},
                 {"teacher": "dns"})


def _rows(out: Path) -> list[dict[str, Any]]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "elapsed_s"} for line in lines]


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_a_distilling_run_trains_on_the_distillation_loss(tmp_path: Path) -> None:
    plain = run_recipe(parse_recipe(_raw()), tmp_path / "plain", progress="none")
    taught = run_recipe(parse_recipe(DISTILLED), tmp_path / "taught", progress="none")
    rows, base = _rows(tmp_path / "taught"), _rows(tmp_path / "plain")
    assert [r["stage"] for r in rows] == [r["stage"] for r in base]
    ref = [i for i, r in enumerate(rows) if r["stage"] == "reference"]
    assert [rows[i] for i in ref] == [base[i] for i in ref]  # nothing distils before dns
    first_dns = next(i for i, r in enumerate(rows) if r["stage"] == "dns")
    assert rows[first_dns]["loss"] != base[first_dns]["loss"]
    assert all(r["loss"] is None or r["loss"] > 0 for r in rows)
    assert taught.report["test"] != plain.report["test"]
    assert not (tmp_path / "plain" / "teachers").exists()
    assert sorted(p.name for p in (tmp_path / "taught" / "teachers").iterdir()) == [
        "s00-reference.safetensors", "s01-dns.safetensors"]


def test_alpha_zero_trains_exactly_as_without_distillation(tmp_path: Path) -> None:
    plain = run_recipe(parse_recipe(_raw()), tmp_path / "plain", progress="none")
    zero = run_recipe(parse_recipe(_raw({"teacher": "reference", "alpha": 0.0})),
                      tmp_path / "zero", progress="none")
    _same_weights(plain.model, zero.model)
    assert _rows(tmp_path / "plain") == _rows(tmp_path / "zero")  # the same loss, evaluations
    assert plain.report["test"] == zero.report["test"]


def test_teacher_files_hold_the_baked_model_each_stage_left(tmp_path: Path) -> None:
    out = tmp_path / "r"
    with pytest.raises(RunInterrupted):  # stops in the INQ stage, after the DNS stage's end
        run_recipe(parse_recipe(DISTILLED), out, progress="none", stop_after=22)
    ends = sorted((out / "checkpoints").glob("*-end.safetensors"))
    assert [p.name[:3] for p in ends] == ["s00", "s01"]
    reference = load_checkpoint(ends[0]).model_state
    snapshot = load_file(str(out / "teachers" / "s00-reference.safetensors"))
    assert snapshot.keys() == reference.keys()
    assert all(torch.equal(snapshot[k], reference[k]) for k in snapshot)
    dns_model, _ = load_run_model(ends[1])
    baked = plain_copy(dns_model).state_dict()
    dns_teacher = load_file(str(out / "teachers" / "s01-dns.safetensors"))
    assert dns_teacher.keys() == baked.keys() and "fc1.weight_mask" not in dns_teacher
    assert all(torch.equal(dns_teacher[k], baked[k]) for k in baked)
    assert int((dns_teacher["fc1.weight"] == 0).sum()) > 0  # the masks are baked in
    assert not list(out.glob("teachers/.*.tmp"))


def test_resumed_distilling_run_is_bit_identical(tmp_path: Path) -> None:
    recipe = parse_recipe(DISTILLED)
    straight = run_recipe(recipe, tmp_path / "a", progress="none")
    out, stopped_at = tmp_path / "b", []
    for stop in [6, 7, 5, 7, 4]:
        with pytest.raises(RunInterrupted):
            run_recipe(recipe, out, progress="none", resume=True, stop_after=stop)
        newest = sorted((out / "checkpoints").glob("*.safetensors"))[-1]
        pos = load_checkpoint(newest).metadata["position"]
        stopped_at.append((pos["stage"], pos["iteration"], pos["done"]))
    # mid reference, its end (teacher written), mid DNS (taught by the teacher's file), DNS
    # end, mid INQ (taught by the DNS stage's teacher file)
    assert stopped_at == [(0, 4, False), (0, 10, True), (1, 4, False), (1, 10, True),
                          (2, 4, False)]
    resumed = run_recipe(recipe, out, progress="none", resume=True)
    _same_weights(straight.model, resumed.model)
    assert _rows(tmp_path / "a") == _rows(out)
    assert straight.report["test"] == resumed.report["test"]


def test_resume_refuses_other_distill_settings_or_a_lost_teacher(tmp_path: Path) -> None:
    out = tmp_path / "r"
    with pytest.raises(RunInterrupted):
        run_recipe(parse_recipe(DISTILLED), out, progress="none", stop_after=14)  # mid DNS
    changed = _raw({"teacher": "reference", "temperature": 2.0, "alpha": 0.6}, {"teacher": "dns"})
    with pytest.raises(ConfigError, match=r"different recipe \(first difference at "
                       r"stages\[1\]\.distill\.alpha\)"):
        run_recipe(parse_recipe(changed), out, progress="none", resume=True)
    (out / "teachers" / "s00-reference.safetensors").unlink()
    with pytest.raises(FormatError, match=r"s00-reference\.safetensors: the teacher that stage "
                       r"'reference' left is missing from the run folder"):
        run_recipe(parse_recipe(DISTILLED), out, progress="none", resume=True)


def test_a_teacher_from_a_file(tmp_path: Path) -> None:
    first = run_recipe(parse_recipe(_raw()), tmp_path / "first", progress="none")
    raw = _raw({"teacher": str(tmp_path / "first" / "model.safetensors"), "alpha": 1.0})
    raw["stages"] = raw["stages"][1:]  # no reference stage: the file is the teacher
    taught = run_recipe(parse_recipe(raw), tmp_path / "taught", progress="none")
    assert not (tmp_path / "taught" / "teachers").exists()
    assert first.report["test"] != taught.report["test"]
    assert all(r["loss"] is None or r["loss"] > 0 for r in _rows(tmp_path / "taught"))


def test_a_retrain_stage_distils_under_bf16(tmp_path: Path) -> None:
    raw = _raw()
    raw["precision"] = "bf16"  # autocast on the CPU: the teacher runs under it too
    raw["stages"][2:] = [{"stage": "retrain", "iterations": 6, "batch_size": 16,
                          "distill": {"teacher": "dns", "temperature": 3.0}},
                         {"stage": "finalize"}]
    out = tmp_path / "r"
    with pytest.raises(RunInterrupted):  # in the retrain stage, after its teacher was written
        run_recipe(parse_recipe(raw), out, progress="none", stop_after=23)
    resumed = run_recipe(parse_recipe(raw), out, progress="none", resume=True)
    straight = run_recipe(parse_recipe(raw), tmp_path / "straight", progress="none")
    _same_weights(straight.model, resumed.model)
    retrain = [r for r in _rows(out) if r["stage"] == "retrain"]
    assert len(retrain) == 1 and retrain[0]["loss"] > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_distilling_on_cuda_resumes_bit_identically(tmp_path: Path, precision: str) -> None:
    raw = {**DISTILLED, "device": "cuda", "precision": precision}
    straight = run_recipe(parse_recipe(raw), tmp_path / "a", progress="none")
    with pytest.raises(RunInterrupted):  # mid DNS, taught by the reference's file on resume
        run_recipe(parse_recipe(raw), tmp_path / "b", progress="none", stop_after=15)
    resumed = run_recipe(parse_recipe(raw), tmp_path / "b", progress="none", resume=True)
    assert next(resumed.model.parameters()).is_cuda
    _same_weights(straight.model, resumed.model)
    assert _rows(tmp_path / "a") == _rows(tmp_path / "b")

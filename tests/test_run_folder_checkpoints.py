"""Checkpoints a run resumes from: checksums, bounds on their metadata, masks and INQ values."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save

from nncompress.checkpoint_checks import check_checkpoint
from nncompress.errors import FormatError
from nncompress.pipeline import RunInterrupted, run_recipe
from nncompress.recipe import parse_recipe
from nncompress.train.checkpoint import Checkpoint, checksum, load_checkpoint
from tests.test_pipeline import tiny_recipe

RECIPE = parse_recipe(tiny_recipe())
DNS_MID = "s01-dns-p000-i000000008.safetensors"
DNS_END = "s01-dns-p000-i000000011-end.safetensors"
INQ_MID = "s02-inq-p000-i000000004.safetensors"


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny run killed at iteration 4 of INQ step 0 (train 12 + DNS 11 + 5 iterations)."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("stopped") / "run"
    with pytest.raises(RunInterrupted):
        run_recipe(RECIPE, out, progress="none", stop_after=28)
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert names == ["s00-train-p000-i000000012-end.safetensors", DNS_MID, DNS_END, INQ_MID]
    return out


@pytest.fixture
def run(stopped_run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(stopped_run, copy)
    return copy


def rewrite(path: Path, edit: Callable[[dict[str, Any], dict[str, torch.Tensor]], None],
            with_checksum: bool = True) -> None:
    """Edit a checkpoint's metadata and tensors and write it back with a valid checksum."""
    with safe_open(str(path), framework="pt") as handle:
        meta = json.loads((handle.metadata() or {})["nncompress"])
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
    edit(meta, tensors)
    text = json.dumps(meta)
    header = {"nncompress": text}
    if with_checksum:
        header["nncompress_sha256"] = checksum(text, tensors)
    path.write_bytes(save(tensors, metadata=header))


def loaded(run: Path, name: str) -> Checkpoint:
    return load_checkpoint(run / "checkpoints" / name)


def test_every_checkpoint_of_a_run_passes_the_checks(run: Path) -> None:
    for path in sorted((run / "checkpoints").iterdir()):
        checkpoint = load_checkpoint(path)
        assert checkpoint.verified
        check_checkpoint(RECIPE, checkpoint)


def test_a_flipped_bit_in_a_weight_fails_the_checksum(run: Path) -> None:
    path = run / "checkpoints" / INQ_MID
    data = bytearray(path.read_bytes())
    with safe_open(str(path), framework="pt") as handle:
        weight = handle.get_tensor("model.fc2.weight")
    offset = bytes(data).index(weight.numpy().tobytes())
    data[offset + 5] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(FormatError, match=r"i000000004.safetensors: checksum mismatch: the file "
                       r"was changed or damaged after it was written$"):
        load_checkpoint(path)


def _metadata_case(edit: Callable[[dict[str, Any]], None], name: str = INQ_MID) \
        -> Callable[[Path], Checkpoint]:
    def make(run: Path) -> Checkpoint:
        rewrite(run / "checkpoints" / name, lambda meta, _: edit(meta))
        return loaded(run, name)
    return make


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(meta: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target = meta
        for part in parents:
            target = target[part]
        target[last] = value
    return edit


METADATA_CASES = {
    "iteration beyond the stage": (_set("position.iteration", 7),
                                   r"position.iteration 7 is beyond stage 'inq' \(0 to 6\)"),
    "INQ step out of range": (_set("position.step", 3),
                              r"position.step 3 is out of range for stage 'inq' \(0 to 2\)"),
    "stage out of range": (_set("position.stage", 9),
                           r"position.stage 9 is not a stage index of the recipe \(0 to 3\)"),
    "done mid-stage": (_set("position.done", True),
                       r"position.done is true at iteration 4 of step 0, before the end"),
    "missing train_state": (lambda meta: meta.pop("train_state"),
                            r"train_state None must be an object with iteration, loss_sum"),
    "train_state of another iteration": (_set("train_state.iteration", 3),
                                         r"train_state.iteration 3 is not the position's "),
    "loss count above the iteration": (_set("train_state.loss_count", 5),
                                       r"train_state.loss_count 5 is not an integer from 0 to 4"),
    "NaN loss sum": (_set("train_state.loss_sum", math.nan),
                     r"train_state.loss_sum nan is not a finite number"),
    "negative metrics rows": (_set("metrics_rows", -1), r"metrics_rows -1 is not a count"),
    "position not an object": (_set("position", [2, 0, 4]), r"position \[2, 0, 4\] must be"),
}


@pytest.mark.parametrize("case", sorted(METADATA_CASES))
def test_metadata_out_of_bounds_is_refused(run: Path, case: str) -> None:
    edit, message = METADATA_CASES[case]
    checkpoint = _metadata_case(edit)(run)
    with pytest.raises(FormatError, match=message) as info:
        check_checkpoint(RECIPE, checkpoint)
    assert str(info.value).startswith(f"{run / 'checkpoints' / INQ_MID}: ")


def test_a_mask_byte_of_7_is_refused(run: Path) -> None:
    def edit(_: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        raw = tensors["model.fc1.weight_mask"].view(torch.uint8).clone()
        raw.view(-1)[3] = 7
        tensors["model.fc1.weight_mask"] = raw.view(torch.bool)

    rewrite(run / "checkpoints" / DNS_MID, edit)
    checkpoint = loaded(run, DNS_MID)
    assert int(checkpoint.model_state["fc1.weight_mask"].view(torch.uint8).max()) == 7
    with pytest.raises(FormatError, match=r"fc1.weight_mask is not a mask of 0/1 \(bool\)"):
        check_checkpoint(RECIPE, checkpoint)


def _free_index(checkpoint: Checkpoint) -> int:
    fixed = checkpoint.model_state["fc1.weight_fixed"].view(-1)
    return int(torch.nonzero(torch.isnan(fixed))[0])


@pytest.mark.parametrize(("value", "message"), [
    ("weight", r"fc1.weight_fixed has \d+ free entries; its portion 0.5 of \d+ leaves \d+"),
    (0.3, r"fc1.weight_fixed holds a value that is not 0 or \+-2\^e with -?\d+ <= e <= -?\d+"),
    (2.0 ** 10, r"fc1.weight_fixed holds a value that is not 0 or \+-2\^e"),
])
def test_inq_fixed_entries_must_fit_the_level_set_and_portion(run: Path, value: Any,
                                                              message: str) -> None:
    index = _free_index(loaded(run, INQ_MID))

    def edit(_: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        fixed = tensors["model.fc1.weight_fixed"].clone()
        weight = tensors["model.fc1.weight"].clone()
        # a free entry made fixed: its weight's power of two, the weight set to agree with it
        chosen = 2.0 ** math.floor(math.log2(abs(float(weight.view(-1)[index])))) \
            if value == "weight" else value
        chosen = math.copysign(chosen, float(weight.view(-1)[index]))
        fixed.view(-1)[index] = chosen
        weight.view(-1)[index] = float(fixed.view(-1)[index])
        tensors["model.fc1.weight_fixed"], tensors["model.fc1.weight"] = fixed, weight

    rewrite(run / "checkpoints" / INQ_MID, edit)
    with pytest.raises(FormatError, match=message):
        check_checkpoint(RECIPE, loaded(run, INQ_MID))


def test_a_weight_that_disagrees_with_its_fixed_value_is_refused(run: Path) -> None:
    checkpoint = loaded(run, INQ_MID)
    fixed = checkpoint.model_state["fc1.weight_fixed"].view(-1)
    index = int(torch.nonzero(~torch.isnan(fixed) & (fixed != 0))[0])

    def edit(_: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        weight = tensors["model.fc1.weight"].clone()
        weight.view(-1)[index] *= 1.5
        tensors["model.fc1.weight"] = weight

    rewrite(run / "checkpoints" / INQ_MID, edit)
    with pytest.raises(FormatError, match=r"fc1.weight differs from its INQ fixed values"):
        check_checkpoint(RECIPE, loaded(run, INQ_MID))


def test_non_finite_weights_are_refused_naming_the_tensor(run: Path) -> None:
    def edit(_: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        bias = tensors["model.fc2.bias"].clone()
        bias[1] = math.inf
        tensors["model.fc2.bias"] = bias

    rewrite(run / "checkpoints" / DNS_END, edit)
    with pytest.raises(FormatError, match=r"fc2.bias holds NaN or infinite values"):
        check_checkpoint(RECIPE, loaded(run, DNS_END))


def test_a_missing_generator_state_is_refused(run: Path) -> None:
    rewrite(run / "checkpoints" / DNS_END, lambda _, tensors: tensors.pop("rng.torch"))
    with pytest.raises(FormatError, match=r"rng.torch is missing or not a generator state"):
        check_checkpoint(RECIPE, loaded(run, DNS_END))


def test_a_checkpoint_without_checksum_loads_unverified(run: Path) -> None:
    rewrite(run / "checkpoints" / DNS_END, lambda meta, tensors: None, with_checksum=False)
    checkpoint = loaded(run, DNS_END)
    assert not checkpoint.verified
    check_checkpoint(RECIPE, checkpoint)  # its contents are still checked
    assert load_checkpoint(run / "checkpoints" / INQ_MID).verified


def test_stage_ends_must_not_carry_a_train_state(run: Path) -> None:
    rewrite(run / "checkpoints" / DNS_END, lambda meta, _: meta.update(
        train_state={"iteration": 11, "loss_sum": 0.0, "loss_count": 0}))
    with pytest.raises(FormatError, match=r"train_state is present at a stage or step end"):
        check_checkpoint(RECIPE, loaded(run, DNS_END))

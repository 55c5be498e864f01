"""Run a recipe: its stages in order, into a run folder that can be resumed after a kill.

The run folder holds::

    recipe.yaml          the resolved recipe (every default written out)
    metrics.jsonl        one JSON object per evaluation
    checkpoints/         s<stage>-<name>-p<step>-i<iteration>[-end].safetensors
    model.safetensors    the final plain weights (masks and quantized values baked in)
    report.json          per-layer statistics, totals, test loss/accuracy/error
    model.ncz            the compact file (when the recipe has an ``export`` stage)

Each stage behaves like one ``caffe train`` run of the seed: its iteration count, learning
rate schedule and optimizer start afresh (for INQ, at each portion's step). Checkpoints are
written every ``checkpoint_interval`` iterations and at every stage (and INQ step) end; a
resumed run replays the stages' structure (``prepare``, ``quantize_step``, ``finalize``) on a
fresh model, loads the newest checkpoint and reaches the same final weights bit for bit.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

import nncompress as nnc
from nncompress._io import atomic_write_bytes, atomic_write_text
from nncompress.data import Splits, load_data
from nncompress.errors import ConfigError, FormatError, NNCompressError
from nncompress.models import build_model
from nncompress.recipe import (
    DNSStage,
    ExportStage,
    FinalizeStage,
    INQStage,
    Recipe,
    RecipeError,
    Stage,
    TrainStage,
    dump_recipe,
    recipe_to_dict,
)
from nncompress.report import build_report, write_report
from nncompress.train.checkpoint import (
    Checkpoint,
    list_checkpoints,
    load_checkpoint,
    restore_optimizer,
    save_checkpoint,
)
from nncompress.train.loop import (
    BatchOrder,
    TrainingLoop,
    TrainState,
    build_optimizer,
    build_schedule,
    evaluate,
)

__all__ = [
    "RunInterrupted",
    "RunResult",
    "check_recipe",
    "load_inputs",
    "load_run_model",
    "load_weights",
    "run_recipe",
]

_KEEP_PERIODIC = 2  # periodic checkpoints kept besides the stage-end ones


class RunInterrupted(Exception):
    """Raised by the ``stop_after`` hook: the run stops as if killed."""


@dataclass(frozen=True)
class RunResult:
    """What :func:`run_recipe` produced."""

    out_dir: Path
    report: dict[str, Any]
    model: nn.Module


@dataclass(frozen=True, order=True)
class _Position:
    stage: int
    step: int
    iteration: int
    done: bool  # the stage is complete


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load plain weights into ``model`` from ``.safetensors`` (or ``.pt`` with weights only).

    Keys may carry the ``model.`` prefix of nncompress checkpoints.

    Raises:
        ConfigError: the file is missing, unreadable or does not fit the model.

    Example:
        >>> # load_weights(net, "runs/x/model.safetensors")
    """
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"weights file {str(file)!r} not found")
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(file))
        else:
            state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # damaged or foreign files raise many types
        raise ConfigError(f"cannot read weights from {str(file)!r}: {exc}") from None
    if not isinstance(state, dict):
        raise ConfigError(f"{str(file)!r} holds no state dict")
    if any(k.startswith("model.") for k in state):
        state = {k[6:]: v for k, v in state.items() if k.startswith("model.")}
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ConfigError(f"weights in {str(file)!r} do not fit the model: missing "
                          f"{result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}")


def load_inputs(recipe: Recipe) -> tuple[nn.Module, Splits]:
    """Build the recipe's model (seeded, with its initial weights) and load its data.

    Example:
        >>> # model, splits = load_inputs(load_recipe("demo_lenet300_100"))
    """
    data = recipe.data
    splits = load_data(data.spec, scale=data.scale, validation=data.validation, seed=recipe.seed)
    torch.manual_seed(recipe.seed)
    model = build_model(recipe.model.ref, **recipe.model.kwargs)
    if recipe.model.weights:
        load_weights(model, recipe.model.weights)
    return model, splits


def _selection(stage: DNSStage | INQStage) -> dict[str | type[nn.Module], Any]:
    return dict(stage.layers.items())


def _apply_structure(model: nn.Module, stage: Stage, upto_step: int | None = None) -> nn.Module:
    """Prepare / quantize / finalize as ``stage`` does, without training.

    For an INQ stage, ``upto_step`` limits the quantization steps applied (None: all).
    """
    if isinstance(stage, DNSStage):
        nnc.prepare(model, nnc.DNSConfig(**stage.defaults), layers=_selection(stage))
    elif isinstance(stage, INQStage):
        nnc.prepare(model, nnc.INQConfig(portions=stage.portions, **stage.defaults),
                    layers=_selection(stage))
        last = len(stage.portions) - 1 if upto_step is None else upto_step
        for portion in stage.portions[:last + 1]:
            nnc.quantize_step(model, portion)
    elif isinstance(stage, FinalizeStage):
        model = nnc.finalize(model)
    return model


def check_recipe(recipe: Recipe, model: nn.Module | None = None) -> None:
    """Check that every stage's layer selection and configs fit the recipe's model.

    Builds the model (unless given) and applies each stage's ``prepare``, ``quantize_step``
    and ``finalize`` to a copy, without data or training.

    Raises:
        RecipeError: a stage does not fit the model (path ``stages[i]``).
        ConfigError: the model cannot be built.

    Example:
        >>> # check_recipe(load_recipe("demo_lenet300_100"))
    """
    if model is None:
        model = build_model(recipe.model.ref, **recipe.model.kwargs)
    trial = copy.deepcopy(model)
    for index, stage in enumerate(recipe.stages):
        try:
            trial = _apply_structure(trial, stage)
        except NNCompressError as exc:
            raise RecipeError(f"stages[{index}]", str(exc)) from None


def _plain_copy(model: nn.Module) -> nn.Module:
    return nnc.finalize(copy.deepcopy(model)) if nnc.is_prepared(model) else model


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]+", "_", name)[:40]


def _restore(recipe: Recipe, model: nn.Module,
             checkpoint: Checkpoint) -> tuple[nn.Module, _Position]:
    """Replay the stages' structure up to the checkpoint's position, then load its state."""
    pos = _Position(**checkpoint.metadata["position"])
    for index, stage in enumerate(recipe.stages[:pos.stage + 1]):
        if index < pos.stage or pos.done:
            model = _apply_structure(model, stage)
        elif isinstance(stage, INQStage):
            model = _apply_structure(model, stage, upto_step=pos.step)
        elif isinstance(stage, DNSStage):
            model = _apply_structure(model, stage)
    try:
        model.load_state_dict(checkpoint.model_state, strict=True)
    except RuntimeError as exc:
        raise FormatError(f"{checkpoint.path}: does not fit the recipe's model ({exc})") from None
    return model, pos


class _Runner:
    """Runs the stages of one recipe into one folder."""

    def __init__(self, recipe: Recipe, out: Path, model: nn.Module, splits: Splits,
                 progress: str, stop_after: int | None) -> None:
        self.recipe, self.out, self.model, self.splits = recipe, out, model, splits
        self.progress, self.stop_after = progress, stop_after
        self.rows: list[dict[str, Any]] = []
        self.iterations_done = 0
        self.started = time.monotonic()
        has_val = len(splits.val_y) > 0
        self.eval_split = "val" if has_val else "test"
        self.eval_x = splits.val_x if has_val else splits.test_x
        self.eval_y = splits.val_y if has_val else splits.test_y

    # -- checkpoints ----------------------------------------------------------------------

    def save(self, pos: _Position, optimizer: torch.optim.Optimizer | None,
             state: TrainState | None) -> None:
        stage = self.recipe.stages[pos.stage]
        name = (f"s{pos.stage:02d}-{_safe_name(stage.name)}-p{pos.step:03d}-"
                f"i{pos.iteration:09d}{'-end' if state is None else ''}.safetensors")
        meta = {"position": dataclasses.asdict(pos), "metrics_rows": len(self.rows),
                "recipe": self.recipe.name}
        if state is not None:
            meta["train_state"] = dataclasses.asdict(state)
        folder = self.out / "checkpoints"
        save_checkpoint(folder / name, model=self.model, optimizer=optimizer, metadata=meta)
        periodic = [p for p in list_checkpoints(folder) if not p.stem.endswith("-end")]
        for old in periodic[:-_KEEP_PERIODIC]:
            old.unlink(missing_ok=True)

    def resume_from(self, checkpoint: Checkpoint) -> _Position:
        self.model, pos = _restore(self.recipe, self.model, checkpoint)
        torch.set_rng_state(checkpoint.rng_state["torch"])
        self.rows = _read_rows(self.out / "metrics.jsonl")[:checkpoint.metadata["metrics_rows"]]
        return pos

    # -- stages ---------------------------------------------------------------------------

    def run(self, checkpoint: Checkpoint | None) -> None:
        pos = self.resume_from(checkpoint) if checkpoint is not None else None
        for index, stage in enumerate(self.recipe.stages):
            if pos is not None and (index < pos.stage or (index == pos.stage and pos.done)):
                continue
            resume = checkpoint if pos is not None and index == pos.stage else None
            self.run_stage(index, stage, resume)
            last_step = len(stage.portions) - 1 if isinstance(stage, INQStage) else 0
            iterations = stage.step_iterations()[-1] if isinstance(stage, INQStage) else \
                getattr(stage, "iterations", 0)
            self.save(_Position(index, last_step, iterations, True), None, None)

    def run_stage(self, index: int, stage: Stage, resume: Checkpoint | None) -> None:
        if isinstance(stage, (TrainStage, DNSStage)):
            if resume is None:
                self.model = _apply_structure(self.model, stage)
            self.train(index, 0, stage, stage.iterations, resume)
        elif isinstance(stage, INQStage):
            self.run_inq(index, stage, resume)
        elif isinstance(stage, FinalizeStage):
            self.model = nnc.finalize(self.model)
        elif isinstance(stage, ExportStage):
            self.export(stage)

    def run_inq(self, index: int, stage: INQStage, resume: Checkpoint | None) -> None:
        steps = stage.step_iterations()
        first, mid_step = 0, False
        if resume is None:  # prepare only; the steps follow one by one
            self.model = _apply_structure(self.model, stage, upto_step=-1)
        else:
            pos = _Position(**resume.metadata["position"])
            mid_step = pos.iteration < steps[pos.step]
            first = pos.step if mid_step else pos.step + 1
        for step in range(first, len(steps)):
            carried = resume if (mid_step and step == first) else None
            if carried is None:
                nnc.quantize_step(self.model, stage.portions[step])
            self.train(index, step, stage, steps[step], carried)
            if step < len(steps) - 1:
                self.save(_Position(index, step, steps[step], False), None, None)

    def train(self, index: int, step: int, stage: TrainStage | DNSStage | INQStage,
              iterations: int, resume: Checkpoint | None) -> None:
        optimizer = build_optimizer(self.model, stage.optimizer, stage.bias)
        state = TrainState()
        if resume is not None:
            restore_optimizer(optimizer, resume)
            state = TrainState(**resume.metadata["train_state"])
        label = stage.name if not isinstance(stage, INQStage) else \
            f"{stage.name} {stage.portions[step]:g}"

        def on_eval(record: dict[str, Any]) -> None:
            self.rows.append({"stage": stage.name, "stage_index": index, "step": step,
                              **record, "split": self.eval_split,
                              "elapsed_s": round(time.monotonic() - self.started, 3)})
            atomic_write_text(self.out / "metrics.jsonl",
                              "".join(json.dumps(r) + "\n" for r in self.rows))

        def on_checkpoint(current: TrainState) -> None:
            self.save(_Position(index, step, current.iteration, False), optimizer, current)

        TrainingLoop(
            model=self.model, train_x=self.splits.train_x, train_y=self.splits.train_y,
            eval_x=self.eval_x, eval_y=self.eval_y, optimizer=optimizer,
            schedule=build_schedule(stage.lr, iterations),
            order=BatchOrder(len(self.splits.train_y), stage.batch_size,
                             seed=self.recipe.seed * 1_000_003 + index * 1009 + step),
            iterations=iterations, eval_interval=stage.eval_interval,
            checkpoint_interval=stage.checkpoint_interval, description=label,
            progress=self.progress, on_eval=on_eval, on_checkpoint=on_checkpoint,
            after_iteration=self.count_iteration,
        ).run(state)

    def count_iteration(self) -> None:
        self.iterations_done += 1
        if self.stop_after is not None and self.iterations_done >= self.stop_after:
            raise RunInterrupted(f"stopped after {self.iterations_done} iterations")

    def export(self, stage: ExportStage) -> None:
        from nncompress.export import save_compact

        arch = {"ref": self.recipe.model.ref, "kwargs": self.recipe.model.kwargs}
        save_compact(_plain_copy(self.model), self.out / stage.file, arch=arch,
                     float_dtype=stage.float_dtype)

    # -- the end --------------------------------------------------------------------------

    def finish(self) -> dict[str, Any]:
        test_loss, test_accuracy = evaluate(self.model, self.splits.test_x, self.splits.test_y)
        final = _plain_copy(self.model)
        _save_weights(self.out / "model.safetensors", final, self.recipe)
        extra: dict[str, Any] = {"recipe": self.recipe.name, "model": self.recipe.model.ref,
                                 "data": self.recipe.data.spec, "stages": self.stage_results()}
        exports = [s for s in self.recipe.stages if isinstance(s, ExportStage)]
        if exports and (self.out / exports[-1].file).is_file():
            extra["compact"] = {"file": exports[-1].file,
                                "bytes": (self.out / exports[-1].file).stat().st_size}
        report = build_report(nnc.summarize(final).to_dict()["layers"],
                              test={"loss": test_loss, "accuracy": test_accuracy}, **extra)
        write_report(self.out / "report.json", report)
        return report

    def stage_results(self) -> list[dict[str, Any]]:
        last: dict[str, dict[str, Any]] = {}
        for row in self.rows:
            last[row["stage"]] = row
        return [{"stage": s.stage, "name": s.name,
                 **{k: last[s.name].get(k) for k in ("iteration", "accuracy", "kept_fraction")
                    if s.name in last}} for s in self.recipe.stages]


def _save_weights(path: Path, model: nn.Module, recipe: Recipe) -> None:
    from safetensors.torch import save

    header = json.dumps({"format": "nncompress-weights", "version": 1,
                         "architecture": {"ref": recipe.model.ref,
                                          "kwargs": recipe.model.kwargs},
                         "recipe": recipe.name})
    tensors = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(path, save(tensors, metadata={"nncompress": header}))


def _read_rows(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _newest_checkpoint(folder: Path) -> Checkpoint | None:
    for path in reversed(list_checkpoints(folder)):
        try:
            return load_checkpoint(path)
        except FormatError:
            continue  # damaged: fall back to the one before
    return None


def _first_difference(a: Any, b: Any, path: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in [*a, *(k for k in b if k not in a)]:
            found = _first_difference(a.get(key), b.get(key), f"{path}.{key}" if path else key)
            if found:
                return found
        return ""
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            found = _first_difference(x, y, f"{path}[{i}]")
            if found:
                return found
        return ""
    return path or "(top)" if a != b else ""


def _open_folder(out: Path, recipe: Recipe, resume: bool) -> Checkpoint | None:
    saved = out / "recipe.yaml"
    if resume and saved.is_file():
        import yaml

        previous = yaml.safe_load(saved.read_text(encoding="utf-8"))
        where = _first_difference(previous, recipe_to_dict(recipe))
        if where:
            raise ConfigError(f"{out}: the run was started with a different recipe (first "
                              f"difference at {where}); resume with the same recipe and --set "
                              "values, or start a new run with another --out")
        return _newest_checkpoint(out / "checkpoints")
    if out.exists() and any(out.iterdir()):
        hint = "use --resume to continue it" if saved.is_file() else "it is not a run folder"
        raise ConfigError(f"output folder {str(out)!r} is not empty ({hint}); "
                          "or choose another --out")
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    atomic_write_text(saved, dump_recipe(recipe))
    return None


def run_recipe(recipe: Recipe, out_dir: str | Path, *, resume: bool = False,
               progress: str = "bar", stop_after: int | None = None,
               on_ready: Callable[[Path], None] | None = None) -> RunResult:
    """Run every stage of ``recipe`` into ``out_dir`` and write the report.

    Nothing is written until the data loads, the model builds and every stage's layer
    selection fits the model.

    Args:
        recipe: a resolved recipe (:func:`nncompress.recipe.load_recipe`).
        out_dir: the run folder; must be new or empty unless ``resume``.
        resume: continue the run in ``out_dir`` from its newest checkpoint.
        progress: ``"bar"``, ``"log"`` (a line per evaluation) or ``"none"``.
        stop_after: stop with :class:`RunInterrupted` after this many iterations (tests).
        on_ready: called with the folder once the run starts writing into it.

    Returns:
        The run folder, the report data and the trained model.

    Raises:
        NNCompressError: bad recipe, data, weights or run folder.

    Example:
        >>> # run_recipe(load_recipe("demo_lenet300_100"), "runs/demo")
    """
    out = Path(out_dir)
    model, splits = load_inputs(recipe)
    check_recipe(recipe, model)
    checkpoint = _open_folder(out, recipe, resume)
    if on_ready is not None:
        on_ready(out)
    runner = _Runner(recipe, out, model, splits, progress, stop_after)
    runner.run(checkpoint)
    report = runner.finish()
    return RunResult(out_dir=out, report=report, model=runner.model)


def _read_header(path: Path) -> dict[str, Any]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            text = (handle.metadata() or {}).get("nncompress")
    except Exception as exc:  # damaged or foreign files raise many types
        raise FormatError(f"{path}: not a readable safetensors file ({exc})") from None
    if text is None:
        raise FormatError(f"{path}: no nncompress header; give a run folder, its "
                          "model.safetensors, a checkpoint or a .ncz file")
    header: dict[str, Any] = json.loads(text)
    return header


def _run_recipe_of(folder: Path) -> Recipe | None:
    from nncompress.recipe import load_recipe

    file = folder / "recipe.yaml"
    return load_recipe(file, check_registries=False) if file.is_file() else None


def _checked_ref(ref: str, allow_import: bool) -> str:
    if ":" in ref and not allow_import:
        raise ConfigError(f"the model {ref!r} is built by importing Python code; pass "
                          "--allow-import if you trust this file")
    return ref


def load_run_model(path: str | Path, *, allow_import: bool = False) -> tuple[nn.Module,
                                                                              Recipe | None]:
    """Load the model of a run folder, a ``model.safetensors``, a checkpoint or a ``.ncz``.

    A run folder gives its final weights, or its newest checkpoint while it is unfinished.
    A checkpoint is rebuilt by replaying its run's stages up to where it was saved.

    Args:
        path: the run folder or file.
        allow_import: allow ``package.module:callable`` model refs (they run code).

    Returns:
        The model (in eval mode) and the run's recipe when one is found.

    Raises:
        NNCompressError: nothing loadable at ``path``.

    Example:
        >>> # model, recipe = load_run_model("runs/demo")
    """
    target = Path(path)
    if target.is_dir():
        recipe = _run_recipe_of(target)
        if (target / "model.safetensors").is_file():
            return load_run_model(target / "model.safetensors", allow_import=allow_import)
        newest = list_checkpoints(target / "checkpoints")
        if recipe is None or not newest:
            raise ConfigError(f"{str(target)!r} is not a run folder with weights or checkpoints")
        target = newest[-1]
    if not target.is_file():
        raise ConfigError(f"{str(target)!r} does not exist")
    if target.suffix not in (".ncz", ".safetensors"):
        raise ConfigError(f"{str(target)!r} is neither a run folder nor a .safetensors or .ncz "
                          "file")
    if target.suffix == ".ncz":
        from nncompress.export import load_compact

        return load_compact(target, allow_import=allow_import).eval(), None
    header = _read_header(target)
    if header.get("format") == "nncompress-weights":
        arch = header["architecture"]
        model = build_model(_checked_ref(arch["ref"], allow_import), **arch["kwargs"])
        load_weights(model, target)
        return model.eval(), _run_recipe_of(target.parent)
    recipe = _run_recipe_of(target.parent.parent)
    if recipe is None:
        raise ConfigError(f"{target}: a checkpoint is loaded with its run folder's recipe.yaml, "
                          f"which is not at {target.parent.parent / 'recipe.yaml'}")
    model = build_model(_checked_ref(recipe.model.ref, allow_import), **recipe.model.kwargs)
    model, _ = _restore(recipe, model, load_checkpoint(target))
    return model.eval(), recipe

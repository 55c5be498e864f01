"""Run a recipe: its stages in order, into a run folder that can be resumed after a kill.

Each stage behaves like one ``caffe train`` run of the seed: its iteration count, learning
rate schedule and optimizer start afresh (for INQ, at each portion's step). Checkpoints are
written every ``checkpoint_interval`` iterations and at every stage (and INQ step) end; a
resumed run replays the stages' structure (``prepare``, ``quantize_step``, ``finalize``) on a
fresh model, loads the newest checkpoint and reaches the same final weights bit for bit.

This module is the runner only: :mod:`nncompress.run_folder` lists the run folder's files and
opens, checks and loads it (``eval`` and ``export`` use it without the runner);
:mod:`nncompress.stages` applies and replays each stage's layer structure.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nncompress._io import atomic_write_text
from nncompress._teachers import Teachers
from nncompress.errors import NonFiniteError
from nncompress.prepare import finalize, quantize_step, vd_kl, vd_to_masks
from nncompress.recipe import (
    DNSStage,
    ExportStage,
    FinalizeStage,
    INQStage,
    Recipe,
    Stage,
    TrainStage,
    VDStage,
    resolve_epochs,
)
from nncompress.report import build_report, write_report
from nncompress.report.summary import summarize
from nncompress.run_folder import (
    load_run_model,
    load_weights,
    open_run_folder,
    read_rows,
    save_weights,
)
from nncompress.run_inputs import RunData, load_inputs
from nncompress.run_resume import with_last_checkpoint
from nncompress.stages import (
    Position,
    apply_structure,
    check_recipe,
    end_position,
    plain_copy,
    restore_checkpoint,
    stage_tag,
)
from nncompress.train.checkpoint import (
    Checkpoint,
    list_checkpoints,
    load_checkpoint,
    restore_optimizer,
    save_checkpoint,
)
from nncompress.train.device import Precision, resolve_device, tensors_to
from nncompress.train.distributed import (
    RankBatchOrder,
    check_batch_divides,
    is_writer,
    mean_over_ranks,
    share_from_writer,
    verify_ranks,
    world_size,
    wrap,
    writer_first,
)
from nncompress.train.loop import (
    Criterion,
    TrainingLoop,
    TrainState,
    build_optimizer,
    build_schedule,
)

# check_recipe (stages), load_run_model and load_weights (run_folder) are re-exported: code
# that imports them from here keeps working.
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


class _Runner:
    """Runs the stages of one recipe into one folder."""

    def __init__(self, recipe: Recipe, out: Path, model: nn.Module, data: RunData,
                 progress: str, stop_after: int | None, verify: bool = False) -> None:
        self.recipe, self.out, self.model, self.data = recipe, out, model, data
        self.writer = is_writer()  # under torchrun only rank 0 writes and shows progress
        self.progress, self.stop_after = progress if self.writer else "none", stop_after
        self.verify = verify  # compare the ranks' checksums at every evaluation too
        self.rows: list[dict[str, Any]] = []
        self.iterations_done = 0
        self.started = time.monotonic()
        self.eval_split = data.eval_split
        where = next(iter(model.parameters()), torch.empty(0)).device  # where run_recipe put it
        self.amp = Precision(recipe.precision, where.type)  # autocast; fp16: the grad scaler
        self.teachers = Teachers(recipe, out, model, self.writer)  # of distilling stages

    # -- checkpoints ----------------------------------------------------------------------

    def save(self, pos: Position, optimizer: torch.optim.Optimizer | None,
             state: TrainState | None) -> None:
        stage = self.recipe.stages[pos.stage]
        name = (f"{stage_tag(pos.stage, stage.name)}-p{pos.step:03d}-"
                f"i{pos.iteration:09d}{'-end' if state is None else ''}.safetensors")
        verify_ranks(self.model, f"at checkpoint {name}")
        if not self.writer:
            return
        meta = {"position": dataclasses.asdict(pos), "metrics_rows": len(self.rows),
                "recipe": self.recipe.name, "world_size": world_size()}
        if state is not None:
            meta["train_state"] = dataclasses.asdict(state)
            meta.update({"grad_scaler": self.amp.state()} if self.amp.scaler else {})
        folder = self.out / "checkpoints"
        save_checkpoint(folder / name, model=self.model, optimizer=optimizer, metadata=meta)
        periodic = [p for p in list_checkpoints(folder) if not p.stem.endswith("-end")]
        for old in periodic[:-_KEEP_PERIODIC]:
            old.unlink(missing_ok=True)

    def resume_from(self, checkpoint: Checkpoint) -> Position:
        self.model, pos = restore_checkpoint(self.recipe, self.model, checkpoint)
        torch.set_rng_state(checkpoint.rng_state["torch"])
        if "cuda" in checkpoint.rng_state and self.amp.device_type == "cuda":
            torch.cuda.set_rng_state(checkpoint.rng_state["cuda"])
        self.rows = read_rows(self.out / "metrics.jsonl")[:checkpoint.metadata["metrics_rows"]]
        saved = int(checkpoint.metadata.get("world_size", 1))
        if saved != world_size() and self.writer:
            print(f"nncompress: resuming a run of {saved} process(es) with {world_size()}: the "
                  "global batch is the same, but the result will not be bit-identical to an "
                  f"uninterrupted run of {saved}", file=sys.stderr, flush=True)
        return pos

    # -- stages ---------------------------------------------------------------------------

    def run(self, checkpoint: Checkpoint | None) -> None:
        pos = self.resume_from(checkpoint) if checkpoint is not None else None
        for index, stage in enumerate(self.recipe.stages):
            if pos is not None and (index < pos.stage or (index == pos.stage and pos.done)):
                continue
            resume = checkpoint if pos is not None and index == pos.stage else None
            self.run_stage(index, stage, resume)
            self.teachers.stage_ended(index, self.model)  # before the end checkpoint
            self.save(end_position(index, stage), None, None)

    def run_stage(self, index: int, stage: Stage, resume: Checkpoint | None) -> None:
        if isinstance(stage, (TrainStage, DNSStage)):
            if resume is None:
                self.model = apply_structure(self.model, stage)
            self.train(index, 0, stage, stage.total_iterations(), resume)
        elif isinstance(stage, VDStage):
            if resume is None:  # the masks come from log alpha once the stage has trained
                self.model = apply_structure(self.model, stage, upto_step=-1)
            self.train(index, 0, stage, stage.total_iterations(), resume)
            vd_to_masks(self.model)
        elif isinstance(stage, INQStage):
            self.run_inq(index, stage, resume)
        elif isinstance(stage, FinalizeStage):
            self.model = finalize(self.model)
        elif isinstance(stage, ExportStage):
            self.export(stage)

    def run_inq(self, index: int, stage: INQStage, resume: Checkpoint | None) -> None:
        steps = stage.step_iterations()
        first, mid_step = 0, False
        if resume is None:  # prepare only; the steps follow one by one
            self.model = apply_structure(self.model, stage, upto_step=-1)
        else:
            pos = Position(**resume.metadata["position"])
            mid_step = pos.iteration < steps[pos.step]
            first = pos.step if mid_step else pos.step + 1
        for step in range(first, len(steps)):
            carried = resume if (mid_step and step == first) else None
            if carried is None:
                quantize_step(self.model)  # the next portion of the layers' schedule
            self.train(index, step, stage, steps[step], carried)
            if step < len(steps) - 1:
                self.save(Position(index, step, steps[step], False), None, None)

    def train(self, index: int, step: int, stage: TrainStage | DNSStage | VDStage | INQStage,
              iterations: int, resume: Checkpoint | None) -> None:
        optimizer = build_optimizer(self.model, stage.optimizer, stage.bias)
        state = TrainState()
        self.amp = Precision(self.recipe.precision, self.amp.device_type)  # a new scaler
        if resume is not None:
            restore_optimizer(optimizer, resume)
            self.amp.load_state(resume.metadata.get("grad_scaler", {}))
            state = TrainState(**resume.metadata["train_state"])
        label = stage.name if not isinstance(stage, INQStage) else \
            f"{stage.name} {stage.portions[step]:g}"

        def on_eval(record: dict[str, Any]) -> None:
            record["loss"] = mean_over_ranks(record["loss"])  # evaluations are global already
            if self.verify:
                verify_ranks(self.model, f"at iteration {record['iteration']} of {label}")
            self.rows.append({"stage": stage.name, "stage_index": index, "step": step,
                              **record, "split": self.eval_split,
                              "elapsed_s": round(time.monotonic() - self.started, 3)})
            if self.writer:
                atomic_write_text(self.out / "metrics.jsonl",
                                  "".join(json.dumps(r) + "\n" for r in self.rows))

        def on_checkpoint(current: TrainState) -> None:
            current.loss_sum = mean_over_ranks(current.loss_sum)  # saved alike by every rank
            self.save(Position(index, step, current.iteration, False), optimizer, current)

        TrainingLoop(
            model=wrap(self.model), **self.data.loop_inputs(stage.batch_size), optimizer=optimizer,
            schedule=build_schedule(stage.lr, iterations),
            order=RankBatchOrder(self.data.train_size, stage.batch_size,
                                 seed=self.recipe.seed * 1_000_003 + index * 1009 + step),
            iterations=iterations, eval_interval=stage.eval_interval,
            checkpoint_interval=stage.checkpoint_interval, description=label,
            progress=self.progress, on_eval=on_eval, on_checkpoint=on_checkpoint,
            after_iteration=self.count_iteration, amp=self.amp,
            criterion=self.criterion(stage),
        ).run(state)

    def criterion(self, stage: Stage) -> Criterion | None:
        """The stage's training loss: distillation or cross-entropy, plus a vd stage's KL term."""
        base = self.teachers.criterion(stage)
        if not isinstance(stage, VDStage):
            return base
        model, size = self.model, self.data.train_size

        def with_kl(x: torch.Tensor, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            loss = F.cross_entropy(out, y) if base is None else base(x, out, y)
            return loss + vd_kl(model) / size

        return with_kl

    def count_iteration(self) -> None:
        self.iterations_done += 1
        if self.stop_after is not None and self.iterations_done >= self.stop_after:
            raise RunInterrupted(f"stopped after {self.iterations_done} iterations")

    def export(self, stage: ExportStage) -> None:
        from nncompress.export import save_compact

        if not self.writer:
            return
        arch = {"ref": self.recipe.model.ref, "kwargs": self.recipe.model.kwargs}
        save_compact(plain_copy(self.model), self.out / stage.file, arch=arch,
                     float_dtype=stage.float_dtype)

    # -- the end --------------------------------------------------------------------------

    def finish(self) -> dict[str, Any]:
        batch = max((s.batch_size for s in self.recipe.stages if hasattr(s, "batch_size")),
                    default=100)
        test_loss, test_accuracy = self.data.evaluate_test(self.model, batch)
        final = plain_copy(self.model)
        if self.writer:
            save_weights(self.out / "model.safetensors", final, self.recipe)
        extra: dict[str, Any] = {"recipe": self.recipe.name, "model": self.recipe.model.ref,
                                 "data": self.recipe.data.spec, "stages": self.stage_results()}
        exports = [s for s in self.recipe.stages if isinstance(s, ExportStage)]
        if exports and (self.out / exports[-1].file).is_file():
            extra["compact"] = {"file": exports[-1].file,
                                "bytes": (self.out / exports[-1].file).stat().st_size}
        report = build_report(summarize(final).to_dict()["layers"],
                              test={"loss": test_loss, "accuracy": test_accuracy}, **extra)
        if self.writer:
            write_report(self.out / "report.json", report)
        return report

    def stage_results(self) -> list[dict[str, Any]]:
        last: dict[str, dict[str, Any]] = {}
        for row in self.rows:
            last[row["stage"]] = row
        return [{"stage": s.stage, "name": s.name,
                 **{k: last[s.name].get(k) for k in ("iteration", "accuracy", "kept_fraction")
                    if s.name in last}} for s in self.recipe.stages]


def _open_for_rank(out: Path, recipe: Recipe, resume: bool) -> Checkpoint | None:
    """Rank 0 opens (or checks) the run folder; under torchrun the others load its checkpoint."""
    checkpoint = writer_first(lambda: open_run_folder(out, recipe, resume))
    path = share_from_writer(None if checkpoint is None else str(checkpoint.path))
    if is_writer() or path is None:
        return checkpoint
    return load_checkpoint(path)


def run_recipe(recipe: Recipe, out_dir: str | Path, *, resume: bool = False,
               progress: str = "bar", stop_after: int | None = None, verify_ranks: bool = False,
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
        verify_ranks: under torchrun, compare the ranks at every evaluation too (as does the
            recipe's ``verify_ranks: true``).
        on_ready: called with the folder once the run starts writing into it.

    Returns:
        The run folder, the report data and the trained model.

    Raises:
        NNCompressError: bad recipe, data, weights or run folder.

    Example:
        >>> # run_recipe(load_recipe("demo_lenet300_100"), "runs/demo")
    """
    out = Path(out_dir)
    device = resolve_device(recipe.device, recipe.precision)  # before anything loads
    model, splits = load_inputs(recipe)
    model, splits = model.to(device), tensors_to(splits, device)  # in-memory sets move whole
    data = RunData(splits)
    recipe = resolve_epochs(recipe, data.train_size)  # recipe.yaml records the iterations
    check_recipe(recipe, model)
    for stage in recipe.stages:
        if isinstance(stage, (TrainStage, DNSStage, VDStage, INQStage)):
            check_batch_divides(stage.batch_size)
    checkpoint = _open_for_rank(out, recipe, resume)
    if on_ready is not None and is_writer():
        on_ready(out)
    runner = _Runner(recipe, out, model, data, progress, stop_after,
                     verify_ranks or recipe.verify_ranks)
    try:
        runner.run(checkpoint)
    except NonFiniteError as exc:  # a diverged run: say where it can be picked up
        raise with_last_checkpoint(exc, out) from None
    report = runner.finish()
    return RunResult(out_dir=out, report=report, model=runner.model)

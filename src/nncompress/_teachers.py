"""The teachers of a recipe's distilling stages: what each names, checked, written and loaded.

A training stage's ``distill.teacher`` (:class:`~nncompress.train.distill.DistillConfig`) is:

- the name of an earlier stage: the model as that stage left it, with masks and quantized
  levels baked in (a plain model, so a fixed function). When that stage ends, the run writes
  it to ``teachers/s<index>-<name>.safetensors`` in the run folder (atomically, before the
  stage's end checkpoint), and a resumed run reads it back from there: the same teacher, bit
  for bit, as the run that was not interrupted.
- a model file, read relative to the working directory like ``model.weights``: a
  ``.safetensors`` / ``.pth`` / ``.pt`` state dict of the recipe's model, or a ``.ncz`` file
  holding the recipe's model.

Every teacher is a copy of the recipe's freshly built model holding the teacher's weights,
on the run's device. :func:`check_teachers` checks them all before a run writes anything
(and for ``nncompress validate``); :class:`Teachers` gives the runner the loss of each stage.
"""

from __future__ import annotations

import copy
from pathlib import Path

from torch import nn

from nncompress._typed import RecipeError
from nncompress.errors import ConfigError, FormatError, NNCompressError, did_you_mean
from nncompress.models import load_state_dict_file
from nncompress.models.weights import mismatches
from nncompress.recipe import Recipe, Stage
from nncompress.stages import plain_copy, stage_tag
from nncompress.train.distill import DistillationCriterion, DistillConfig

__all__ = ["TEACHER_SUFFIXES", "Teachers", "check_teachers", "load_teacher_file"]

TEACHER_SUFFIXES = (".safetensors", ".pth", ".pt", ".ncz")


def _config(stage: Stage) -> DistillConfig | None:
    config = getattr(stage, "distill", None)
    return config if isinstance(config, DistillConfig) else None


def load_teacher_file(file: Path, template: nn.Module) -> nn.Module:
    """A copy of the plain ``template`` holding the weights of a model file.

    Raises:
        ConfigError: the file cannot be read or does not fit ``template`` (each key named).
        FormatError: a damaged ``.ncz`` file.
    """
    teacher = copy.deepcopy(template)
    if file.suffix != ".ncz":
        return load_state_dict_file(teacher, file)
    from nncompress.export import load_compact

    state = load_compact(file).state_dict()
    problems = mismatches(teacher.state_dict(), state)
    if problems:
        raise ConfigError(f"the model in {str(file)!r} does not fit the model: "
                          + "; ".join(problems))
    teacher.load_state_dict(state, strict=False)
    return teacher


def check_teachers(recipe: Recipe, model: nn.Module, *, require_files: bool = True) -> None:
    """Check the teacher of every distilling stage against the recipe and its plain ``model``.

    Args:
        recipe: the recipe.
        model: its model, plain.
        require_files: whether a teacher file that does not exist is an error (``run``) or
            left to :func:`missing_teacher_files` (``validate``: a teacher that another run
            writes may not exist yet).

    Raises:
        RecipeError: at ``stages[i].distill.teacher``: a stage that is not earlier, neither a
            stage nor a model file, a missing file (with ``require_files``), or a model that
            does not fit.

    Example:
        >>> # check_teachers(recipe, build_model(recipe.model.ref))
    """
    names = [stage.name for stage in recipe.stages]
    for index, stage in enumerate(recipe.stages):
        config = _config(stage)
        if config is None:
            continue
        path, teacher = f"stages[{index}].distill.teacher", config.teacher
        earlier = ", ".join(repr(n) for n in names[:index])
        if teacher in names:
            at = names.index(teacher)
            if at >= index:
                when = "this stage itself" if at == index else f"stage {at}, which runs later"
                raise RecipeError(path, f"{teacher!r} is {when}; a teacher is the model at the "
                                  f"end of an earlier stage ({earlier or 'none here'}) or a "
                                  "model file")
            continue
        _check_file(teacher, path, earlier, names, model, require_files)


def missing_teacher_files(recipe: Recipe) -> list[str]:
    """``stages[i].distill.teacher: FILE`` for each teacher file that does not exist."""
    names = {stage.name for stage in recipe.stages}
    missing = []
    for index, stage in enumerate(recipe.stages):
        config = _config(stage)
        if config is not None and config.teacher not in names \
                and not Path(config.teacher).is_file():
            missing.append(f"stages[{index}].distill.teacher: {config.teacher}")
    return missing


def _check_file(teacher: str, path: str, earlier: str, names: list[str],
                model: nn.Module, require_files: bool) -> None:
    file = Path(teacher)
    stages = f"an earlier stage ({earlier})" if earlier else "a stage before this one"
    if file.suffix not in TEACHER_SUFFIXES:
        raise RecipeError(path, f"{teacher!r} is neither a stage of the recipe"
                          f"{did_you_mean(teacher, names)} nor a model file (.safetensors, "
                          f".pth, .pt or .ncz); give {stages} or a model file")
    if not file.is_file():
        if not require_files:
            return
        raise RecipeError(path, f"teacher file {teacher!r} not found; give an existing model "
                          f"file (.safetensors, .pth, .pt or .ncz) or {stages}")
    try:
        load_teacher_file(file, plain_copy(model))
    except NNCompressError as exc:
        raise RecipeError(path, f"{exc}; the teacher must be a model of the recipe's "
                          "architecture (model.ref and model.kwargs)") from None


class Teachers:
    """The teachers of one run: written when their stage ends, loaded when a stage needs one.

    Args:
        recipe: the run's recipe, checked by :func:`check_teachers`.
        out: the run folder.
        model: the recipe's model as built (plain); copies of it hold the teachers.
        writer: whether this process writes the run folder (rank 0 under torchrun).
    """

    def __init__(self, recipe: Recipe, out: Path, model: nn.Module, writer: bool) -> None:
        self.recipe, self.out, self.writer = recipe, out, writer
        configs = [c for c in map(_config, recipe.stages) if c is not None]
        names = {stage.name for stage in recipe.stages}
        self.named = {c.teacher for c in configs if c.teacher in names}  # stages to keep
        self.template = copy.deepcopy(model) if configs else None
        self.loaded: dict[str, nn.Module] = {}

    def snapshot_path(self, index: int) -> Path:
        """The file of the teacher that stage ``index`` leaves."""
        return self.out / "teachers" / f"{stage_tag(index, self.recipe.stages[index].name)}" \
            ".safetensors"

    def stage_ended(self, index: int, model: nn.Module) -> None:
        """Keep (and write) the model stage ``index`` left, when a later stage learns from it."""
        name = self.recipe.stages[index].name
        if name not in self.named or self.template is None:
            return
        teacher = copy.deepcopy(self.template)  # as a resumed run rebuilds it from the file
        teacher.load_state_dict(plain_copy(model).state_dict())
        if self.writer:
            from nncompress.run_folder import save_weights

            save_weights(self.snapshot_path(index), teacher, self.recipe)
        self.loaded[name] = teacher

    def criterion(self, stage: Stage) -> DistillationCriterion | None:
        """The training loss of ``stage``: distillation from its teacher, or None."""
        config = _config(stage)
        if config is None:
            return None
        if config.teacher not in self.loaded:
            self.loaded[config.teacher] = self._load(config.teacher)
        return DistillationCriterion(self.loaded[config.teacher], config)

    def _load(self, teacher: str) -> nn.Module:
        assert self.template is not None  # there is a distilling stage
        names = [stage.name for stage in self.recipe.stages]
        if teacher not in names:
            return load_teacher_file(Path(teacher), self.template)
        file = self.snapshot_path(names.index(teacher))
        if not file.is_file():
            raise FormatError(f"{file}: the teacher that stage {teacher!r} left is missing "
                              "from the run folder (written when that stage ended); restore "
                              "it, or start a new run with another --out")
        return load_teacher_file(file, self.template)

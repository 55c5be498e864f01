"""Knowledge distillation: a student trained on a fixed teacher's softened outputs and the labels.

The loss of Hinton, Vinyals and Dean, "Distilling the Knowledge in a Neural Network" (2015)::

    alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))
        + (1 - alpha) * cross_entropy(student, target)

The temperature ``T`` softens both distributions so that the teacher's small probabilities
(which wrong classes look alike) carry signal; ``T^2`` keeps the soft term's gradient on the
scale of the hard term's as ``T`` changes. The KL term is averaged over the batch, like the
cross-entropy. :func:`distillation_loss` is the loss for one's own loop; a recipe's
``distill:`` key (:class:`DistillConfig`) makes the run's training loop use it through
:class:`DistillationCriterion`.

Example:
    >>> student = torch.tensor([[2.0, 0.0]])
    >>> teacher, target = torch.tensor([[0.0, 2.0]]), torch.tensor([0])
    >>> float(distillation_loss(student, teacher, target, alpha=0.0)) == float(
    ...     F.cross_entropy(student, target))
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from nncompress._config import FieldError

__all__ = ["DEFAULT_ALPHA", "DEFAULT_TEMPERATURE", "DistillConfig", "DistillationCriterion",
           "distillation_loss"]

# Hinton et al. report temperatures from 2 to 20 working; 4 suits MNIST-sized nets, and an
# even weighting of the soft and hard terms is the usual starting point.
DEFAULT_TEMPERATURE = 4.0
DEFAULT_ALPHA = 0.5


def _check(temperature: float, alpha: float, owner: str) -> None:
    real_t = isinstance(temperature, (int, float)) and not isinstance(temperature, bool)
    if not (real_t and math.isfinite(temperature) and temperature > 0):
        raise FieldError(owner, "temperature", f"must be a finite number > 0, got "
                         f"{temperature!r}; e.g. {DEFAULT_TEMPERATURE:g}")
    real_a = isinstance(alpha, (int, float)) and not isinstance(alpha, bool)
    if not (real_a and 0.0 <= alpha <= 1.0):
        raise FieldError(owner, "alpha", f"must be a number in [0, 1] (the soft term's weight; "
                         f"1 - alpha weighs the labels), got {alpha!r}")


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                      target: torch.Tensor, temperature: float = DEFAULT_TEMPERATURE,
                      alpha: float = DEFAULT_ALPHA) -> torch.Tensor:
    """The distillation loss of a batch: soft (teacher) term plus hard (label) term.

    ``alpha * T^2 * KL(softmax(teacher/T) || softmax(student/T)) + (1 - alpha) *
    cross_entropy(student, target)``, each term a mean over the batch. Half-precision logits
    are computed in float32. Gradients flow to ``student_logits`` only.

    Args:
        student_logits: ``(batch, classes)`` outputs of the model being trained.
        teacher_logits: the teacher's outputs for the same inputs.
        target: ``(batch,)`` class indices.
        temperature: ``T`` > 0 (default 4.0); 1 compares the plain softmax outputs.
        alpha: weight of the soft term in [0, 1] (default 0.5); 0 is plain cross-entropy.

    Returns:
        The scalar loss.

    Raises:
        ConfigError: ``temperature`` or ``alpha`` out of range, or the logits' shapes differ.

    Example:
        >>> s, t, y = torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([0, 1])
        >>> round(float(distillation_loss(s, t, y, alpha=1.0)), 6)  # equal outputs: no KL
        0.0
    """
    _check(temperature, alpha, "distillation_loss")
    if student_logits.shape != teacher_logits.shape:
        raise FieldError("distillation_loss", "teacher_logits", f"has shape "
                         f"{list(teacher_logits.shape)}, the student's logits "
                         f"{list(student_logits.shape)}; the teacher must predict the same "
                         "classes")
    student = _at_least_float32(student_logits)
    teacher = _at_least_float32(teacher_logits).detach()
    hard = F.cross_entropy(student, target) if alpha < 1.0 else student.new_zeros(())
    if alpha == 0.0:
        return hard
    soft = F.kl_div(F.log_softmax(student / temperature, dim=1),
                    F.log_softmax(teacher / temperature, dim=1),
                    reduction="batchmean", log_target=True)
    return alpha * temperature * temperature * soft + (1.0 - alpha) * hard


def _at_least_float32(logits: torch.Tensor) -> torch.Tensor:
    return logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits


@dataclass(frozen=True, kw_only=True)
class DistillConfig:
    """A training stage's ``distill:`` settings.

    Attributes:
        teacher: the name of an earlier stage of the recipe (the model as that stage left it,
            masks and levels baked in) or a model file: a ``.safetensors`` / ``.pth`` state
            dict of the recipe's model, or a ``.ncz`` file holding it.
        temperature: ``T`` of :func:`distillation_loss`.
        alpha: the soft term's weight.

    Raises:
        FieldError: an empty teacher, or ``temperature`` / ``alpha`` out of range.

    Example:
        >>> DistillConfig(teacher="reference").temperature
        4.0
    """

    teacher: str
    temperature: float = DEFAULT_TEMPERATURE
    alpha: float = DEFAULT_ALPHA

    def __post_init__(self) -> None:
        if not isinstance(self.teacher, str) or not self.teacher.strip():
            raise FieldError("DistillConfig", "teacher", f"must name an earlier stage (e.g. "
                             f"'reference') or a model file, got {self.teacher!r}")
        _check(self.temperature, self.alpha, "DistillConfig")


class DistillationCriterion:
    """The training loss of a distilling stage: runs the teacher, then :func:`distillation_loss`.

    The teacher is put in eval mode with its parameters frozen, and runs without autograd: a
    fixed function of the batch. It runs inside the training step's autocast, so under the
    stage's precision.

    Args:
        teacher: a plain model on the device of the batches.
        config: temperature and alpha.

    Example:
        >>> crit = DistillationCriterion(nn.Linear(2, 3), DistillConfig(teacher="t"))
        >>> crit(torch.ones(4, 2), torch.zeros(4, 3), torch.zeros(4, dtype=torch.long)).ndim
        0
    """

    def __init__(self, teacher: nn.Module, config: DistillConfig) -> None:
        self.teacher, self.config = teacher.eval(), config
        for parameter in teacher.parameters():
            parameter.requires_grad_(False)

    def __call__(self, inputs: torch.Tensor, logits: torch.Tensor,
                 target: torch.Tensor) -> torch.Tensor:
        """The loss of one batch, given the student's ``logits`` for ``inputs``."""
        with torch.no_grad():
            teacher_logits = self.teacher(inputs)
        return distillation_loss(logits, teacher_logits, target, self.config.temperature,
                                 self.config.alpha)

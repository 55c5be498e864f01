"""Published anchors and the benchmark goals, checked against benchmark rows.

A goal names a model, which runs may meet it (any, pruned by DNS or VD, or INQ alone at one
K) and conditions on one run: compression (entries per kept entry), test error, compact file bytes,
or test error above the run's own reference. Among the runs that may meet it, the one shown
is the one that fails the fewest conditions, then by the smallest sum of relative shortfalls.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from _bench_runs import RunRow

__all__ = ["ANCHORS", "GOALS", "Anchor", "Condition", "Goal", "GoalResult", "achieved",
           "check_goal"]

_EPS = 1e-9  # an error of 0.0091 is 1 - 0.9909 = 0.009100000000000052 in floating point


@dataclass(frozen=True)
class Anchor:
    """A published result, as the paper gives it."""

    model: str
    method: str
    citation: str
    compression: str
    error: str
    file: str = ""


ANCHORS = (
    Anchor("lenet5", "DNS", "Guo, Yao, Chen, NIPS 2016", "108x", "0.91%"),
    Anchor("lenet5", "Sparse VD", "Molchanov, Ashukha, Vetrov, ICML 2017", "280x", "0.75%"),
    Anchor("lenet5", "Bayesian Compression", "Louizos, Ullrich, Welling, NIPS 2017",
           "419x storage", "1.0%"),
    Anchor("lenet5", "MIRACLE", "Havasi, Peharz, Hernández-Lobato, ICLR 2019", "",
           "about 1.0%", "about 1.5 kB"),
    Anchor("lenet5", "INQ", "Zhou, Yao, Guo, Xu, Chen, ICLR 2017", "5-bit weights",
           "no loss against the reference"),
    Anchor("lenet300_100", "DNS", "Guo, Yao, Chen, NIPS 2016", "56x", "1.99%"),
    Anchor("lenet300_100", "Sparse VD", "Molchanov, Ashukha, Vetrov, ICML 2017", "68x", "1.92%"),
)


@dataclass(frozen=True)
class Condition:
    """``metric`` (compression, error, bytes or error_over_reference) ``>=``/``<=`` target."""

    metric: str
    at_least: bool
    target: float


@dataclass(frozen=True)
class Goal:
    """One benchmark goal: a model, which runs may meet it, and the conditions."""

    text: str
    model: str
    kind: str  # "any", "dns" (a pruning stage: dns or vd) or "inq" (INQ alone, at K = inq_k)
    conditions: tuple[Condition, ...]
    inq_k: int = 0


def _at_most_error(value: float) -> Condition:
    return Condition("error", False, value)


def _inq_goal(bits: str, k: int, points: float) -> Goal:
    return Goal(f"LeNet-5 INQ alone, {bits} (K={k}): test error at most +{points:g} points "
                "above its reference", "lenet5", "inq",
                (Condition("error_over_reference", False, points / 100),), k)


GOALS = (
    Goal("LeNet-5 pruned, DNS or VD (+ INQ): ≥ 110x fewer non-zeros at ≤ 0.91% error (beats "
         "DNS)", "lenet5",
         "dns", (Condition("compression", True, 110), _at_most_error(0.0091))),
    Goal("stretch: LeNet-5 ≥ 280x at ≤ 0.75% error (Sparse VD)", "lenet5", "dns",
         (Condition("compression", True, 280), _at_most_error(0.0075))),
    Goal("LeNet-5 compact file ≤ 2,000 bytes at ≤ 1.0% error (861x; beats Bayesian "
         "Compression)", "lenet5", "any", (Condition("bytes", False, 2000),
                                           _at_most_error(0.010))),
    Goal("LeNet-300-100 ≥ 68x at ≤ 1.92% error (beats Sparse VD), compact file ≤ 3,000 bytes",
         "lenet300_100", "any", (Condition("compression", True, 68), _at_most_error(0.0192),
                                 Condition("bytes", False, 3000))),
    _inq_goal("5-bit", 8, 0.05),
    _inq_goal("4-bit", 4, 0.1),
    _inq_goal("3-bit", 2, 0.2),
    _inq_goal("ternary", 1, 0.5),
)


@dataclass(frozen=True)
class GoalResult:
    """A goal, the run shown for it (``None``: no run may meet it) and one text per miss."""

    goal: Goal
    row: RunRow | None
    misses: tuple[str, ...]

    @property
    def met(self) -> bool:
        """Whether a run meets every condition."""
        return self.row is not None and not self.misses


def _value(row: RunRow, metric: str) -> float | None:
    if metric == "error_over_reference":
        if row.error is None or row.reference_error is None:
            return None
        return row.error - row.reference_error
    return {"compression": row.compression, "error": row.error,
            "bytes": None if row.ncz_bytes is None else float(row.ncz_bytes)}[metric]


def _shown(metric: str, value: float) -> str:
    if metric == "compression":
        return f"{value:.1f}x"
    if metric == "bytes":
        return f"{value:,.0f} B"
    if metric == "error":
        return f"{100 * value:.2f}%"
    return f"{100 * value:+.2f} points"


def _miss(condition: Condition, value: float | None) -> tuple[str, float] | None:
    """The text and relative shortfall of a failed condition; ``None`` if it holds."""
    name, target = condition.metric, condition.target
    if value is None:
        return f"{name.replace('_', ' ')} not recorded", math.inf
    gap = target - value if condition.at_least else value - target
    if gap <= _EPS * max(1.0, abs(target)):
        return None
    if name == "compression":
        text = f"{gap:.{1 if gap >= 0.05 else 3}f}x short of {target:g}x"
    elif name == "bytes":
        text = f"{gap:,.0f} B over {target:,.0f} B"
    else:
        text = f"{100 * gap:.2f} points over {_shown(name, target).removesuffix(' points')}"
    return text, gap / abs(target) if target else math.inf


def _eligible(goal: Goal, row: RunRow) -> bool:
    if row.model != goal.model:
        return False
    pruned = "dns" in row.stages or "vd" in row.stages
    if goal.kind == "dns":
        return pruned
    if goal.kind == "inq":
        return "inq" in row.stages and not pruned and row.inq_k == (goal.inq_k,)
    return True


def check_goal(goal: Goal, rows: list[RunRow]) -> GoalResult:
    """Check ``goal`` against the rows that may meet it.

    Example:
        >>> check_goal(GOALS[0], []).row is None
        True
    """
    best: tuple[tuple[int, float], RunRow, tuple[str, ...]] | None = None
    for row in rows:
        if not _eligible(goal, row):
            continue
        found = [m for c in goal.conditions if (m := _miss(c, _value(row, c.metric)))]
        key = (len(found), sum(short for _, short in found))
        if best is None or key < best[0]:
            best = key, row, tuple(text for text, _ in found)
    return GoalResult(goal, None, ()) if best is None else GoalResult(goal, best[1], best[2])


def achieved(goal: Goal, row: RunRow) -> str:
    """What ``row`` reached on the metrics of ``goal``, e.g. ``106.6x at 0.96%``.

    Example:
        >>> # achieved(GOALS[0], row) -> '106.6x, 0.96%'
    """
    parts = []
    for condition in goal.conditions:
        value = _value(row, condition.metric)
        parts.append("-" if value is None else _shown(condition.metric, value))
    return ", ".join(parts)

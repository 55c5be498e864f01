"""How the training loop shows an evaluation record (progress bar postfix and log lines)."""

from __future__ import annotations

from typing import Any

__all__ = ["postfix"]


def postfix(record: dict[str, Any]) -> str:
    """``loss``, ``acc`` and ``kept`` of an evaluation record, the ones it has.

    Example:
        >>> postfix({"loss": 0.5, "accuracy": 0.9, "kept_fraction": 0.25})
        'loss 0.5000 acc 90.00% kept 25.00%'
    """
    parts = []
    if record["loss"] is not None:
        parts.append(f"loss {record['loss']:.4f}")
    if record["accuracy"] is not None:
        parts.append(f"acc {100 * record['accuracy']:.2f}%")
    parts.append(f"kept {100 * record['kept_fraction']:.2f}%")
    return " ".join(parts)

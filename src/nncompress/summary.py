"""Per-layer statistics of a model; moved to :mod:`nncompress.report.summary`.

This import path keeps working: ``from nncompress.summary import summarize``.
"""

from __future__ import annotations

from nncompress.report.summary import LayerSummary, Summary, summarize

__all__ = ["LayerSummary", "Summary", "summarize"]

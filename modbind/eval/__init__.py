"""Evaluation: metrics defined exactly as the reference implementations, tasks, suites and reports.

Modules: :mod:`~modbind.eval.metrics` (retrieval / zero-shot numbers), :mod:`~modbind.eval.embedder`
(cached embeddings), :mod:`~modbind.eval.context` (what a task runs on), the built-in tasks
(:mod:`~modbind.eval.retrieval`, :mod:`~modbind.eval.zeroshot`, :mod:`~modbind.eval.multilingual`,
:mod:`~modbind.eval.emergent`), :mod:`~modbind.eval.suite`, :mod:`~modbind.eval.report` and
:mod:`~modbind.eval.collection` (``modbind embed``). The protocol is documented in docs/eval-protocol.md.
"""

from __future__ import annotations

from modbind.lazy import lazy_exports

_LAZY = {
    "Embedder": "modbind.eval.embedder",
    "TaskResult": "modbind.eval.result",
    "Suite": "modbind.suites",
    "SuiteTask": "modbind.suites",
    "bidirectional_retrieval": "modbind.eval.metrics",
    "chance_recall": "modbind.eval.metrics",
    "classification_metrics": "modbind.eval.metrics",
    "relevance_from_groups": "modbind.eval.metrics",
}

__getattr__ = lazy_exports("modbind.eval", _LAZY)

__all__ = list(_LAZY)

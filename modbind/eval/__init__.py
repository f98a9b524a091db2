"""Evaluation: metrics defined exactly as the reference implementations, tasks, suites and reports.

Modules: :mod:`~modbind.eval.metrics` (retrieval / zero-shot numbers), :mod:`~modbind.eval.embedder`
(cached embeddings), :mod:`~modbind.eval.context` (what a task runs on), the built-in tasks
(:mod:`~modbind.eval.retrieval`, :mod:`~modbind.eval.zeroshot`, :mod:`~modbind.eval.multilingual`,
:mod:`~modbind.eval.emergent`), :mod:`~modbind.eval.suite`, :mod:`~modbind.eval.report` and
:mod:`~modbind.eval.collection` (``modbind embed``). The protocol is documented in docs/eval-protocol.md.
"""

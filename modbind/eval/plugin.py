"""The core's evaluation tasks, registered exactly like a plugin's (``modbind eval --task NAME``)."""

from __future__ import annotations

from collections.abc import Callable

import modbind
from modbind.contracts import EvalTask


@modbind.hookimpl
def register_eval_tasks(register: Callable[[EvalTask], None]) -> None:
    from modbind.eval.emergent import EmergentTask
    from modbind.eval.multilingual import AnchorBaselineTask, MultilingualTask
    from modbind.eval.retrieval import RetrievalTask
    from modbind.eval.zeroshot import ZeroShotTask

    for task in (RetrievalTask(), ZeroShotTask(), MultilingualTask(), EmergentTask(), AnchorBaselineTask()):
        register(task)

"""Align, then evaluate the export: the orchestration above ``train`` and ``eval``.

``train`` and ``eval`` never import each other; the post-training suite of ``eval.suite`` runs here,
after the trainer has exported the model, and is logged to the run's ``metrics.jsonl``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm.auto import tqdm

from modbind.recipes import ResolvedRecipe

if TYPE_CHECKING:  # pragma: no cover
    from modbind.plugins import Registry
    from modbind.train.trainer import RunResult, StepReport

EVAL_DIR = "eval"


def align_and_evaluate(
    resolved: ResolvedRecipe,
    registry: Registry,
    *,
    resume: bool = False,
    extend: bool = False,
    progress: bool = True,
    on_step: Callable[[StepReport], None] | None = None,
) -> RunResult:
    """Train the resolved recipe, then (rank 0) run its ``eval.suite`` on the export into ``<out>/eval``.

    The suite's tasks are checked before training starts, so a misspelt task fails in seconds.
    """
    from modbind.eval.suite import check_suite_tasks, evaluate_model, load_suite
    from modbind.train.trainer import METRICS_FILE, MetricsLog, run_alignment

    recipe = resolved.recipe
    if recipe.eval.suite is not None:
        check_suite_tasks(load_suite(Path(recipe.eval.suite)), registry.eval_tasks, recipe.eval.suite)
    result = run_alignment(resolved, resume=resume, extend=extend, progress=progress, on_step=on_step)
    if result.model is None or recipe.eval.suite is None:
        return result
    languages = recipe.eval.languages if "languages" in recipe.eval.model_fields_set else None
    written = evaluate_model(result.model, Path(recipe.eval.suite), result.out_dir / EVAL_DIR, registry.eval_tasks,
                             languages=languages, batch_size=recipe.eval.batch_size, progress=progress)
    tqdm.write(f"evaluation report: {written['json']}")
    MetricsLog(result.out_dir / METRICS_FILE, enabled=True).write(
        {"event": "eval", "step": result.steps, "report": str(written["json"])})
    return result

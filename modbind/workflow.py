"""Align, then evaluate the export: the orchestration above ``train`` and ``eval``.

``train`` and ``eval`` never import each other; the post-training suite of ``eval.suite`` runs here,
after the trainer has exported the model, and is logged to the run's ``metrics.jsonl``. Evaluation during
training (``eval.every_steps``) reaches the trainer as a generic :class:`~modbind.train.trainer.Periodic`
callback built here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm.auto import tqdm

from modbind.config import Recipe
from modbind.recipes import ResolvedRecipe

if TYPE_CHECKING:  # pragma: no cover
    from modbind.eval.result import TaskResult
    from modbind.plugins import Registry
    from modbind.train.trainer import Periodic, RunResult, StepReport, TrainingSnapshot

EVAL_DIR = "eval"
DURING_TRAINING_DIR = "during_training"
"""Reports of ``eval.every_steps`` evaluations: ``<out>/eval/during_training/stepNNNNNNNN/``."""
DURING_TRAINING_EVENT = "eval_during_training"
HEADLINE_METRICS = ("R@1", "R@5", "R@10", "mAP@10", "top-1", "top-5")
"""What an evaluation during training logs per task row (the full tables are in its report)."""


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

    With ``eval.every_steps``, the model being trained is also evaluated every so many steps. The suites'
    tasks and their options were checked by :func:`~modbind.recipes.resolve_recipe`, so a misspelt task fails
    in seconds, before training.
    """
    from modbind.eval.suite import evaluate_model
    from modbind.train.trainer import METRICS_FILE, MetricsLog, run_alignment

    recipe = resolved.recipe
    callbacks = [evaluation_during_training(recipe, registry)] if recipe.eval.periodic_suite else []
    result = run_alignment(resolved, resume=resume, extend=extend, progress=progress, on_step=on_step,
                           callbacks=callbacks)
    if result.model is None or recipe.eval.suite is None:
        return result
    _, written = evaluate_model(result.model, Path(recipe.eval.suite), result.out_dir / EVAL_DIR,
                                registry.eval_tasks, languages=_languages(recipe), batch_size=recipe.eval.batch_size,
                                progress=progress, data_root=recipe.eval.data_root)
    tqdm.write(f"evaluation report: {written['json']}")
    MetricsLog(result.out_dir / METRICS_FILE, enabled=True).write(
        {"event": "eval", "step": result.steps, "report": str(written["json"])})
    return result


def evaluation_during_training(recipe: Recipe, registry: Registry) -> Periodic:
    """``eval.during_training_suite`` (or ``eval.suite``) every ``eval.every_steps`` steps, as LAION-CLAP's
    training evaluates retrieval and zero-shot: a report per evaluation and the headline numbers logged."""
    from modbind.eval.suite import evaluate_model
    from modbind.train.trainer import Periodic

    suite = Path(recipe.eval.periodic_suite)  # type: ignore[arg-type] - the caller checked it is set

    def evaluate(snapshot: TrainingSnapshot) -> dict[str, float]:
        out_dir = snapshot.out_dir / EVAL_DIR / DURING_TRAINING_DIR / f"step{snapshot.step:08d}"
        results, _ = evaluate_model(snapshot.model, suite, out_dir, registry.eval_tasks, languages=_languages(recipe),
                                    batch_size=recipe.eval.batch_size, progress=False, data_root=recipe.eval.data_root)
        headline = headline_metrics(results)
        tqdm.write(f"step {snapshot.step}: " + ", ".join(f"{k} {v:.2f}" for k, v in headline.items()))
        return headline

    assert recipe.eval.every_steps is not None
    return Periodic(every=recipe.eval.every_steps, run=evaluate, name=DURING_TRAINING_EVENT)


def headline_metrics(results: list[TaskResult]) -> dict[str, float]:
    """``{"<task label>/<language> <direction>/<metric>": value}`` for the :data:`HEADLINE_METRICS` of each row."""
    scalars: dict[str, float] = {}
    for result in results:
        for row in result.rows:
            where = " ".join(str(row[key]) for key in ("language", "direction") if key in row)
            scalars.update({f"{result.label}/{where}/{metric}": float(row[metric])
                            for metric in HEADLINE_METRICS if isinstance(row.get(metric), (int, float))})
    return scalars


def _languages(recipe: Recipe) -> list[str] | None:
    """``eval.languages`` when the recipe sets it, else None (each suite's own languages)."""
    return recipe.eval.languages if "languages" in recipe.eval.model_fields_set else None

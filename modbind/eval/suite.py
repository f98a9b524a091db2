"""Running tasks: one from the command line or several from a suite (:mod:`modbind.suites`), into one list
of results and a report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modbind.errors import ConfigError
from modbind.eval.context import EvalContext
from modbind.eval.embedder import Embedder
from modbind.eval.metrics import DEFAULT_TIE_POLICY, check_tie_policy
from modbind.eval.result import TaskResult
from modbind.suites import Suite, SuiteTask, TaskLookup, load_suite


def run_task(embedder: Embedder, spec: SuiteTask, tasks: TaskLookup, *, tie_policy: str = DEFAULT_TIE_POLICY,
             languages: list[str] | None = None, modality: str | None = None) -> TaskResult:
    """Run one task on one manifest; ``tasks`` looks up the task by name (the registry's eval tasks).

    ``languages`` and ``modality`` apply where the task names none.
    """
    task = tasks.get(spec.task)
    context = EvalContext.from_manifest(
        embedder, spec.data, spec.root, languages=spec.languages or languages,
        tie_policy=check_tie_policy(tie_policy), label=spec.name or f"{spec.task}: {Path(spec.data).name}",
        allow_absolute_paths=spec.allow_absolute_paths,
        modality=spec.modality or modality,
    )
    result = task.run(context, **spec.options)
    if not isinstance(result, TaskResult):
        raise ConfigError(f"evaluation task '{spec.task}' returned {type(result).__name__}, not a modbind.eval TaskResult")
    return result


def run_suite(embedder: Embedder, suite: Suite, tasks: TaskLookup, *, tie_policy: str | None = None,
              languages: list[str] | None = None, modality: str | None = None) -> list[TaskResult]:
    """Every task of the suite in order, sharing the embedder (so items are embedded once)."""
    policy = tie_policy or suite.tie_policy or DEFAULT_TIE_POLICY
    return [run_task(embedder, spec, tasks, tie_policy=policy, languages=languages or suite.languages,
                     modality=modality) for spec in suite.tasks]


def evaluate(
    embedder: Embedder,
    suite: Suite,
    out_dir: Path,
    tasks: TaskLookup,
    *,
    model_info: dict[str, Any],
    tie_policy: str | None = None,
    languages: list[str] | None = None,
    modality: str | None = None,
    settings: dict[str, Any] | None = None,
) -> tuple[list[TaskResult], dict[str, Path]]:
    """Run a suite and write its report (what ``modbind eval`` and post-training evaluation call)."""
    from modbind.eval.report import build_report, write_report

    results = run_suite(embedder, suite, tasks, tie_policy=tie_policy, languages=languages, modality=modality)
    recorded = {"tie_policy": tie_policy or suite.tie_policy or DEFAULT_TIE_POLICY, "languages": languages,
                "modality": modality,
                "batch_size": embedder.batch_size, "cache_dir": str(embedder.cache_dir) if embedder.cache_dir else None,
                **(settings or {})}
    written = write_report(out_dir, results, build_report(results, model=model_info, settings=recorded))
    return results, written


def evaluate_model(model: Any, suite_file: Path, out_dir: Path, tasks: TaskLookup, *,
                   languages: list[str] | None = None, batch_size: int = 64, cache_dir: Path | None = None,
                   progress: bool = True, data_root: Path | None = None) -> tuple[list[TaskResult], dict[str, Path]]:
    """Evaluate an in-memory :class:`~modbind.model.AlignedModel` on a suite file (during or after training)."""
    embedder = Embedder(model, batch_size=batch_size, progress=progress, cache_dir=cache_dir)
    info = {"path": None, "untrained": not model.card.get("metrics", {}).get("trained", True), "card": model.card}
    return evaluate(embedder, load_suite(suite_file, data_root), out_dir, tasks, model_info=info, languages=languages,
                    settings={"suite": str(suite_file)})

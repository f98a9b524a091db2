"""Running tasks: one from the command line or several from a suite YAML, into one list of results.

A suite file::

    name: paper tables
    languages: [en]              # default for every task (a task's own list wins)
    tasks:
      - task: retrieval
        data: audiocaps/test.jsonl   # relative to the suite file; ${DATA_ROOT}/... is under the data root
        name: AudioCaps
      - task: zeroshot
        data: esc50.jsonl
        options: {template: "This is a sound of {}."}
      - task: multilingual
        data: audiocaps/test.jsonl
        languages: [en, pt, de]
      - task: emergent             # a bundle's two modalities: audio items against depth items
        data: world/test.jsonl
        modality: audio
        options: {pair: depth, match: labels}
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from modbind.contracts import EvalTask, describe_validation_error
from modbind.errors import ConfigError, ModbindError
from modbind.eval.context import EvalContext
from modbind.eval.embedder import Embedder
from modbind.eval.metrics import DEFAULT_TIE_POLICY, check_tie_policy
from modbind.eval.result import TaskResult
from modbind.recipes import find_shipped, read_yaml


DATA_ROOT_VARIABLE = "${DATA_ROOT}"
DATA_ROOT_ENV = "MODBIND_DATA_ROOT"


class TaskLookup(Protocol):
    """Evaluation tasks by name (``Registry.eval_tasks``); ``get`` raises a clear error for unknown names."""

    def get(self, name: str) -> EvalTask: ...


class SuiteTask(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task: str
    data: Path
    root: Path | None = None
    """Folder item paths are relative to (default: the manifest's folder)."""
    name: str | None = None
    """Label in the report (default: task name + manifest file name)."""
    languages: list[str] | None = None
    modality: str | None = None
    """Which modality of a bundle the task's items are (default: the model's only one)."""
    options: dict[str, Any] = Field(default_factory=dict)
    allow_absolute_paths: bool = False
    """Accept absolute item/image paths in this task's manifest (refused by default)."""


class Suite(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    languages: list[str] | None = None
    tie_policy: str | None = None
    tasks: list[SuiteTask] = Field(min_length=1)


def load_suite(path: Path | str, data_root: Path | str | None = None) -> Suite:
    """Parse and validate a suite file (or a shipped suite by name, e.g. ``paper``).

    A data path (``data``, ``root``, option ``classes``) that starts with ``${DATA_ROOT}`` is under the data
    root (:func:`data_root_folder`); any other relative path is relative to the suite file's folder.
    """
    path = find_shipped(path, "suite")
    raw = read_yaml(path, what="suite")
    try:
        suite = Suite.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(describe_validation_error(err, str(path), Suite)) from None
    root = data_root_folder(data_root)
    for spec in suite.tasks:
        spec.data = suite_path(spec.data, path.parent, root)
        if spec.root is not None:
            spec.root = suite_path(spec.root, path.parent, root)
        if "classes" in spec.options and isinstance(spec.options["classes"], str):
            spec.options["classes"] = str(suite_path(spec.options["classes"], path.parent, root))
    return suite


def data_root_folder(explicit: Path | str | None = None) -> Path:
    """What ``${DATA_ROOT}`` stands for: ``explicit`` (``--data-root``, ``eval.data_root``), else
    ``$MODBIND_DATA_ROOT``, else ``data`` in the current folder (where the shipped recipes' manifests live)."""
    if explicit is not None:
        return Path(explicit)
    return Path(os.environ.get(DATA_ROOT_ENV) or "data")


def suite_path(path: Path | str, folder: Path, data_root: Path) -> Path:
    """A suite's path: ``${DATA_ROOT}/x`` under ``data_root``; relative ones under the suite's ``folder``."""
    text = str(path)
    if text.startswith(DATA_ROOT_VARIABLE):
        return data_root / text[len(DATA_ROOT_VARIABLE):].lstrip("/\\")
    return Path(text) if Path(text).is_absolute() else folder / text


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


def check_suite_tasks(suite: Suite, tasks: TaskLookup, where: Path | str) -> None:
    """Fail before any model loads when the suite names a task nobody provides or options it rejects."""
    for index, spec in enumerate(suite.tasks):
        try:
            task = tasks.get(spec.task)
        except ModbindError as err:
            raise ConfigError(f"{where}: tasks.{index}.task: {err}") from None
        try:
            task.check_options(spec.options)
        except ModbindError as err:
            raise ConfigError("\n".join(f"{where}: tasks.{index}: {line}" for line in str(err).splitlines())) from None


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

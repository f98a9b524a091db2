"""Suite files: which evaluation tasks to run on which manifests, parsed and checked before any model loads.

This is configuration, like a recipe (``eval.suite`` names a suite file); :mod:`modbind.eval.suite` runs
suites.

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

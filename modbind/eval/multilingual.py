"""Multilingual evaluation and the anchor-only baseline: retrieval or zero-shot, one row per language.

Translation is an input: the manifest carries the translated captions / class names; these tasks only
choose the languages (the paper's 12 by default) and report which are missing where.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from modbind.contracts import EvalTask
from modbind.errors import ConfigError
from modbind.eval.context import PAPER_LANGUAGES, EvalContext
from modbind.eval.result import TaskResult
from modbind.eval.retrieval import RetrievalOptions, run_retrieval
from modbind.eval.zeroshot import ZeroShotOptions, run_zeroshot


def per_language_options(options: Mapping[str, Any], task: str) -> RetrievalOptions | ZeroShotOptions:
    """Option ``of`` (``retrieval``, the default, or ``zeroshot``) picks the task; the others are its options."""
    options = dict(options)
    of = options.pop("of", "retrieval")
    if of == "zeroshot":
        return ZeroShotOptions.parse(options, task)
    if of == "retrieval":
        return RetrievalOptions.parse(options, task)
    raise ConfigError(f"options of task '{task}': 'of' must be 'retrieval' or 'zeroshot', got {of!r}")


def run_per_language(context: EvalContext, options: Mapping[str, Any], *, task: str,
                     languages: Sequence[str]) -> TaskResult:
    opts = per_language_options(options, task)
    if isinstance(opts, ZeroShotOptions):
        return run_zeroshot(context, opts, task=task, languages=languages)
    return run_retrieval(context, opts, task=task, languages=languages)


class MultilingualTask(EvalTask):
    name: ClassVar[str] = "multilingual"
    description: ClassVar[str] = ("retrieval (of=retrieval) or zero-shot (of=zeroshot) in every language; "
                                  "default: the paper's 12 languages")

    def check_options(self, options: Mapping[str, Any]) -> None:
        per_language_options(options, self.name)

    def run(self, context: EvalContext, **options: Any) -> TaskResult:
        return run_per_language(context, options, task=self.name, languages=context.languages_or(PAPER_LANGUAGES))


class AnchorBaselineTask(EvalTask):
    """The ceiling per language: the anchor alone, text→image (retrieval or zero-shot on the pictures)."""

    name: ClassVar[str] = "anchor_baseline"
    description: ClassVar[str] = ("anchor-only ceiling: text↔image retrieval (of=retrieval) or zero-shot image "
                                  "classification (of=zeroshot) with the frozen anchor, per language")

    def image_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """The options with ``tower: image`` (the only tower an anchor-only baseline has)."""
        if options.get("tower", "image") != "image":
            raise ConfigError("options of task 'anchor_baseline': 'tower' is always 'image' (the anchor alone)")
        return {**options, "tower": "image"}

    def check_options(self, options: Mapping[str, Any]) -> None:
        per_language_options(self.image_options(options), self.name)

    def run(self, context: EvalContext, **options: Any) -> TaskResult:
        return run_per_language(context, self.image_options(options), task=self.name,
                                languages=context.languages_or(PAPER_LANGUAGES))

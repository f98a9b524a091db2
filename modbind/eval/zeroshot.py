"""Zero-shot classification: class names in a prompt template, top-1/top-5 pooled, per fold and mean of folds.

Class names and their translations come from the manifest (``labels[lang][i]`` translates
``labels["en"][i]``) or from a class file (``--option classes=classes.json`` with ``labels: {lang: [...]}``
in class order and optional ``prompts: {lang: template}``, or LAION-CLAP's ``{"dog": 0, ...}``). Ground truth is each item's single label in
``label_language``; class order is the class file's, else alphabetical.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import field_validator

from modbind.contracts import EvalTask
from modbind.data.manifest import ManifestEntry
from modbind.errors import ConfigError, DataError
from modbind.eval.context import EvalContext, TaskOptions, crop_policy_of
from modbind.eval.metrics import ClassificationMetrics, classification_metrics
from modbind.eval.result import TaskResult
from modbind.eval.retrieval import embed_side, similarity
from modbind.eval.templates import IMAGE_TEMPLATES, check_template, templates_for


class ZeroShotOptions(TaskOptions):
    template: str | list[str] | None = None
    """One template (or an ensemble) for every language, e.g. ``"This is a sound of {}."``."""
    templates: dict[str, str | list[str]] = {}
    """Per-language templates, overriding the built-in translations."""
    classes: Path | None = None
    """JSON class file: ``labels`` (or ``names``) per language in class order, optional ``prompts``; or a
    CLAP-style ``{"name": index, ...}`` in ``label_language``."""
    tower: Literal["model", "image"] = "model"
    label_language: str = "en"
    """Language of the labels that define each item's class."""

    @field_validator("template")
    @classmethod
    def _one_slot(cls, value: str | list[str] | None) -> str | list[str] | None:
        for template in [value] if isinstance(value, str) else (value or []):
            try:
                check_template(template)
            except ConfigError as err:
                raise ValueError(str(err)) from None  # pydantic then names the option
        return value

    @field_validator("templates")
    @classmethod
    def _one_slot_each(cls, value: dict[str, str | list[str]]) -> dict[str, str | list[str]]:
        for templates in value.values():
            cls._one_slot(templates)
        return value


class ZeroShotTask(EvalTask):
    name: ClassVar[str] = "zeroshot"
    description: ClassVar[str] = "zero-shot classification from class-name prompts: top-1/top-5, per fold and mean of folds"
    default_languages: ClassVar[tuple[str, ...]] = ("en",)
    Options: ClassVar[type[ZeroShotOptions]] = ZeroShotOptions

    def run(self, context: EvalContext, **options: Any) -> TaskResult:
        opts = ZeroShotOptions.parse(options, self.name)
        return run_zeroshot(context, opts, task=self.name, languages=context.languages_or(self.default_languages))


def single_label(entry: ManifestEntry, language: str) -> str | None:
    labels = [label for label in entry.labels.get(language, []) if label.strip()]
    return labels[0] if len(labels) == 1 else None


def read_class_file(path: Path, context: EvalContext, language: str = "en") -> dict[str, Any]:
    """The class file as ``{"labels": {lang: [names]}, "prompts": {lang: templates}}``.

    A CLAP-style file (``{"dog": 0, "rooster": 1, ...}``, as LAION-CLAP ships for ESC-50) maps names in
    ``language`` (the items' label language) to class indices.
    """
    candidates = [Path(path)] if Path(path).is_absolute() else [Path(path), context.root / path]
    found = next((p for p in candidates if p.is_file()), None)
    if found is None:
        raise DataError(f"class file not found: {path} (looked in {', '.join(str(c) for c in candidates)})")
    try:
        data = json.loads(found.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{found}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise DataError(f"{found}: a class file is a JSON object, got {type(data).__name__}")
    if data and all(isinstance(v, int) and not isinstance(v, bool) for v in data.values()):
        return {"labels": {language: names_by_index(data, found)}, "prompts": {}, "path": str(found)}
    labels = data.get("labels")
    if labels is None and isinstance(data.get("names"), list):
        labels = {"en": data["names"]}
    if not isinstance(labels, dict) or not all(isinstance(v, list) for v in labels.values()):
        raise DataError(f"{found}: needs 'labels': {{language: [class names in class order]}} (or 'names': [...])")
    lengths = {lang: len(names) for lang, names in labels.items()}
    if len(set(lengths.values())) > 1:
        raise DataError(f"{found}: every language must list the same number of classes, got {lengths}")
    prompts = data.get("prompts") or data.get("templates") or {}
    return {"labels": labels, "prompts": prompts, "path": str(found)}


def names_by_index(indices: dict[str, int], where: Path) -> list[str]:
    """Class names in index order from ``{name: index}``; the indices must be exactly 0..N-1."""
    by_index: dict[int, list[str]] = {}
    for name, index in indices.items():
        by_index.setdefault(index, []).append(name)
    shared = {i: names for i, names in by_index.items() if len(names) > 1}
    if shared:
        index, names = next(iter(sorted(shared.items())))
        raise DataError(f"{where}: class index {index} is given to several classes ({', '.join(names)}); "
                        "each class needs its own index")
    expected = set(range(len(indices)))
    if set(by_index) != expected:
        wrong = sorted(set(by_index) - expected)
        missing = sorted(expected - set(by_index))
        raise DataError(f"{where}: the {len(indices)} class indices must be 0..{len(indices) - 1}; "
                        f"out of range: {wrong[:5]}, missing: {missing[:5]}")
    return [by_index[i][0] for i in range(len(indices))]


def class_names_in(language: str, classes: Sequence[str], entries: Sequence[ManifestEntry], label_language: str,
                   class_file: dict[str, Any] | None) -> tuple[list[str | None], dict[str, list[str]]]:
    """Each class's name in ``language`` (None when absent) and classes translated inconsistently."""
    if class_file is not None and language in class_file["labels"]:
        return [n if isinstance(n, str) and n.strip() else None for n in class_file["labels"][language]], {}
    if language == label_language:
        return list(classes), {}
    votes: dict[str, Counter[str]] = {c: Counter() for c in classes}
    for entry in entries:
        source, target = single_label(entry, label_language), single_label(entry, language)
        if source in votes and target:
            votes[source][target] += 1
    names = [votes[c].most_common(1)[0][0] if votes[c] else None for c in classes]
    conflicts = {c: sorted(votes[c]) for c in classes if len(votes[c]) > 1}
    return names, conflicts


def select_items(context: EvalContext, class_file: dict[str, Any] | None, language: str,
                 result: TaskResult) -> tuple[list[str], list[ManifestEntry]]:
    """The classes and the items with exactly one known label; the rest are excluded and counted."""
    labelled = [e for e in context.entries if single_label(e, language) is not None]
    no_label = [e.id for e in context.entries if not any(label.strip() for label in e.labels.get(language, []))]
    several = [e.id for e in context.entries if len([label for label in e.labels.get(language, []) if label.strip()]) > 1]
    result.exclude("no_label", f"{len(no_label)} entries have no '{language}' label (zero-shot needs one class per "
                   "clip)", len(no_label), examples=no_label)
    result.exclude("several_labels", f"{len(several)} entries have several '{language}' labels (zero-shot needs "
                   "exactly one class per clip)", len(several), examples=several)
    if class_file is not None:
        if language not in class_file["labels"]:
            raise ConfigError(f"{class_file['path']}: has no '{language}' labels to match the items' labels against")
        classes = list(class_file["labels"][language])
    else:
        classes = sorted({single_label(e, language) or "" for e in labelled})
    known = set(classes)
    unknown = [e for e in labelled if single_label(e, language) not in known]
    result.exclude("unknown_class", f"{len(unknown)} entries have a label that is not among the {len(classes)} "
                   "classes", len(unknown), examples=[f"{e.id}: {single_label(e, language)}" for e in unknown])
    labelled = [e for e in labelled if single_label(e, language) in known]
    if not labelled or len(classes) < 2:
        raise DataError(f"zero-shot classification needs items with one '{language}' label each and at least 2 "
                        f"classes; {context.manifest} has {len(labelled)} such items and {len(classes)} classes")
    return classes, labelled


def classification_row(language: str, direction: str, metrics: ClassificationMetrics) -> dict[str, Any]:
    row: dict[str, Any] = {"language": language, "direction": direction}
    row.update(metrics.as_dict())
    row["chance top-1"] = 100.0 / metrics.classes
    row["chance top-5"] = 100.0 * min(5, metrics.classes) / metrics.classes
    return row


def class_embeddings(context: EvalContext, names: Sequence[str], templates: Sequence[str]) -> torch.Tensor:
    """One embedding per class: its prompts' normalised embeddings averaged and re-normalised."""
    prompts = [template.format(name) for name in names for template in templates]
    embedded = context.embedder.texts(prompts).view(len(names), len(templates), -1)
    return F.normalize(embedded.mean(dim=1), dim=-1)


def run_zeroshot(context: EvalContext, opts: ZeroShotOptions, *, task: str, languages: Sequence[str]) -> TaskResult:
    result = TaskResult(task=task, label=context.label or task, kind="classification")
    class_file = read_class_file(opts.classes, context, opts.label_language) if opts.classes is not None else None
    lang0 = opts.label_language
    classes, labelled = select_items(context, class_file, lang0, result)
    embeddings, kept, side = embed_side(context, labelled, opts.tower, result)
    index_of = {name: i for i, name in enumerate(classes)}
    truth = np.array([index_of[single_label(e, lang0)] for e in kept])
    with_folds = all(e.fold is not None for e in kept)
    plugin = None if opts.tower == "image" else context.embedder.model_for(context.item_modality()).plugin
    builtin = IMAGE_TEMPLATES if plugin is None else plugin.zeroshot_templates
    noun = "pictures" if plugin is None else plugin.item_noun
    used_templates: dict[str, list[str]] = {}
    used_names: dict[str, list[str | None]] = {}
    for language in languages:
        names, conflicts = class_names_in(language, classes, context.entries, lang0, class_file)
        templates = templates_for(language, override=opts.template, per_language=opts.templates,
                                  from_classes=(class_file or {}).get("prompts"), builtin=builtin)
        if templates is None:
            result.rows.append({"language": language, "skipped": f"no prompt template for '{language}'"})
            result.messages.append(f"{language}: skipped, no prompt template (set option templates.{language}, "
                                   "or template= for every language)")
            continue
        for template in templates:
            check_template(template)
        present = [i for i, n in enumerate(names) if n is not None]
        keep_rows = np.flatnonzero(np.isin(truth, present))
        if len(present) < 2 or keep_rows.size == 0:
            result.rows.append({"language": language, "skipped": f"class names absent in '{language}'"})
            result.exclude("class_names_missing", f"{len(classes) - len(present)} of {len(classes)} classes have no "
                           f"'{language}' name: the {language} row is skipped", len(kept), scope=language)
            continue
        absent = [classes[i] for i, n in enumerate(names) if n is None]
        result.exclude("class_names_missing", f"{len(absent)} classes have no '{language}' name ({', '.join(absent[:5])}"
                       f"{' …' if len(absent) > 5 else ''}): those classes and their {len(truth) - len(keep_rows)} {noun} "
                       f"are left out of the {language} row", len(truth) - len(keep_rows), scope=language,
                       examples=absent)
        if conflicts:
            result.messages.append(f"{language}: {len(conflicts)} classes are translated in several ways; the most "
                                   f"common name is used (e.g. {next(iter(conflicts.items()))})")
        remap = {old: new for new, old in enumerate(present)}
        class_emb = class_embeddings(context, [names[i] or "" for i in present], templates)
        logits = similarity(embeddings[torch.as_tensor(keep_rows, dtype=torch.long)], class_emb)
        labels = np.array([remap[int(t)] for t in truth[keep_rows]])
        folds = [kept[i].fold for i in keep_rows] if with_folds else None
        metrics = classification_metrics(logits, labels, folds, tie_policy=context.tie_policy)
        row = classification_row(language, f"{side}→class", metrics)
        result.rows.append(row)
        result.ranks[f"{language} {side}→class"] = metrics.ranking.ranks0.tolist()
        used_templates[language] = templates
        used_names[language] = names
        result.messages.append(f"{language}: {metrics.items} {noun}, {metrics.classes} classes "
                               f"(chance top-1 {row['chance top-1']:.2f}%)")
    result.protocol = {
        **context.protocol(),
        "evaluated_items": len(kept),
        "items": side,
        "tower": "anchor image tower (frozen)" if opts.tower == "image" else "aligned model",
        "languages": list(languages),
        "templates": used_templates,
        "template_rule": "each class's prompts are embedded, L2-normalised, averaged and re-normalised",
        "classes": classes,
        "class_names": used_names,
        "class_order": "class file order" if class_file else f"alphabetical '{lang0}' labels",
        "class_file": class_file["path"] if class_file else None,
        "folds": sorted({str(e.fold) for e in kept}) if with_folds else None,
        "fold_rule": "top-k per fold, then the mean of per-fold values (WavCaps); pooled over all items as well",
        "crop_policy": crop_policy_of(context) if opts.tower == "model" else "anchor image transform",
        "units": "accuracy in percent; ties in top-k broken towards the lower class index",
    }
    return result

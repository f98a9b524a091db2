"""Cross-modal retrieval between items and captions, both directions, one pair of rows per language.

Items are the new modality embedded by the aligned model (``tower="model"``) or the paired pictures
embedded by the frozen anchor (``tower="image"``: the anchor-only text→image ceiling).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import numpy as np
from torch import Tensor

from modbind.contracts import EvalTask
from modbind.data.manifest import ManifestEntry
from modbind.eval.context import EvalContext, TaskOptions, crop_policy_of
from modbind.eval.metrics import RetrievalMetrics, bidirectional_retrieval, chance_recall, relevance_from_groups, relevance_from_index
from modbind.eval.result import TaskResult

CAPTION_RULE = (
    "every non-empty caption of an entry in the row's language is used (any count per item); entries without "
    "one are left out of that language's rows. item→text: one query per item, a hit when any of its captions "
    "ranks within k, mAP@10 over all of its captions (AP denominator = min(#relevant, 10); equals WavCaps with "
    "5 captions). text→item: one query per caption against every item."
)


class RetrievalOptions(TaskOptions):
    match: Literal["id", "labels"] = "id"
    """``id``: a caption matches its own item; ``labels``: any item with the same set of labels matches."""
    tower: Literal["model", "image"] = "model"
    """Which items to retrieve: the aligned modality, or the anchor's paired images (baseline)."""
    label_language: str = "en"
    """Language whose labels define the concept set when ``match: labels``."""


class RetrievalTask(EvalTask):
    name: ClassVar[str] = "retrieval"
    description: ClassVar[str] = "item↔text retrieval: R@1/5/10/50, mAP@10, median/mean rank (default language: en)"
    default_languages: ClassVar[tuple[str, ...]] = ("en",)
    Options: ClassVar[type[RetrievalOptions]] = RetrievalOptions

    def run(self, context: EvalContext, **options: Any) -> TaskResult:
        opts = RetrievalOptions.parse(options, self.name)
        return run_retrieval(context, opts, task=self.name, languages=context.languages_or(self.default_languages))


def label_key(entry: ManifestEntry, language: str) -> tuple[str, ...] | None:
    """The entry's concept set (sorted labels) in ``language``, None when it has none."""
    labels = [label for label in entry.labels.get(language, []) if label.strip()]
    return tuple(sorted(set(labels))) if labels else None


def select_with_labels(entries: Sequence[ManifestEntry], language: str, result: TaskResult) -> list[ManifestEntry]:
    kept = [e for e in entries if label_key(e, language) is not None]
    missing = len(entries) - len(kept)
    result.exclude("no_label", f"{missing} of {len(entries)} entries have no '{language}' labels, needed to match "
                   "on labels", missing, examples=[e.id for e in entries if label_key(e, language) is None])
    return kept


def embed_side(context: EvalContext, entries: Sequence[ManifestEntry], tower: str, result: TaskResult) -> tuple[Tensor, list[ManifestEntry], str]:
    """Embeddings of the item side and its name (the modality, or ``image``)."""
    if tower == "image":
        embeddings, kept = context.image_embeddings(entries, result)
        return embeddings, kept, "image"
    embeddings, kept = context.item_embeddings(entries, result)
    return embeddings, kept, context.item_modality()


def similarity(left: Tensor, right: Tensor) -> np.ndarray:
    """Cosine similarities in float64 on CPU (never TF32/half: they can flip near-ties)."""
    return left.double().cpu().numpy() @ right.double().cpu().numpy().T


def retrieval_row(language: str, direction: str, metrics: RetrievalMetrics, relevant_per_query: np.ndarray) -> dict[str, Any]:
    row: dict[str, Any] = {"language": language, "direction": direction}
    row.update(metrics.as_dict())
    row["gallery"] = metrics.candidates
    for k in (1, 5, 10):
        row[f"chance R@{k}"] = chance_recall(metrics.candidates, relevant_per_query, k)
    return row


def run_retrieval(context: EvalContext, opts: RetrievalOptions, *, task: str, languages: Sequence[str]) -> TaskResult:
    result = TaskResult(task=task, label=context.label or task, kind="retrieval")
    entries = list(context.entries)
    if opts.match == "labels":
        entries = select_with_labels(entries, opts.label_language, result)
    embeddings, kept, side = embed_side(context, entries, opts.tower, result)
    caption_counts: dict[str, dict[str, float]] = {}
    for language in languages:
        with_caption = [i for i, e in enumerate(kept) if e.captions_in(language)]
        missing = len(kept) - len(with_caption)
        captioned = set(with_caption)
        if not with_caption:
            result.rows.append({"language": language, "skipped": f"no '{language}' captions in the manifest"})
            result.exclude("language_missing", f"no entry has a '{language}' caption: the {language} rows are "
                           "skipped (add translations with `modbind data add-translations`)", len(kept), scope=language)
            continue
        result.exclude("no_caption", f"{missing} of {len(kept)} entries have no '{language}' caption and are left "
                       f"out of the {language} rows", missing, scope=language,
                       examples=[e.id for i, e in enumerate(kept) if i not in captioned])
        texts: list[str] = []
        owner: list[int] = []
        for row_index, entry_index in enumerate(with_caption):
            captions = kept[entry_index].captions_in(language)
            texts.extend(captions)
            owner.extend([row_index] * len(captions))
        counts = np.bincount(owner, minlength=len(with_caption))
        caption_counts[language] = {"items": len(with_caption), "captions": len(texts), "min": int(counts.min()),
                                    "max": int(counts.max()), "mean": float(counts.mean())}
        sim = similarity(embeddings[with_caption], context.embedder.texts(texts))
        if opts.match == "labels":
            keys = [label_key(kept[i], opts.label_language) for i in with_caption]
            relevant = relevance_from_groups(keys, [keys[o] for o in owner])
        else:
            relevant = relevance_from_index(np.asarray(owner), len(with_caption))
        both = bidirectional_retrieval(sim, relevant, tie_policy=context.tie_policy)
        rows = []
        for direction, metrics, per_query in ((f"{side}→text", both.item_to_text, relevant.sum(1)),
                                              (f"text→{side}", both.text_to_item, relevant.sum(0))):
            rows.append(retrieval_row(language, direction, metrics, per_query))
            result.ranks[f"{language} {direction}"] = metrics.ranks0.tolist()
        result.rows.extend(rows)
        # The chance levels come from the rows, so the console says what the report says (with match=labels
        # several items are relevant to a caption, and chance is far above 1 / gallery).
        result.messages.append(f"{language}: {len(with_caption)} {side} items, {len(texts)} captions (chance R@1 "
                               + ", ".join(f"{r['chance R@1']:.2f}% {r['direction']}" for r in rows) + ")")
    result.protocol = {
        **context.protocol(),
        "evaluated_items": len(kept),
        "items": side,
        "tower": "anchor image tower (frozen)" if opts.tower == "image" else "aligned model",
        "languages": list(languages),
        "caption_rule": CAPTION_RULE,
        "captions_per_language": caption_counts,
        "match": "same item id" if opts.match == "id" else f"same set of '{opts.label_language}' labels",
        "crop_policy": crop_policy_of(context) if opts.tower == "model" else "anchor image transform",
        "units": "R@k and mAP@10 in percent; ranks 1-based; median rank = floor(np.median(rank0)) + 1",
    }
    return result

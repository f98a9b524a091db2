"""Emergent audio↔image retrieval: the trained encoder against the anchor's frozen image tower.

Neither side ever saw the other during training (the encoder was aligned to *text* only), so any
recall above chance is emergent alignment. Gallery size and chance level are reported beside every number.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np

from modbind.contracts import EvalTask
from modbind.eval.context import EvalContext, TaskOptions, crop_policy
from modbind.eval.metrics import bidirectional_retrieval, relevance_from_groups
from modbind.eval.result import TaskResult
from modbind.eval.retrieval import label_key, retrieval_row, select_with_labels, similarity


class EmergentOptions(TaskOptions):
    match: Literal["id", "labels"] = "id"
    """``id``: an item's own picture is the hit; ``labels``: any picture with the same concept set is."""
    label_language: str = "en"


class EmergentTask(EvalTask):
    name: ClassVar[str] = "emergent"
    description: ClassVar[str] = "emergent item↔image retrieval against the anchor's frozen image tower (R@1/5/10, chance)"
    Options: ClassVar[type[EmergentOptions]] = EmergentOptions

    def run(self, context: EvalContext, **options: Any) -> TaskResult:
        opts = EmergentOptions.parse(options, self.name)
        result = TaskResult(task=self.name, label=context.label or self.name, kind="retrieval")
        entries = list(context.entries)
        if opts.match == "labels":
            entries = select_with_labels(entries, opts.label_language, result)
        image_emb, with_image = context.image_embeddings(entries, result)
        item_emb, kept = context.item_embeddings(with_image, result)
        image_rows = [with_image.index(e) for e in kept] if len(kept) != len(with_image) else list(range(len(kept)))
        side = context.embedder.modality
        if not kept:
            result.rows.append({"language": "-", "skipped": "no entry has both a readable item and a decodable image"})
            return result
        sim = similarity(item_emb, image_emb[image_rows])
        if opts.match == "labels":
            keys = [label_key(e, opts.label_language) for e in kept]
            relevant = relevance_from_groups(keys, keys)
        else:
            relevant = np.eye(len(kept), dtype=bool)
        both = bidirectional_retrieval(sim, relevant, tie_policy=context.tie_policy)
        for direction, metrics, per_query in ((f"{side}→image", both.item_to_text, relevant.sum(1)),
                                              (f"image→{side}", both.text_to_item, relevant.sum(0))):
            row = retrieval_row("-", direction, metrics, per_query)
            result.rows.append(row)
            result.ranks[direction] = metrics.ranks0.tolist()
            result.messages.append(
                f"{direction}: gallery {metrics.candidates}, R@1 {row['R@1']:.2f}% (chance {row['chance R@1']:.2f}%), "
                f"R@5 {row['R@5']:.2f}% (chance {row['chance R@5']:.2f}%), R@10 {row['R@10']:.2f}% "
                f"(chance {row['chance R@10']:.2f}%)")
        result.protocol = {
            **context.protocol(),
            "evaluated_pairs": len(kept),
            "gallery_size": len(kept),
            "items": side,
            "images": "manifest 'image' field, embedded by the anchor's frozen image tower",
            "match": "same item id (its own picture)" if opts.match == "id"
            else f"any picture with the same set of '{opts.label_language}' labels",
            "crop_policy": crop_policy(context.embedder.model),
            "units": "R@k and mAP@10 in percent; chance = expected R@k of a random ranking",
        }
        return result

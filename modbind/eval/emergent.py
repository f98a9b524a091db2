"""Emergent retrieval between two sides that never met in training: an aligned modality and the anchor's
frozen image tower (item↔image), or two aligned modalities of a bundle (e.g. audio↔depth).

Each encoder was aligned to *text* only, so any recall above chance across the two sides is emergent
alignment. Gallery size and chance level are reported beside every number.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
from torch import Tensor

from modbind.contracts import EvalTask
from modbind.data.manifest import ManifestEntry
from modbind.eval.context import EvalContext, TaskOptions, crop_policy_of
from modbind.eval.metrics import bidirectional_retrieval, relevance_from_groups
from modbind.eval.result import TaskResult
from modbind.eval.retrieval import label_key, retrieval_row, select_with_labels, similarity

IMAGE = "image"


class EmergentOptions(TaskOptions):
    match: Literal["id", "labels"] = "id"
    """``id``: an item's own counterpart is the hit; ``labels``: any counterpart with the same concept set is."""
    label_language: str = "en"
    pair: str = IMAGE
    """The other side: ``image`` (the manifest's ``image``, embedded by the anchor's frozen image tower) or
    another modality of a bundle (the manifest's ``items.<modality>`` file of each entry)."""


class EmergentTask(EvalTask):
    name: ClassVar[str] = "emergent"
    description: ClassVar[str] = ("emergent retrieval across sides never trained together: item↔image (frozen "
                                  "image tower) or, with -o pair=MODALITY, between two modalities of a bundle")
    Options: ClassVar[type[EmergentOptions]] = EmergentOptions

    def run(self, context: EvalContext, **options: Any) -> TaskResult:
        opts = EmergentOptions.parse(options, self.name)
        result = TaskResult(task=self.name, label=context.label or self.name, kind="retrieval")
        entries = list(context.entries)
        if opts.match == "labels":
            entries = select_with_labels(entries, opts.label_language, result)
        side = context.item_modality(besides=None if opts.pair == IMAGE else opts.pair)
        if opts.pair == IMAGE:
            pair_emb, with_pair = context.image_embeddings(entries, result)
        else:
            context.embedder.model_for(opts.pair)  # fails early, naming the bundle's modalities
            entries = _with_separate_pair(entries, side, opts.pair, result)
            pair_emb, with_pair = context.item_embeddings(entries, result, opts.pair)
        item_emb, kept = context.item_embeddings(with_pair, result, side)
        if not kept:
            result.rows.append({"language": "-", "skipped": f"no entry has both a readable {side} item and a "
                                                            f"readable {opts.pair}"})
            return result
        pair_rows = [with_pair.index(e) for e in kept] if len(kept) != len(with_pair) else list(range(len(kept)))
        _score(result, context, item_emb, pair_emb[pair_rows], kept, side, opts)
        result.protocol = {
            **context.protocol(),
            "evaluated_pairs": len(kept),
            "gallery_size": len(kept),
            "items": side,
            "pair": opts.pair,
            "pair_source": "manifest 'image' field, embedded by the anchor's frozen image tower" if opts.pair == IMAGE
            else f"manifest 'items.{opts.pair}' field, embedded by the bundle's {opts.pair} model",
            "match": "same entry (its own counterpart)" if opts.match == "id"
            else f"any counterpart with the same set of '{opts.label_language}' labels",
            "crop_policy": crop_policy_of(context, side) + ("" if opts.pair == IMAGE else
                                                            f"; {opts.pair}: {crop_policy_of(context, opts.pair)}"),
            "units": "R@k and mAP@10 in percent; chance = expected R@k of a random ranking",
        }
        return result


def _with_separate_pair(entries: list[ManifestEntry], side: str, pair: str, result: TaskResult) -> list[ManifestEntry]:
    """Entries whose two modalities are two files; one file cannot be both (the manifest lacks ``items``)."""
    kept = [e for e in entries if e.item_path(side) != e.item_path(pair)]
    missing = [e.id for e in entries if e.item_path(side) == e.item_path(pair)]
    result.exclude("no_pair_item", f"{len(missing)} of {len(entries)} entries name no separate {side} and {pair} "
                   f"files (add 'items': {{\"{pair}\": ...}} to the manifest)", len(missing), examples=missing)
    return kept


def _score(result: TaskResult, context: EvalContext, item_emb: Tensor, pair_emb: Tensor, kept: list[ManifestEntry],
           side: str, opts: EmergentOptions) -> None:
    """Both directions' rows, ranks and one-line summaries."""
    sim = similarity(item_emb, pair_emb)
    if opts.match == "labels":
        keys = [label_key(e, opts.label_language) for e in kept]
        relevant = relevance_from_groups(keys, keys)
    else:
        relevant = np.eye(len(kept), dtype=bool)
    both = bidirectional_retrieval(sim, relevant, tie_policy=context.tie_policy)
    for direction, metrics, per_query in ((f"{side}→{opts.pair}", both.item_to_text, relevant.sum(1)),
                                          (f"{opts.pair}→{side}", both.text_to_item, relevant.sum(0))):
        row = retrieval_row("-", direction, metrics, per_query)
        result.rows.append(row)
        result.ranks[direction] = metrics.ranks0.tolist()
        result.messages.append(
            f"{direction}: gallery {metrics.candidates}, R@1 {row['R@1']:.2f}% (chance {row['chance R@1']:.2f}%), "
            f"R@5 {row['R@5']:.2f}% (chance {row['chance R@5']:.2f}%), R@10 {row['R@10']:.2f}% "
            f"(chance {row['chance R@10']:.2f}%)")

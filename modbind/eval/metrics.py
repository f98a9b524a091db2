"""Retrieval and zero-shot metrics, defined exactly as the reference implementations define them.

Conventions (see docs/eval-protocol.md and ``tests/fixtures/conformance/metrics/``):

* Scores are a (queries × candidates) matrix; ``relevant`` is a boolean matrix of the same shape.
* A query's rank is the 0-based position of its *best-placed* relevant candidate after sorting scores in
  descending order; ``R@k = mean(rank < k)`` (a hit if any relevant item is in the top k), ``mean rank =
  mean(rank) + 1``.
* ``mAP@10`` is WavCaps' sorted AP: the 1-based positions ``p_(1) < p_(2) < …`` of the relevant items in the
  top 10 give ``AP = Σ_j j / p_(j) / n_rel``. WavCaps hard-codes ``n_rel = 5``; here it is the query's own
  relevant count, capped at 10 (so ``0 ≤ AP ≤ 1`` and the 5-caption case is WavCaps' number exactly). With
  one relevant item it is MRR@10 (WavCaps/CLAP T2A).
* ``mAP@10 (CLAP unsorted)`` reproduces LAION-CLAP's ``evaluate_clotho_audiocaps`` A2T number: the same sum
  but over positions listed in *candidate-index* order, unsorted; it can exceed 1 and is reported only so
  numbers can be compared with papers that used that code.
* Median rank: ``floor`` = ``floor(np.median(rank)) + 1`` (WavCaps, CLAP; the default), ``lower`` =
  ``torch.median(rank + 1)`` (LanguageBind multi-sentence), ``midpoint`` = ``np.median(rank) + 1``
  (LanguageBind ``compute_metrics``; can be x.5).
* Ties: no reference defines a tie order, so one is chosen explicitly (:data:`TIE_POLICIES`); the default
  is ``pessimistic`` (relevant items placed after every equal-scoring competitor).

All percentages are 0-100; ranks are 1-based.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from modbind.errors import ModbindError

TiePolicy = Literal["pessimistic", "optimistic", "index_asc", "index_desc"]
TIE_POLICIES: tuple[str, ...] = ("pessimistic", "optimistic", "index_asc", "index_desc")
DEFAULT_TIE_POLICY: TiePolicy = "pessimistic"
MedianConvention = Literal["floor", "lower", "midpoint"]
RECALL_KS: tuple[int, ...] = (1, 5, 10, 50)
MAP_K = 10
_ROW_BLOCK = 512
"""Queries sorted at once: bounds the (block × candidates) index arrays for large galleries."""


@dataclass
class RetrievalMetrics:
    """One retrieval direction: recalls and mAP@10 in percent, ranks 1-based, per-query 0-based ranks."""

    recall: dict[int, float]
    map10: float
    map10_clap_unsorted: float
    median_rank: float
    mean_rank: float
    median_rank_lower: float
    median_rank_midpoint: float
    queries: int
    candidates: int
    ranks0: np.ndarray = field(repr=False)
    tie_policy: str = DEFAULT_TIE_POLICY

    def as_dict(self, *, with_ranks: bool = False) -> dict[str, Any]:
        """Flat, JSON-ready numbers with the names used in reports (``R@1``, ``mAP@10``, ...)."""
        out: dict[str, Any] = {f"R@{k}": v for k, v in self.recall.items()}
        out.update({
            "mAP@10": self.map10,
            "mAP@10 (CLAP unsorted)": self.map10_clap_unsorted,
            "median rank": self.median_rank,
            "mean rank": self.mean_rank,
            "median rank (lower middle)": self.median_rank_lower,
            "median rank (midpoint)": self.median_rank_midpoint,
            "queries": self.queries,
            "candidates": self.candidates,
            "tie policy": self.tie_policy,
        })
        if with_ranks:
            out["ranks0"] = [int(r) for r in self.ranks0]
        return out


def check_tie_policy(policy: str) -> TiePolicy:
    if policy not in TIE_POLICIES:
        raise ModbindError(f"unknown tie policy '{policy}'; choose one of {', '.join(TIE_POLICIES)}")
    return policy  # type: ignore[return-value]


def candidate_positions(scores: np.ndarray, relevant: np.ndarray, tie_policy: str = DEFAULT_TIE_POLICY) -> np.ndarray:
    """0-based position of every candidate in each query's descending ranking, ties broken by ``tie_policy``.

    ``optimistic`` puts relevant candidates before equal-scoring irrelevant ones, ``pessimistic`` after;
    within a group, and for ``index_asc``, the lower candidate index comes first (a stable sort);
    ``index_desc`` puts the higher index first.
    """
    scores = np.asarray(scores)
    relevant = np.asarray(relevant, dtype=bool)
    _check_matrix(scores, relevant)
    policy = check_tie_policy(tie_policy)
    positions = np.empty(scores.shape, dtype=np.int64)
    n_candidates = scores.shape[1]
    columns = np.arange(n_candidates)
    for start in range(0, scores.shape[0], _ROW_BLOCK):
        block = scores[start : start + _ROW_BLOCK].astype(np.float64)
        rel = relevant[start : start + _ROW_BLOCK]
        if policy == "index_desc":
            order = n_candidates - 1 - np.argsort(-block[:, ::-1], axis=1, kind="stable")
        elif policy == "index_asc":
            order = np.argsort(-block, axis=1, kind="stable")
        else:
            # Pre-order by the group key (stable keeps index order inside a group), then a stable score sort.
            group_first = rel if policy == "optimistic" else ~rel
            pre = np.argsort(~group_first, axis=1, kind="stable")
            by_score = np.argsort(-np.take_along_axis(block, pre, axis=1), axis=1, kind="stable")
            order = np.take_along_axis(pre, by_score, axis=1)
        rows = np.arange(order.shape[0])[:, None]
        positions[start : start + order.shape[0]][rows, order] = columns[None, :]
    return positions


def retrieval_metrics(
    scores: np.ndarray,
    relevant: np.ndarray,
    *,
    tie_policy: str = DEFAULT_TIE_POLICY,
    recall_ks: Sequence[int] = RECALL_KS,
) -> RetrievalMetrics:
    """Metrics of one direction: rows of ``scores`` are queries, columns candidates.

    Every query needs at least one relevant candidate (callers exclude the others and count them).
    """
    scores = np.asarray(scores)
    relevant = np.asarray(relevant, dtype=bool)
    _check_matrix(scores, relevant)
    counts = relevant.sum(axis=1)
    if (counts == 0).any():
        missing = np.flatnonzero(counts == 0)[:5].tolist()
        raise ModbindError(f"retrieval queries {missing} have no relevant candidate; exclude them before scoring")
    positions = candidate_positions(scores, relevant, tie_policy)
    ranks0 = np.where(relevant, positions, np.iinfo(np.int64).max).min(axis=1)
    sorted_ap = np.empty(len(scores))
    unsorted_ap = np.empty(len(scores))
    for q in range(len(scores)):
        in_index_order = positions[q, relevant[q]]
        denominator = min(int(counts[q]), MAP_K)
        sorted_ap[q] = _ap_at_k(np.sort(in_index_order), denominator)
        unsorted_ap[q] = _ap_at_k(in_index_order, denominator)
    return RetrievalMetrics(
        recall={k: 100.0 * float(np.mean(ranks0 < k)) for k in recall_ks},
        map10=100.0 * float(np.mean(sorted_ap)),
        map10_clap_unsorted=100.0 * float(np.mean(unsorted_ap)),
        median_rank=median_rank(ranks0, "floor"),
        mean_rank=float(np.mean(ranks0)) + 1.0,
        median_rank_lower=median_rank(ranks0, "lower"),
        median_rank_midpoint=median_rank(ranks0, "midpoint"),
        queries=int(scores.shape[0]),
        candidates=int(scores.shape[1]),
        ranks0=ranks0,
        tie_policy=tie_policy,
    )


def _ap_at_k(positions0: np.ndarray, denominator: int, k: int = MAP_K) -> float:
    """Σ_j j / p_j over the relevant positions inside the top k, in the order given, over ``denominator``."""
    inside = positions0[positions0 < k]
    if inside.size == 0:
        return 0.0
    return float(np.sum(np.arange(1, inside.size + 1) / (inside + 1.0)) / denominator)


def median_rank(ranks0: np.ndarray, convention: MedianConvention = "floor") -> float:
    """1-based median rank under a named convention (see the module docstring)."""
    ranks0 = np.asarray(ranks0)
    if convention == "floor":
        return float(np.floor(np.median(ranks0))) + 1.0
    if convention == "midpoint":
        return float(np.median(ranks0)) + 1.0
    if convention == "lower":
        return float(np.sort(ranks0)[(len(ranks0) - 1) // 2]) + 1.0
    raise ModbindError(f"unknown median convention '{convention}'; choose floor, lower or midpoint")


def relevance_from_index(caption_item_index: np.ndarray, n_items: int) -> np.ndarray:
    """(items × captions) boolean matrix: caption j is relevant to item ``caption_item_index[j]``."""
    index = np.asarray(caption_item_index, dtype=np.int64)
    if index.size and (index.min() < 0 or index.max() >= n_items):
        raise ModbindError(f"caption item indices must lie in [0, {n_items}); got {index.min()}..{index.max()}")
    relevant = np.zeros((n_items, index.size), dtype=bool)
    relevant[index, np.arange(index.size)] = True
    return relevant


def relevance_from_groups(query_groups: Sequence[Any], candidate_groups: Sequence[Any]) -> np.ndarray:
    """Relevant where a query's group key equals the candidate's (e.g. the same set of concept labels)."""
    keys = {key: i for i, key in enumerate(dict.fromkeys([*query_groups, *candidate_groups]))}
    q = np.array([keys[g] for g in query_groups], dtype=np.int64)
    c = np.array([keys[g] for g in candidate_groups], dtype=np.int64)
    return q[:, None] == c[None, :]


@dataclass
class BidirectionalRetrieval:
    """Item→text (A2T) and text→item (T2A) metrics of one similarity matrix."""

    item_to_text: RetrievalMetrics
    text_to_item: RetrievalMetrics


def bidirectional_retrieval(
    sim: np.ndarray, relevant: np.ndarray, *, tie_policy: str = DEFAULT_TIE_POLICY
) -> BidirectionalRetrieval:
    """``sim`` is (items × texts): A2T ranks each row's texts, T2A ranks each column's items."""
    sim = np.asarray(sim)
    relevant = np.asarray(relevant, dtype=bool)
    return BidirectionalRetrieval(
        item_to_text=retrieval_metrics(sim, relevant, tie_policy=tie_policy),
        text_to_item=retrieval_metrics(sim.T, relevant.T, tie_policy=tie_policy),
    )


def group_max_a2t(sim: np.ndarray, caption_item_index: np.ndarray) -> RetrievalMetrics:
    """LanguageBind's A2T variant: each caption group scores as its best caption; items rank N groups.

    Not WavCaps' A2T (candidates are N groups, not all captions); provided so its numbers can be named and
    compared. Ties follow the default policy.
    """
    sim = np.asarray(sim, dtype=np.float64)
    index = np.asarray(caption_item_index, dtype=np.int64)
    n_items = sim.shape[0]
    grouped = np.full((n_items, n_items), sim.min() - 1.0)  # a group with no caption ranks last
    for group in range(n_items):
        members = index == group
        if members.any():
            grouped[:, group] = sim[:, members].max(axis=1)
    return retrieval_metrics(grouped, np.eye(n_items, dtype=bool))


@dataclass
class ClassificationMetrics:
    """Zero-shot classification: top-k accuracy in percent, pooled and per fold, plus the ranking view."""

    topk: dict[int, float]
    per_fold: dict[str, dict[int, float]]
    mean_of_folds: dict[int, float]
    fold_sizes: dict[str, int]
    ranking: RetrievalMetrics
    items: int
    classes: int

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {f"top-{k}": v for k, v in self.topk.items()}
        for k, v in self.mean_of_folds.items():
            out[f"top-{k} (mean of folds)"] = v
        out["per fold"] = {fold: {f"top-{k}": v for k, v in accs.items()} for fold, accs in self.per_fold.items()}
        out["fold sizes"] = dict(self.fold_sizes)
        ranking = self.ranking.as_dict()
        out.update({key: ranking[key] for key in ("R@10", "mAP@10", "median rank", "mean rank")})
        out["items"] = self.items
        out["classes"] = self.classes
        return out


def topk_correct(logits: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Per item: is the true class among the k highest logits (ties: lower class index first)."""
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    order = np.argsort(-logits, axis=1, kind="stable")[:, : min(k, logits.shape[1])]
    return (order == labels[:, None]).any(axis=1)


def classification_metrics(
    logits: np.ndarray,
    labels: np.ndarray,
    folds: Sequence[Any] | None = None,
    *,
    ks: Sequence[int] = (1, 5),
    tie_policy: str = DEFAULT_TIE_POLICY,
) -> ClassificationMetrics:
    """Top-k accuracy pooled over every item, per fold and as the mean of per-fold accuracies.

    The mean of folds is what WavCaps reports for UrbanSound8K (unequal folds); for ESC-50 (equal folds)
    it equals the pooled accuracy.
    """
    logits = np.asarray(logits)
    labels = np.asarray(labels, dtype=np.int64)
    if logits.ndim != 2 or labels.shape != (logits.shape[0],):
        raise ModbindError(f"logits must be (items, classes) and labels (items,); got {logits.shape} and {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= logits.shape[1]):
        raise ModbindError(f"labels must lie in [0, {logits.shape[1]}) (one per class column)")
    correct = {k: topk_correct(logits, labels, k) for k in ks}
    per_fold: dict[str, dict[int, float]] = {}
    fold_sizes: dict[str, int] = {}
    if folds is not None:
        fold_array = np.asarray([str(f) for f in folds])
        for fold in sorted(set(fold_array.tolist()), key=_fold_sort_key):
            mask = fold_array == fold
            fold_sizes[fold] = int(mask.sum())
            per_fold[fold] = {k: 100.0 * float(c[mask].mean()) for k, c in correct.items()}
    mean_of_folds = {k: float(np.mean([accs[k] for accs in per_fold.values()])) for k in ks} if per_fold else {}
    relevant = np.zeros(logits.shape, dtype=bool)
    relevant[np.arange(len(labels)), labels] = True
    return ClassificationMetrics(
        topk={k: 100.0 * float(c.mean()) for k, c in correct.items()},
        per_fold=per_fold,
        mean_of_folds=mean_of_folds,
        fold_sizes=fold_sizes,
        ranking=retrieval_metrics(logits, relevant, tie_policy=tie_policy),
        items=int(logits.shape[0]),
        classes=int(logits.shape[1]),
    )


def _fold_sort_key(fold: str) -> tuple[int, Any]:
    return (0, int(fold)) if fold.lstrip("-").isdigit() else (1, fold)


def chance_recall(n_candidates: int, n_relevant: np.ndarray | Sequence[int], k: int) -> float:
    """Expected R@k (percent) of a random ranking: P(at least one of n_rel relevant lands in the top k)."""
    n_rel = np.asarray(n_relevant, dtype=np.float64)
    miss = np.ones_like(n_rel)
    for i in range(min(k, n_candidates)):
        miss *= np.clip((n_candidates - n_rel - i) / (n_candidates - i), 0.0, 1.0)
    return 100.0 * float(np.mean(1.0 - miss)) if n_rel.size else 0.0


def _check_matrix(scores: np.ndarray, relevant: np.ndarray) -> None:
    if scores.ndim != 2:
        raise ModbindError(f"scores must be a (queries, candidates) matrix, got shape {scores.shape}")
    if relevant.shape != scores.shape:
        raise ModbindError(f"relevance mask {relevant.shape} does not match scores {scores.shape}")
    if not np.isfinite(scores).all():
        raise ModbindError("scores contain NaN or infinity; the embeddings are broken (check the model's output)")


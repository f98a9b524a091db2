"""Retrieval and zero-shot metrics against every reference fixture in tests/fixtures/conformance/metrics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from modbind.errors import ModbindError
from modbind.eval.metrics import (
    TIE_POLICIES,
    bidirectional_retrieval,
    chance_recall,
    classification_metrics,
    group_max_a2t,
    median_rank,
    relevance_from_groups,
    relevance_from_index,
    retrieval_metrics,
)

RETRIEVAL_CASES = (
    "random_5cap_n20_seed0",
    "signal_5cap_n20_seed1",
    "ties_5cap_n3_exact",
    "perfect_5cap_n4_exact",
    "perfect_tiedgt_5cap_n4_exact",
    "pairs_1cap_n30_seed2",
    "varcap_n12_seed3",
)
POLICY_BLOCK = "explicit_tie_policies (independent re-implementation of the WavCaps formulas, NOT a reference repo)"
LB_T2A = "languagebind.tensor_text_to_video_metrics [T2A, multi-sentence path]"
LB_A2T = "languagebind.compute_metrics(tensor_video_to_text_sim(.)) [A2T, commented-out path]"
LB_T2A_SINGLE = "languagebind.compute_metrics(sim_text_x_audio) [T2A, single-sentence path]"


def load_case(conformance_dir: Path, name: str) -> tuple[dict, dict[str, np.ndarray]]:
    folder = conformance_dir / "metrics"
    return json.loads((folder / f"{name}.json").read_text()), load_file(str(folder / f"{name}.safetensors"))


def evaluate(tensors: dict[str, np.ndarray], policy: str):
    relevant = relevance_from_index(tensors["caption_audio_index"], tensors["sim"].shape[0])
    return bidirectional_retrieval(tensors["sim"], relevant, tie_policy=policy)


def wavcaps_view(metrics) -> dict[str, float]:
    return {"R1": metrics.recall[1], "R5": metrics.recall[5], "R10": metrics.recall[10], "R50": metrics.recall[50],
            "medr": metrics.median_rank, "meanr": metrics.mean_rank, "mAP10": metrics.map10}


def policies_reproducing(case: dict, reference: str) -> list[str]:
    return case["tie_policies_reproducing_each_reference_output"].get(reference, [])


@pytest.mark.parametrize("name", RETRIEVAL_CASES)
@pytest.mark.parametrize("policy", TIE_POLICIES)
def test_explicit_tie_policy_blocks(conformance_dir, name, policy):
    case, tensors = load_case(conformance_dir, name)
    result = evaluate(tensors, policy)
    for direction, metrics in (("a2t", result.item_to_text), ("t2a", result.text_to_item)):
        expected = case[POLICY_BLOCK][policy][direction]
        got = wavcaps_view(metrics)
        for key in ("R1", "R5", "R10", "R50", "medr", "meanr", "mAP10"):
            assert got[key] == pytest.approx(expected[key], abs=1e-9), (direction, key)
        assert metrics.ranks0.tolist() == expected["ranks0"], direction
        if direction == "a2t":
            assert metrics.map10_clap_unsorted == pytest.approx(expected["mAP10_clap_unsorted_variant"], abs=1e-9)


@pytest.mark.parametrize("name", [n for n in RETRIEVAL_CASES if n.endswith("exact") or "5cap" in n])
def test_wavcaps_reference(conformance_dir, name):
    case, tensors = load_case(conformance_dir, name)
    for policy in policies_reproducing(case, "wavcaps.a2t/t2a"):
        result = evaluate(tensors, policy)
        for key, metrics in (("wavcaps.a2t", result.item_to_text), ("wavcaps.t2a", result.text_to_item)):
            expected = case["reference_outputs"][key]
            got = wavcaps_view(metrics)
            for field in got:
                assert got[field] == pytest.approx(expected[field], abs=1e-9), (policy, key, field)
            assert metrics.ranks0.tolist() == expected["ranks0"]


@pytest.mark.parametrize("name", [n for n in RETRIEVAL_CASES if "5cap" in n])
def test_clap_evaluate_clotho_audiocaps(conformance_dir, name):
    case, tensors = load_case(conformance_dir, name)
    expected = case["reference_outputs"]["clap.evaluate_clotho_audiocaps"]
    checked = 0
    for policy in policies_reproducing(case, "clap.evaluate_clotho_audiocaps (text_to_audio)"):
        t2a = evaluate(tensors, policy).text_to_item
        for k in (1, 5, 10):
            assert t2a.recall[k] / 100 == pytest.approx(expected[f"text_to_audio_R@{k}"], abs=1e-9)
        assert t2a.map10 / 100 == pytest.approx(expected["text_to_audio_mAP@10"], abs=1e-9)
        assert t2a.mean_rank == pytest.approx(expected["text_to_audio_mean_rank"], abs=1e-9)
        assert t2a.median_rank == pytest.approx(expected["text_to_audio_median_rank"], abs=1e-9)
        checked += 1
    for policy in policies_reproducing(case, "clap.evaluate_clotho_audiocaps (audio_to_text)"):
        a2t = evaluate(tensors, policy).item_to_text
        for k in (1, 5, 10):
            assert a2t.recall[k] / 100 == pytest.approx(expected[f"audio_to_text_R@{k}"], abs=1e-9)
        # CLAP's A2T mAP@10 is the unsorted variant (it can exceed 1), never the sorted one.
        assert a2t.map10_clap_unsorted / 100 == pytest.approx(expected["audio_to_text_mAP@10"], abs=1e-9)
        checked += 1
    assert checked > 0


def test_clap_unsorted_differs_from_wavcaps_when_captions_return_out_of_order(conformance_dir):
    _, tensors = load_case(conformance_dir, "perfect_5cap_n4_exact")
    a2t = evaluate(tensors, "pessimistic").item_to_text
    assert a2t.map10 == pytest.approx(100.0)
    assert a2t.map10_clap_unsorted == pytest.approx(136.8333333333, abs=1e-6)


def test_clap_get_metrics_pairs(conformance_dir):
    case, tensors = load_case(conformance_dir, "pairs_1cap_n30_seed2")
    expected = case["reference_outputs"]["clap.get_metrics"]
    for policy in policies_reproducing(case, "clap.get_metrics"):
        result = evaluate(tensors, policy)
        for prefix, metrics in (("audio_to_text", result.item_to_text), ("text_to_audio", result.text_to_item)):
            for k in (1, 5, 10):
                assert metrics.recall[k] / 100 == pytest.approx(expected[f"{prefix}_R@{k}"], abs=1e-9)
            assert metrics.map10 / 100 == pytest.approx(expected[f"{prefix}_mAP@10"], abs=1e-9)
            assert metrics.mean_rank == pytest.approx(expected[f"{prefix}_mean_rank"], abs=1e-9)
            assert metrics.median_rank == pytest.approx(expected[f"{prefix}_median_rank"], abs=1e-9)


@pytest.mark.parametrize("name", RETRIEVAL_CASES)
def test_languagebind_multi_sentence_t2a(conformance_dir, name):
    case, tensors = load_case(conformance_dir, name)
    expected = case["reference_outputs"][LB_T2A]
    policies = policies_reproducing(case, LB_T2A)
    assert policies
    for policy in policies:
        t2a = evaluate(tensors, policy).text_to_item
        for k in (1, 5, 10):
            assert t2a.recall[k] == pytest.approx(expected[f"R{k}"], abs=1e-4)  # stored as float32 percent
        assert t2a.mean_rank == pytest.approx(expected["MeanR"], abs=1e-9)
        assert t2a.median_rank_lower == pytest.approx(expected["MedianR"], abs=1e-9)


def test_median_conventions_disagree_as_documented(conformance_dir):
    case, tensors = load_case(conformance_dir, "pairs_1cap_n30_seed2")
    t2a = evaluate(tensors, "pessimistic").text_to_item
    assert t2a.median_rank_midpoint == case["reference_outputs"][LB_T2A_SINGLE]["MedianR"] == 2.5
    assert t2a.median_rank == case["reference_outputs"]["clap.get_metrics"]["text_to_audio_median_rank"] == 2.0
    assert t2a.median_rank_lower == case["reference_outputs"][LB_T2A]["MedianR"] == 2.0
    assert median_rank(np.array([0, 1, 2, 3]), "midpoint") == 2.5
    assert median_rank(np.array([0, 1, 2, 3]), "lower") == 2.0
    assert median_rank(np.array([0, 1, 2, 3]), "floor") == 2.0


@pytest.mark.parametrize("name", [n for n in RETRIEVAL_CASES if n != "ties_5cap_n3_exact"])
def test_languagebind_group_max_a2t_on_tie_free_cases(conformance_dir, name):
    case, tensors = load_case(conformance_dir, name)
    expected = case["reference_outputs"][LB_A2T]
    if "tiedgt" in name:  # group maxima tie there; LanguageBind's tie bug inflates its denominator
        return
    metrics = group_max_a2t(tensors["sim"], tensors["caption_audio_index"])
    for k in (1, 5, 10):
        assert metrics.recall[k] == pytest.approx(expected[f"R{k}"], abs=1e-9)
    assert metrics.mean_rank == pytest.approx(expected["MeanR"], abs=1e-9)
    assert metrics.median_rank_midpoint == pytest.approx(expected["MedianR"], abs=1e-9)


def test_zero_shot_fixture(conformance_dir):
    folder = conformance_dir / "metrics"
    case = json.loads((folder / "zeroshot_cls_n40_c10_seed4.json").read_text())
    tensors = load_file(str(folder / "zeroshot_cls_n40_c10_seed4.safetensors"))
    refs = case["reference_outputs"]
    result = classification_metrics(tensors["logits"], tensors["labels"], tensors["folds"].tolist())
    languagebind = refs["languagebind a_cls/zero_shot.py accuracy() (+ run(): divide by n)"]
    assert result.topk[1] / 100 == pytest.approx(languagebind["top1"], abs=1e-12)
    assert result.topk[5] / 100 == pytest.approx(languagebind["top5"], abs=1e-12)
    clap = refs["clap evaluate/eval_zeroshot_classification.py ranking block (fractions)"]
    assert result.ranking.recall[1] / 100 == pytest.approx(clap["R@1"], abs=1e-12)
    assert result.ranking.recall[5] / 100 == pytest.approx(clap["R@5"], abs=1e-12)
    assert result.ranking.recall[10] / 100 == pytest.approx(clap["R@10"], abs=1e-12)
    assert result.ranking.map10 / 100 == pytest.approx(clap["mAP@10"], abs=1e-12)
    assert result.ranking.mean_rank == pytest.approx(clap["mean_rank"], abs=1e-12)
    assert result.ranking.median_rank == pytest.approx(clap["median_rank"], abs=1e-12)
    wavcaps = refs["wavcaps retrieval/zero_shot_classification.py (sklearn accuracy_score per fold; mean over folds)"]
    per_fold = [result.per_fold[f][1] / 100 for f in sorted(result.per_fold, key=int)]
    assert per_fold == pytest.approx(wavcaps["per_fold_top1"], abs=1e-12)
    assert result.mean_of_folds[1] / 100 == pytest.approx(wavcaps["mean_of_fold_top1"], abs=1e-12)
    assert result.topk[1] / 100 == pytest.approx(wavcaps["pooled_top1"], abs=1e-12)
    assert sum(result.fold_sizes.values()) == 40 and sorted(result.fold_sizes.values()) == [10, 13, 17]


def test_label_group_relevance_counts_every_matching_candidate():
    relevant = relevance_from_groups([("dog",), ("cat", "dog")], [("dog",), ("cat",), ("cat", "dog"), ("dog",)])
    assert relevant.tolist() == [[True, False, False, True], [False, False, True, False]]
    sim = np.array([[0.1, 0.9, 0.2, 0.8], [0.0, 0.5, 0.4, 0.3]])
    metrics = retrieval_metrics(sim, relevant)
    assert metrics.ranks0.tolist() == [1, 1]
    # query 0: relevant at 1-based positions 2 and 4 -> AP = (1/2 + 2/4) / 2; query 1: position 2 -> 1/2
    assert metrics.map10 == pytest.approx(100 * ((1 / 2 + 2 / 4) / 2 + 1 / 2) / 2)


def test_chance_recall_matches_simulation():
    assert chance_recall(100, [1], 10) == pytest.approx(10.0)
    rng = np.random.default_rng(0)
    hits = np.mean([(rng.permutation(20)[:5] < 3).any() for _ in range(20000)])
    assert chance_recall(20, [3], 5) == pytest.approx(100 * hits, abs=1.0)


def test_bad_inputs_are_refused_with_a_reason():
    with pytest.raises(ModbindError, match="no relevant candidate"):
        retrieval_metrics(np.zeros((2, 3)), np.array([[True, False, False], [False, False, False]]))
    with pytest.raises(ModbindError, match="NaN"):
        retrieval_metrics(np.array([[np.nan, 1.0]]), np.array([[True, False]]))
    with pytest.raises(ModbindError, match="tie policy"):
        retrieval_metrics(np.zeros((1, 2)), np.array([[True, False]]), tie_policy="random")

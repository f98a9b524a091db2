"""The demo's measurements on the world's test split: the ``modbind eval`` suite plus two-concept zero-shot.

Each condition is a bundle of an audio and a depth model. Many test clips show the same concepts and
templated captions repeat, so "the right answer" is defined by the *concept set* (the suite's
``match: labels``): a retrieved caption, picture or depth map is a hit when it describes/shows exactly
the clip's concepts. Chance levels come from the same relevance masks
(:func:`modbind.eval.metrics.chance_recall`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from modbind import ManifestEntry, read_manifest
from modbind.demo.captions import PROMPTS
from modbind.demo.world import WorldPaths
from modbind.eval import chance_recall, relevance_from_groups

if TYPE_CHECKING:
    from torch import Tensor

MODALITIES: tuple[str, ...] = ("audio", "depth")
"""What the demo aligns, each on its own; a condition's bundle holds one model of each."""


@dataclass(frozen=True)
class Measure:
    """One number the demo reports: a stable key, a human title, its group and its chance level."""

    key: str
    title: str
    group: str
    chance: float


@dataclass
class EvalSet:
    """The world's test split, split into one-concept clips and two-concept scenes."""

    world: WorldPaths
    single: list[ManifestEntry]
    scenes: list[ManifestEntry]

    @classmethod
    def read(cls, world: WorldPaths) -> "EvalSet":
        return cls(world, read_manifest(world.test_single), read_manifest(world.test_scenes))

    @property
    def all(self) -> list[ManifestEntry]:
        return self.single + self.scenes

    def paths(self, entries: Sequence[ManifestEntry], modality: str) -> list[Path]:
        """Each entry's ``modality`` file (``items[modality]``, else ``path``)."""
        return [self.world.root / e.item_path(modality) for e in entries]


def concept_set(entry: ManifestEntry) -> frozenset[str]:
    return frozenset(entry.meta["concepts"])


def english_captions(entries: Sequence[ManifestEntry]) -> tuple[list[str], list[frozenset[str]]]:
    """Every English caption of the test clips (the retrieval gallery) and the concept set each describes."""
    pairs = [(caption, concept_set(e)) for e in entries for caption in e.captions_in("en")]
    return [c for c, _ in pairs], [g for _, g in pairs]


def measures(tests: EvalSet, languages: Sequence[str]) -> list[Measure]:
    """What is measured, in table order, with chance levels computed from the test set itself."""
    n_classes = len(tests.world.spec.concepts())
    clips = tests.all
    groups = [concept_set(e) for e in clips]
    texts, text_groups = english_captions(clips)
    text_relevant = relevance_from_groups(groups, text_groups).sum(1)
    image_relevant = relevance_from_groups(groups, groups).sum(1)
    result = [
        Measure("a2t_r1_en", "audio→text R@1 (en)", "English retrieval", chance_recall(len(texts), text_relevant, 1)),
        Measure("a2t_r10_en", "audio→text R@10 (en)", "English retrieval",
                chance_recall(len(texts), text_relevant, 10)),
    ]
    for lang in languages:
        result.append(Measure(f"zs_single_{lang}", f"zero-shot top-1, one concept ({lang})",
                              "zero-shot, one concept", 100.0 / n_classes))
    if tests.scenes:
        for lang in languages:
            result.append(Measure(f"zs_pair_{lang}", f"zero-shot top-2 = both concepts ({lang})",
                                  "zero-shot, two concepts", 100.0 / (n_classes * (n_classes - 1) / 2)))
    result += [
        Measure("a2i_r1", "audio→image R@1 (same concept set)", "emergent audio→image",
                chance_recall(len(clips), image_relevant, 1)),
        Measure("a2i_r10", "audio→image R@10 (same concept set)", "emergent audio→image",
                chance_recall(len(clips), image_relevant, 10)),
    ]
    for lang in languages:
        result.append(Measure(f"depth_zs_single_{lang}", f"depth zero-shot top-1, one concept ({lang})",
                              "depth: zero-shot, one concept", 100.0 / n_classes))
    for key, direction in (("a2d", "audio→depth"), ("d2a", "depth→audio")):
        for k in (1, 10):
            result.append(Measure(f"{key}_r{k}", f"{direction} R@{k} (same concept set)",
                                  "emergent audio↔depth (never trained together)",
                                  chance_recall(len(clips), image_relevant, k)))
    return result


def demo_suite(world: WorldPaths, languages: Sequence[str]) -> Any:
    """The ``modbind eval`` suite the demo runs on a bundle of audio and depth models.

    Audio: retrieval, zero-shot and emergent audio→image; depth: zero-shot; both: emergent audio↔depth.
    Retrieval and emergent tasks match on the concept set (``match: labels``); zero-shot uses the world's
    class file (labels and prompt per language).
    """
    from modbind import Suite, SuiteTask

    classes = {"classes": str(world.classes)}
    return Suite(name="modbind demo", tasks=[
        SuiteTask(task="retrieval", data=world.test, name="audio→text (en)", languages=["en"], modality="audio",
                  options={"match": "labels"}),
        SuiteTask(task="zeroshot", data=world.test_single, name="zero-shot, one concept", languages=list(languages),
                  modality="audio", options=classes),
        SuiteTask(task="emergent", data=world.test, name="audio→image", modality="audio", options={"match": "labels"}),
        SuiteTask(task="zeroshot", data=world.test_single, name="depth zero-shot, one concept",
                  languages=list(languages), modality="depth", options=classes),
        SuiteTask(task="emergent", data=world.test, name="audio↔depth", modality="audio",
                  options={"match": "labels", "pair": "depth"}),
    ])


def evaluate_model(model: Any, tests: EvalSet, languages: Sequence[str], *, report_dir: Path,
                   cache_dir: Path | None = None, progress: bool = False, model_path: Path | None = None
                   ) -> dict[str, float]:
    """Every measure for one condition's bundle (audio + depth, aligned or untrained), via the suite (percent).

    The suite's own report (JSON, Markdown, plots) goes to ``report_dir``. Two-concept zero-shot is
    scored here on the suite's embeddings: the suite's zero-shot task is single-label by definition.
    """
    import modbind

    suite = demo_suite(tests.world, languages)
    evaluation = modbind.evaluate(model, suite, report_dir, cache_dir=cache_dir, progress=progress,
                                  model_path=model_path)
    retrieval, zeroshot, emergent, depth_zeroshot, audio_depth = evaluation.results
    a2t = _row(retrieval.rows, language="en", direction="audio→text")
    a2i = _row(emergent.rows, direction="audio→image")
    a2d = _row(audio_depth.rows, direction="audio→depth")
    d2a = _row(audio_depth.rows, direction="depth→audio")
    values = {"a2t_r1_en": a2t["R@1"], "a2t_r10_en": a2t["R@10"], "a2i_r1": a2i["R@1"], "a2i_r10": a2i["R@10"],
              "a2d_r1": a2d["R@1"], "a2d_r10": a2d["R@10"], "d2a_r1": d2a["R@1"], "d2a_r10": d2a["R@10"]}
    for lang in languages:
        values[f"zs_single_{lang}"] = _row(zeroshot.rows, language=lang)["top-1"]
        values[f"depth_zs_single_{lang}"] = _row(depth_zeroshot.rows, language=lang)["top-1"]
    if tests.scenes:
        scenes = model.encode(tests.paths(tests.scenes, "audio"), modality="audio", batch_size=64)
        values.update(pair_zero_shot(scenes.numpy(), tests.scenes, tests.world, model.encode_text, languages))
    return values


def _row(rows: Sequence[dict[str, Any]], **match: str) -> dict[str, Any]:
    for row in rows:
        if all(row.get(k) == v for k, v in match.items()) and "skipped" not in row:
            return row
    raise ValueError(f"the evaluation produced no row with {match} (rows: {[dict(list(r.items())[:3]) for r in rows]})")


def pair_zero_shot(queries: np.ndarray, scenes: Sequence[ManifestEntry], world: WorldPaths,
                   encode_text: Callable[[list[str]], Tensor], languages: Sequence[str]) -> dict[str, float]:
    """Per language: share of two-concept clips whose two best-scoring class prompts are exactly its concepts."""
    result: dict[str, float] = {}
    for lang in languages:
        labels = world.class_labels(lang)
        prompts = encode_text([PROMPTS[lang].format(label) for label in labels]).float().numpy()
        top = np.argsort(-(queries @ prompts.T), axis=1, kind="stable")[:, :2]
        truth = [{labels.index(label) for label in e.labels[lang]} for e in scenes]
        result[f"zs_pair_{lang}"] = 100.0 * float(np.mean([set(t.tolist()) == s for t, s in zip(top, truth)]))
    return result


def single_zero_shot(queries: np.ndarray, singles: Sequence[ManifestEntry], world: WorldPaths,
                     encode_text: Callable[[list[str]], Tensor], languages: Sequence[str]) -> dict[str, float]:
    """Per language: top-1 accuracy of one-concept queries against the class prompts."""
    result: dict[str, float] = {}
    for lang in languages:
        labels = world.class_labels(lang)
        prompts = encode_text([PROMPTS[lang].format(label) for label in labels]).float().numpy()
        predicted = np.argmax(queries @ prompts.T, axis=1)
        truth = [labels.index(e.labels[lang][0]) for e in singles]
        result[f"zs_single_{lang}"] = 100.0 * float(np.mean(predicted == np.array(truth)))
    return result


def anchor_ceiling(anchor: Any, tests: EvalSet, languages: Sequence[str]) -> dict[str, float]:
    """The anchor's own text→image zero-shot on the test pictures: the most audio can inherit."""
    from PIL import Image

    def embed(entries: Sequence[ManifestEntry]) -> np.ndarray:
        return anchor.encode_image([Image.open(tests.world.root / e.image).convert("RGB") for e in entries]).float().numpy()

    result = single_zero_shot(embed(tests.single), tests.single, tests.world, anchor.encode_text, languages)
    if tests.scenes:
        result.update(pair_zero_shot(embed(tests.scenes), tests.scenes, tests.world, anchor.encode_text, languages))
    return result

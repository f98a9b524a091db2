"""The demo world on disk: audio (16 kHz wav), pictures (png), depth maps (16-bit png) and manifests,
deterministic given a seed.

Also the test-data factory of the suite: ``generate_world(tmp_path, n_concepts=4, n_per_concept=2, ...)``
writes a tiny world with real files in well under two seconds.

Layout::

    out_dir/world.json           the spec it was built from (its presence marks a complete world)
    out_dir/classes.json         concept names, per-language labels and zero-shot prompts
    out_dir/train.jsonl          one-concept clips and two-concept scenes, captions in every language
    out_dir/test.jsonl           test_single.jsonl + test_scenes.jsonl
    out_dir/audio/<id>.wav, out_dir/images/<id>.png, out_dir/depth/<id>.png

Every entry is one moment in three modalities: ``path`` is its clip, ``image`` its picture and
``items.depth`` its depth map (millimetres, the ``depth_conv`` plugin's format), so the audio and the
depth encoder train from the same manifest and a bundle of both pairs them for audio↔depth retrieval.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
from tqdm.auto import tqdm

from modbind import ManifestEntry, write_manifest
from modbind.atomic import atomic_path, write_json_atomic
from modbind.demo.captions import PROMPTS, describe
from modbind.demo.concepts import CONCEPTS, LANGUAGES, Concept
from modbind.demo.depth import as_png, depth_scene
from modbind.demo.markers import read_marker
from modbind.demo.picture import draw_scene
from modbind.demo.sound import SAMPLE_RATE, render_scene

WORLD_VERSION = 2
"""Bump when the generator's output changes, so cached worlds and anchors are rebuilt."""

SOURCE = "modbind-demo"


@dataclass(frozen=True)
class WorldSpec:
    """Everything that determines a world's content."""

    seed: int = 0
    n_concepts: int = 16
    n_per_concept: int = 24
    """Training clips per concept showing that concept alone."""
    n_scenes: int = 160
    """Training clips with two concepts."""
    n_test_per_concept: int = 6
    n_test_scenes: int = 48
    duration: tuple[float, float] = (1.0, 4.0)
    """Range of clip lengths in seconds."""
    image_size: int = 32
    """Side of the pictures and depth maps in pixels."""
    captions_per_item: int = 3
    languages: tuple[str, ...] = LANGUAGES
    version: int = WORLD_VERSION

    def key(self) -> str:
        """A short hash of the spec: equal specs give equal worlds."""
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def concepts(self) -> tuple[Concept, ...]:
        if not 2 <= self.n_concepts <= len(CONCEPTS):
            raise ValueError(f"n_concepts must be between 2 and {len(CONCEPTS)}, got {self.n_concepts}")
        return CONCEPTS[: self.n_concepts]


@dataclass(frozen=True)
class WorldPaths:
    """Where a generated world's files are."""

    root: Path
    spec: WorldSpec
    train: Path
    test: Path
    test_single: Path
    test_scenes: Path
    classes: Path
    counts: dict[str, int] = field(default_factory=dict)

    def class_labels(self, language: str) -> list[str]:
        """Labels of the world's concepts in ``language``, in class-id order."""
        return [c.words[language].label for c in self.spec.concepts()]

    @staticmethod
    def prompt(language: str) -> str:
        return PROMPTS[language]


@dataclass(frozen=True)
class _Item:
    split: str
    index: int
    concepts: tuple[int, ...]


def generate_world(
    out_dir: Path,
    *,
    seed: int = 0,
    n_per_concept: int = 24,
    languages: Sequence[str] = LANGUAGES,
    n_concepts: int = 16,
    n_scenes: int = 160,
    n_test_per_concept: int = 6,
    n_test_scenes: int = 48,
    duration: tuple[float, float] = (1.0, 4.0),
    image_size: int = 32,
    captions_per_item: int = 3,
    progress: bool = False,
) -> WorldPaths:
    """Write (or reuse, when ``out_dir`` already holds the same spec) a world and return its paths."""
    spec = WorldSpec(seed=seed, n_concepts=n_concepts, n_per_concept=n_per_concept, n_scenes=n_scenes,
                     n_test_per_concept=n_test_per_concept, n_test_scenes=n_test_scenes,
                     duration=(float(duration[0]), float(duration[1])), image_size=image_size,
                     captions_per_item=captions_per_item, languages=tuple(languages))
    _validate(spec)
    out_dir = Path(out_dir)
    existing = read_marker(out_dir / "world.json")
    if existing is not None and existing.get("key") == spec.key():
        return _paths(out_dir, spec, existing.get("counts", {}))
    (out_dir / "audio").mkdir(parents=True, exist_ok=True)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    (out_dir / "depth").mkdir(parents=True, exist_ok=True)
    concepts = spec.concepts()
    items = _plan(spec)
    entries: dict[str, list[ManifestEntry]] = {"train": [], "test_single": [], "test_scenes": []}
    for item in tqdm(items, desc="demo world", unit="clip", disable=not progress):
        entry = _write_item(out_dir, spec, concepts, item)
        group = "train" if item.split == "train" else ("test_single" if len(item.concepts) == 1 else "test_scenes")
        entries[group].append(entry)
    paths = _paths(out_dir, spec, {k: len(v) for k, v in entries.items()})
    write_manifest(entries["train"], paths.train)
    write_manifest(entries["test_single"], paths.test_single)
    write_manifest(entries["test_scenes"], paths.test_scenes)
    write_manifest(entries["test_single"] + entries["test_scenes"], paths.test)
    write_json_atomic(paths.classes, _classes(spec))
    write_json_atomic(out_dir / "world.json", {"key": spec.key(), "spec": asdict(spec), "counts": paths.counts})
    return paths


def _validate(spec: WorldSpec) -> None:
    unknown = [lang for lang in spec.languages if lang not in PROMPTS]
    if unknown:
        raise ValueError(f"the demo world has no captions in {unknown}; choose from {sorted(PROMPTS)}")
    low, high = spec.duration
    if not 0.1 <= low <= high:
        raise ValueError(f"duration must be a range (min, max) with 0.1 <= min <= max, got {spec.duration}")
    spec.concepts()


def _plan(spec: WorldSpec) -> list[_Item]:
    """Which concepts each clip shows; scene pairs are drawn from their own seeded stream."""
    rng = np.random.default_rng([spec.seed, 7])
    items: list[_Item] = []
    for split, per_concept, scenes in (("train", spec.n_per_concept, spec.n_scenes),
                                       ("test", spec.n_test_per_concept, spec.n_test_scenes)):
        index = 0
        for _ in range(per_concept):
            for concept in range(spec.n_concepts):
                items.append(_Item(split, index, (concept,)))
                index += 1
        for _ in range(scenes):
            pair = rng.choice(spec.n_concepts, size=2, replace=False)
            items.append(_Item(split, index, tuple(sorted(int(c) for c in pair))))
            index += 1
    return items


def _write_item(root: Path, spec: WorldSpec, concepts: Sequence[Concept], item: _Item) -> ManifestEntry:
    # One independent stream per clip: the same clip comes out whatever the world size.
    split_code = 0 if item.split == "train" else 1
    rng = np.random.default_rng([spec.seed, split_code, item.index])
    shown = [concepts[c] for c in item.concepts]
    seconds = float(rng.uniform(*spec.duration))
    audio = render_scene([c.sound for c in shown], seconds, rng)
    picture = draw_scene([c.picture for c in shown], rng, size=spec.image_size)
    # Depth draws from a stream of its own, so adding it left every clip, picture and caption as it was.
    depth = depth_scene([(c.picture.shape, c.depth) for c in shown],
                        np.random.default_rng([spec.seed, split_code, item.index, 1]), size=spec.image_size)
    item_id = f"{item.split}-{item.index:05d}"
    audio_path = f"audio/{item_id}.wav"
    image_path = f"images/{item_id}.png"
    depth_path = f"depth/{item_id}.png"
    _atomic_wav(root / audio_path, audio)
    _atomic_png(root / image_path, picture)
    _atomic_png(root / depth_path, as_png(depth))
    captions = {lang: describe(shown, lang, rng, spec.captions_per_item) for lang in spec.languages}
    labels = {lang: [c.words[lang].label for c in shown] for lang in spec.languages}
    return ManifestEntry(
        id=item_id, path=audio_path, image=image_path, items={"depth": depth_path}, captions=captions, labels=labels,
        split=item.split,
        source=SOURCE, duration=round(len(audio) / SAMPLE_RATE, 4), sample_rate=SAMPLE_RATE,
        meta={"concepts": [c.name for c in shown]},
    )


def _atomic_wav(path: Path, samples: np.ndarray) -> None:
    with atomic_path(path, durable=False) as tmp:  # the world is a regenerable cache: no fsync per file
        soundfile.write(tmp, samples, SAMPLE_RATE, subtype="PCM_16", format="WAV")


def _atomic_png(path: Path, picture: Any) -> None:
    with atomic_path(path, durable=False) as tmp:
        picture.save(tmp, format="PNG")


def _classes(spec: WorldSpec) -> dict[str, Any]:
    concepts = spec.concepts()
    return {
        "names": [c.name for c in concepts],
        "labels": {lang: [c.words[lang].label for c in concepts] for lang in spec.languages},
        "prompts": {lang: PROMPTS[lang] for lang in spec.languages},
    }


def _paths(root: Path, spec: WorldSpec, counts: dict[str, int]) -> WorldPaths:
    return WorldPaths(root=root, spec=spec, train=root / "train.jsonl", test=root / "test.jsonl",
                      test_single=root / "test_single.jsonl", test_scenes=root / "test_scenes.jsonl",
                      classes=root / "classes.json", counts=dict(counts))

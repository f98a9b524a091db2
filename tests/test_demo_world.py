"""The demo world generator: files, manifests, determinism, and that concepts are really learnable."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile
from PIL import Image

from modbind.data.manifest import ManifestEntry, read_manifest
from modbind.demo.captions import PAIR_TEMPLATES, PROMPTS, all_template_texts, describe
from modbind.demo.concepts import CONCEPTS, LANGUAGES
from modbind.demo.depth import RELIEFS
from modbind.demo.world import WorldPaths, generate_world

TINY = dict(n_concepts=4, n_per_concept=2, n_scenes=3, n_test_per_concept=1, n_test_scenes=2, duration=(1.0, 1.5))


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(path.relative_to(root).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory: pytest.TempPathFactory):
    return generate_world(tmp_path_factory.mktemp("world") / "w", seed=3, **TINY)


def test_concepts_are_distinct_in_every_language() -> None:
    assert len(CONCEPTS) >= 16
    for lang in LANGUAGES:
        labels = [c.words[lang].label for c in CONCEPTS]
        assert len(set(labels)) == len(labels), lang
    pictures = {(c.picture.hue, c.picture.shape) for c in CONCEPTS}
    assert len({shape for _, shape in pictures}) == len(CONCEPTS)
    assert len({c.sound for c in CONCEPTS}) == len(CONCEPTS)
    assert len({c.depth for c in CONCEPTS}) == len(CONCEPTS)  # distance × relief, besides the silhouette
    assert {c.depth.relief for c in CONCEPTS} <= set(RELIEFS)


def test_tiny_world_files_and_manifests(tiny_world) -> None:
    entries = read_manifest(tiny_world.train)
    test_single = read_manifest(tiny_world.test_single)
    test_scenes = read_manifest(tiny_world.test_scenes)
    assert len(entries) == 4 * 2 + 3
    assert len(test_single) == 4 and len(test_scenes) == 2
    assert [e.id for e in read_manifest(tiny_world.test)] == [e.id for e in test_single + test_scenes]
    ids = [e.id for e in entries + test_single + test_scenes]
    assert len(set(ids)) == len(ids)
    for entry in entries + test_single + test_scenes:
        samples, rate = soundfile.read(tiny_world.root / entry.path, dtype="float32")
        assert rate == 16_000 and samples.ndim == 1
        assert 1.0 <= len(samples) / rate <= 1.5
        assert 0 < np.abs(samples).max() <= 1.0
        assert entry.duration == pytest.approx(len(samples) / rate, abs=1e-3)
        with Image.open(tiny_world.root / entry.image) as picture:
            assert picture.mode == "RGB" and picture.size == (32, 32)
        with Image.open(tiny_world.root / entry.items["depth"]) as depth:
            assert depth.mode == "I;16" and depth.size == (32, 32)  # millimetres, the depth plugin's format
            metres = np.asarray(depth, dtype=np.float32) / 1000
        assert 0.5 < np.median(metres) < 8.0 and (metres == 0).mean() <= 0.05
        assert set(entry.captions) == set(LANGUAGES) == set(entry.labels)
        concepts = [c for c in CONCEPTS if c.name in entry.meta["concepts"]]
        assert len(concepts) == len(entry.labels["en"]) in (1, 2)
        for lang in LANGUAGES:
            assert len(entry.captions[lang]) == 3 and len(set(entry.captions[lang])) == 3
            assert entry.labels[lang] == [c.words[lang].label for c in sorted(concepts, key=CONCEPTS.index)]
            for caption in entry.captions[lang]:
                # Every caption names every concept of the clip (by noun or label).
                for concept in concepts:
                    words = concept.words[lang]
                    assert words.noun in caption or words.label in caption, (caption, words)
    classes = json.loads(tiny_world.classes.read_text(encoding="utf-8"))
    assert classes["names"] == [c.name for c in CONCEPTS[:4]]
    assert classes["prompts"] == PROMPTS
    assert tiny_world.class_labels("ru") == classes["labels"]["ru"]


def test_scenes_are_two_concepts_in_audio_picture_and_captions(tiny_world) -> None:
    for entry in read_manifest(tiny_world.test_scenes):
        assert len(entry.meta["concepts"]) == 2 and len(set(entry.meta["concepts"])) == 2
        picture = np.asarray(Image.open(tiny_world.root / entry.image), dtype=np.float32)
        hues = {c.picture.hue for c in CONCEPTS if c.name in entry.meta["concepts"]}
        assert len(hues) == 2 and picture.std() > 10


def _depth_histogram(path: Path) -> np.ndarray:
    """Share of valid readings per 17.5 cm of distance up to 4.6 m: distance and relief, no shape at all."""
    metres = np.asarray(Image.open(path), dtype=np.float32) / 1000
    near = metres[(metres > 0) & (metres < 4.6)]
    return np.histogram(near, bins=24, range=(0.4, 4.6))[0] / max(len(near), 1)


def _small_world(root: Path, duration: tuple[float, float]) -> WorldPaths:
    """16 concepts, 5 training and 2 test items each, single concepts, English only."""
    return generate_world(root, seed=0, n_concepts=16, n_per_concept=5, n_scenes=0, n_test_per_concept=2,
                          n_test_scenes=0, duration=duration, captions_per_item=1, languages=("en",))


def _nearest_centroid_accuracy(world: WorldPaths, features: Callable[[ManifestEntry], np.ndarray]) -> float:
    """Test-set accuracy of the nearest class centroid of hand-made ``features(entry)`` of the training items."""
    def table(path: Path) -> tuple[np.ndarray, np.ndarray]:
        entries = read_manifest(path)
        return np.stack([features(e) for e in entries]), np.array([e.labels["en"][0] for e in entries])

    train_x, train_y = table(world.train)
    test_x, test_y = table(world.test_single)
    classes = sorted(set(train_y))
    centroids = np.stack([train_x[train_y == c].mean(0) for c in classes])
    predicted = np.array(classes)[np.argmin(((test_x[:, None] - centroids[None]) ** 2).sum(-1), axis=1)]
    return float((predicted == test_y).mean())


def test_depth_maps_separate_concepts_despite_nuisance(tmp_path: Path) -> None:
    world = _small_world(tmp_path / "w", duration=(1.0, 1.0))
    accuracy = _nearest_centroid_accuracy(world, lambda e: _depth_histogram(world.root / e.items["depth"]))
    # Distance and relief alone (a histogram knows no shape) already separate many concepts (chance 1/16) ...
    assert accuracy >= 0.3, accuracy
    # ... yet maps of one concept differ: its distance, the wall, and missing readings change every time.
    dog = [np.asarray(Image.open(world.root / e.items["depth"]), dtype=np.float32) for e in read_manifest(world.train)
           if e.labels["en"] == ["dog"]]
    nearest = [float(np.min(d[d > 0])) for d in dog]
    assert max(nearest) / min(nearest) > 1.05 and len({float((d == 0).mean()) for d in dog}) > 1


def test_same_seed_same_world_other_seed_other_world(tmp_path: Path, tiny_world) -> None:
    again = generate_world(tmp_path / "again", seed=3, **TINY)
    other = generate_world(tmp_path / "other", seed=4, **TINY)
    assert _digest(again.root) == _digest(tiny_world.root)
    assert _digest(other.root) != _digest(tiny_world.root)


def test_existing_world_is_reused_and_a_changed_spec_rebuilt(tmp_path: Path) -> None:
    first = generate_world(tmp_path / "w", seed=1, **TINY)
    stamp = first.train.stat().st_mtime_ns
    second = generate_world(tmp_path / "w", seed=1, **TINY)
    assert second.train.stat().st_mtime_ns == stamp and second.counts == first.counts
    changed = generate_world(tmp_path / "w", seed=1, **{**TINY, "n_per_concept": 3})
    assert len(read_manifest(changed.train)) == 4 * 3 + 3


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no captions in"):
        generate_world(tmp_path / "w", languages=("en", "xx"), **TINY)
    with pytest.raises(ValueError, match="n_concepts"):
        generate_world(tmp_path / "w", **{**TINY, "n_concepts": 99})
    with pytest.raises(ValueError, match="duration"):
        generate_world(tmp_path / "w", **{**TINY, "duration": (2.0, 1.0)})


def test_captions_templates_cover_both_orders_and_all_languages() -> None:
    rng = np.random.default_rng(0)
    dog, rain = CONCEPTS[0], CONCEPTS[1]
    seen_first = set()
    for _ in range(40):
        caption = describe([dog, rain], "en", rng, 1)[0]
        seen_first.add(caption.index("dog") < caption.index("rain"))
    assert seen_first == {True, False}
    texts = all_template_texts(CONCEPTS[:3], LANGUAGES)
    assert any("пока" in t for t in texts) and any("während" in t for t in texts)
    assert all(len(PAIR_TEMPLATES[lang]) >= 3 for lang in LANGUAGES)


def _log_spectrum(samples: np.ndarray) -> np.ndarray:
    """Mean log power in 64 bands of 125 Hz plus the envelope's modulation spectrum: a crude classifier input."""
    frames = samples[: len(samples) // 400 * 400].reshape(-1, 400)
    power = np.abs(np.fft.rfft(frames * np.hanning(400), axis=1)) ** 2
    bands = np.log(power[:, 1:193].reshape(len(frames), 64, 3).sum(2) + 1e-8)
    envelope = np.log(power.sum(1) + 1e-8)
    modulation = np.abs(np.fft.rfft(envelope - envelope.mean(), n=64))[:16]
    return np.concatenate([bands.mean(0) - bands.mean(), bands.std(0), modulation / 10])


def test_sound_classes_are_learnable_despite_nuisance(tmp_path: Path) -> None:
    world = _small_world(tmp_path / "w", duration=(1.0, 1.5))
    accuracy = _nearest_centroid_accuracy(
        world, lambda e: _log_spectrum(soundfile.read(world.root / e.path, dtype="float32")[0]))
    # A nearest-centroid rule on crude spectra separates most classes (chance is 1/16) ...
    assert accuracy >= 0.6, accuracy
    # ... but clips of one class still vary: gain and level differ from clip to clip.
    dog = [soundfile.read(world.root / e.path, dtype="float32")[0] for e in read_manifest(world.train)
           if e.labels["en"] == ["dog"]]
    peaks = [float(np.abs(x).max()) for x in dog]
    assert max(peaks) / min(peaks) > 1.2

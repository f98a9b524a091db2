"""Evaluation tasks on hand-built embeddings, where every expected number can be worked out by hand.

A stand-in model has the AlignedModel methods the evaluator uses: items are ``.npy`` files holding the
embedding itself, texts embed as the sum of one-hot vectors of the words they contain, and pictures
embed as the one-hot of their red channel. The real tiny model runs through the CLI in test_eval_cli.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from modbind.audio.prompts import SOUND_TEMPLATES
from modbind.data.manifest import ManifestEntry, write_manifest
from modbind.errors import ConfigError, DataError
from modbind.eval.context import EvalContext
from modbind.eval.embedder import Embedder
from modbind.eval.emergent import EmergentTask
from modbind.eval.multilingual import AnchorBaselineTask, MultilingualTask
from modbind.eval.retrieval import RetrievalTask
from modbind.eval.suite import evaluate_model, run_suite
from modbind.eval.zeroshot import ZeroShotTask
from modbind.plugins import get_registry
from modbind.suites import load_suite

DIM = 16
VOCAB = {"clip0": 0, "clip1": 1, "clip2": 2, "clip3": 3, "dog": 4, "cão": 4, "cat": 5, "gato": 5, "bird": 6}


class VocabAnchor:
    """Texts → normalised bag of known words; images → one-hot of the top-left red value."""

    identity = "test-vocab-anchor"
    dim = DIM

    def __init__(self) -> None:
        self.text_calls = 0
        self.image_calls = 0

    def encode_text(self, texts, batch_size: int = 256, progress: bool = False) -> torch.Tensor:
        self.text_calls += 1
        out = torch.zeros(len(texts), DIM)
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                out[row, VOCAB.get(word, DIM - 1)] += 1.0
        return F.normalize(out, dim=-1)

    def encode_image(self, images, batch_size: int = 64, progress: bool = False) -> torch.Tensor:
        self.image_calls += 1
        return torch.stack([one_hot(image.getpixel((0, 0))[0]) for image in images])


class NpyPlugin:
    name = "npy_vectors"
    modality = "audio"
    file_extensions = (".npy",)
    item_noun = "vectors"
    zeroshot_templates = SOUND_TEMPLATES

    def eval_policy(self, options: Any) -> str:
        return "vectors as stored"

    def load_item(self, path: Path, options: Any) -> np.ndarray:
        return np.load(path, allow_pickle=False)


class VectorModel:
    """What the evaluator needs of an AlignedModel: plugin, options, dim, card, anchor, encode."""

    def __init__(self, anchor: VocabAnchor):
        self.plugin = NpyPlugin()
        self.options = type("Options", (), {"clip_seconds": 10.0, "sample_rate": 16000})()
        self.dim = DIM
        self.card = {"plugin": "npy_vectors", "anchor_identity": anchor.identity}
        self.anchor = anchor
        self.encoded = 0

    def encode(self, items, batch_size: int = 32, progress: bool = False) -> torch.Tensor:
        if any(not np.any(item) for item in items):
            raise DataError("an all-zero item is too short to encode")
        self.encoded += len(items)
        return F.normalize(torch.as_tensor(np.stack(items), dtype=torch.float32), dim=-1)


def one_hot(index: int) -> torch.Tensor:
    vector = torch.zeros(DIM)
    vector[index] = 1.0
    return vector


def write_item(root: Path, name: str, vector: torch.Tensor | None) -> str:
    path = root / f"{name}.npy"
    if vector is None:
        path.write_bytes(b"not a numpy file")
    else:
        np.save(path, vector.numpy())
    return path.name


def write_picture(root: Path, name: str, index: int | None) -> str:
    path = root / f"{name}.png"
    if index is None:
        path.write_bytes(b"\x89PNG broken")
    else:
        Image.new("RGB", (4, 4), (index, 0, 0)).save(path)
    return path.name


def context_for(tmp_path: Path, entries: list[ManifestEntry], *, languages=None, cache: Path | None = None):
    manifest = tmp_path / "test.jsonl"
    write_manifest(entries, manifest)
    anchor = VocabAnchor()
    model = VectorModel(anchor)
    embedder = Embedder(model, batch_size=2, progress=False, cache_dir=cache)
    return EvalContext.from_manifest(embedder, manifest, languages=languages), model, anchor


@pytest.fixture
def captioned(tmp_path: Path) -> list[ManifestEntry]:
    entries = []
    for i in range(4):
        captions = {"en": [f"clip{i} sound", f"clip{i} again"]} if i < 3 else {"en": [" "]}
        if i < 2:
            captions["pt"] = [f"clip{i} som"]
        entries.append(ManifestEntry(id=f"c{i}", path=write_item(tmp_path, f"c{i}", one_hot(i)), captions=captions,
                                     labels={"en": ["dog" if i % 2 == 0 else "cat"]}))
    entries.append(ManifestEntry(id="broken", path=write_item(tmp_path, "broken", None), captions={"en": ["clip0 x"]}))
    return entries


def test_retrieval_rows_exclusions_and_protocol(tmp_path, captioned):
    context, model, _ = context_for(tmp_path, captioned, languages=["en", "pt", "sw"])
    result = RetrievalTask().run(context)
    rows = {(r["language"], r.get("direction")): r for r in result.rows}
    en_a2t, en_t2a = rows[("en", "audio→text")], rows[("en", "text→audio")]
    assert en_a2t["R@1"] == en_t2a["R@1"] == 100.0 and en_a2t["mAP@10"] == 100.0
    assert en_a2t["queries"] == 3 and en_a2t["gallery"] == 6 and en_t2a["gallery"] == 3
    assert en_t2a["chance R@1"] == pytest.approx(100 / 3)
    assert rows[("pt", "text→audio")]["queries"] == 2
    assert rows[("sw", None)]["skipped"] == "no 'sw' captions in the manifest"
    counts = result.excluded_counts()
    assert counts == {"unreadable_item": 1, "no_caption [en]": 1, "no_caption [pt]": 2, "language_missing [sw]": 4}
    unreadable = next(e for e in result.exclusions if e.reason == "unreadable_item")
    assert "broken.npy" in unreadable.message
    assert result.protocol["captions_per_language"]["en"] == {"items": 3, "captions": 6, "min": 2, "max": 2, "mean": 2.0}
    assert result.protocol["crop_policy"] == "vectors as stored"  # the plugin's own words
    assert result.ranks["en audio→text"] == [0, 0, 0]


def test_matching_on_labels_counts_same_concept_captions_as_hits(tmp_path, captioned):
    # Give clip 2 (a dog) the embedding of clip 0 (also a dog): by id it is a miss, by labels a hit.
    captioned[2] = captioned[2].model_copy(update={"path": write_item(tmp_path, "c2", one_hot(0))})
    by_id = RetrievalTask().run(context_for(tmp_path, captioned[:3], languages=["en"])[0])
    by_labels = RetrievalTask().run(context_for(tmp_path, captioned[:3], languages=["en"])[0], match="labels")
    a2t_id = next(r for r in by_id.rows if r["direction"] == "audio→text")
    a2t_labels = next(r for r in by_labels.rows if r["direction"] == "audio→text")
    # Pessimistic ties: clip 2 scores clip0's captions 1.0 and its own 0 -> its captions rank after 4 others.
    assert a2t_id["R@1"] == pytest.approx(200 / 3)
    assert a2t_labels["R@1"] == 100.0
    assert by_labels.protocol["match"] == "same set of 'en' labels"


@pytest.fixture
def labelled(tmp_path: Path) -> list[ManifestEntry]:
    # dog = dim 4, cat = dim 5, bird = dim 6; clip "d1" sounds like a cat (a deliberate error).
    spec = [("d0", "dog", 4, 1), ("d1", "dog", 5, 1), ("c0", "cat", 5, 1), ("b0", "bird", 6, 2), ("d2", "dog", 4, 2)]
    names = {"dog": "cão", "cat": "gato"}
    entries = [ManifestEntry(id=i, path=write_item(tmp_path, i, one_hot(d)), fold=fold,
                             labels={"en": [label], **({"pt": [names[label]]} if label in names else {})})
               for i, label, d, fold in spec]
    entries.append(ManifestEntry(id="scene", path=write_item(tmp_path, "scene", one_hot(4)),
                                 labels={"en": ["dog", "cat"]}))
    entries.append(ManifestEntry(id="unlabelled", path=write_item(tmp_path, "unlabelled", one_hot(4))))
    return entries


def test_zero_shot_per_fold_templates_and_missing_class_names(tmp_path, labelled):
    context, _, _ = context_for(tmp_path, labelled, languages=["en", "pt"])
    result = ZeroShotTask().run(context)
    en, pt = result.rows
    assert en["top-1"] == pytest.approx(80.0) and en["top-5"] == 100.0 and en["classes"] == 3
    assert en["per fold"] == {"1": {"top-1": pytest.approx(200 / 3), "top-5": 100.0}, "2": {"top-1": 100.0, "top-5": 100.0}}
    assert en["top-1 (mean of folds)"] == pytest.approx((200 / 3 + 100) / 2)
    assert en["chance top-1"] == pytest.approx(100 / 3)
    # 'bird' has no Portuguese name: that class and its clip leave the pt row only.
    assert pt["classes"] == 2 and pt["items"] == 4 and pt["top-1"] == pytest.approx(75.0)
    assert result.excluded_counts() == {"several_labels": 1, "no_label": 1, "class_names_missing [pt]": 1}
    missing = next(e for e in result.exclusions if e.reason == "class_names_missing")
    assert "bird" in missing.message and missing.scope == "pt"
    assert result.protocol["templates"] == {"en": ["This is a sound of {}."], "pt": ["Este é um som de {}."]}
    assert result.protocol["class_names"]["pt"] == [None, "gato", "cão"]
    assert result.protocol["classes"] == ["bird", "cat", "dog"]


def test_zero_shot_template_option_and_class_file(tmp_path, labelled):
    classes = tmp_path / "classes.json"
    classes.write_text(json.dumps({"labels": {"en": ["dog", "cat", "bird"], "pt": ["cão", "gato", "pássaro"]},
                                   "prompts": {"pt": "o som de {}"}}), encoding="utf-8-sig")  # with a BOM
    context, _, _ = context_for(tmp_path, labelled, languages=["en", "pt"])
    result = ZeroShotTask().run(context, classes=str(classes), template=["{} can be heard", "a {}"])
    assert result.protocol["classes"] == ["dog", "cat", "bird"]
    assert result.protocol["templates"]["pt"] == ["{} can be heard", "a {}"]
    assert [r["classes"] for r in result.rows] == [3, 3]
    with pytest.raises(ConfigError, match="exactly one"):
        ZeroShotTask().run(context, template="no placeholder")
    with pytest.raises(ConfigError, match="unknown key 'templat'"):
        ZeroShotTask().run(context, templat="{}")
    with pytest.raises(DataError, match="class file not found"):
        ZeroShotTask().run(context, classes="missing.json")


def test_zero_shot_reads_clap_style_class_files(tmp_path, labelled):
    """LAION-CLAP ships ESC-50's classes as {"name": index}: the indices give the class order."""
    classes = tmp_path / "ESC50_class_labels_indices_space.json"
    classes.write_text(json.dumps({"cat": 1, "bird": 2, "dog": 0}), encoding="utf-8")
    context, _, _ = context_for(tmp_path, labelled, languages=["en"])
    result = ZeroShotTask().run(context, classes=str(classes))
    assert result.protocol["classes"] == ["dog", "cat", "bird"]
    assert result.protocol["class_order"] == "class file order"
    (row,) = result.rows
    assert row["classes"] == 3 and row["top-1"] == pytest.approx(80.0)
    # The names are in the items' label language.
    labelled_pt = [e.model_copy(update={"labels": {"pt": e.labels["pt"]}}) for e in labelled if "pt" in e.labels]
    classes.write_text(json.dumps({"gato": 1, "cão": 0}), encoding="utf-8")
    context, _, _ = context_for(tmp_path, labelled_pt, languages=["pt"])
    result = ZeroShotTask().run(context, classes=str(classes), label_language="pt")
    assert result.protocol["classes"] == ["cão", "gato"] and result.rows[0]["items"] == 4


@pytest.mark.parametrize(("content", "message"), [
    ({"dog": 0, "cat": 0, "bird": 1}, "class index 0 is given to several classes (dog, cat)"),
    ({"dog": 1, "cat": 2, "bird": 3}, "must be 0..2; out of range: [3], missing: [0]"),
    ({"dog": -1, "cat": 1}, "must be 0..1; out of range: [-1], missing: [0]"),
    (["dog", "cat"], "a class file is a JSON object, got list"),
])
def test_clap_style_class_files_with_bad_indices_are_refused(tmp_path, labelled, content, message):
    classes = tmp_path / "classes.json"
    classes.write_text(json.dumps(content), encoding="utf-8")
    context, _, _ = context_for(tmp_path, labelled, languages=["en"])
    with pytest.raises(DataError) as err:
        ZeroShotTask().run(context, classes=str(classes))
    assert message in str(err.value) and str(classes) in str(err.value)


def test_multilingual_defaults_to_the_paper_languages(tmp_path, captioned):
    context, _, _ = context_for(tmp_path, captioned)
    result = MultilingualTask().run(context)
    languages = list(dict.fromkeys(r["language"] for r in result.rows))
    assert languages == ["en", "pt", "es", "fr", "de", "zh", "ja", "ru", "tr", "hi", "ar", "sw"]
    assert sum("skipped" in r for r in result.rows) == 10
    zeroshot = MultilingualTask().run(context_for(tmp_path, captioned, languages=["en"])[0], of="zeroshot")
    assert zeroshot.kind == "classification"
    with pytest.raises(ConfigError, match="'of'"):
        MultilingualTask().run(context, of="translation")


@pytest.fixture
def pictured(tmp_path: Path) -> list[ManifestEntry]:
    entries = []
    for i in range(4):
        entries.append(ManifestEntry(id=f"p{i}", path=write_item(tmp_path, f"p{i}", one_hot(i)),
                                     image=write_picture(tmp_path, f"p{i}", i), captions={"en": [f"clip{i}"]},
                                     labels={"en": ["dog" if i < 2 else "cat"]}))
    # p3's picture shows clip 2: wrong by id, right by concept.
    entries[3] = entries[3].model_copy(update={"image": write_picture(tmp_path, "p3", 2)})
    entries.append(ManifestEntry(id="corrupt", path=write_item(tmp_path, "corrupt", one_hot(0)),
                                 image=write_picture(tmp_path, "corrupt", None)))
    entries.append(ManifestEntry(id="no-image", path=write_item(tmp_path, "no-image", one_hot(0))))
    return entries


def test_emergent_gallery_chance_and_bad_images(tmp_path, pictured):
    context, _, _ = context_for(tmp_path, pictured)
    result = EmergentTask().run(context)
    a2i = result.rows[0]
    assert a2i["direction"] == "audio→image" and a2i["gallery"] == 4
    assert a2i["chance R@1"] == pytest.approx(25.0) and a2i["chance R@5"] == pytest.approx(100.0)
    # p0, p1 hit. p2 ties its own picture with p3's (both show clip 2): pessimistic, so a miss. p3 scores 0
    # on every picture: a miss.
    assert a2i["R@1"] == pytest.approx(50.0)
    assert result.excluded_counts() == {"no_image": 1, "undecodable_image": 1}
    assert "corrupt.png" in next(e for e in result.exclusions if e.reason == "undecodable_image").message
    assert any("gallery 4" in line and "chance" in line for line in result.messages)
    by_labels = EmergentTask().run(context_for(tmp_path, pictured)[0], match="labels")
    # By concept both cat pictures are p2's hits (no competitor ties); p3 still scores 0 everywhere.
    assert by_labels.rows[0]["R@1"] == pytest.approx(75.0)
    assert by_labels.rows[0]["chance R@1"] == pytest.approx(50.0)


def test_anchor_baseline_needs_no_model_and_uses_picture_prompts(tmp_path, pictured):
    manifest = tmp_path / "test.jsonl"
    write_manifest(pictured[:4], manifest)
    embedder = Embedder(None, anchor=VocabAnchor(), progress=False)
    context = EvalContext.from_manifest(embedder, manifest, languages=["en"])
    retrieval = AnchorBaselineTask().run(context)
    assert [r["direction"] for r in retrieval.rows] == ["image→text", "text→image"]
    # "clip2" ties its own picture with p3's (pessimistic: a miss); "clip3" matches no picture at all.
    assert retrieval.rows[1]["R@1"] == pytest.approx(50.0)
    zeroshot = AnchorBaselineTask().run(context, of="zeroshot")
    assert zeroshot.protocol["templates"] == {"en": ["a photo of {}."]}
    with pytest.raises(Exception, match="exported MODEL"):
        RetrievalTask().run(context)


def test_frozen_tower_embeddings_are_cached_on_disk(tmp_path, pictured):
    cache = tmp_path / "cache"
    first, _, anchor1 = context_for(tmp_path, pictured[:4], cache=cache)
    EmergentTask().run(first)
    RetrievalTask().run(first)
    assert anchor1.image_calls == 1 and anchor1.text_calls == 1
    second, _, anchor2 = context_for(tmp_path, pictured[:4], cache=cache)
    EmergentTask().run(second)
    RetrievalTask().run(second)
    assert anchor2.image_calls == 0 and anchor2.text_calls == 0


def test_items_are_embedded_once_per_run(tmp_path, captioned):
    context, model, _ = context_for(tmp_path, captioned, languages=["en"])
    RetrievalTask().run(context)
    RetrievalTask().run(context, match="labels")
    assert model.encoded == 4


def test_an_item_failing_in_preprocessing_costs_only_itself(tmp_path, captioned):
    captioned[1] = captioned[1].model_copy(update={"path": write_item(tmp_path, "c1", torch.zeros(DIM))})
    context, _, _ = context_for(tmp_path, captioned, languages=["en"])
    result = RetrievalTask().run(context)
    assert result.rows[0]["queries"] == 2  # c0 and c2 (c3 has no caption, 'broken' does not load, c1 fails)
    failure = next(e for e in result.exclusions if e.reason == "unreadable_item")
    assert failure.count == 2 and any("too short" in x for x in failure.examples)


def test_suite_resolves_paths_and_rejects_unknown_keys(tmp_path, captioned, monkeypatch, fresh_registry):
    monkeypatch.setenv("MODBIND_DISABLE_PLUGIN_AUTOLOAD", "1")  # built-in tasks only: no encoder imports
    data = tmp_path / "data"
    data.mkdir()
    for entry in captioned:
        (data / entry.path).write_bytes((tmp_path / entry.path).read_bytes())
    write_manifest(captioned, data / "test.jsonl")
    suite = tmp_path / "suite.yaml"
    suite.write_text("tasks:\n  - task: retrieval\n    data: data/test.jsonl\n    name: mine\n"
                     "  - task: retrieval\n    data: data/test.jsonl\n    languages: [pt]\n", encoding="utf-8")
    results = run_suite(Embedder(VectorModel(VocabAnchor()), progress=False), load_suite(suite), get_registry().eval_tasks)
    assert [r.label for r in results] == ["mine", "retrieval: test.jsonl"]
    assert {r["language"] for r in results[1].rows} == {"pt"}
    suite.write_text("tasks:\n  - task: retrieval\n    dta: x.jsonl\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="unknown key"):
        load_suite(suite)


def test_evaluate_model_writes_a_report_for_an_in_memory_model(tmp_path, captioned, monkeypatch, fresh_registry):
    monkeypatch.setenv("MODBIND_DISABLE_PLUGIN_AUTOLOAD", "1")
    write_manifest(captioned, tmp_path / "test.jsonl")
    suite = tmp_path / "suite.yaml"
    suite.write_text("languages: [en]\ntasks:\n  - {task: retrieval, data: test.jsonl}\n", encoding="utf-8")
    results, written = evaluate_model(VectorModel(VocabAnchor()), suite, tmp_path / "out", get_registry().eval_tasks,
                                      progress=False)
    assert [r["R@1"] for r in results[0].rows] == [100.0, 100.0]
    report = json.loads(written["json"].read_text(encoding="utf-8"))
    assert report["settings"]["suite"] == str(suite) and report["model"]["card"]["plugin"] == "npy_vectors"
    assert [r["R@1"] for r in report["tasks"][0]["rows"]] == [100.0, 100.0]
    assert "| en | audio→text | 100.00 |" in written["markdown"].read_text(encoding="utf-8")

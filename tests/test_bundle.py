"""Bundles: exports of one anchor loaded, evaluated and embedded as one model; mixing anchors is refused.

A tiny world where every entry is a clip, a depth map and a picture of one concept; untrained tiny BEATs and
depth encoders (the plumbing, not the learning: the demo test shows audio↔depth retrieval emerging).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from click.testing import CliRunner
from PIL import Image

import modbind
from modbind.cli.main import cli
from modbind.config import AnchorConfig
from modbind.data.manifest import ManifestEntry, write_manifest
from train_world import build_separating_anchor

CONCEPTS = {"dog": (220.0, 1.0), "cat": (660.0, 2.5), "bird": (1500.0, 4.0)}
"""Concept: (tone in Hz, distance of its depth plane in metres)."""
AUDIO = {"size": "tiny", "clip_seconds": 0.5}
DEPTH = {"size": 16, "channels": [8, 16]}


def write_world(root: Path) -> Path:
    """Six entries, two per concept: audio in ``path``, depth in ``items.depth``, a picture in ``image``."""
    for folder in ("audio", "depth", "images"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    entries = []
    for index in range(6):
        name = list(CONCEPTS)[index % 3]
        pitch, metres = CONCEPTS[name]
        t = np.arange(8000) / 16000
        soundfile.write(root / "audio" / f"{index}.wav", 0.3 * np.sin(2 * np.pi * pitch * t), 16000)
        Image.fromarray(np.full((20, 20), metres * 1000 + index, dtype=np.uint16)).save(root / "depth" / f"{index}.png")
        Image.new("RGB", (16, 16), (40 * index, 80, 200)).save(root / "images" / f"{index}.png")
        entries.append(ManifestEntry(id=f"e{index}", path=f"audio/{index}.wav", items={"depth": f"depth/{index}.png"},
                                     image=f"images/{index}.png", captions={"en": [f"a {name} number {index}"]},
                                     labels={"en": [name]}))
    manifest = root / "test.jsonl"
    write_manifest(entries, manifest)
    return manifest


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bundle")
    manifest = write_world(root / "world")
    texts = [f"a {name} number {i}" for i, name in enumerate(list(CONCEPTS) * 2)] + \
        [t.format(n) for n in CONCEPTS for t in ("This is a sound of {}.", "a depth map of {}.")]
    anchor = AnchorConfig(model=f"local-dir:{build_separating_anchor(root / 'anchor', texts)}", pretrained=None)
    other = AnchorConfig(model=f"local-dir:{build_separating_anchor(root / 'other', texts[:4])}", pretrained=None)
    paths = {"root": root, "world": root / "world", "manifest": manifest}
    paths["audio"] = modbind.untrained("audio_beats", AUDIO, anchor, seed=1).save(root / "audio_export")
    paths["depth"] = modbind.untrained("depth_conv", DEPTH, anchor, seed=2).save(root / "depth_export")
    paths["foreign"] = modbind.untrained("depth_conv", DEPTH, other, seed=2).save(root / "foreign_export")
    paths["audio2"] = modbind.untrained("audio_htsat", {"architecture": "tiny", "clip_seconds": 0.5}, anchor,
                                        seed=3).save(root / "htsat_export")
    return paths


def test_several_exports_load_as_one_bundle_with_one_anchor(world) -> None:
    bundle = modbind.load(world["audio"], world["depth"])
    assert isinstance(bundle, modbind.AlignedBundle) and bundle.modalities == ("audio", "depth")
    clips = sorted((world["world"] / "audio").glob("*.wav"))
    maps = sorted((world["world"] / "depth").glob("*.png"))
    audio, depth = bundle.encode_audio(clips), bundle.encode_depth(maps)
    assert audio.shape == depth.shape == (6, 32)
    torch.testing.assert_close(bundle.encode(maps, modality="depth"), depth)
    torch.testing.assert_close(modbind.load(world["depth"]).encode(maps), depth)
    assert bundle.encode_text(["a dog number 0"]).shape == (1, 32)
    assert bundle.member("audio").anchor is bundle.member("depth").anchor is bundle.anchor
    with pytest.raises(modbind.ConfigError, match="this bundle encodes audio, depth: pass modality="):
        bundle.encode(maps)
    with pytest.raises(modbind.ConfigError, match="it has no 'imu' model"):
        bundle.member("imu")
    assert bundle.card["plugin"] == "audio_beats + depth_conv" and bundle.card["metrics"] == {"trained": False}


def test_exports_of_different_anchors_or_one_modality_twice_are_refused(world) -> None:
    with pytest.raises(modbind.CheckpointError) as caught:
        modbind.load([world["audio"], world["foreign"]])
    message = str(caught.value)
    identities = [json.loads((world[k] / "card.json").read_text())["anchor_identity"] for k in ("audio", "foreign")]
    assert str(world["audio"]) in message and str(world["foreign"]) in message
    assert identities[0] != identities[1] and all(i in message for i in identities)
    with pytest.raises(modbind.ConfigError, match="both encode 'audio'"):
        modbind.load(world["audio"], world["audio2"])


def test_bundle_create_writes_a_folder_that_loads_like_its_exports(world, tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    result = CliRunner().invoke(cli, ["bundle", "create", str(out), str(world["audio"]), str(world["depth"])])
    assert result.exit_code == 0, result.output
    assert "depth: depth_conv" in result.output
    layout = json.loads((out / "bundle.json").read_text())
    assert layout["members"] == {"audio": "audio", "depth": "depth"}
    assert {p.name for p in (out / "depth").iterdir()} == {"card.json", "model.safetensors"}
    maps = sorted((world["world"] / "depth").glob("*.png"))
    torch.testing.assert_close(modbind.load(out).encode_depth(maps), modbind.load(world["depth"]).encode(maps))
    again = CliRunner().invoke(cli, ["bundle", "create", str(out), str(world["audio"])])
    assert again.exit_code == 2 and "is not empty" in again.output
    mixed = CliRunner().invoke(cli, ["bundle", "create", str(tmp_path / "mixed"), str(world["audio"]),
                                     str(world["foreign"])])
    assert mixed.exit_code == 2 and "a bundle needs models aligned to the same anchor" in mixed.output


def test_a_bundle_file_cannot_point_outside_its_folder(world, tmp_path: Path) -> None:
    out = tmp_path / "escaping"
    out.mkdir()
    (out / "bundle.json").write_text(json.dumps({"format": "modbind-bundle", "format_version": 1,
                                                 "members": {"audio": str(Path("..") / world["audio"].name)}}))
    with pytest.raises(modbind.CheckpointError, match="member 'audio' is .* not a subfolder of the bundle"):
        modbind.load(out)


def run_eval(world, out: Path, *args: str):
    result = CliRunner().invoke(cli, ["eval", *args, "--data", str(world["manifest"]), "--out", str(out),
                                      "--no-progress", "--no-cache", "--batch-size", "4"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return json.loads((out / "report.json").read_text(encoding="utf-8")), result.output


def test_emergent_retrieval_between_two_modalities_of_a_bundle(world, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    modbind.create_bundle(bundle, [world["audio"], world["depth"]])
    report, output = run_eval(world, tmp_path / "a2d", str(bundle), "--task", "emergent", "-o", "pair=depth",
                              "-o", "match=labels")
    (task,) = report["tasks"]
    assert [r["direction"] for r in task["rows"]] == ["audio→depth", "depth→audio"]
    assert task["rows"][0]["gallery"] == 6 and task["rows"][0]["chance R@1"] == pytest.approx(100 * 2 / 6)
    assert task["protocol"]["pair_source"].startswith("manifest 'items.depth' field")
    assert "audio→depth: gallery 6" in output

    report, _ = run_eval(world, tmp_path / "d2a", str(bundle), "--modality", "depth", "--task", "emergent",
                         "-o", "pair=audio")
    assert [r["direction"] for r in report["tasks"][0]["rows"]] == ["depth→audio", "audio→depth"]

    control, _ = run_eval(world, tmp_path / "untrained", str(bundle), "--untrained", "--seed", "7", "--task",
                          "emergent", "-o", "pair=depth", "-o", "match=labels")
    assert control["model"]["untrained"] is True and control["model"]["card"]["modalities"] == ["audio", "depth"]
    assert control["model"]["card"]["members"]["depth"]["plugin_options"]["channels"] == [8, 16]

    twin, _ = run_eval(world, tmp_path / "twin", str(world["depth"]), "--untrained", "--task", "zeroshot")
    assert twin["model"]["untrained"] is True and twin["model"]["card"]["plugin"] == "depth_conv"
    assert twin["tasks"][0]["rows"][0]["direction"] == "depth→class"

    images, _ = run_eval(world, tmp_path / "d2i", str(bundle), "--modality", "depth", "--task", "emergent")
    assert images["tasks"][0]["rows"][0]["direction"] == "depth→image"
    which = CliRunner().invoke(cli, ["eval", str(bundle), "--task", "retrieval", "--data", str(world["manifest"]),
                                     "--out", str(tmp_path / "which"), "--no-progress", "--no-cache"])
    assert which.exit_code == 2 and "the model encodes audio, depth: choose which modality" in which.output


def test_a_manifest_without_the_pair_modality_is_excluded_with_a_reason(world, tmp_path: Path) -> None:
    plain = tmp_path / "plain.jsonl"
    lines = [json.loads(line) for line in world["manifest"].read_text().splitlines()]
    plain.write_text("".join(json.dumps({k: v for k, v in line.items() if k != "items"}) + "\n" for line in lines))
    result = CliRunner().invoke(cli, ["eval", str(world["audio"]), "--task", "emergent", "-o", "pair=depth",
                                      "--data", str(plain), "--out", str(tmp_path / "x"), "--no-progress"])
    assert result.exit_code == 2 and "the model encodes audio, not 'depth'" in result.output
    result = CliRunner().invoke(cli, ["eval", str(world["audio"]), "--untrained", "--plugin", "audio_beats", "--task",
                                      "retrieval", "--data", str(plain), "--out", str(tmp_path / "y")])
    assert result.exit_code == 2 and "drop --plugin/--plugin-option/--anchor" in result.output

    bundle = modbind.load(world["audio"], world["depth"])
    from modbind import Suite, SuiteTask

    suite = Suite(tasks=[SuiteTask(task="emergent", data=plain, modality="audio", options={"pair": "depth"}),
                         SuiteTask(task="zeroshot", data=world["manifest"], modality="depth")])
    emergent, zeroshot = modbind.evaluate(bundle, suite, tmp_path / "suite", progress=False).results
    assert emergent.excluded_counts()["no_pair_item"] == 6 and "skipped" in emergent.rows[0]
    assert zeroshot.rows[0]["direction"] == "depth→class"
    assert zeroshot.protocol["templates"] == {"en": ["a depth map of {}."]}


def test_embed_sends_each_file_to_its_modality(world, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    modbind.create_bundle(bundle, [world["audio"], world["depth"]])
    out = tmp_path / "both.npy"
    result = CliRunner().invoke(cli, ["embed", str(bundle), str(world["world"] / "audio"),
                                      str(world["world"] / "depth" / "0.png"), "--text", "a dog number 0",
                                      "--out", str(out), "--no-progress", "--no-cache"])
    assert result.exit_code == 0, result.output
    sidecar = json.loads((tmp_path / "both.ids.json").read_text())
    assert sidecar["modalities"] == [None, *["audio"] * 6, "depth"]
    expected = modbind.load(world["depth"]).encode([world["world"] / "depth" / "0.png"])[0]
    np.testing.assert_allclose(np.load(out)[-1], expected.numpy(), atol=1e-6)

    manifest = tmp_path / "entries.npy"
    result = CliRunner().invoke(cli, ["embed", str(bundle), str(world["manifest"]), "--out", str(manifest),
                                      "--no-progress", "--no-cache"])
    assert result.exit_code == 0, result.output
    ids = json.loads((tmp_path / "entries.ids.json").read_text())["ids"]
    assert ids[:2] == ["e0#audio", "e0#depth"] and len(ids) == 12
    pictures = tmp_path / "pictures.npy"
    result = CliRunner().invoke(cli, ["embed", str(bundle), str(world["world"] / "images"), "--kind", "image",
                                      "--out", str(pictures), "--no-progress", "--no-cache"])
    assert result.exit_code == 0 and np.load(pictures).shape == (6, 32)


def test_one_manifest_serves_every_modality_of_its_entries(world) -> None:
    from modbind.config import DataSource
    from modbind.train.data import read_sources

    source = [DataSource(manifest=world["manifest"])]
    [depth] = read_sources(source, "en", "depth")
    [audio] = read_sources(source, "en", "audio")
    assert depth.examples[0].path == world["world"] / "depth" / "0.png"
    assert audio.examples[0].path == world["world"] / "audio" / "0.wav"
    with pytest.raises(ValueError, match="the depth item must not be empty"):
        ManifestEntry(id="x", path="a.wav", items={"depth": " "})


def test_bundle_create_merges_a_bundle_with_another_export(world, tmp_path: Path) -> None:
    audio_only = modbind.create_bundle(tmp_path / "audio_only", [world["audio"]])
    merged = modbind.create_bundle(tmp_path / "merged", [audio_only, world["depth"]])
    assert modbind.load(merged).modalities == ("audio", "depth")
    assert modbind.load(audio_only).modalities == ("audio",)  # a bundle folder loads as a bundle, even of one


def test_the_python_example_of_docs_bundles_runs(world, tmp_path: Path) -> None:
    """docs/bundles.md's Python block, with its paths pointed at this test's exports and files."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "bundles.md").read_text(encoding="utf-8")
    code = text.split("```python norun\n", 1)[1].split("```", 1)[0]  # the illustration, on real exports
    modbind.create_bundle(tmp_path / "bundle", [world["audio"], world["depth"]])
    for placeholder, real in (("runs/audio/export", world["audio"]), ("runs/depth/export", world["depth"]),
                              ("runs/bundle", tmp_path / "bundle"), ("clips/dog.wav", world["world"] / "audio" / "0.wav"),
                              ("maps/dog.png", world["world"] / "depth" / "0.png")):
        assert placeholder in code
        code = code.replace(placeholder, str(real))
    namespace: dict = {}
    exec(compile(code, "docs/bundles.md", "exec"), namespace)
    assert namespace["scores"].shape == (1, 1) and namespace["texts"].shape == (1, 32)

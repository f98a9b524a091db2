"""``modbind eval`` end to end: a real tiny model (BEATs-tiny + tiny open_clip anchor) saved, reloaded and
evaluated on generated wav/png files through the CLI, checking the report files' content."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
from click.testing import CliRunner
from PIL import Image

from modbind.cli.main import cli
from modbind.data.manifest import ManifestEntry, read_manifest, write_manifest

RATE = 16000
CONCEPTS = {"dog": ("cão", 220.0, (200, 40, 40)), "cat": ("gato", 660.0, (40, 200, 40)),
            "bird": ("pássaro", 1500.0, (40, 40, 200))}
PAPER_LANGUAGES = ["en", "pt", "es", "fr", "de", "zh", "ja", "ru", "tr", "hi", "ar", "sw"]


def build_tiny_model(root: Path) -> dict[str, Path]:
    """Generated clips + pictures + manifest, a tiny anchor and an untrained tiny BEATs model, saved."""
    from modbind.anchor import build_tiny_openclip
    from modbind.config import AnchorConfig
    import modbind

    root.mkdir(parents=True, exist_ok=True)
    (root / "audio").mkdir(exist_ok=True)
    (root / "images").mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    entries, texts = [], []
    for index in range(6):
        name = list(CONCEPTS)[index % 3]
        translation, pitch, colour = CONCEPTS[name]
        t = np.arange(int(RATE * rng.uniform(0.3, 0.6))) / RATE
        soundfile.write(root / "audio" / f"{index}.wav", 0.3 * np.sin(2 * np.pi * pitch * t), RATE)
        Image.new("RGB", (16, 16), colour).save(root / "images" / f"{index}.png")
        captions = {"en": [f"a {name} sound number {index}", f"the {name} again"]}
        if index != 5:  # one clip lacks its Portuguese caption
            captions["pt"] = [f"um som de {translation} {index}"]
        entries.append(ManifestEntry(id=f"clip{index}", path=f"audio/{index}.wav", image=f"images/{index}.png",
                                     captions=captions, labels={"en": [name], "pt": [translation]},
                                     fold=1 + index % 2))
        texts.extend(c for cs in captions.values() for c in cs)
    (root / "audio" / "broken.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    (root / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    entries.append(ManifestEntry(id="broken-audio", path="audio/broken.wav", captions={"en": ["a dog sound"]},
                                 labels={"en": ["dog"]}, fold=1))
    entries.append(ManifestEntry(id="broken-image", path="audio/0.wav", image="images/broken.png",
                                 labels={"en": ["dog"]}, fold=2))
    entries.append(ManifestEntry(id="scene", path="audio/1.wav", captions={"en": ["a dog and a cat"]},
                                 labels={"en": ["dog", "cat"]}))
    write_manifest(entries, root / "test.jsonl")
    prompts = [t.format(n) for n in [*CONCEPTS, *(c[0] for c in CONCEPTS.values())]
               for t in ("This is a sound of {}.", "Este é um som de {}.", "a photo of {}.", "uma foto de {}.")]
    anchor_dir = build_tiny_openclip(root / "anchor", texts + prompts, embed_dim=16, vocab_size=128, text_layers=1,
                                     vision_layers=1, image_size=16)
    anchor = f"local-dir:{anchor_dir}"
    model = modbind.untrained("audio_beats", {"size": "tiny", "clip_seconds": 1.0},
                                AnchorConfig(model=anchor, pretrained=None))
    model.save(root / "model")
    return {"root": root, "manifest": root / "test.jsonl", "model": root / "model", "anchor": Path(anchor_dir),
            "cache": root / "cache"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_tiny_model(tmp_path_factory.mktemp("eval_cli"))


def run_eval(tiny: dict[str, Path], out: Path, *args: str) -> tuple[dict, str, str]:
    result = CliRunner().invoke(cli, ["eval", *args, "--out", str(out), "--cache-dir", str(tiny["cache"]),
                                      "--no-progress", "--batch-size", "4"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    return report, (out / "report.md").read_text(encoding="utf-8"), result.output


def test_retrieval_report_json_markdown_and_plots(tiny, tmp_path):
    out = tmp_path / "report"
    report, md, output = run_eval(tiny, out, str(tiny["model"]), "--task", "retrieval", "--data",
                                  str(tiny["manifest"]), "--languages", "en,pt,sw")
    (task,) = report["tasks"]
    rows = task["rows"]
    en = [r for r in rows if r["language"] == "en"]
    assert [r["direction"] for r in en] == ["audio→text", "text→audio"]
    # 6 clips + the scene decode (the broken wav does not); 'broken-image' has no caption.
    assert en[0]["queries"] == 7 and en[0]["gallery"] == 13 and en[1]["queries"] == 13
    for key in ("R@1", "R@5", "R@10", "R@50", "mAP@10", "median rank", "mean rank", "chance R@1"):
        assert isinstance(en[0][key], float)
    assert 0 <= en[0]["R@1"] <= en[0]["R@5"] <= en[0]["R@10"] <= 100
    assert len(task["ranks0"]["en audio→text"]) == 7 and len(task["ranks0"]["en text→audio"]) == 13
    assert next(r for r in rows if r["language"] == "sw")["skipped"] == "no 'sw' captions in the manifest"
    counts = task["excluded_counts"]
    assert counts["unreadable_item"] == 1 and counts["no_caption [en]"] == 1 and counts["no_caption [pt]"] == 3
    assert counts["language_missing [sw]"] == 8
    protocol = task["protocol"]
    assert protocol["manifest_entries"] == 9 and protocol["evaluated_items"] == 8
    assert protocol["crop_policy"].startswith("deterministic: first 1 s window")
    assert "any of its captions" in protocol["caption_rule"]
    assert report["model"]["card"]["plugin"] == "audio_beats" and report["settings"]["tie_policy"] == "pessimistic"
    assert "| en | audio→text |" in md and f"{en[0]['R@1']:.2f}" in md
    assert "1 × unreadable_item" in md and "broken.wav" in md
    plots = sorted(p.name for p in (out / "plots").iterdir())
    assert plots == ["00-retrieval-test.jsonl-languages.png", "00-retrieval-test.jsonl-ranks.png"]
    assert all((out / "plots" / p).read_bytes()[:4] == b"\x89PNG" for p in plots)
    assert "excluded: 1 of 9 items could not be read" in output


def test_zeroshot_and_emergent_through_a_suite(tiny, tmp_path):
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        "tasks:\n"
        f"  - task: zeroshot\n    data: {tiny['manifest']}\n    languages: [en, pt]\n    name: zs\n"
        f"  - task: emergent\n    data: {tiny['manifest']}\n    options: {{match: labels}}\n"
        f"  - task: anchor_baseline\n    data: {tiny['manifest']}\n    languages: [en]\n    options: {{of: zeroshot}}\n",
        encoding="utf-8")
    out = tmp_path / "suite_report"
    report, md, output = run_eval(tiny, out, str(tiny["model"]), "--suite", str(suite))
    zeroshot, emergent, baseline = report["tasks"]
    en, pt = zeroshot["rows"]
    assert en["classes"] == 3 and en["items"] == 7 and set(en["per fold"]) == {"1", "2"}
    assert en["top-1 (mean of folds)"] == pytest.approx(np.mean([f["top-1"] for f in en["per fold"].values()]))
    assert zeroshot["protocol"]["templates"] == {"en": ["This is a sound of {}."], "pt": ["Este é um som de {}."]}
    assert zeroshot["protocol"]["class_names"]["pt"] == ["pássaro", "gato", "cão"]
    assert zeroshot["excluded_counts"] == {"several_labels": 1, "unreadable_item": 1}
    a2i = emergent["rows"][0]
    assert a2i["direction"] == "audio→image" and emergent["protocol"]["gallery_size"] == 6
    assert a2i["chance R@1"] == pytest.approx(100 * 2 / 6)
    assert emergent["excluded_counts"]["undecodable_image"] == 1 and emergent["excluded_counts"]["no_image"] == 2
    assert "audio→image: gallery 6" in output and "chance" in output
    assert baseline["rows"][0]["direction"] == "image→class"
    assert baseline["protocol"]["templates"] == {"en": ["a photo of {}."]}
    assert "## zs (`zeroshot`)" in md and "| en | audio→class |" in md and "| - | audio→image |" in md
    assert (out / "plots" / "01-emergent-test.jsonl-ranks.png").is_file()


def test_multilingual_untrained_control(tiny, tmp_path):
    out = tmp_path / "untrained"
    report, md, _ = run_eval(tiny, out, "--untrained", "--plugin", "audio_beats", "--plugin-option", "size=tiny",
                             "--plugin-option", "clip_seconds=1.0", "--anchor", f"local-dir:{tiny['anchor']}",
                             "--task", "multilingual", "--data", str(tiny["manifest"]))
    (task,) = report["tasks"]
    assert report["model"]["untrained"] is True and "untrained control" in md
    assert list(dict.fromkeys(r["language"] for r in task["rows"])) == PAPER_LANGUAGES
    assert sum("skipped" in r for r in task["rows"]) == 10


def test_bad_invocations_give_one_clear_line(tiny, tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli, ["eval", str(tiny["model"]), "--task", "retreival", "--data", str(tiny["manifest"]),
                                 "--out", str(tmp_path / "x"), "--no-progress"])
    assert result.exit_code == 2 and "unknown evaluation task 'retreival'" in result.output
    assert "did you mean 'retrieval'" in result.output
    result = runner.invoke(cli, ["eval", str(tiny["model"]), "--task", "zeroshot", "--data", str(tiny["manifest"]),
                                 "-o", "templat=x {}", "--out", str(tmp_path / "x"), "--no-progress"])
    assert result.exit_code == 2 and "unknown key 'templat'" in result.output
    result = runner.invoke(cli, ["eval", "--task", "retrieval", "--data", str(tiny["manifest"])])
    assert result.exit_code == 2 and "MODEL" in result.output


def test_anchor_only_baseline_without_a_model(tiny, tmp_path):
    out = tmp_path / "anchor_only"
    report, md, _ = run_eval(tiny, out, "--anchor", f"local-dir:{tiny['anchor']}", "--task", "anchor_baseline",
                             "--data", str(tiny["manifest"]), "--languages", "en,pt")
    (task,) = report["tasks"]
    assert report["model"]["anchor_only"] is True and "model: `anchor only`" in md
    assert [(r["language"], r["direction"]) for r in task["rows"]] == [
        ("en", "image→text"), ("en", "text→image"), ("pt", "image→text"), ("pt", "text→image")]
    assert task["rows"][1]["gallery"] == 6  # the six decodable pictures with an English caption
    assert task["excluded_counts"]["undecodable_image"] == 1
    assert task["protocol"]["tower"] == "anchor image tower (frozen)"


def test_manifest_paths_outside_the_root_are_refused_unless_allowed(tiny, tmp_path):
    entries = read_manifest(tiny["manifest"])[:3]
    escaping = tmp_path / "escaping.jsonl"
    write_manifest([entries[0].model_copy(update={"image": "../../../etc/passwd"}), *entries[1:]], escaping)
    result = CliRunner().invoke(cli, ["eval", str(tiny["model"]), "--task", "retrieval", "--data", str(escaping),
                                      "--root", str(tiny["root"]), "--out", str(tmp_path / "x"), "--no-progress"])
    assert result.exit_code == 2
    assert "escaping.jsonl:1: path '../../../etc/passwd' leaves the data root" in result.output
    absolute = tmp_path / "absolute.jsonl"
    write_manifest([e.model_copy(update={"path": str(tiny["root"] / e.path), "image": None}) for e in entries],
                   absolute)
    args = ["--task", "retrieval", "--data", str(absolute), "--languages", "en"]
    result = CliRunner().invoke(cli, ["eval", str(tiny["model"]), *args, "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "absolute path" in result.output and "--allow-absolute-paths" in result.output
    report, _, _ = run_eval(tiny, tmp_path / "flag", str(tiny["model"]), *args, "--allow-absolute-paths")
    assert report["tasks"][0]["rows"][0]["queries"] > 0
    suite = tmp_path / "suite.yaml"
    suite.write_text(f"tasks:\n  - task: retrieval\n    data: {absolute}\n    languages: [en]\n"
                     "    allow_absolute_paths: true\n", encoding="utf-8")
    report, _, _ = run_eval(tiny, tmp_path / "suite", str(tiny["model"]), "--suite", str(suite))
    assert report["tasks"][0]["rows"][0]["queries"] > 0


def test_console_prints_the_report_table_and_the_same_chance_levels(tiny, tmp_path):
    """With match=labels several clips are relevant to each caption: the console's chance is the report's."""
    out = tmp_path / "labels"
    report, md, output = run_eval(tiny, out, str(tiny["model"]), "--task", "retrieval", "--data",
                                  str(tiny["manifest"]), "-o", "match=labels")
    (task,) = report["tasks"]
    a2t, t2a = task["rows"]
    assert t2a["chance R@1"] > 100.0 / t2a["gallery"] + 1  # 1 / gallery is what the console used to print
    assert f"chance R@1 {a2t['chance R@1']:.2f}% audio→text, {t2a['chance R@1']:.2f}% text→audio" in output
    lines = output.splitlines()
    header = next(line for line in lines if line.split()[:3] == ["language", "direction", "R@1"])
    text_row = next(line for line in lines if line.split()[:2] == ["en", "text→audio"])
    assert f"{t2a['R@1']:.2f}" in text_row and text_row.split()[-1] == f"{t2a['chance R@1']:.2f}"
    assert header.split()[-2:] == ["chance", "R@1"]
    assert f"| en | text→audio | {t2a['R@1']:.2f} |" in md and f"{t2a['chance R@1']:.2f} |" in md


def test_console_and_report_show_zeroshot_per_fold(tiny, tmp_path):
    out = tmp_path / "folds"
    report, md, output = run_eval(tiny, out, str(tiny["model"]), "--task", "zeroshot", "--data",
                                  str(tiny["manifest"]))
    (row,) = report["tasks"][0]["rows"]
    assert f"chance top-1 {row['chance top-1']:.2f}%" in output
    for fold, accuracies in row["per fold"].items():
        expected = ["fold", fold, f"{accuracies['top-1']:.2f}", f"{accuracies['top-5']:.2f}",
                    str(row["fold sizes"][fold])]
        assert expected in [line.split() for line in output.splitlines()], output
        assert f"|  | fold {fold} | {accuracies['top-1']:.2f} | {accuracies['top-5']:.2f} |" in md


def test_a_suite_finds_its_manifests_under_the_data_root(tiny, tmp_path):
    suite = tmp_path / "elsewhere" / "suite.yaml"
    suite.parent.mkdir()
    suite.write_text("tasks:\n  - {task: retrieval, data: '${DATA_ROOT}/test.jsonl', name: by root}\n", encoding="utf-8")
    report, _, output = run_eval(tiny, tmp_path / "r", str(tiny["model"]), "--suite", str(suite),
                                 "--data-root", str(tiny["root"]))
    assert report["tasks"][0]["protocol"]["manifest"] == str(tiny["manifest"]) and "[by root]" in output

"""Prepared manifests feed the trainer and the evaluator: three training sources mixed, and an AudioCaps
test manifest with 5 captions per clip in English plus two translated languages, on tiny data."""

from __future__ import annotations

import csv
import json

import pytest
import yaml
from click.testing import CliRunner

from data_factories import build_audiocaps, build_clotho, build_wavcaps
from modbind.cli.main import cli
from modbind.data.manifest import read_manifest


def invoke(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


@pytest.mark.slow
def test_three_sources_align_and_translated_audiocaps_test_evaluates(tmp_path, datasets_dir):
    import torch

    from modbind.anchor import build_tiny_openclip

    torch.set_num_threads(1)
    sources = {
        "wavcaps": build_wavcaps(tmp_path, datasets_dir).root,
        "audiocaps": build_audiocaps(tmp_path, datasets_dir).root,
        "clotho": build_clotho(tmp_path, datasets_dir).root,
    }
    manifests = tmp_path / "manifests"  # beside the datasets, not inside them: paths are written absolute
    invoke("data", "prepare", "wavcaps", "--root", sources["wavcaps"], "--out", manifests / "wavcaps.jsonl",
           "--no-progress", "--allow-absolute-paths")
    invoke("data", "prepare", "audiocaps", "--root", sources["audiocaps"], "--split", "train", "--out",
           manifests / "audiocaps_train.jsonl", "--no-progress", "--allow-absolute-paths")
    invoke("data", "prepare", "clotho", "--root", sources["clotho"], "--split", "development", "--out",
           manifests / "clotho_train.jsonl", "--no-progress", "--allow-absolute-paths")
    test_manifest = manifests / "audiocaps_test.jsonl"
    invoke("data", "prepare", "audiocaps", "--root", sources["audiocaps"], "--split", "test", "--out", test_manifest,
           "--no-progress", "--allow-absolute-paths")
    test_entries = read_manifest(test_manifest)
    assert [len(e.captions["en"]) for e in test_entries] == [5, 5]
    for language in ("pt", "de"):
        table = tmp_path / f"{language}.csv"
        with table.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["caption_id", "text"])
            writer.writerows((cid, f"{language} {text}") for e in test_entries
                             for cid, text in zip(e.meta["caption_ids"], e.captions["en"]))
        invoke("data", "add-translations", test_manifest, language, table)
    translated = read_manifest(test_manifest)
    assert all(len(e.captions_in(lang)) == 5 for e in translated for lang in ("en", "pt", "de"))

    train_manifests = ["wavcaps.jsonl", "audiocaps_train.jsonl", "clotho_train.jsonl"]
    texts = [c for name in train_manifests for e in read_manifest(manifests / name) for c in e.captions["en"]]
    texts += [c for e in translated for lang in ("en", "pt", "de") for c in e.captions[lang]]
    anchor = build_tiny_openclip(tmp_path / "anchor", texts, embed_dim=16, text_layers=1, vision_layers=1)
    recipe = {
        "anchor": {"model": f"local-dir:{anchor}", "pretrained": None},
        "plugin": {"name": "audio_htsat", "options": {"architecture": "tiny", "clip_seconds": 1.0}},
        "data": {"train": [{"manifest": str(manifests / name), "allow_absolute_paths": True}
                           for name in train_manifests], "num_workers": 0,
                 "caption_cache": str(tmp_path / "caption-cache")},
        "train": {"batch_size": 4, "max_steps": 2, "precision": "fp32", "log_every": 1, "checkpoint_every": 1000,
                  "optimizer": {"lr": 1e-3, "min_lr": 1e-4, "warmup_steps": 1}},
        "output": {"dir": str(tmp_path / "run")},
    }
    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text(yaml.safe_dump(recipe))
    invoke("align", "--recipe", recipe_file, "--no-progress")
    export = next(p.parent for p in (tmp_path / "run").rglob("card.json"))

    report_dir = tmp_path / "report"
    invoke("eval", export, "--task", "multilingual", "--data", test_manifest, "--languages", "en,pt,de", "--out",
           report_dir, "--no-progress", "--cache-dir", tmp_path / "eval-cache", "--allow-absolute-paths")
    report = json.loads((report_dir / "report.json").read_text())
    assert report["model"]["card"]["metrics"]["steps"] == 2
    rows = {(r["language"], r["direction"]): r for task in report["tasks"] for r in task["rows"]}
    for language in ("en", "pt", "de"):
        assert rows[(language, "text\u2192audio")]["queries"] == 10  # 2 clips x 5 captions in each language
        assert rows[(language, "audio\u2192text")]["candidates"] == 10

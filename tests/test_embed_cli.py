"""``modbind embed``: audio, images and texts into one space with ids; unreadable inputs skipped and listed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors import safe_open

from modbind.cli.main import cli
from test_eval_cli import build_tiny_model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_tiny_model(tmp_path_factory.mktemp("embed_cli"))


def invoke(*args: str):
    return CliRunner().invoke(cli, ["embed", *args, "--no-progress", "--no-cache"])


def test_embed_files_folder_and_texts_to_safetensors(tiny, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("a dog sound\n\nthe cat again\n", encoding="utf-8")
    odd = tmp_path / "table.csv"
    odd.write_text("x", encoding="utf-8")
    out = tmp_path / "emb.safetensors"
    result = invoke(str(tiny["model"]), str(tiny["root"] / "audio"), str(tiny["root"] / "images" / "0.png"),
                    str(tiny["root"] / "images" / "broken.png"), str(notes), str(odd), "--text", "um som de cão",
                    "--out", str(out))
    assert result.exit_code == 0, result.output + repr(result.exception)
    with safe_open(str(out), framework="pt") as handle:
        meta = {k: json.loads(v) for k, v in handle.metadata().items()}
        embeddings = handle.get_tensor("embeddings")
    audio = tiny["root"] / "audio"
    assert meta["ids"] == ["text:0", *[str(audio / f"{i}.wav") for i in range(6)], str(tiny["root"] / "images" / "0.png"),
                           f"{notes}:1", f"{notes}:3"]
    assert meta["kinds"] == ["text", *["item"] * 6, "image", "text", "text"]
    assert embeddings.shape == (10, 16) and meta["dim"] == 16 and meta["model"] == str(tiny["model"])
    assert torch.allclose(embeddings.norm(dim=1), torch.ones(10), atol=1e-5)
    skipped = {Path(s["input"]).name: s["reason"] for s in meta["skipped"]}
    assert set(skipped) == {"broken.wav", "broken.png", "table.csv"}
    assert "unknown file type '.csv'" in skipped["table.csv"]
    assert "skipped" in result.output and "broken.png" in result.output


def test_embed_manifest_captions_to_npy_with_ids(tiny, tmp_path):
    out = tmp_path / "captions.npy"
    result = invoke(str(tiny["model"]), str(tiny["manifest"]), "--kind", "text", "--out", str(out))
    assert result.exit_code == 0, result.output + repr(result.exception)
    embeddings = np.load(out)
    sidecar = json.loads((tmp_path / "captions.ids.json").read_text(encoding="utf-8"))
    assert len(sidecar["ids"]) == embeddings.shape[0] == 19
    assert sidecar["ids"][:3] == ["clip0#en#0", "clip0#en#1", "clip0#pt#0"]
    assert np.allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    # The same text embedded through `--text` gives the same vector (one space, one text tower).
    single = tmp_path / "one.npy"
    assert invoke(str(tiny["model"]), "--text", "a dog sound number 0", "--out", str(single)).exit_code == 0
    assert np.allclose(np.load(single)[0], embeddings[0], atol=1e-5)


def test_embed_manifest_items_match_eval_embeddings_order(tiny, tmp_path):
    out = tmp_path / "items.safetensors"
    result = invoke(str(tiny["model"]), str(tiny["manifest"]), "--out", str(out))
    assert result.exit_code == 0, result.output
    with safe_open(str(out), framework="pt") as handle:
        ids = json.loads(handle.metadata()["ids"])
        skipped = json.loads(handle.metadata()["skipped"])
    assert ids == [f"clip{i}" for i in range(6)] + ["broken-image", "scene"]
    assert [Path(s["input"]).name for s in skipped] == ["broken.wav"]


def test_embed_refuses_bad_output_and_empty_input(tiny, tmp_path):
    result = invoke(str(tiny["model"]), "--text", "x", "--out", str(tmp_path / "x.pt"))
    assert result.exit_code == 2 and ".safetensors or .npy" in result.output
    result = invoke(str(tiny["model"]), "--out", str(tmp_path / "x.npy"))
    assert result.exit_code == 2 and "nothing to embed" in result.output
    result = invoke(str(tiny["model"]), str(tiny["root"] / "audio" / "broken.wav"), "--out", str(tmp_path / "x.npy"))
    assert result.exit_code == 2 and "nothing could be embedded" in result.output and "broken.wav" in result.output


def test_embed_takes_every_format_the_decoder_reads_when_given_directly(tiny, tmp_path):
    import soundfile

    tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(8000) / 16000)
    files = [tmp_path / "clip.aiff", tmp_path / "clip.aif", tmp_path / "clip.au", tmp_path / "clip.voc"]
    for path, file_format in zip(files, ["AIFF", "AIFF", "AU", "VOC"]):
        soundfile.write(path, tone, 16000, format=file_format, subtype="PCM_16")
    out = tmp_path / "formats.safetensors"
    result = invoke(str(tiny["model"]), *map(str, files), "--out", str(out))
    assert result.exit_code == 0, result.output + repr(result.exception)
    with safe_open(str(out), framework="pt") as handle:
        meta = {k: json.loads(v) for k, v in handle.metadata().items()}
    assert meta["ids"] == [str(p) for p in files] and meta["skipped"] == []


def test_manifest_paths_may_not_leave_the_manifest_folder(tiny, tmp_path):
    secret = tiny["root"] / "audio" / "1.wav"
    manifest = tmp_path / "inside" / "m.jsonl"
    manifest.parent.mkdir()
    for path, message in (("../" + os.path.relpath(secret, tmp_path), "m.jsonl:1: path '../"),
                          (str(secret), "m.jsonl:1: absolute path")):
        rows = [{"id": "secret", "path": path}]
        manifest.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        out = tmp_path / "emb.safetensors"
        result = invoke(str(tiny["model"]), str(manifest), "--out", str(out))
        assert result.exit_code == 2 and message in result.output, result.output
        assert not out.exists()
    result = invoke(str(tiny["model"]), str(manifest), "--allow-absolute-paths", "--out", str(out))
    assert result.exit_code == 0, result.output
    with safe_open(str(out), framework="pt") as handle:
        assert json.loads(handle.metadata()["ids"]) == ["secret"]


def test_with_untrained_or_anchor_every_argument_is_an_input(tiny, tmp_path):
    """`embed --untrained --plugin P FILE` used to take FILE for the MODEL folder and fail."""
    clip = tiny["root"] / "audio" / "0.wav"
    out = tmp_path / "control.safetensors"
    result = invoke("--untrained", "--plugin", "audio_beats", "--plugin-option", "size=tiny", "--plugin-option",
                    "clip_seconds=1.0", "--anchor", f"local-dir:{tiny['anchor']}", str(clip), "--out", str(out))
    assert result.exit_code == 0, result.output + repr(result.exception)
    with safe_open(str(out), framework="pt") as handle:
        meta = {k: json.loads(v) for k, v in handle.metadata().items()}
    assert meta["ids"] == [str(clip)] and meta["kinds"] == ["item"]
    picture = tiny["root"] / "images" / "0.png"
    result = invoke("--anchor", f"local-dir:{tiny['anchor']}", str(picture), "--out", str(tmp_path / "p.npy"))
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert json.loads((tmp_path / "p.ids.json").read_text(encoding="utf-8"))["ids"] == [str(picture)]
    result = invoke(str(clip), "--out", str(tmp_path / "x.npy"))
    assert result.exit_code == 2
    assert f"Error: MODEL '{clip}' is not an exported model folder; give one first, or pass --untrained" in result.output

"""LAION-CLAP-style webdataset tars (<key>.flac + <key>.json) packed into modbind shards with `data pack --webdataset`."""

from __future__ import annotations

import io
import json
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from data_factories import write_audio
from modbind.audio.io import load_audio
from modbind.cli.main import cli
from modbind.data.shards import index_shards, iter_shards
from modbind.errors import ConfigError, DataError
from modbind.plugins import get_registry

pytest.importorskip("webdataset")  # the dev extra installs it; the missing-package error is tested below


def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def laion_tar(folder: Path, name: str, samples: list[tuple[str, dict | bytes | None, bytes | None, str]]) -> Path:
    """A tar in LAION's layout: per key a json (text/tag/original_data) and an audio member."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    with tarfile.open(path, "w") as tar:
        for key, meta, audio, ending in samples:
            if audio is not None:
                add(tar, f"{key}.{ending}", audio)
            if meta is not None:
                add(tar, f"{key}.json", meta if isinstance(meta, bytes) else json.dumps(meta).encode("utf-8"))
    return path


def clip_bytes(tmp_path: Path, ending: str, seed: int) -> bytes:
    return write_audio(tmp_path / "src" / f"{seed}.{ending}", seconds=0.2, sample_rate=48000, seed=seed).read_bytes()


@pytest.fixture
def tars(tmp_path: Path) -> Path:
    folder = tmp_path / "clotho" / "train"
    laion_tar(folder, "name0.tar", [
        ("1", {"text": ["A dog barks twice.", "Barking nearby."], "tag": ["Dog", "Bark"],
               "original_data": {"title": "dog.wav", "license": "CC-BY"}}, clip_bytes(tmp_path, "flac", 1), "flac"),
        ("2", {"text": "Rain on a tin roof."}, clip_bytes(tmp_path, "wav", 2), "wav"),
        ("3", {"text": ["no audio member"]}, None, "flac"),
        ("4", {"text": ["broken audio"]}, b"not audio at all" * 8, "flac"),
        ("9", None, clip_bytes(tmp_path, "flac", 9), "flac"),
    ])
    laion_tar(folder, "name1.tar", [
        ("5", b"{not json", clip_bytes(tmp_path, "flac", 5), "flac"),
        ("6", {"tag": ["only tags"]}, clip_bytes(tmp_path, "flac", 6), "flac"),
        ("../../escape", {"text": ["outside"]}, clip_bytes(tmp_path, "flac", 7), "flac"),
        ("8", {"text": ["Birds sing."], "tag": "bird"}, clip_bytes(tmp_path, "flac", 8), "flac"),
    ])
    (folder / "sizes.json").write_text(json.dumps({"name0.tar": 5, "name1.tar": 4}), encoding="utf-8")
    return folder


def pack(*args: str):
    return CliRunner().invoke(cli, ["data", "pack", *args, "--plugin", "audio_beats", "--no-progress"])


def test_webdataset_tars_become_modbind_shards_with_captions_and_tags(tmp_path, tars):
    before = sorted(p for p in tmp_path.rglob("*"))
    result = pack(str(tars / "name{0..1}.tar"), "--webdataset", "--out", str(tmp_path / "shards"))
    assert result.exit_code == 0, result.output
    assert "3 clips in 1 shards" in result.output and "6 skipped" in result.output
    packed = {entry.id: (entry, item) for entry, item in iter_shards(tmp_path / "shards")}
    assert list(packed) == ["name0/1", "name0/2", "name1/8"]
    dog, _ = packed["name0/1"]
    assert dog.captions == {"en": ["A dog barks twice.", "Barking nearby."]} and dog.labels == {"en": ["Dog", "Bark"]}
    assert dog.meta["original_data"] == {"title": "dog.wav", "license": "CC-BY"} and dog.source == "webdataset"
    assert packed["name0/2"][0].captions == {"en": ["Rain on a tin roof."]}
    assert packed["name1/8"][0].labels == {"en": ["bird"]}
    # The packed audio is what the plugin decodes from the same file (resampled to its 16 kHz).
    beats = get_registry().encoder("audio_beats")
    clip = beats.unpack_item(packed["name0/1"][1], beats.options({}))
    reference = load_audio(tmp_path / "src" / "1.flac", 16000)
    assert clip.sample_rate == 16000 and len(clip.samples) == len(reference.samples)
    np.testing.assert_allclose(clip.samples, reference.samples, atol=1.5 / 32768)
    index = json.loads((tmp_path / "shards" / "shards.json").read_text(encoding="utf-8"))
    reasons = {s["id"]: s["error"] for s in index["skipped"]}
    assert "no member ending in .wav" in reasons["name0/3"] and "cannot be decoded" in reasons["name0/4"]
    assert "no .json member" in reasons["name0/9"]
    assert "not valid JSON" in reasons["name1/5"] and "no caption in 'text'" in reasons["name1/6"]
    assert "not a plain relative name" in reasons["name1/../../escape"]
    # Nothing was written outside the output folder (no extracted member, no scratch file left behind).
    after = sorted(p for p in tmp_path.rglob("*") if not p.is_relative_to(tmp_path / "shards"))
    assert after == before
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == ["shard-000000.tar", "shards.json"]
    # Training reads these shards like any others.
    assert [e.id for e, _ in index_shards(tmp_path / "shards")] == list(packed)


def test_a_damaged_tar_is_skipped_and_counted(tmp_path, tars):
    data = (tars / "name1.tar").read_bytes()
    (tars / "name1.tar").write_bytes(data[: len(data) // 2 + 100])  # cut mid-member
    result = pack(str(tars), "--webdataset", "--out", str(tmp_path / "shards"))
    assert result.exit_code == 0, result.output
    index = json.loads((tmp_path / "shards" / "shards.json").read_text(encoding="utf-8"))
    assert index["packed"] == 2
    assert any("unreadable tar data" in s["error"] for s in index["skipped"])


def test_tars_without_the_flag_and_webdataset_tars_in_training_get_a_clear_line(tmp_path, tars):
    result = pack(str(tars / "name0.tar"), "--out", str(tmp_path / "shards"))
    assert result.exit_code == 2 and "add --webdataset" in result.output
    with pytest.raises(DataError, match="not a modbind shard header.*--webdataset"):
        list(index_shards(tars / "name0.tar"))


def test_missing_webdataset_package_is_one_line_saying_how_to_install(tmp_path, tars, monkeypatch):
    monkeypatch.setitem(sys.modules, "webdataset", None)  # import fails as if not installed
    result = pack(str(tars), "--webdataset", "--out", str(tmp_path / "shards"))
    assert result.exit_code == 2
    assert result.output.strip() == ("Error: reading webdataset tars needs the 'webdataset' package: "
                                     "pip install 'modbind[webdataset]'")
    assert not (tmp_path / "shards").exists()
    from modbind.data.webdataset_input import require_webdataset

    with pytest.raises(ConfigError):
        require_webdataset()

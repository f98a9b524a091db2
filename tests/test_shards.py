"""Tar shards of items packed by their plugin (audio: int16 PCM): round trip, rollover, bad items, damage."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

from data_factories import write_audio, write_corrupt
from modbind.audio.base import AudioEncoderOptions, AudioEncoderPlugin
from modbind.audio.io import load_audio
from modbind.audio.pcm import decode_pcm16, encode_pcm16
from modbind.contracts import Batch
from modbind.data.manifest import ManifestEntry
from modbind.data.shards import ShardReadStats, is_shard_source, iter_shards, list_shards
from modbind.data.shards import pack_shards as pack_with
from modbind.errors import ConfigError, DataError


class AudioDataPath(AudioEncoderPlugin[AudioEncoderOptions]):
    """The shared audio data path (decode, resample, pack) at any rate, without a model."""

    name = "test_audio_data_path"

    def featurize(self, batch: Batch, options: AudioEncoderOptions) -> Batch:
        return batch

    def new_encoder(self, options: AudioEncoderOptions):
        raise NotImplementedError


PLUGIN = AudioDataPath()


def pack_shards(entries, root, out, *, sample_rate, **kwargs):
    return pack_with(entries, root, out, PLUGIN, PLUGIN.options({"sample_rate": sample_rate}), **kwargs)


def clips(folder, **kwargs):
    """(entry, decoded clip) of every packed sample, unpacked by the plugin that packed them."""
    options = PLUGIN.options({})
    return [(entry, PLUGIN.unpack_item(packed, options)) for entry, packed in iter_shards(folder, **kwargs)]


def make_entries(root, n=5, *, corrupt=(), missing=()):
    entries = []
    for k in range(n):
        name = f"clips/c{k}.flac"
        if k in corrupt:
            write_corrupt(root / name)
        elif k not in missing:
            write_audio(root / name, seconds=0.1 + 0.05 * k, sample_rate=44100, channels=2, seed=k)
        entries.append(ManifestEntry(id=f"clip{k}", path=name, captions={"en": [f"caption {k}"]}, split="train"))
    return entries


def test_pcm16_round_trip_is_within_one_step():
    samples = np.linspace(-1.2, 1.2, 1001, dtype=np.float32)
    back = decode_pcm16(encode_pcm16(samples))
    assert back.dtype == np.float32
    np.testing.assert_allclose(back, np.clip(samples, -1.0, 32767 / 32768), atol=1 / 32768)


def test_pack_and_iterate_returns_resampled_audio_and_entries(tmp_path):
    entries = make_entries(tmp_path, 5, corrupt={1}, missing={3})
    report = pack_shards(entries, tmp_path, tmp_path / "shards", sample_rate=16000, clips_per_shard=2, progress=False)
    assert report.packed == 3 and [s["count"] for s in report.shards] == [2, 1]
    assert sorted(s["id"] for s in report.skipped) == ["clip1", "clip3"]
    index = json.loads((tmp_path / "shards/shards.json").read_text())
    assert index["format"] == "modbind-shards-v2" and index["packed_format"] == "pcm16" and index["packed"] == 3
    assert not list((tmp_path / "shards").glob("*.tmp"))
    items = clips(tmp_path / "shards")
    assert [e.id for e, _ in items] == ["clip0", "clip2", "clip4"]
    for entry, clip in items:
        expected = load_audio(tmp_path / entry.path, 16000)
        assert clip.sample_rate == 16000 and entry.captions == {"en": [f"caption {entry.id[-1]}"]}
        assert len(clip.samples) == len(expected.samples)
        np.testing.assert_allclose(clip.samples, expected.samples, atol=1.5 / 32768)


def test_parts_split_shards_between_workers(tmp_path):
    entries = make_entries(tmp_path, 6)
    pack_shards(entries, tmp_path, tmp_path / "s", sample_rate=8000, clips_per_shard=2, progress=False)
    seen = [[e.id for e, _ in iter_shards(tmp_path / "s", part=p, parts=2)] for p in range(2)]
    assert seen == [["clip0", "clip1", "clip4", "clip5"], ["clip2", "clip3"]]
    assert [p.name for p in list_shards(str(tmp_path / "s/shard-{000000..000001}.tar"))] == ["shard-000000.tar",
                                                                                             "shard-000001.tar"]
    assert len(list_shards(str(tmp_path / "s/*.tar"))) == 3
    assert is_shard_source(tmp_path / "s") and is_shard_source("x/shard-000000.tar") and not is_shard_source("a.jsonl")
    with pytest.raises(DataError, match=r"shard-000003.tar .* not found \(7 missing\)"):
        list_shards(str(tmp_path / "s/shard-{000000..000009}.tar"))


def test_max_seconds_truncates_long_clips(tmp_path):
    entries = make_entries(tmp_path, 1)
    pack_shards(entries, tmp_path, tmp_path / "s", sample_rate=16000, max_seconds=0.05, progress=False)
    [(_, clip)] = clips(tmp_path / "s")
    assert len(clip.samples) == 800


def test_damaged_shard_and_sample_are_skipped_and_counted(tmp_path):
    entries = make_entries(tmp_path, 4)
    pack_shards(entries, tmp_path, tmp_path / "s", sample_rate=8000, clips_per_shard=2, progress=False)
    first = tmp_path / "s/shard-000000.tar"
    rebuilt = tmp_path / "rebuilt.tar"
    with tarfile.open(first) as src, tarfile.open(rebuilt, "w") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read()
            if member.name == "0000000000.pcm16":
                data = data[:-1]  # odd byte count: not int16 PCM
            if member.name == "0000000001.pcm16":
                member.name = "0000000001.wav"  # a payload its header does not announce
            member.size = len(data)
            dst.addfile(member, io.BytesIO(data))
    rebuilt.replace(first)
    second = tmp_path / "s/shard-000001.tar"
    second.write_bytes(second.read_bytes()[:700])  # truncated mid-member
    stats = ShardReadStats()
    samples = list(iter_shards(tmp_path / "s", stats=stats))
    assert [e.id for e, _ in samples] == ["clip0"]
    assert stats.skipped_samples == 1 and len(stats.broken_shards) == 1 and stats.samples == 1
    with pytest.raises(DataError, match="the shard is damaged"):
        PLUGIN.unpack_item(samples[0][1], PLUGIN.options({}))  # the trainer skips and counts it


def test_pack_with_worker_processes_keeps_manifest_order(tmp_path, monkeypatch):
    import modbind.data.shards as shards

    monkeypatch.setattr(shards, "_WINDOW", 3)
    entries = make_entries(tmp_path, 7, corrupt={4})
    report = pack_shards(entries, tmp_path, tmp_path / "s", sample_rate=8000, clips_per_shard=4, workers=2,
                         progress=False)
    assert report.packed == 6 and [s["id"] for s in report.skipped] == ["clip4"]
    assert [e.id for e, _ in iter_shards(tmp_path / "s")] == ["clip0", "clip1", "clip2", "clip3", "clip5", "clip6"]


def test_a_plugin_that_cannot_pack_is_refused_before_anything_is_written(tmp_path):
    class NoPacking(AudioDataPath):
        packed_format = None

    with pytest.raises(ConfigError, match="cannot pack audio items"):
        pack_with(make_entries(tmp_path, 1), tmp_path, tmp_path / "s", NoPacking(), PLUGIN.options({}))
    assert not (tmp_path / "s").exists()


def test_interrupted_pack_leaves_only_complete_shards(tmp_path, monkeypatch):
    import modbind.data.shards as shards

    real = shards._pack_job

    def flaky(job):
        if job[0] == 3:
            raise KeyboardInterrupt
        return real(job)

    monkeypatch.setattr(shards, "_pack_job", flaky)
    entries = make_entries(tmp_path, 5)
    with pytest.raises(KeyboardInterrupt):
        pack_shards(entries, tmp_path, tmp_path / "s", sample_rate=8000, clips_per_shard=2, progress=False)
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["shard-000000.tar", "shards.progress.json"]
    assert [e.id for e, _ in iter_shards(tmp_path / "s")] == ["clip0", "clip1"]


def test_an_interrupted_pack_resumes_after_its_last_complete_shard(tmp_path, monkeypatch):
    import modbind.data.shards as shards

    real = shards._pack_job
    decoded = []

    def interrupted_at_clip4(job):
        if job[0] == 4:
            raise KeyboardInterrupt
        decoded.append(Path(job[1]).stem)
        return real(job)

    entries = make_entries(tmp_path, 7, corrupt={1})
    monkeypatch.setattr(shards, "_pack_job", interrupted_at_clip4)
    with pytest.raises(KeyboardInterrupt):  # shard 0 = clip0, clip2 (clip1 unreadable); clip3 in the open shard
        pack_shards(entries, tmp_path, tmp_path / "s", sample_rate=8000, clips_per_shard=2, progress=False)
    decoded.clear()
    monkeypatch.setattr(shards, "_pack_job", lambda job: decoded.append(Path(job[1]).stem) or real(job))
    report = pack_shards(entries, tmp_path, tmp_path / "s", sample_rate=8000, clips_per_shard=2, progress=False)
    assert decoded == ["c3", "c4", "c5", "c6"]  # nothing before the last complete shard again
    assert report.resumed_after_shards == 1 and "resumed after 1 shards" in report.summary()
    assert [s["id"] for s in report.skipped] == ["clip1"] and report.packed == 6
    assert [e.id for e, _ in iter_shards(tmp_path / "s")] == ["clip0", "clip2", "clip3", "clip4", "clip5", "clip6"]
    assert not (tmp_path / "s" / "shards.progress.json").exists()
    keys = [name for shard in sorted((tmp_path / "s").glob("shard-*.tar"))
            for name in tarfile.open(shard).getnames() if name.endswith(".json")]
    assert len(set(keys)) == len(keys) == 6  # sample keys stay unique across the resumed run


def test_resuming_with_other_settings_is_refused(tmp_path, monkeypatch):
    import modbind.data.shards as shards

    real = shards._pack_job
    monkeypatch.setattr(shards, "_pack_job", lambda job: (_ for _ in ()).throw(KeyboardInterrupt) if job[0] == 3
                        else real(job))
    entries = make_entries(tmp_path, 4)
    with pytest.raises(KeyboardInterrupt):
        pack_shards(entries, tmp_path, tmp_path / "s", sample_rate=8000, clips_per_shard=2, progress=False)
    monkeypatch.setattr(shards, "_pack_job", real)
    with pytest.raises(DataError, match=r"other settings \(plugin.options.sample_rate 8000 -> 16000\).*another --out"):
        pack_shards(entries, tmp_path, tmp_path / "s", sample_rate=16000, clips_per_shard=2, progress=False)
    (tmp_path / "s" / "shard-000000.tar").unlink()
    with pytest.raises(DataError, match="lost shards.*shard-000000.tar"):
        pack_shards(entries, tmp_path, tmp_path / "s", sample_rate=8000, clips_per_shard=2, progress=False)

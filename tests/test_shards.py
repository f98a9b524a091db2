"""Tar shards of decoded PCM: round trip, rollover, skipping bad items and damaged shards."""

from __future__ import annotations

import json
import tarfile

import numpy as np
import pytest

from data_factories import write_audio, write_corrupt
from modbind.audio.io import load_audio
from modbind.data.manifest import ManifestEntry
from modbind.data.shards import (
    ShardReadStats,
    decode_pcm16,
    encode_pcm16,
    is_shard_source,
    iter_shards,
    list_shards,
    pack_shards,
)
from modbind.errors import DataError


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
    assert index["format"] == "modbind-pcm16-v1" and index["sample_rate"] == 16000 and index["packed"] == 3
    assert not list((tmp_path / "shards").glob("*.tmp"))
    items = list(iter_shards(tmp_path / "shards"))
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
    [(_, clip)] = list(iter_shards(tmp_path / "s"))
    assert len(clip.samples) == 800


def test_damaged_shard_and_sample_are_skipped_and_counted(tmp_path):
    entries = make_entries(tmp_path, 4)
    pack_shards(entries, tmp_path, tmp_path / "s", sample_rate=8000, clips_per_shard=2, progress=False)
    first = tmp_path / "s/shard-000000.tar"
    rebuilt = tmp_path / "rebuilt.tar"
    with tarfile.open(first) as src, tarfile.open(rebuilt, "w") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read()
            if member.name == "0000000000.pcm":
                data = data[:-1]  # odd byte count: not int16 PCM
            member.size = len(data)
            import io

            dst.addfile(member, io.BytesIO(data))
    rebuilt.replace(first)
    second = tmp_path / "s/shard-000001.tar"
    second.write_bytes(second.read_bytes()[:700])  # truncated mid-member
    stats = ShardReadStats()
    ids = [e.id for e, _ in iter_shards(tmp_path / "s", stats=stats)]
    assert ids == ["clip1"]
    assert stats.skipped_samples == 1 and len(stats.broken_shards) == 1 and stats.samples == 1


def test_pack_with_worker_processes_keeps_manifest_order(tmp_path, monkeypatch):
    import modbind.data.shards as shards

    monkeypatch.setattr(shards, "_WINDOW", 3)
    entries = make_entries(tmp_path, 7, corrupt={4})
    report = pack_shards(entries, tmp_path, tmp_path / "s", sample_rate=8000, clips_per_shard=4, workers=2,
                         progress=False)
    assert report.packed == 6 and [s["id"] for s in report.skipped] == ["clip4"]
    assert [e.id for e, _ in iter_shards(tmp_path / "s")] == ["clip0", "clip1", "clip2", "clip3", "clip5", "clip6"]


def test_interrupted_pack_leaves_only_complete_shards(tmp_path, monkeypatch):
    import modbind.data.shards as shards

    real = shards._decode_job

    def flaky(job):
        if job[0] == 3:
            raise KeyboardInterrupt
        return real(job)

    monkeypatch.setattr(shards, "_decode_job", flaky)
    entries = make_entries(tmp_path, 5)
    with pytest.raises(KeyboardInterrupt):
        pack_shards(entries, tmp_path, tmp_path / "s", sample_rate=8000, clips_per_shard=2, progress=False)
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["shard-000000.tar", "shards.progress.json"]
    assert [e.id for e, _ in iter_shards(tmp_path / "s")] == ["clip0", "clip1"]


def test_an_interrupted_pack_resumes_after_its_last_complete_shard(tmp_path, monkeypatch):
    import modbind.data.shards as shards

    real = shards._decode_job
    decoded = []

    def interrupted_at_clip4(job):
        if job[0] == 4:
            raise KeyboardInterrupt
        decoded.append(job[2])
        return real(job)

    entries = make_entries(tmp_path, 7, corrupt={1})
    monkeypatch.setattr(shards, "_decode_job", interrupted_at_clip4)
    with pytest.raises(KeyboardInterrupt):  # shard 0 = clip0, clip2 (clip1 unreadable); clip3 in the open shard
        pack_shards(entries, tmp_path, tmp_path / "s", sample_rate=8000, clips_per_shard=2, progress=False)
    decoded.clear()
    monkeypatch.setattr(shards, "_decode_job", lambda job: decoded.append(job[2]) or real(job))
    report = pack_shards(entries, tmp_path, tmp_path / "s", sample_rate=8000, clips_per_shard=2, progress=False)
    assert decoded == ["clip3", "clip4", "clip5", "clip6"]  # nothing before the last complete shard again
    assert report.resumed_after_shards == 1 and "resumed after 1 shards" in report.summary()
    assert [s["id"] for s in report.skipped] == ["clip1"] and report.packed == 6
    assert [e.id for e, _ in iter_shards(tmp_path / "s")] == ["clip0", "clip2", "clip3", "clip4", "clip5", "clip6"]
    assert not (tmp_path / "s" / "shards.progress.json").exists()
    keys = [name for shard in sorted((tmp_path / "s").glob("shard-*.tar"))
            for name in tarfile.open(shard).getnames() if name.endswith(".json")]
    assert len(set(keys)) == len(keys) == 6  # sample keys stay unique across the resumed run


def test_resuming_with_other_settings_is_refused(tmp_path, monkeypatch):
    import modbind.data.shards as shards

    real = shards._decode_job
    monkeypatch.setattr(shards, "_decode_job", lambda job: (_ for _ in ()).throw(KeyboardInterrupt) if job[0] == 3
                        else real(job))
    entries = make_entries(tmp_path, 4)
    with pytest.raises(KeyboardInterrupt):
        pack_shards(entries, tmp_path, tmp_path / "s", sample_rate=8000, clips_per_shard=2, progress=False)
    monkeypatch.setattr(shards, "_decode_job", real)
    with pytest.raises(DataError, match=r"other settings \(sample_rate 8000 -> 16000\).*another --out"):
        pack_shards(entries, tmp_path, tmp_path / "s", sample_rate=16000, clips_per_shard=2, progress=False)
    (tmp_path / "s" / "shard-000000.tar").unlink()
    with pytest.raises(DataError, match="lost shards.*shard-000000.tar"):
        pack_shards(entries, tmp_path, tmp_path / "s", sample_rate=8000, clips_per_shard=2, progress=False)

"""Training data: weighted mixing, deterministic resumable order, skip-and-count of unreadable items."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from modbind.config import DataSource
from modbind.data.manifest import read_manifest
from modbind.errors import ConfigError, DataError
from modbind.train.data import (
    AlignmentDataset,
    Example,
    RankBatchSampler,
    SkipCounter,
    SourceExamples,
    all_captions,
    epoch_order,
    make_loader,
    read_sources,
)


def write_imu_manifest(folder: Path, count: int, *, prefix: str = "item", broken: int = 0) -> Path:
    """``count`` random 6-channel series with one unique English caption each; the last ``broken`` are garbage."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(prefix) + count)
    lines = []
    for i in range(count):
        path = folder / f"{prefix}{i}.npy"
        if i >= count - broken:
            path.write_bytes(b"not a numpy file")
        else:
            np.save(path, rng.standard_normal((6, 40)).astype(np.float32))
        lines.append({"id": f"{prefix}{i}", "path": path.name,
                      "captions": {"en": [f"{prefix} {i} moves", f"{prefix} number {i}"], "de": [f"{prefix} {i}"]}})
    lines.append({"id": f"{prefix}-german-only", "path": "x.npy", "captions": {"de": ["nur deutsch"]}})
    manifest = folder / "train.jsonl"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return manifest


@pytest.fixture
def imu(imu_plugin):
    from modbind.plugins import get_registry

    plugin = get_registry().encoder("imu_conv")
    return plugin, plugin.options({"window": 32})


def test_sources_keep_only_items_captioned_in_the_training_language(tmp_path: Path) -> None:
    [source] = read_sources([DataSource(manifest=write_imu_manifest(tmp_path, 5))], "en")
    assert len(source.examples) == 5 and source.without_captions == 1
    assert source.examples[0].path == tmp_path / "item0.npy"
    assert len(all_captions([source])) == 10
    with pytest.raises(DataError, match="no item has a 'pt' caption"):
        read_sources([DataSource(manifest=tmp_path / "train.jsonl")], "pt")
    with pytest.raises(ConfigError, match="data.train is empty"):
        read_sources([], "en")


def test_a_manifest_saved_with_a_byte_order_mark_reads_the_same(tmp_path: Path) -> None:
    manifest = write_imu_manifest(tmp_path, 3)
    plain = read_manifest(manifest)
    manifest.write_bytes(b"\xef\xbb\xbf" + manifest.read_bytes())  # as Windows editors save UTF-8
    assert read_manifest(manifest) == plain and len(plain) == 4


def test_epoch_order_is_deterministic_and_mixes_by_weight(tmp_path: Path) -> None:
    small = DataSource(manifest=write_imu_manifest(tmp_path / "a", 10, prefix="a"), weight=3.0)
    large = DataSource(manifest=write_imu_manifest(tmp_path / "b", 30, prefix="b"), weight=1.0)
    sources = read_sources([small, large], "en")
    order = epoch_order(sources, epoch=0, seed=1)
    assert order == epoch_order(sources, epoch=0, seed=1)
    assert order != epoch_order(sources, epoch=1, seed=1)
    assert len(order) == 40
    per_source = Counter(source for source, _ in order)
    assert per_source == {0: 20, 1: 20}  # weight 3 × 10 items = weight 1 × 30 items
    small_items = Counter(index for source, index in order if source == 0)
    assert set(small_items.values()) == {2}  # each small-source item exactly twice: no item starves


def test_rank_batches_cover_each_micro_step_once_whatever_the_world_size() -> None:
    one = list(RankBatchSampler(micro_steps=3, micro_batch=4, world=1, rank=0))
    two = [list(RankBatchSampler(micro_steps=3, micro_batch=2, world=2, rank=r)) for r in range(2)]
    for step in range(3):
        assert sorted(two[0][step] + two[1][step]) == one[step]
    resumed = list(RankBatchSampler(micro_steps=3, micro_batch=4, world=1, rank=0, start=2))
    assert resumed == one[2:]


def test_items_and_random_choices_repeat_exactly_for_the_same_position(tmp_path: Path, imu) -> None:
    plugin, options = imu
    sources = read_sources([DataSource(manifest=write_imu_manifest(tmp_path, 8))], "en")
    first = AlignmentDataset(sources, plugin, options, seed=3)
    again = AlignmentDataset(sources, plugin, options, seed=3)
    first.set_epoch(2)
    again.set_epoch(2)
    for position in (0, 5):
        a, b = first[position], again[position]
        assert a["caption"] == b["caption"] and a["id"] == b["id"]
        torch.testing.assert_close(a["inputs"]["series"], b["inputs"]["series"])


def test_unreadable_items_are_skipped_counted_and_stop_the_run_past_the_limit(tmp_path: Path, imu) -> None:
    plugin, options = imu
    sources = read_sources([DataSource(manifest=write_imu_manifest(tmp_path, 12, broken=3))], "en")
    dataset = AlignmentDataset(sources, plugin, options, seed=0)
    loader = make_loader(dataset, RankBatchSampler(micro_steps=3, micro_batch=4, world=1, rank=0), num_workers=1,
                         device=torch.device("cpu"))
    counter = SkipCounter(max_fraction=0.3, epoch_items=12)
    for batch in loader:
        assert batch.inputs["series"].shape == (len(batch), 6, 32)
        assert len(batch.captions) == len(batch)
        counter.add(len(batch) + len(batch.skipped), len(batch.skipped), [s.reason for s in batch.skipped])
    assert (counter.seen, counter.skipped) == (12, 3)
    assert "not a readable .npy" in counter.examples[0]
    counter.check(final=True)  # 25 % is under the 30 % limit
    strict = SkipCounter(max_fraction=0.1, epoch_items=12, seen=12, skipped=3, examples=counter.examples)
    with pytest.raises(DataError, match=r"3 of 12 items \(25.0%\) could not be read.*max_skip_fraction=0.1"):
        strict.check(final=True)


def test_packed_shards_give_the_same_clips_as_the_files(tmp_path: Path) -> None:
    from modbind.data.manifest import read_manifest
    from modbind.data.shards import pack_shards
    from modbind.plugins import get_registry
    from train_world import captions, write_audio_world

    manifest = write_audio_world(tmp_path / "audio", captions(5), seconds=0.5)
    plugin = get_registry().encoder("audio_beats")
    options = plugin.options({"size": "tiny", "clip_seconds": 0.5, "random_truncation": False})
    pack_shards(read_manifest(manifest), manifest.parent, tmp_path / "shards", plugin, options, clips_per_shard=2,
                progress=False)
    [packed] = read_sources([DataSource(manifest=tmp_path / "shards")], "en")
    [files] = read_sources([DataSource(manifest=manifest)], "en")
    assert sorted(e.id for e in packed.examples) == sorted(e.id for e in files.examples)
    from_shards = AlignmentDataset([packed], plugin, options, seed=0)
    from_files = AlignmentDataset([files], plugin, options, seed=0)
    by_id = {from_files[i]["id"]: from_files[i] for i in range(5)}
    for i in range(5):
        sample = from_shards[i]
        torch.testing.assert_close(sample["inputs"]["waveform"], by_id[sample["id"]]["inputs"]["waveform"],
                                   atol=1e-4, rtol=0)  # int16 rounding


def test_shards_packed_for_another_format_are_refused(tmp_path: Path, imu) -> None:
    from modbind.data.manifest import read_manifest
    from modbind.data.shards import pack_shards
    from modbind.plugins import get_registry
    from train_world import captions, write_audio_world

    manifest = write_audio_world(tmp_path / "audio", captions(3), seconds=0.5)
    beats = get_registry().encoder("audio_beats")
    pack_shards(read_manifest(manifest), manifest.parent, tmp_path / "shards", beats, beats.options({"size": "tiny"}),
                progress=False)
    imu_plugin = get_registry().encoder("imu_conv")
    sources = read_sources([DataSource(manifest=tmp_path / "shards")], "en")
    with pytest.raises(ConfigError, match=r"packed as 'pcm16', but plugin 'imu_conv' reads no shards"):
        AlignmentDataset(sources, imu_plugin, imu_plugin.options({}), seed=0)


@pytest.mark.gpu
def test_batches_for_a_gpu_arrive_in_page_locked_memory(tmp_path: Path, imu) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    plugin, options = imu
    dataset = AlignmentDataset(read_sources([DataSource(manifest=write_imu_manifest(tmp_path, 8))], "en"),
                               plugin, options, seed=0)
    loader = make_loader(dataset, RankBatchSampler(micro_steps=2, micro_batch=4, world=1, rank=0), num_workers=1,
                         device=torch.device("cuda"))
    batch = next(iter(loader))
    assert len(batch) == 4 and len(batch.captions) == 4
    assert all(value.is_pinned() for value in batch.inputs.values())


def replay_skip_rule(items: int, corrupt: int, limit: float, seed: int, batch: int = 16) -> tuple[bool, float]:
    """The trainer's own epoch order and skip accounting over one epoch in which ``corrupt`` items fail.

    Returns (whether the run would stop, the highest running share of skipped items along the way).
    """
    examples = [Example(f"item{i}", Path(f"item{i}.npy"), (f"caption {i}",)) for i in range(items)]
    order = epoch_order([SourceExamples("train.jsonl", examples, 1.0)], epoch=0, seed=seed)
    steps = items // batch
    counter = SkipCounter(max_fraction=limit, epoch_items=steps * batch)
    highest = 0.0
    try:
        for step in range(steps):
            failed = sum(index < corrupt for _, index in order[step * batch:(step + 1) * batch])
            counter.add(batch, failed)
            highest = max(highest, counter.fraction)
            counter.check()
        counter.check(final=True)
    except DataError:
        return True, highest
    return False, highest


def test_the_skip_limit_does_not_depend_on_the_shuffle() -> None:
    """4 % unreadable under a 5 % limit never stops a run, 6 % always does, whatever the seed's order."""
    under = [replay_skip_rule(1024, 41, 0.05, seed) for seed in range(200)]
    assert not any(stopped for stopped, _ in under)
    assert sum(highest > 0.05 for _, highest in under) > 20  # the running share passes 5 % in many orders
    assert all(stopped for stopped, _ in (replay_skip_rule(1024, 62, 0.05, seed) for seed in range(200)))


def test_the_skip_limit_stops_mid_epoch_only_once_the_epoch_cannot_end_under_it() -> None:
    counter = SkipCounter(max_fraction=0.05, epoch_items=100)
    counter.add(10, 5)  # 50 % so far, but the epoch may still end at 5 %
    counter.check()
    counter.add(10, 1)  # 6 of the epoch's 100: the epoch cannot end under 5 % any more
    with pytest.raises(DataError, match=r"6 of the epoch's 100 items could not be read \(found after 20\)"):
        counter.check()
    early = SkipCounter(max_fraction=0.05, epoch_items=100, seen=16, skipped=1)
    early.check()  # mid-epoch: 1 of 100 is fine
    with pytest.raises(DataError, match=r"1 of 16 items \(6.2%\) could not be read"):
        early.check(final=True)  # a run stopped here by max_steps is judged on the 16 items it saw

"""Clips per second for one data-loading worker: raw FLAC decode + resample vs packed PCM shards.

Raw: ``modbind.audio.io.load_audio`` on 10 s 44.1 kHz FLAC files, resampled to 16 kHz (what a
DataLoader worker does per clip without shards). Packed: ``modbind.data.shards.iter_shards`` over tar
shards of the same clips already at 16 kHz (tar parsing, JSON header and int16 → float32 included).
Both run in this one process, files warm in the page cache, so the ratio is CPU cost per clip.

    python benchmarks/bench_shards.py --clips 64 --seconds 10
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from modbind.audio.io import load_audio
from modbind.data.manifest import ManifestEntry
from modbind.data.shards import iter_shards, pack_shards
from modbind.plugins import get_registry


def make_flacs(folder: Path, clips: int, seconds: float, rate: int) -> list[ManifestEntry]:
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * rate)) / rate
    entries = []
    for k in range(clips):
        samples = 0.3 * np.sin(2 * np.pi * (200 + 13 * k) * t) + 0.1 * rng.standard_normal(t.shape)
        name = f"clip{k:05d}.flac"
        sf.write(str(folder / name), samples.astype(np.float32), rate)
        entries.append(ManifestEntry(id=f"clip{k}", path=name, captions={"en": [f"a tone number {k}"]}))
    return entries


def clips_per_second(run, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        count = run()
        best = min(best, (time.perf_counter() - start) / count)
    return 1.0 / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--source-rate", type=int, default=44100)
    parser.add_argument("--plugin", default="audio_beats", help="Encoder plugin whose packing is measured.")
    parser.add_argument("--target-rate", type=int, default=16000, help="The plugin's sample_rate option.")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        entries = make_flacs(folder, args.clips, args.seconds, args.source_rate)
        plugin = get_registry().encoder(args.plugin)
        options = plugin.options({"sample_rate": args.target_rate})
        pack_shards(entries, folder, folder / "shards", plugin, options, clips_per_shard=32, progress=False)

        def raw() -> int:
            for entry in entries:
                load_audio(folder / entry.path, args.target_rate)
            return len(entries)

        def packed() -> int:
            return sum(1 for _, packed in iter_shards(folder / "shards") if plugin.unpack_item(packed, options))

        raw_rate = clips_per_second(raw, args.repeats)
        packed_rate = clips_per_second(packed, args.repeats)
    result = {
        "clip": f"{args.seconds:g} s FLAC at {args.source_rate} Hz -> {args.target_rate} Hz",
        "raw_clips_per_s": round(raw_rate, 1),
        "raw_ms_per_clip": round(1000 / raw_rate, 3),
        "packed_clips_per_s": round(packed_rate, 1),
        "packed_ms_per_clip": round(1000 / packed_rate, 4),
        "speedup": round(packed_rate / raw_rate, 1),
        "target_speedup": 50,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

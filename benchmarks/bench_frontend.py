"""What the audio front-end costs per 10 s clip, and its share of one BEATs training step.

Front-end = everything between a decoded clip and the encoder input. Crop/pad and decoding + resampling
a 44.1 kHz wav run in DataLoader workers, in parallel with the step, so they are timed but not part of
the share; the batched Kaldi fbank and SpecAugment run in the training loop on the training device, and
their time over the step's is the share. The training step is
forward + backward + Adam update of BEATs (base size by default, random init) on the same clips.

    python benchmarks/bench_frontend.py --batch 4 --steps 2            # CPU, a couple of minutes
    python benchmarks/bench_frontend.py --device cuda --batch 64 --precision bf16 --steps 5   # on a GPU

Prints a Markdown table (paste it into benchmarks/README.md) and optionally writes JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile
import torch

from modbind.audio.io import load_audio
from modbind_audio_beats.plugin import BeatsPlugin


def timed(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Median wall time of ``fn`` in seconds (after one warm-up call), synchronising CUDA."""
    fn()
    samples = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def synthetic_clips(count: int, seconds: float, rate: int, seed: int = 0) -> list[np.ndarray]:
    """Noise plus a few tones: spectrally busy, so nothing in the fbank is trivially cheap."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    clips = []
    for _ in range(count):
        tones = sum(0.1 * np.sin(2 * np.pi * rng.uniform(100, 6000) * t) for _ in range(3))
        clips.append((tones + rng.normal(0, 0.05, t.shape)).astype(np.float32))
    return clips


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--size", choices=["base", "tiny"], default="base")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                        help="the training step's autocast dtype (the front-end always runs in float32)")
    parser.add_argument("--steps", type=int, default=2, help="timed training steps (after one warm-up)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats of the front-end parts")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)

    plugin = BeatsPlugin()
    options = plugin.options({"size": args.size, "clip_seconds": args.seconds, "layerdrop": 0.0})
    rate = options.sample_rate
    clips = synthetic_clips(args.batch, args.seconds, rate)
    worker_generator = torch.Generator().manual_seed(0)
    device_generator = torch.Generator(device=device).manual_seed(0)  # as the trainer draws its masks

    def preprocess_one(clip: np.ndarray) -> dict[str, torch.Tensor]:
        return plugin.preprocess(clip, options, train=True, generator=worker_generator)

    items = [preprocess_one(clip) for clip in clips]
    on_device = {key: torch.stack([item[key] for item in items]).to(device) for key in items[0]}
    one_by_one = [{key: value[i : i + 1] for key, value in on_device.items()} for i in range(args.batch)]

    def device_front_end(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return plugin.augment(plugin.featurize(batch, options), options, device_generator)

    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "clip_44k.wav"
        soundfile.write(wav, synthetic_clips(1, args.seconds, 44100)[0], 44100, subtype="PCM_16")
        decode_s = timed(lambda: load_audio(wav, rate), args.repeats, torch.device("cpu"))
    crop_s = timed(lambda: [preprocess_one(clip) for clip in clips], args.repeats, torch.device("cpu")) / args.batch

    per_clip_s = timed(lambda: [device_front_end(b) for b in one_by_one], args.repeats, device) / args.batch
    batched_s = timed(lambda: device_front_end(on_device), args.repeats, device) / args.batch
    fbank_only_s = timed(lambda: plugin.featurize(on_device, options), args.repeats, device) / args.batch

    encoder = plugin.build_encoder(options).to(device).train()
    optimizer = torch.optim.Adam(encoder.parameters(), lr=5e-5, betas=(0.9, 0.98), eps=1e-8, weight_decay=1e-6)
    features = device_front_end(on_device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16")

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            pooled = encoder(features).pooled.float()
        loss = torch.nn.functional.normalize(pooled, dim=-1).sum(dim=0).square().mean()
        loss.backward()
        optimizer.step()

    step_s = timed(train_step, args.steps, device)
    share = batched_s * args.batch / step_s
    result = {
        "device": str(device),
        "cpu": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "model": f"BEATs-{args.size}",
        "precision": args.precision,
        "batch": args.batch,
        "clip_seconds": args.seconds,
        "decode_resample_44k_per_clip_ms": decode_s * 1e3,
        "crop_pad_per_clip_ms": crop_s * 1e3,
        "device_front_end_per_clip_ms": per_clip_s * 1e3,
        "device_front_end_batched_per_clip_ms": batched_s * 1e3,
        "fbank_batched_per_clip_ms": fbank_only_s * 1e3,
        "train_step_ms": step_s * 1e3,
        "front_end_share_of_step": share,
    }
    print("| device | model | batch | worker: decode+resample 44.1k wav / clip | worker: crop+pad / clip | "
          "device front-end / clip (one at a time) | device front-end / clip (batched) | of which fbank | "
          "train step | device front-end share of step |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {device} ({result['torch_threads']} threads) | {result['model']} {args.precision} | "
          f"{args.batch} x {args.seconds:g} s | {decode_s * 1e3:.1f} ms | {crop_s * 1e3:.2f} ms | "
          f"{per_clip_s * 1e3:.2f} ms | {batched_s * 1e3:.2f} ms | {fbank_only_s * 1e3:.2f} ms | "
          f"{step_s:.2f} s | {share:.2%} |")
    if args.json:
        partial = args.json.with_name(args.json.name + ".tmp")
        partial.write_text(json.dumps(result, indent=2))
        partial.replace(args.json)


if __name__ == "__main__":
    main()

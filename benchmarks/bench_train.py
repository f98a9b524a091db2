"""One alignment training step: this trainer vs the floor vs a plain PyTorch loop, plus DataLoader clips/s.

* floor     — bare encoder + head forward, backward, clipping and Adam step on pre-computed fbank features
              and pre-computed caption embeddings (nothing else can be cheaper);
* trainer   — modbind's step (``TrainLoop.micro_step`` + engine step): batched device fbank, SpecAugment,
              DeepSpeed engine forward/backward/step, caption embeddings read from the CaptionCache;
* reference — the loop users write: the text tower embeds the captions every step and the fbank is
              computed clip by clip inside the model (as the official BEATs code does), torch Adam.

Floor and reference use the recipe's numerics, as the trainer does: float32 weights and Adam state, the
forward under bf16 autocast with ``--precision bf16``, gradient clipping at 1.0. ``--profile`` prints a
torch.profiler table of one step of each variant.

Same encoder (BEATs, random init, layerdrop off), batch and device for all three. Each variant runs in
its own process so peak memory is its own. Also times the DataLoader path (decode + resample + crop of
10 s 44.1 kHz FLAC) per worker. On a GPU it prints model FLOPs per step and MFU.

    python benchmarks/bench_train.py --size base --batch 2 --seconds 10 --steps 3        # CPU
    python benchmarks/bench_train.py --device cuda --precision bf16 --batch 64 --steps 10  # GPU

Prints Markdown rows for benchmarks/README.md (and JSON with --json FILE).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

VARIANTS = ("floor", "trainer", "reference")
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0, "A10": 125.0}
"""Dense bf16 peak per GPU family, for MFU."""


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=["base", "tiny"], default="base")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--steps", type=int, default=3, help="timed steps (after one warm-up step)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--text-tower", choices=["xlmr-base", "tiny"], default="xlmr-base",
                   help="random-init text tower for the reference loop: XLM-R-base-sized (12×768) or tiny")
    p.add_argument("--loader-clips", type=int, default=16, help="FLAC clips for the DataLoader benchmark (0: skip)")
    p.add_argument("--workers", default="0,1,2")
    p.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    p.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--json", type=Path)
    p.add_argument("--profile", action="store_true", help="print a torch.profiler table of one step per variant")
    return p.parse_args()


# ----------------------------------------------------------------------------- shared set-up

def texts_for(batch: int) -> list[str]:
    words = "dog cat bird rain wind bell drum horn car train boat siren piano water fire clock".split()
    return [f"a {words[i % len(words)]} and a {words[(i * 7 + 3) % len(words)]} heard outdoors, take {i}"
            for i in range(batch)]


def build_anchor(work: Path, text_tower: str, batch: int) -> Path:
    from modbind.anchor import build_tiny_openclip

    sizes = {"text_width": 768, "text_layers": 12, "text_heads": 12, "context_length": 77} if text_tower == "xlmr-base" else {}
    return build_tiny_openclip(work / f"anchor-{text_tower}", texts_for(batch), embed_dim=512, **sizes)


def waves(batch: int, seconds: float) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return 0.1 * torch.randn(batch, int(seconds * 16000), generator=g)


def plugin_and_options(args: argparse.Namespace) -> tuple[Any, Any]:
    from modbind.plugins import get_registry

    plugin = get_registry().encoder("audio_beats")
    options = plugin.options({"size": args.size, "clip_seconds": args.seconds, "layerdrop": 0.0})
    return plugin, options


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(step, steps: int, device: torch.device) -> list[float]:
    step()  # warm-up (allocations, lazy init)
    times = []
    for _ in range(steps):
        sync(device)
        start = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - start)
    return times


def count_flops(step) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    return float(counter.get_total_flops())


def mixed_precision_step(model: torch.nn.Module, loss: Callable[[], torch.Tensor], device: torch.device,
                         dtype: torch.dtype) -> Callable[[], None]:
    """A plain PyTorch step with the recipe's numerics: float32 weights and Adam state, the forward under
    autocast in ``dtype``, gradient clipping at 1.0; what the trainer's DeepSpeed engine does in bf16."""
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-5, betas=(0.9, 0.98), eps=1e-8, weight_decay=1e-6)
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)

    def step() -> None:
        with autocast:
            value = loss()
        value.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def print_profile(step: Callable[[], None], device: torch.device, rows: int = 25) -> None:
    """Where one step's time goes (torch.profiler, sorted by self time on the device, else on the CPU)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        step()
        sync(device)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=rows), file=sys.stderr)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows), file=sys.stderr)


# ----------------------------------------------------------------------------- the three variants

def run_variant(args: argparse.Namespace) -> dict[str, Any]:
    from modbind import load_anchor
    from modbind.anchor import CaptionCache
    from modbind.config import AnchorConfig
    from modbind.model import AlignedEncoder
    from modbind.train.loss import symmetric_info_nce

    device = torch.device(args.device)
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    plugin, options = plugin_and_options(args)
    anchor_dir = Path(args.work) / f"anchor-{args.text_tower}"
    anchor_config = AnchorConfig(model=f"local-dir:{anchor_dir}", pretrained=None)
    texts = texts_for(args.batch)
    batch = {"waveform": waves(args.batch, args.seconds),
             "padding_mask": torch.zeros(args.batch, int(args.seconds * 16000), dtype=torch.bool)}
    torch.manual_seed(0)

    if args.variant == "floor":
        anchor = load_anchor(anchor_config)
        model = AlignedEncoder(plugin.build_encoder(options), anchor.dim).to(device)
        features = {k: v.to(device) for k, v in plugin.featurize({k: v.to(device) for k, v in batch.items()}, options).items()}
        text = anchor.encode_text(texts).to(device).clone()  # a normal tensor, not an inference-mode one
        del anchor
        step = mixed_precision_step(model, lambda: symmetric_info_nce(model(features), text, model.logit_scale()),
                                    device, dtype)

    elif args.variant == "trainer":
        from modbind.config import Recipe
        from modbind.plugins import get_registry
        from modbind.recipes import resolve_recipe
        from modbind.train.data import TrainBatch
        from modbind.train.engine import Engine, init_distributed
        from modbind.train.finetune import apply_finetune
        from modbind.train.trainer import MetricsLog, TrainLoop

        init_distributed()
        recipe = Recipe.model_validate({
            "anchor": anchor_config.model_dump(), "plugin": {"name": "audio_beats", "options": options.model_dump(mode="json")},
            "train": {"batch_size": args.batch, "precision": args.precision, "optimizer": {"warmup_steps": 1}},
            "output": {"dir": str(Path(args.work) / "run")}})
        anchor = load_anchor(anchor_config)
        cache = CaptionCache(Path(args.work) / "cache", anchor.identity)
        cache.ensure(texts, lambda: anchor, progress=False)
        model = AlignedEncoder(plugin.build_encoder(options), anchor.dim, logit_scale=anchor.logit_scale)
        apply_finetune(model, plugin, options, recipe.train)
        engine = Engine(model, recipe.train, 1, 1000)
        loop = TrainLoop(resolve_recipe(recipe, get_registry()), engine, cache, device, 0, 1,
                         MetricsLog(Path(args.work) / "m.jsonl", enabled=False), None)
        train_batch = TrainBatch(batch, texts, [str(i) for i in range(args.batch)], positions=list(range(args.batch)))
        if device.type == "cuda":
            train_batch = train_batch.pin_memory()  # as the trainer's DataLoader delivers it on a GPU
        counter = iter(range(10**9))

        def step() -> None:
            loop.micro_step(train_batch, 0, next(counter))
            engine.step()

    else:  # reference
        from modbind.audio.fbank import kaldi_fbank
        from modbind_audio_beats.frontend import BEATS_FBANK

        anchor = load_anchor(anchor_config, device=str(device))
        model = AlignedEncoder(plugin.build_encoder(options), anchor.dim).to(device)
        wave = batch["waveform"].to(device)

        def loss() -> torch.Tensor:
            # as users write it: fbank per clip inside the model, text tower run on every batch
            fbanks = [kaldi_fbank(w[None].float(), params=BEATS_FBANK)[0] for w in wave]
            features = {"features": torch.stack(fbanks),
                        "padding_mask": torch.zeros(len(fbanks), fbanks[0].shape[0], dtype=torch.bool, device=device)}
            text = anchor.encode_text(texts).to(device).clone()
            return symmetric_info_nce(model(features), text, model.logit_scale())

        step = mixed_precision_step(model, loss, device, dtype)

    times = time_steps(step, args.steps, device)
    if args.profile:
        print_profile(step, device)
    # on shared machines other jobs only ever add time, so the fastest step is the best estimate of the cost
    result = {"variant": args.variant, "step_s": min(times), "median_s": statistics.median(times), "times": times,
              "peak_mb": peak_memory_mb(device)}
    if device.type == "cuda":
        flops = count_flops(step)
        name = torch.cuda.get_device_name(device)
        peak = next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
        result.update(flops=flops, gpu=name, mfu=(flops / result["step_s"]) / (peak * 1e12) if peak else None)
    return result


# ----------------------------------------------------------------------------- DataLoader throughput

def loader_throughput(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    """clips/s of decode (FLAC) + resample 44.1 k → 16 k + random crop, per DataLoader worker count."""
    import soundfile
    from torch.utils.data import DataLoader, Dataset

    plugin, options = plugin_and_options(args)
    options = options.model_copy(update={"clip_seconds": 10.0})
    folder = work / "flac"
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    t = np.arange(441000) / 44100
    paths = []
    for i in range(args.loader_clips):
        path = folder / f"clip{i}.flac"
        wave = 0.3 * np.sin(2 * np.pi * (200 + 50 * i) * t) + 0.05 * rng.standard_normal(t.size)
        soundfile.write(path, wave.astype(np.float32), 44100, subtype="PCM_16")
        paths.append(path)

    class Clips(Dataset):
        def __len__(self) -> int:
            return len(paths)

        def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
            g = torch.Generator().manual_seed(i)
            return plugin.preprocess(plugin.load_item(paths[i], options), options, train=True, generator=g)

    rows = []
    for workers in [int(w) for w in args.workers.split(",")]:
        loader = DataLoader(Clips(), batch_size=4, num_workers=workers)
        start = time.perf_counter()
        count = sum(len(b["waveform"]) for b in loader)
        elapsed = time.perf_counter() - start
        rows.append({"workers": workers, "clips_per_s": count / elapsed,
                     "clips_per_s_per_worker": count / elapsed / max(workers, 1)})
    return rows


# ----------------------------------------------------------------------------- driver

def main() -> None:
    args = parse()
    if args.variant:
        print("RESULT " + json.dumps(run_variant(args)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        build_anchor(work, args.text_tower, args.batch)
        results = {}
        for variant in VARIANTS:
            command = [sys.executable, __file__, "--variant", variant, "--work", str(work)] + sys.argv[1:]
            done = subprocess.run(command, capture_output=True, text=True, env={**os.environ})
            line = next((l for l in done.stdout.splitlines() if l.startswith("RESULT ")), None)
            if line is None:
                sys.exit(f"variant {variant} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
            results[variant] = json.loads(line[len("RESULT "):])
            if args.profile:
                print(f"--- profile of one {variant} step\n{done.stderr[-12000:]}", flush=True)
            print(f"{variant}: {results[variant]['step_s']:.3f} s/step (min; median "
                  f"{results[variant]['median_s']:.3f}), peak {results[variant]['peak_mb']:.0f} MB",
                  flush=True)
        loader = loader_throughput(args, work) if args.loader_clips else []
    floor, trainer, reference = (results[v] for v in VARIANTS)
    threads = torch.get_num_threads()
    print()
    print("| device | model | batch | text tower (reference) | floor s/step | trainer s/step | reference s/step "
          "| trainer / floor | reference / trainer | peak MB floor / trainer / reference |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {args.device} ({threads} threads, {args.precision}) | BEATs-{args.size} | {args.batch} x {args.seconds:g} s "
          f"| {args.text_tower} | {floor['step_s']:.3f} | {trainer['step_s']:.3f} | {reference['step_s']:.3f} "
          f"| {trainer['step_s'] / floor['step_s']:.3f} | {reference['step_s'] / trainer['step_s']:.2f} "
          f"| {floor['peak_mb']:.0f} / {trainer['peak_mb']:.0f} / {reference['peak_mb']:.0f} |")
    if "flops" in trainer:
        print(f"\nmodel FLOPs per step: {trainer['flops'] / 1e12:.2f} TFLOP; MFU {trainer.get('mfu')}")
    if loader:
        print("\n| DataLoader workers | clips/s | clips/s per worker |\n|---|---|---|")
        for row in loader:
            print(f"| {row['workers']} | {row['clips_per_s']:.1f} | {row['clips_per_s_per_worker']:.1f} |")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results,
                                         "loader": loader}, indent=2))


if __name__ == "__main__":
    main()

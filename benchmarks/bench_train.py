"""Training at hardware scale: every row of issue #15 from one run (CPU rows, and GPU rows when lent one).

Rows (``--rows``, default all; a row that needs a GPU prints "not measured" on a CPU):

* steps     — BEATs step of the *floor* (encoder + head forward/backward, clipping, the engine's Adam, on
              pre-computed fbank and caption embeddings), the *trainer* (``TrainLoop.micro_step`` + engine
              step + ``TrainLoop.checked_step``: batched device fbank, SpecAugment, DeepSpeed, caption cache,
              the finiteness check) and the *reference* loop
              users write (text tower every step, per-clip fbank, plain torch Adam). Each variant is its own
              process; the driver asks them for one step each in turn (rotating the order every round), so
              slow phases of a shared machine hit all variants alike. Min / median / IQR per variant, ratios
              of medians and the median of the per-round ratios; FLOPs per step, MFU on a GPU.
* frontend  — the trainer's batched fbank + SpecAugment on the device batch, as a share of its step.
* syncs     — host syncs in one trainer step (CUDA: ``torch.cuda.set_sync_debug_mode`` warnings).
* attention — BEATs trainer with ``attention: sdpa`` vs ``flex``, interleaved (CUDA; flex has no CPU backward).
* models    — trainer step and MFU of BEATs, HTS-AT and AudioMAE (base sizes) at the same batch.
* memory    — max allocated memory of BEATs-base at the paper's expanded batch (110 × 10 s), bf16,
              gradient checkpointing (CUDA).
* data      — fraction of the trainer's loop spent waiting for the next batch: packed shards through
              DataLoader workers (≤ 8), the trainer's own dataset, loader and step.
* startup   — where a tiny ``modbind align`` spends the time before its first step (cold and warm cache).
* compile   — ``train.compile`` on vs off, interleaved: first-step (compile) time and steady step.
* peer      — LAION-CLAP's own training step (``bench_peer_clap.py``, run with ``--peer-python``, the
              interpreter of an environment with ``laion_clap``) interleaved with modbind's trainer on the
              same HTS-AT at 48 kHz and the same batch.

Every table row carries its date, device, torch and DeepSpeed versions.

    python benchmarks/bench_train.py --size base --batch 2 --seconds 4 --steps 12 --threads 1   # CPU
    python benchmarks/bench_train.py --device cuda --precision bf16 --batch 64 --steps 20       # GPU
(benchmarks/README.md has the full command lines, split in two GPU runs, and the peer's environment.)
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from bench_protocol import PREFIX, reply, serve

ROWS = ("steps", "frontend", "syncs", "attention", "models", "memory", "data", "startup", "compile", "peer")
VARIANTS = ("floor", "trainer", "reference")
PLUGINS = ("audio_beats", "audio_htsat", "audio_mae")
PEAK_BF16_TFLOPS = {  # dense (no sparsity) bf16 tensor-core peaks from NVIDIA's datasheets; most specific first
    "H100 PCIe": 756.0, "H100 NVL": 835.0, "H100": 989.0,  # plain "H100 80GB HBM3" is the SXM part
    "H200 NVL": 835.0, "H200": 989.0,  # "NVIDIA H200" is the SXM part
    "A100": 312.0, "L4": 121.0, "A10": 125.0,
}
PEER_SAMPLE_RATE = 48000
"""LAION-CLAP's HTS-AT towers take 48 kHz audio; the peer row trains modbind's audio_htsat at that rate too."""


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of {', '.join(ROWS)}")
    p.add_argument("--size", choices=["base", "tiny"], default="base")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--steps", type=int, default=12, help="timed steps per variant (interleaved, one per round)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per worker first (allocations, autotuning)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--threads", type=int, default=0, help="torch threads per worker (0: torch's default)")
    p.add_argument("--attention", choices=["auto", "sdpa", "flex"], default="auto", help="BEATs attention kernel")
    p.add_argument("--text-tower", choices=["xlmr-base", "tiny"], default="xlmr-base",
                   help="random-init text tower of the anchor: XLM-R-base-sized (12×768) or tiny")
    p.add_argument("--memory-batch", type=int, default=110)
    p.add_argument("--data-workers", type=int, default=min(8, os.cpu_count() or 1))
    p.add_argument("--data-steps", type=int, default=10, help="loader batches timed by the data row")
    p.add_argument("--compile-sizes", default=None, help="BEATs sizes for the compile row (default: tiny,base "
                   "on a CPU, --size on a GPU)")
    p.add_argument("--compile-mode", default="default")
    p.add_argument("--peer-python", type=Path, help="python of an environment with laion_clap (see README)")
    p.add_argument("--profile", action="store_true", help="print a torch.profiler table of one step per variant")
    p.add_argument("--json", type=Path, help="also write every measurement here")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    unknown = set(args.rows.split(",")) - set(ROWS)
    if unknown:
        p.error(f"unknown rows: {', '.join(sorted(unknown))}")
    return args


# ============================================================================= environment

def environment(device: str) -> dict[str, str]:
    """Date, device, torch and DeepSpeed versions: recorded in every row."""
    if device.startswith("cuda"):
        name = torch.cuda.get_device_name(torch.device(device))
    else:
        model = next((line.split(":", 1)[1].strip() for line in _cpuinfo() if line.startswith("model name")),
                     platform.processor() or "cpu")
        name = f"cpu: {model}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
    return {"date": datetime.date.today().isoformat(), "device": name, "torch": torch.__version__,
            "deepspeed": _version("deepspeed")}


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def peak_tflops(gpu_name: str) -> float | None:
    return next((tflops for family, tflops in PEAK_BF16_TFLOPS.items() if family in gpu_name), None)


# ============================================================================= shared set-up

def texts_for(count: int, offset: int = 0) -> list[str]:
    words = "dog cat bird rain wind bell drum horn car train boat siren piano water fire clock".split()
    return [f"a {words[i % len(words)]} and a {words[(i * 7 + 3) % len(words)]} heard outdoors, take {i}"
            for i in range(offset, offset + count)]


def plugin_options(plugin_name: str, size: str, seconds: float, *, attention: str = "auto",
                   gradient_checkpointing: bool = False, sample_rate: int | None = None) -> dict[str, Any]:
    """Options of the plugin at ``size`` (base: the released architectures) for ``seconds`` crops."""
    common = {"clip_seconds": seconds, "gradient_checkpointing": gradient_checkpointing}
    if plugin_name == "audio_beats":
        return {**common, "size": size, "layerdrop": 0.0, "attention": attention}
    if plugin_name == "audio_htsat":
        return {**common, "architecture": "audioset" if size == "base" else "tiny",
                "sample_rate": sample_rate or 32000}
    from modbind_audio_mae.plugin import max_clip_seconds

    return {**common, "size": size, "clip_seconds": min(seconds, max_clip_seconds())}


def sync_for(device: torch.device) -> Callable[[], None]:
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def count_flops(step: Callable[[], None]) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    return float(counter.get_total_flops())


def count_host_syncs(step: Callable[[], None], device: torch.device) -> int | None:
    """Synchronizing CUDA calls in one step, from torch's sync debug mode (None off CUDA)."""
    if device.type != "cuda":
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def print_profile(step: Callable[[], None], device: torch.device, rows: int = 25) -> str:
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        step()
        sync_for(device)()
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=rows)


def adam_flags(device: torch.device) -> dict[str, bool]:
    """The engine's Adam implementation flags, so the floor's optimizer is the trainer's."""
    from modbind.train.engine import fused_adam_supported

    fused = fused_adam_supported(device.type)
    return {"fused": fused, "foreach": not fused}


# ============================================================================= workers (one per process)

def worker(spec: dict[str, Any]) -> None:
    """Build one step from ``spec`` and serve it to the driver (see bench_protocol)."""
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    if spec["kind"] == "startup":
        return startup_probe(spec)
    device = torch.device(spec["device"])
    builders = {"floor": build_floor, "trainer": build_trainer, "reference": build_reference, "data": build_data}
    step, extras = builders[spec["kind"]](spec, device)
    extras.setdefault("finish", lambda: {"peak_mb": peak_memory_mb(device)})
    extras.setdefault("profile", lambda: {"table": print_profile(step, device)})
    extras.setdefault("syncs", lambda: {"syncs": count_host_syncs(step, device)})
    serve(step, sync_for(device), extras)


def _autocast(device: torch.device, precision: str) -> Any:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def _batch(spec: dict[str, Any], options: Any, batch: int | None = None) -> dict[str, torch.Tensor]:
    count = batch or spec["batch"]
    samples = options.clip_samples
    g = torch.Generator().manual_seed(0)
    return {"waveform": 0.1 * torch.randn(count, samples, generator=g),
            "padding_mask": torch.zeros(count, samples, dtype=torch.bool)}


def _plugin(spec: dict[str, Any]) -> tuple[Any, Any]:
    from modbind.plugins import get_registry

    plugin = get_registry().encoder(spec["plugin"])
    return plugin, plugin.options(spec["options"])


def _cache(spec: dict[str, Any]) -> Any:
    from modbind.anchor import CaptionCache

    return CaptionCache(Path(spec["cache"]), spec["identity"])


def _flops_with_sdpa(model: torch.nn.Module, step: Callable[[], None]) -> dict[str, float]:
    """Model FLOPs of one step, counted on the eager SDPA path (FLOPs do not depend on the kernel)."""
    encoder = getattr(model, "encoder", None)
    set_attention = getattr(encoder, "set_attention", None)
    before = getattr(getattr(encoder, "encoder", None), "attention", None)
    if set_attention is not None:
        set_attention("sdpa")
    try:
        return {"flops": count_flops(step)}
    finally:
        if set_attention is not None:
            set_attention(before)


def build_floor(spec: dict[str, Any], device: torch.device) -> tuple[Callable[[], None], dict[str, Callable]]:
    from modbind.train.loss import symmetric_info_nce
    from modbind.model import AlignedEncoder

    plugin, options = _plugin(spec)
    cache = _cache(spec)
    torch.manual_seed(0)
    model = AlignedEncoder(plugin.build_encoder(options), cache.dim, logit_scale=cache.logit_scale).to(device)
    batch = {k: v.to(device) for k, v in _batch(spec, options).items()}
    features = plugin.featurize(batch, options)
    text = cache.get(texts_for(spec["batch"])).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-5, betas=(0.9, 0.98), eps=1e-8, weight_decay=1e-6,
                                 **adam_flags(device))

    def step() -> None:
        with _autocast(device, spec["precision"]):
            loss = symmetric_info_nce(model(features), text, model.logit_scale())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step, {"flops": lambda: _flops_with_sdpa(model, step)}


def _trainer_loop(spec: dict[str, Any], device: torch.device, train: dict[str, Any]) -> tuple[Any, Any, Any, Any]:
    """(plugin, options, engine, TrainLoop) as ``run_alignment`` builds them."""
    from modbind.config import Recipe
    from modbind.model import AlignedEncoder
    from modbind.plugins import get_registry
    from modbind.recipes import resolve_recipe
    from modbind.train.engine import Engine, init_distributed
    from modbind.train.finetune import apply_finetune
    from modbind.train.trainer import MetricsLog, TrainLoop

    init_distributed()
    plugin, options = _plugin(spec)
    recipe = Recipe.model_validate({
        "anchor": {"model": f"local-dir:{spec['anchor']}", "pretrained": None},
        "plugin": {"name": spec["plugin"], "options": options.model_dump(mode="json")},
        "data": {"caption_cache": spec["cache"], "num_workers": spec.get("workers", 0)},
        "train": {"batch_size": spec["batch"], "precision": spec["precision"], "optimizer": {"warmup_steps": 1},
                  **train},
        "output": {"dir": str(Path(spec["work"]) / "run")}})
    cache = _cache(spec)
    torch.manual_seed(0)
    model = AlignedEncoder(plugin.build_encoder(options), cache.dim, logit_scale=cache.logit_scale)
    apply_finetune(model, plugin, options, recipe.train)
    engine = Engine(model, recipe.train, 1, 10**6)
    loop = TrainLoop(resolve_recipe(recipe, get_registry()), engine, cache, device, 0, 1,
                     MetricsLog(Path(spec["work"]) / "metrics.jsonl", enabled=False), None)
    return plugin, options, engine, loop


def build_trainer(spec: dict[str, Any], device: torch.device) -> tuple[Callable[[], None], dict[str, Callable]]:
    from modbind.train.data import TrainBatch

    train = {"compile": spec.get("compile", False), "compile_mode": spec.get("compile_mode", "default")}
    plugin, options, engine, loop = _trainer_loop(spec, device, train)
    texts = texts_for(spec["batch"])
    batch = TrainBatch(_batch(spec, options), texts, [str(i) for i in range(spec["batch"])],
                       positions=list(range(spec["batch"])))
    if device.type == "cuda":
        batch = batch.pin_memory()  # as the trainer's DataLoader delivers it on a GPU
    counter = iter(range(10**9))

    def step() -> None:
        loss = loop.micro_step(batch, 0, next(counter))[0]
        engine.step()
        loop.checked_step(loss)  # the loss, temperature and finiteness check: the step's one host sync

    def frontend() -> dict[str, float]:
        """Median seconds of the device front-end (featurize + augment) for this batch, synced."""
        inputs = {k: v.to(device) for k, v in batch.inputs.items()}
        generator = torch.Generator(device=device).manual_seed(0)
        sync = sync_for(device)
        times = []
        for _ in range(7):
            sync()
            start = time.perf_counter()
            plugin.augment(plugin.featurize(inputs, options), options, generator)
            sync()
            times.append(time.perf_counter() - start)
        return {"frontend_s": statistics.median(times[2:])}

    return step, {"flops": lambda: _flops_with_sdpa(engine.module, step), "frontend": frontend}


def build_reference(spec: dict[str, Any], device: torch.device) -> tuple[Callable[[], None], dict[str, Callable]]:
    from modbind import load_anchor
    from modbind.audio.fbank import kaldi_fbank
    from modbind_audio_beats.frontend import BEATS_FBANK
    from modbind.config import AnchorConfig
    from modbind.train.loss import symmetric_info_nce
    from modbind.model import AlignedEncoder

    plugin, options = _plugin(spec)
    anchor = load_anchor(AnchorConfig(model=f"local-dir:{spec['anchor']}", pretrained=None), device=str(device))
    torch.manual_seed(0)
    model = AlignedEncoder(plugin.build_encoder(options), anchor.dim).to(device)
    wave = _batch(spec, options)["waveform"].to(device)
    texts = texts_for(spec["batch"])
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-5, betas=(0.9, 0.98), eps=1e-8, weight_decay=1e-6)

    def step() -> None:
        with _autocast(device, spec["precision"]):
            # as users write it: fbank per clip inside the model, the text tower on every batch
            fbanks = [kaldi_fbank(w[None].float(), params=BEATS_FBANK)[0] for w in wave]
            features = {"features": torch.stack(fbanks),
                        "padding_mask": torch.zeros(len(fbanks), fbanks[0].shape[0], dtype=torch.bool, device=device)}
            text = anchor.encode_text(texts).to(device).clone()
            loss = symmetric_info_nce(model(features), text, model.logit_scale())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step, {}


def build_data(spec: dict[str, Any], device: torch.device) -> tuple[Callable[[], None], dict[str, Callable]]:
    """The trainer's loop over packed shards: ``step`` is unused; ``loop`` times waits and steps."""
    from modbind.config import DataSource
    from modbind.train.data import AlignmentDataset, RankBatchSampler, make_loader, read_sources

    plugin, options, engine, loop = _trainer_loop(spec, device, {})
    sources = read_sources([DataSource(manifest=Path(spec["shards"]))], "en")
    dataset = AlignmentDataset(sources, plugin, options, seed=0)

    def run_loop() -> dict[str, Any]:
        steps = min(spec["data_steps"] + 1, len(dataset) // spec["batch"])
        sampler = RankBatchSampler(steps, spec["batch"], 1, 0)
        waits, steps_s = [], []
        start = time.perf_counter()
        loader = make_loader(dataset, sampler, spec["workers"], device)
        batches = None
        for index in range(steps):
            before = time.perf_counter()
            batches = batches or iter(loader)  # the first wait includes starting the workers
            batch = next(batches)
            fetched = time.perf_counter()
            loss = loop.micro_step(batch, 0, index)[0]
            engine.step()
            loop.checked_step(loss)  # the step's one host sync
            sync_for(device)()
            waits.append(fetched - before)
            steps_s.append(time.perf_counter() - fetched)
        first = waits[0]
        wait, work = sum(waits[1:]), sum(steps_s[1:])
        return {"workers": spec["workers"], "batches": steps - 1, "first_batch_s": first,
                "wait_fraction": wait / (wait + work), "step_s": statistics.median(steps_s[1:]),
                "total_s": time.perf_counter() - start}

    return (lambda: None), {"loop": run_loop}


# ============================================================================= start-up probe

def startup_probe(spec: dict[str, Any]) -> None:
    """Run ``modbind align`` on a tiny world, timing each phase until the first training step begins.

    ``spec["t0"]`` is when the driver launched this process, so interpreter start-up counts too. The
    trainer's phases are timed by wrapping the functions ``run_alignment`` calls.
    """
    marks: list[tuple[str, float]] = [("python + import torch", time.time() - spec["t0"])]

    def mark(label: str, since: float) -> None:
        marks.append((label, time.time() - since))

    t = time.time()
    import modbind.cli.main as cli_main
    mark("import the modbind CLI", t)
    t = time.time()
    import modbind.train.trainer as trainer
    mark("import the trainer", t)

    def wrap(owner: Any, name: str, label: str) -> None:
        real = getattr(owner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.time()
            out = real(*args, **kwargs)
            mark(label, started)
            return out

        setattr(owner, name, timed)

    wrap(trainer, "init_distributed", "DeepSpeed init_distributed")
    wrap(trainer, "read_sources", "read manifests")
    wrap(trainer, "_prepare_captions", "anchor identity + caption cache")
    wrap(trainer, "_load_anchor", "load the anchor (cold cache only)")
    wrap(trainer, "AlignedEncoder", "build the model")
    wrap(trainer, "Engine", "DeepSpeed engine (+ torch.optim: imports dynamo)")
    loader_made: list[float] = []
    make_loader = trainer.make_loader

    def timed_loader(*args: Any, **kwargs: Any) -> Any:
        loader_made.append(time.time())
        return make_loader(*args, **kwargs)

    def first_step(self: Any, *args: Any, **kwargs: Any) -> Any:
        mark("DataLoader workers: first batch", loader_made[0])
        total = time.time() - spec["t0"]
        reply({"marks": marks, "total_s": total})
        os._exit(0)  # the first step is where start-up ends; nothing after it is measured

    trainer.make_loader = timed_loader
    trainer.TrainLoop.micro_step = first_step
    cli_main.cli(["align", "--recipe", spec["recipe"], "--out", spec["out"], "--no-progress"])


# ============================================================================= driver

class Worker:
    """One step worker process, spoken to line by line."""

    def __init__(self, name: str, spec: dict[str, Any], work: Path, python: Path | None = None,
                 script: Path | None = None):
        self.name = name
        self.log = work / f"{name}.log"
        command = [str(python or sys.executable), str(script or Path(__file__).resolve()), "--worker", json.dumps(spec)]
        with self.log.open("w") as log:
            self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                            text=True, bufsize=1, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        self._ready: dict[str, Any] | None = None

    @property
    def ready(self) -> dict[str, Any]:
        """The worker's first reply (it has built its step); waits for it."""
        if self._ready is None:
            self._ready = self._read()
        return self._ready

    def ask(self, command: str) -> dict[str, Any]:
        assert self.ready and self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self._read()

    def finish(self) -> dict[str, Any]:
        done = self.ask("finish")
        self.process.wait(timeout=120)
        return done

    def _read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith(PREFIX):
                return json.loads(line[len(PREFIX):])
        self.process.wait()
        tail = self.log.read_text(errors="replace")[-4000:]
        raise RuntimeError(f"worker {self.name} exited ({self.process.returncode}):\n{tail}")


def interleave(workers: dict[str, Worker], steps: int, warmup: int) -> dict[str, list[dict[str, float]]]:
    """``steps`` rounds, one step of every worker per round, the order rotating each round."""
    names = list(workers)
    for name in names:  # workers start in parallel; wait for all before timing anything
        assert workers[name].ready
    for name in names:
        for _ in range(warmup):
            workers[name].ask("step")
    times: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    for round_index in range(steps):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(workers[name].ask("step"))
    return times


def spread(values: Sequence[float]) -> dict[str, float]:
    ordered = sorted(values)
    q1, median, q3 = statistics.quantiles(ordered, n=4) if len(ordered) > 1 else (ordered[0],) * 3
    return {"min": ordered[0], "q1": q1, "median": median, "q3": q3, "max": ordered[-1], "iqr": q3 - q1}


def paired_ratio(a: list[dict[str, float]], b: list[dict[str, float]], key: str = "wall") -> dict[str, float]:
    """Spread of the per-round ratios a/b (steps of one round ran back to back)."""
    return spread([x[key] / y[key] for x, y in zip(a, b)])


class Bench:
    """Runs the selected rows and prints their tables."""

    def __init__(self, args: argparse.Namespace, work: Path):
        self.args, self.work = args, work
        self.device = torch.device(args.device)
        self.gpu = self.device.type == "cuda"
        self.env = environment(args.device)
        self.results: dict[str, Any] = {"env": self.env, "args": {k: str(v) for k, v in vars(args).items()}}
        self.anchor = self._build_anchor()
        self.identity = self._fill_cache(texts_for(max(args.batch, args.memory_batch)))

    # ----------------------------------------------------------------- set-up

    def _build_anchor(self) -> Path:
        from modbind.anchor import build_tiny_openclip

        sizes = ({"text_width": 768, "text_layers": 12, "text_heads": 12, "context_length": 77}
                 if self.args.text_tower == "xlmr-base" else {})
        return build_tiny_openclip(self.work / "anchor", texts_for(64), embed_dim=512, **sizes)

    def _fill_cache(self, texts: list[str]) -> str:
        from modbind.anchor import CaptionCache, OpenClipProvider, anchor_identity, load_anchor
        from modbind.config import AnchorConfig

        config, provider = AnchorConfig(model=f"local-dir:{self.anchor}", pretrained=None), OpenClipProvider()
        identity = anchor_identity(config, provider)
        CaptionCache(self.work / "cache", identity).ensure(texts, lambda: load_anchor(config, provider),
                                                           progress=False)
        return identity

    def spec(self, kind: str, plugin: str = "audio_beats", **changes: Any) -> dict[str, Any]:
        args = self.args
        options = changes.pop("options", None) or plugin_options(plugin, changes.pop("size", args.size), args.seconds,
                                                                 attention=changes.pop("attention", args.attention))
        return {"kind": kind, "plugin": plugin, "options": options, "batch": args.batch, "device": args.device,
                "precision": args.precision, "threads": args.threads, "anchor": str(self.anchor),
                "cache": str(self.work / "cache"), "identity": self.identity, "work": str(self.work / kind),
                **changes}

    def start(self, name: str, spec: dict[str, Any], **kwargs: Any) -> Worker:
        Path(spec.get("work", self.work)).mkdir(parents=True, exist_ok=True)
        return Worker(name, spec, self.work, **kwargs)

    # ----------------------------------------------------------------- output

    def table(self, title: str, header: list[str], rows: list[list[Any]]) -> None:
        env = [self.env["date"], self.env["device"], self.env["torch"], self.env["deepspeed"]]
        print(f"\n### {title}\n")
        print("| " + " | ".join(["date", "device", "torch", "DeepSpeed"] + header) + " |")
        print("|" + "---|" * (len(header) + 4))
        for row in rows:
            print("| " + " | ".join(str(v) for v in env + row) + " |", flush=True)

    def not_measured(self, title: str, why: str) -> None:
        self.results[title] = {"not measured": why}
        self.table(title, ["result"], [[f"not measured ({why})"]])

    # ----------------------------------------------------------------- rows

    def steps_row(self, rows: set[str]) -> None:
        args = self.args
        workers = {v: self.start(v, self.spec(v)) for v in VARIANTS}
        times = interleave(workers, args.steps, args.warmup)
        extras: dict[str, Any] = {}
        flops = workers["floor"].ask("flops")["flops"]
        if "frontend" in rows:
            extras["frontend"] = workers["trainer"].ask("frontend")["frontend_s"]
        if "syncs" in rows:
            extras["syncs"] = workers["trainer"].ask("syncs")["syncs"]
        if args.profile:
            for name, w in workers.items():
                print(f"\n--- profile of one {name} step\n{w.ask('profile')['table']}")
        peaks = {name: w.finish()["peak_mb"] for name, w in workers.items()}
        stats = {name: spread([t["wall"] for t in times[name]]) for name in VARIANTS}
        cpu = {name: spread([t["cpu"] for t in times[name]]) for name in VARIANTS}
        self.results["steps"] = {"times": times, "stats": stats, "cpu": cpu, "peaks": peaks, "flops": flops, **extras}
        header = ["model", "batch", "variant", "s/step min", "median", "IQR", "CPU s/step median",
                  "vs floor (medians)", "vs floor (median of per-round ratios)", "peak MB", "MFU"]
        rows_out = []
        peak = peak_tflops(self.env["device"]) if self.gpu else None
        for name in VARIANTS:
            s, ratio = stats[name], paired_ratio(times[name], times["floor"])
            mfu = f"{flops / s['median'] / (peak * 1e12):.1%}" if peak else "not measured (CPU)" if not self.gpu else "no peak known"
            rows_out.append([f"BEATs-{args.size} {args.precision}, attention {args.attention}",
                             f"{args.batch} x {args.seconds:g} s", name, f"{s['min']:.3f}", f"{s['median']:.3f}",
                             f"{s['iqr']:.3f}", f"{cpu[name]['median']:.3f}",
                             f"{s['median'] / stats['floor']['median']:.3f}",
                             f"{ratio['median']:.3f} (IQR {ratio['iqr']:.3f})", f"{peaks[name]:.0f}", mfu])
        self.table(f"steps: floor / trainer / reference, {args.steps} interleaved rounds; model FLOPs per step "
                   f"{flops / 1e9:.1f} GFLOP", header, rows_out)
        if "frontend" in extras:
            share = extras["frontend"] / stats["trainer"]["median"]
            self.table("frontend: batched fbank + SpecAugment on the device batch (target < 1 % of the step)",
                       ["model", "batch", "front-end s", "trainer s/step", "share"],
                       [[f"BEATs-{args.size}", f"{args.batch} x {args.seconds:g} s", f"{extras['frontend']:.4f}",
                         f"{stats['trainer']['median']:.3f}", f"{share:.2%}"]])
        if "syncs" in extras:
            if extras["syncs"] is None:
                self.not_measured("syncs: host syncs per trainer step", "needs CUDA")
            else:
                self.table("syncs: host syncs per trainer step (torch.cuda.set_sync_debug_mode)",
                           ["model", "syncs per step"], [[f"BEATs-{args.size}", extras["syncs"]]])

    def attention_row(self) -> None:
        if not self.gpu:
            return self.not_measured("attention: BEATs trainer, sdpa vs flex", "needs CUDA: FlexAttention has no CPU backward")
        workers = {k: self.start(f"trainer-{k}", self.spec("trainer", attention=k)) for k in ("sdpa", "flex")}
        times = interleave(workers, self.args.steps, self.args.warmup)
        peaks = {k: w.finish()["peak_mb"] for k, w in workers.items()}
        stats = {k: spread([t["wall"] for t in times[k]]) for k in workers}
        self.results["attention"] = {"stats": stats, "peaks": peaks}
        ratio = paired_ratio(times["flex"], times["sdpa"])
        self.table("attention: BEATs trainer step, sdpa vs flex (interleaved)",
                   ["model", "batch", "sdpa s/step", "flex s/step", "flex / sdpa (per-round median)", "peak MB sdpa / flex"],
                   [[f"BEATs-{self.args.size} {self.args.precision}", f"{self.args.batch} x {self.args.seconds:g} s",
                     f"{stats['sdpa']['median']:.4f}", f"{stats['flex']['median']:.4f}", f"{ratio['median']:.3f}",
                     f"{peaks['sdpa']:.0f} / {peaks['flex']:.0f}"]])

    def models_row(self) -> None:
        rows_out = []
        peak = peak_tflops(self.env["device"]) if self.gpu else None
        for plugin in PLUGINS:
            worker = self.start(f"model-{plugin}", self.spec("trainer", plugin=plugin))
            times = interleave({plugin: worker}, max(3, self.args.steps // 2), self.args.warmup)[plugin]
            flops = worker.ask("flops")["flops"]
            peak_mb = worker.finish()["peak_mb"]
            median = spread([t["wall"] for t in times])["median"]
            mfu = f"{flops / median / (peak * 1e12):.1%}" if peak else "not measured (CPU)" if not self.gpu else "no peak known"
            self.results.setdefault("models", {})[plugin] = {"median_s": median, "flops": flops, "peak_mb": peak_mb}
            rows_out.append([plugin, self.args.size, f"{self.args.batch} x {self.args.seconds:g} s", self.args.precision,
                             f"{median:.4f}", f"{flops / 1e9:.1f}", mfu, f"{peak_mb:.0f}"])
        self.table("models: trainer step per encoder (target BEATs ≥ 35 % MFU on H100/H200)",
                   ["plugin", "size", "batch", "precision", "s/step median", "GFLOP/step", "MFU", "peak MB"], rows_out)

    def memory_row(self) -> None:
        title = f"memory: BEATs-base, {self.args.memory_batch} x 10 s, bf16, gradient checkpointing (target ≤ 24 GB)"
        if not self.gpu:
            return self.not_measured(title, "needs CUDA")
        options = plugin_options("audio_beats", "base", 10.0, attention=self.args.attention, gradient_checkpointing=True)
        worker = self.start("memory", self.spec("trainer", options=options, batch=self.args.memory_batch,
                                                precision="bf16"))
        times = interleave({"memory": worker}, 2, 1)["memory"]
        peak_mb = worker.finish()["peak_mb"]
        self.results["memory"] = {"peak_mb": peak_mb, "times": times}
        self.table(title, ["max allocated GB", "fits 24 GB", "s/step"],
                   [[f"{peak_mb / 1024:.2f}", "yes" if peak_mb < 24 * 1024 else "no",
                     f"{statistics.median(t['wall'] for t in times):.3f}"]])

    def data_row(self) -> None:
        args = self.args
        shards = self._write_shards((args.data_steps + 1) * args.batch)
        spec = self.spec("data", shards=str(shards), workers=args.data_workers, data_steps=args.data_steps)
        worker = self.start("data", spec)
        result = worker.ask("loop")
        worker.finish()
        self.results["data"] = result
        self.table("data: packed shards through DataLoader workers into the trainer's step",
                   ["model", "batch", "workers", "batches", "first batch s", "step s (median)", "waiting for data"],
                   [[f"BEATs-{args.size}", f"{args.batch} x {args.seconds:g} s", result["workers"], result["batches"],
                     f"{result['first_batch_s']:.2f}", f"{result['step_s']:.3f}", f"{result['wait_fraction']:.2%}"]])

    def _write_shards(self, clips: int) -> Path:
        """``clips`` 10 s 16 kHz clips packed with ``modbind data pack``'s writer; captions cached."""
        import numpy as np
        import soundfile

        from modbind.data.manifest import ManifestEntry
        from modbind.data.shards import pack_shards

        folder = self.work / "clips"
        folder.mkdir(exist_ok=True)
        rng = np.random.default_rng(0)
        texts = texts_for(clips, offset=10_000)
        entries = []
        for i, text in enumerate(texts):
            soundfile.write(folder / f"c{i}.wav", (0.1 * rng.standard_normal(int(self.args.seconds * 16000))).astype(
                np.float32), 16000, subtype="PCM_16")
            entries.append(ManifestEntry(id=f"c{i}", path=f"c{i}.wav", captions={"en": [text]}))
        plugin, options = _plugin({"plugin": "audio_beats", "options": {"size": "tiny"}})
        pack_shards(entries, folder, folder / "shards", plugin, options, clips_per_shard=64,
                    workers=min(8, os.cpu_count() or 1), progress=False)
        self._fill_cache(texts)
        return folder / "shards"

    def startup_row(self) -> None:
        world = self._tiny_world()
        rows_out = []
        for run in ("cold", "warm"):
            spec = {"kind": "startup", "t0": time.time(), "recipe": str(world / "recipe.yaml"),
                    "out": str(world / f"run-{run}"), "threads": self.args.threads}
            probe = Worker(f"startup-{run}", spec, self.work)
            probe.process.wait(timeout=120)
            result = probe.ready
            self.results.setdefault("startup", {})[run] = result
            phases = "; ".join(f"{label} {seconds:.2f}" for label, seconds in result["marks"])
            rows_out.append([run, f"{result['total_s']:.2f}", phases])
        self.table("startup: tiny `modbind align` (BEATs tiny, 8 clips, 4 loader workers) until its first step",
                   ["caption cache", "s to first step", "phases (s)"], rows_out)

    def _tiny_world(self) -> Path:
        import numpy as np
        import soundfile

        from modbind.anchor import build_tiny_openclip

        world = self.work / "tiny-world"
        texts = [f"a sound number {i}" for i in range(8)]
        build_tiny_openclip(world / "anchor", texts, embed_dim=32, text_layers=1, vision_layers=1)
        rng = np.random.default_rng(0)
        lines = []
        for i, text in enumerate(texts):
            soundfile.write(world / f"c{i}.wav", (0.1 * rng.standard_normal(32000)).astype(np.float32), 16000)
            lines.append(json.dumps({"id": f"c{i}", "path": f"c{i}.wav", "captions": {"en": [text]}}))
        (world / "train.jsonl").write_text("\n".join(lines) + "\n")
        recipe = {"anchor": {"model": f"local-dir:{world / 'anchor'}", "pretrained": None},
                  "plugin": {"name": "audio_beats", "options": {"size": "tiny", "clip_seconds": 2.0}},
                  "data": {"train": [{"manifest": str(world / "train.jsonl")}]},
                  "train": {"batch_size": 4, "max_steps": 2, "precision": "fp32"}}
        (world / "recipe.yaml").write_text(json.dumps(recipe))  # JSON is YAML
        return world

    def compile_row(self) -> None:
        args = self.args
        sizes = (args.compile_sizes or (args.size if self.gpu else "tiny,base")).split(",")
        rows_out = []
        for size in sizes:
            workers = {name: self.start(f"compile-{size}-{name}", self.spec(
                "trainer", size=size, compile=name == "compiled", compile_mode=args.compile_mode))
                for name in ("eager", "compiled")}
            first = {name: w.ask("step")["wall"] for name, w in workers.items()}  # the compiled one compiles here
            times = interleave(workers, max(4, args.steps // 2), args.warmup)
            flops = workers["eager"].ask("flops")["flops"]
            for w in workers.values():
                w.finish()
            stats = {name: spread([t["wall"] for t in times[name]]) for name in workers}
            ratio = paired_ratio(times["compiled"], times["eager"])
            saved = stats["eager"]["median"] * (1 - ratio["median"])  # per step, from the paired rounds
            compile_s = first["compiled"] - stats["compiled"]["median"]
            break_even = f"{compile_s / saved:.0f} steps" if saved > 0 else "never (not faster)"
            peak = peak_tflops(self.env["device"]) if self.gpu else None
            mfu = f"{flops / stats['compiled']['median'] / (peak * 1e12):.1%}" if peak else "not measured"
            cpu = {name: spread([t["cpu"] for t in times[name]])["median"] for name in workers}
            self.results.setdefault("compile", {})[size] = {"first": first, "stats": stats, "times": times}
            rows_out.append([f"BEATs-{size} {args.precision}", f"{args.batch} x {args.seconds:g} s", args.compile_mode,
                             f"{first['compiled']:.1f}", f"{stats['eager']['min']:.4f} / {stats['eager']['median']:.4f}",
                             f"{stats['compiled']['min']:.4f} / {stats['compiled']['median']:.4f}",
                             f"{cpu['eager']:.4f} / {cpu['compiled']:.4f}", f"{ratio['median']:.3f} (IQR {ratio['iqr']:.3f})",
                             break_even, mfu])
        self.table("compile: train.compile on vs off (inductor), interleaved",
                   ["model", "batch", "mode", "first compiled step s (compile)", "eager s/step min / median",
                    "compiled s/step min / median", "CPU s/step median eager / compiled",
                    "compiled / eager (per-round median)", "compile pays back after", "MFU compiled"], rows_out)

    def peer_row(self) -> None:
        title = "peer: LAION-CLAP's training step vs modbind's trainer, HTS-AT at 48 kHz"
        python = self.args.peer_python
        if python is None or not python.expanduser().exists():
            return self.not_measured(title, "pass --peer-python, the python of an environment with laion_clap "
                                     "(benchmarks/README.md)")
        options = plugin_options("audio_htsat", "base", self.args.seconds, sample_rate=PEER_SAMPLE_RATE)
        modbind = self.start("peer-modbind", self.spec("trainer", plugin="audio_htsat", options=options))
        peer_spec = {"batch": self.args.batch, "seconds": self.args.seconds, "device": self.args.device,
                     "precision": self.args.precision, "threads": self.args.threads}
        peer = self.start("peer-laion-clap", peer_spec, python=python.expanduser(),
                          script=Path(__file__).resolve().parent / "bench_peer_clap.py")
        workers = {"modbind": modbind, "laion_clap": peer}
        times = interleave(workers, self.args.steps, self.args.warmup)
        peaks = {name: w.finish()["peak_mb"] for name, w in workers.items()}
        stats = {name: spread([t["wall"] for t in times[name]]) for name in workers}
        ratio = paired_ratio(times["laion_clap"], times["modbind"])
        self.results["peer"] = {"stats": stats, "peaks": peaks, "peer": peer.ready}
        self.table(title + " (target on a GPU: ≥ 2×)",
                   ["batch", "precision", "modbind s/step (median, IQR)", "LAION-CLAP s/step (median, IQR)",
                    "LAION-CLAP / modbind (per-round median, IQR)", "peak MB modbind / LAION-CLAP"],
                   [[f"{self.args.batch} x {self.args.seconds:g} s", self.args.precision,
                     f"{stats['modbind']['median']:.3f} ({stats['modbind']['iqr']:.3f})",
                     f"{stats['laion_clap']['median']:.3f} ({stats['laion_clap']['iqr']:.3f})",
                     f"{ratio['median']:.3f} ({ratio['iqr']:.3f})", f"{peaks['modbind']:.0f} / {peaks['laion_clap']:.0f}"]])


def main(argv: Sequence[str] | None = None) -> None:
    args = parse(argv)
    if args.worker:
        return worker(json.loads(args.worker))
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = set(args.rows.split(","))
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        bench = Bench(args, Path(tmp))
        print(f"# bench_train.py {' '.join(sys.argv[1:])}\n# {json.dumps(bench.env)}", flush=True)
        if rows & {"steps", "frontend", "syncs"}:
            bench.steps_row(rows)
        for name in ("attention", "models", "memory", "data", "startup", "compile", "peer"):
            if name in rows:
                getattr(bench, f"{name}_row")()
    if args.json:
        args.json.write_text(json.dumps(bench.results, indent=1, default=str))


if __name__ == "__main__":
    main()

"""The alignment loop: data → device featurize/augment → encoder+head → InfoNCE vs cached captions → step.

Generic over modalities: it sees the encoder only through :class:`modbind.contracts.EncoderPlugin`.
The frozen anchor only supplies cached caption embeddings, its dimension, its logit scale (the initial
temperature) and a fingerprint checked before and after training; it never enters the engine.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from modbind.atomic import atomic_write
from modbind.config import Recipe
from modbind.contracts import Batch
from modbind.errors import ConfigError
from modbind.model import AlignedEncoder, AlignedModel, make_card
from modbind.recipes import ResolvedRecipe, dump_recipe
from modbind.train.data import (
    AlignmentDataset,
    RankBatchSampler,
    SkipCounter,
    TrainBatch,
    all_captions,
    make_loader,
    mix_seed,
    read_sources,
)
from modbind.train.engine import Engine, init_distributed, latest_tag, micro_batch_size
from modbind.train.finetune import apply_finetune
from modbind.train.loss import symmetric_info_nce

CHECKPOINT_DIR = "checkpoints"
EXPORT_DIR = "export"
METRICS_FILE = "metrics.jsonl"
RECIPE_FILE = "recipe.yaml"


@dataclass
class StepReport:
    """What one optimizer step produced (passed to ``on_step`` callbacks and logged)."""

    step: int
    epoch: int
    loss: float
    lr: float
    logit_scale: float
    samples: int


@dataclass
class RunResult:
    out_dir: Path
    export_dir: Path
    steps: int
    final_loss: float
    skipped: int
    history: list[float] = field(default_factory=list)
    model: AlignedModel | None = None
    """The exported model in memory (rank 0 only), e.g. for evaluating it without reloading."""


def run_alignment(
    resolved: ResolvedRecipe,
    *,
    resume: bool = False,
    progress: bool = True,
    on_step: Callable[[StepReport], None] | None = None,
) -> RunResult:
    """Train the recipe's plugin against its anchor; writes checkpoints, metrics and the export."""
    recipe, plugin, options = resolved.recipe, resolved.plugin, resolved.options
    train = recipe.train
    rank, world, device = init_distributed()
    out = Path(recipe.output.dir)
    checkpoints = out / CHECKPOINT_DIR
    if not resume and latest_tag(checkpoints) is not None:
        raise ConfigError(f"{out} already holds a run; pass --resume to continue it or --out to start a new one")
    if resume:
        _check_same_recipe(out / RECIPE_FILE, recipe)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        checkpoints.mkdir(exist_ok=True)
        atomic_write(out / RECIPE_FILE, dump_recipe(recipe))

    language, modality = recipe.data.caption_language, plugin.modality
    sources = read_sources(recipe.data.train, language, modality)
    val_sources = read_sources(recipe.data.val, language, modality) if recipe.data.val else []
    anchor, captions = _prepare_captions(resolved, all_captions(sources + val_sources), out, rank)
    anchor.assert_unchanged()  # frozen as loaded (no gradients, weights as on disk)
    fingerprint = anchor.fingerprint()

    torch.manual_seed(train.seed)
    model = AlignedEncoder(plugin.build_encoder(options), anchor.dim, head=train.head,
                           logit_scale=train.logit_scale or anchor.logit_scale)
    summary = apply_finetune(model, plugin, options, train)
    dataset = AlignmentDataset(sources, plugin, options, seed=train.seed)
    val_dataset = AlignmentDataset(val_sources, plugin, options, seed=train.seed, train=False) if val_sources else None
    steps_per_epoch = len(dataset) // train.batch_size
    if steps_per_epoch == 0:
        raise ConfigError(f"the training data has {len(dataset)} items, fewer than train.batch_size "
                          f"{train.batch_size}; lower the batch size or add data")
    total_steps = train.max_steps or train.epochs * steps_per_epoch
    engine = Engine(model, train, world, total_steps)
    micro = micro_batch_size(train, world)
    state = engine.load(checkpoints) if resume else {}
    log = MetricsLog(out / METRICS_FILE, enabled=rank == 0, resume_step=engine.global_step if resume else None,
                     tensorboard=recipe.output.tensorboard)
    if rank == 0:
        tqdm.write(summary.describe())
        log.write({"event": "start", "step": engine.global_step, "world_size": world, "device": str(device),
                   "precision": recipe.train.precision, "micro_batch": micro,
                   "trainable_parameters": summary.trainable, "total_parameters": summary.total,
                   "steps_per_epoch": steps_per_epoch, "total_steps": total_steps})
    loop = TrainLoop(resolved, engine, captions, device, rank, world, log, on_step, val_dataset)
    history = loop.run(dataset, micro, steps_per_epoch, total_steps, state, progress and rank == 0)

    anchor.assert_unchanged(fingerprint)
    export_dir = out / EXPORT_DIR
    exported = None
    if rank == 0:
        metrics = {"steps": engine.global_step, "final_loss": history[-1] if history else None,
                   "skipped_items": loop.total_skipped, "trainable_parameters": summary.trainable}
        card = make_card(plugin, options, recipe.anchor, anchor.identity, engine.module,
                         recipe=recipe.model_dump(mode="json"), metrics=metrics)
        exported = AlignedModel(plugin, options, engine.module, card, anchor=anchor,
                                anchor_provider=resolved.anchor_provider)
        exported.save(export_dir)
        log.write({"event": "export", "step": engine.global_step, "path": str(export_dir)})
    dist.barrier()
    return RunResult(out, export_dir, engine.global_step, history[-1] if history else math.nan,
                     loop.total_skipped, history, exported)


class TrainLoop:
    """The epoch/step loop with its counters; split out so :func:`run_alignment` reads as the recipe."""

    def __init__(self, resolved: ResolvedRecipe, engine: Engine, captions: Any, device: torch.device, rank: int,
                 world: int, log: "MetricsLog", on_step: Callable[[StepReport], None] | None,
                 val_dataset: AlignmentDataset | None = None):
        self.recipe, self.plugin, self.options = resolved.recipe, resolved.plugin, resolved.options
        self.extra_augmentations = resolved.augmentations
        self.engine, self.captions, self.device, self.rank, self.world, self.log = engine, captions, device, rank, world, log
        self.on_step = on_step
        self.val_dataset = val_dataset
        self.validated_step: int | None = None
        self.total_skipped = 0

    def run(self, dataset: AlignmentDataset, micro: int, steps_per_epoch: int, total_steps: int,
            state: dict[str, Any], progress: bool) -> list[float]:
        train = self.recipe.train
        accumulation = train.gradient_accumulation
        micro_steps = steps_per_epoch * accumulation
        epoch, start_micro = int(state.get("epoch", 0)), int(state.get("micro_step", 0))
        self.total_skipped = int(state.get("total_skipped", 0))
        skips = SkipCounter(self.recipe.data.max_skip_fraction, int(state.get("epoch_seen", 0)),
                            int(state.get("epoch_skipped", 0)))
        history: list[float] = []
        bar = tqdm(total=total_steps, initial=self.engine.global_step, unit="step", desc="align",
                   disable=not progress, dynamic_ncols=True)
        window_start, window_samples = time.perf_counter(), 0
        step_loss, step_samples = 0.0, 0
        self.engine.train()
        while self.engine.global_step < total_steps:
            dataset.set_epoch(epoch)
            sampler = RankBatchSampler(micro_steps, micro, self.world, self.rank, start=start_micro)
            for offset, batch in enumerate(make_loader(dataset, sampler, self.recipe.data.num_workers, self.device)):
                micro_index = start_micro + offset
                loss, seen, skipped = self.micro_step(batch, epoch, micro_index)
                skips.add(seen, skipped, [s.reason for s in batch.skipped])
                self.total_skipped += skipped
                skips.check()
                step_loss += loss / accumulation
                step_samples += seen - skipped
                if not self.engine.step():
                    continue
                history.append(step_loss)
                window_samples += step_samples
                report = StepReport(self.engine.global_step, epoch, step_loss, self.engine.lr,
                                    float(self.engine.module.logit_scale().detach()), step_samples)
                step_loss, step_samples = 0.0, 0
                elapsed = time.perf_counter() - window_start
                rate = window_samples / elapsed if elapsed > 0 else 0.0
                bar.update(1)
                bar.set_postfix(loss=f"{report.loss:.3f}", samples_s=f"{rate:.1f}", refresh=False)
                if report.step % train.log_every == 0 or report.step == total_steps:
                    self.log.write({"step": report.step, "epoch": epoch, "loss": report.loss, "lr": report.lr,
                                    "logit_scale": report.logit_scale, "samples_per_s": rate,
                                    "skipped_epoch": skips.skipped})
                    window_start, window_samples = time.perf_counter(), 0
                next_state = {"epoch": epoch, "micro_step": micro_index + 1, "total_skipped": self.total_skipped,
                              "epoch_seen": skips.seen, "epoch_skipped": skips.skipped}
                if micro_index + 1 == micro_steps:
                    next_state.update(epoch=epoch + 1, micro_step=0, epoch_seen=0, epoch_skipped=0)
                if report.step % train.checkpoint_every == 0 or report.step == total_steps:
                    self.engine.save(self.recipe.output.dir / CHECKPOINT_DIR, f"step{report.step:08d}", next_state)
                if self.on_step is not None:
                    self.on_step(report)
                if report.step >= total_steps and micro_index + 1 < micro_steps:
                    break  # stopped mid-epoch (max_steps); a finished epoch still reports its skips
            else:  # the epoch ran to its end
                self._end_epoch(epoch, skips)
                epoch, start_micro = epoch + 1, 0
                skips = SkipCounter(self.recipe.data.max_skip_fraction)
                continue
            break
        bar.close()
        if self.validated_step != self.engine.global_step:
            self.validate()  # the end of the run, unless an epoch just ended here
        return history

    def micro_step(self, batch: TrainBatch, epoch: int, micro_index: int) -> tuple[float, int, int]:
        """Forward + backward of one micro-batch; returns (global loss, global items seen, global skipped)."""
        seed = mix_seed(self.recipe.train.seed, epoch, micro_index, self.rank)
        torch.manual_seed(seed)  # dropout (LoRA, heads) repeats exactly on resume
        module = self.engine.module
        embeddings, text = self._embed(batch, torch.Generator(device=self.device).manual_seed(seed), augment=True)
        loss = symmetric_info_nce(embeddings, text, module.logit_scale())
        if not len(batch):
            loss = loss + sum((p.float() * 0).sum() for p in module.parameters() if p.requires_grad)
        self.engine.backward(loss * self.world)
        counts = torch.tensor([len(batch) + len(batch.skipped), len(batch.skipped)], dtype=torch.long,
                              device=self.device)
        if self.world > 1:
            dist.all_reduce(counts)
        return float(loss.detach()), int(counts[0]), int(counts[1])

    def validate(self) -> None:
        """Validation InfoNCE over ``data.val`` (eval crops, no augmentation, no gradient), logged as ``val``.

        Every rank joins: each val batch holds up to ``train.batch_size`` items split over the ranks like a
        training step (the last batch may be smaller), so the loss is the same global-batch loss on every
        rank; ``val_loss`` is its item-weighted mean over the batches. Unreadable items are skipped and counted.
        """
        if self.val_dataset is None:
            return
        per_rank = max(self.recipe.train.batch_size // self.world, 1)
        items = len(self.val_dataset)
        batches = math.ceil(items / (per_rank * self.world))
        sampler = RankBatchSampler(batches, per_rank, self.world, self.rank, limit=items)
        module = self.engine.module
        loss_sum, used, skipped = 0.0, 0, 0
        self.engine.train(False)
        with torch.no_grad():
            for batch in make_loader(self.val_dataset, sampler, self.recipe.data.num_workers, self.device):
                embeddings, text = self._embed(batch, None, augment=False)
                loss = symmetric_info_nce(embeddings, text, module.logit_scale())
                counts = torch.tensor([len(batch), len(batch.skipped)], dtype=torch.long, device=self.device)
                if self.world > 1:
                    dist.all_reduce(counts)
                loss_sum += float(loss) * int(counts[0])
                used, skipped = used + int(counts[0]), skipped + int(counts[1])
        self.engine.train()
        self.validated_step = self.engine.global_step
        val_loss = loss_sum / used if used else math.nan
        if self.rank == 0:
            tqdm.write(f"step {self.engine.global_step}: val loss {val_loss:.4f} on {used} items"
                       + (f" ({skipped} unreadable, skipped)" if skipped else ""))
            self.log.write({"event": "val", "step": self.engine.global_step, "val_loss": val_loss,
                            "val_items": used, "val_skipped": skipped})

    def _embed(self, batch: TrainBatch, generator: torch.Generator | None,
               *, augment: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(modality, caption) embeddings of this rank's batch; empty ones still join the loss's collectives."""
        if not len(batch):  # every item of this rank's batch was unreadable (or none was assigned)
            empty = torch.zeros(0, self.engine.module.dim, device=self.device)
            return empty, empty.clone()
        embeddings = self.engine.forward(self._features(batch, generator, augment=augment))
        return embeddings, self.captions.get(batch.captions).to(self.device, torch.float32)

    def _features(self, batch: TrainBatch, generator: torch.Generator | None, *, augment: bool) -> Batch:
        # featurize in full precision; pinned batches (on a GPU) copy asynchronously
        inputs = {k: v.to(self.device, non_blocking=True) for k, v in batch.inputs.items()}
        features = self.plugin.featurize(inputs, self.options)
        if augment:
            features = self.plugin.augment(features, self.options, generator)
            for augmentation, params in self.extra_augmentations:
                features = augmentation(features, generator, **params)
        return {k: _to_device(v, self.device, self.engine.input_dtype) for k, v in features.items()}

    def _end_epoch(self, epoch: int, skips: SkipCounter) -> None:
        skips.check(final=True)
        if self.rank == 0:
            if skips.skipped:
                tqdm.write(f"epoch {epoch}: {skips.skipped} of {skips.seen} items skipped (unreadable); "
                           f"e.g. {skips.examples[0]}")
            self.log.write({"event": "epoch_end", "epoch": epoch, "step": self.engine.global_step,
                            "seen": skips.seen, "skipped": skips.skipped, "skip_fraction": skips.fraction,
                            "skipped_examples": skips.examples})
        self.validate()


class MetricsLog:
    """Append-only JSONL metrics; on resume, lines past the checkpoint's step are dropped first."""

    def __init__(self, path: Path, *, enabled: bool, resume_step: int | None = None, tensorboard: bool = False):
        self.path = path
        self.enabled = enabled
        self.board = _tensorboard_writer(path.parent / "tensorboard") if enabled and tensorboard else None
        if enabled and resume_step is not None and path.is_file():
            kept = [line for line in path.read_text(encoding="utf-8").splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= resume_step]
            atomic_write(path, "".join(line + "\n" for line in kept))
            self.write({"event": "resume", "step": resume_step})

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = {"time": round(time.time(), 3), **record}
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, default=str) + "\n")
        if self.board is not None and "loss" in record:
            for key in ("loss", "lr", "logit_scale", "samples_per_s"):
                self.board.add_scalar(f"train/{key}", record[key], record["step"])
            self.board.flush()


def _tensorboard_writer(folder: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError("output.tensorboard is true but the 'tensorboard' package is not installed; "
                          "pip install tensorboard, or set output.tensorboard=false") from None
    return SummaryWriter(str(folder))


def _prepare_captions(resolved: ResolvedRecipe, captions: list[str], out: Path, rank: int) -> tuple[Any, Any]:
    """The frozen anchor and a caption cache holding every training caption (rank 0 fills it first)."""
    from modbind.anchor import CaptionCache, load_anchor

    recipe = resolved.recipe
    anchor = load_anchor(recipe.anchor, resolved.anchor_provider, device="cpu")
    root = Path(recipe.data.caption_cache) if recipe.data.caption_cache else out.parent / "caption-cache"
    cache = CaptionCache(root, anchor.identity)
    if rank == 0:
        cache.ensure(captions, lambda: anchor, progress=True)
    dist.barrier()
    if rank != 0:
        cache = CaptionCache(root, anchor.identity)
    return anchor, cache


def _check_same_recipe(saved: Path, recipe: Recipe) -> None:
    """Resuming with other data, plugin, anchor or training settings would not continue the same run."""
    import yaml

    if not saved.is_file():
        return
    before = yaml.safe_load(saved.read_text(encoding="utf-8")) or {}
    now = recipe.model_dump(mode="json")
    changed = [f"{section}.{key}" for section in ("anchor", "plugin", "data", "train")
               for key in sorted(set(before.get(section, {})) | set(now.get(section, {})))
               if before.get(section, {}).get(key) != now.get(section, {}).get(key)]
    if changed:
        raise ConfigError(f"--resume with a recipe that differs from {saved} in {', '.join(changed)}; "
                          "resume with the same recipe (or start a new run with --out)")


def _to_device(value: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    if value.is_floating_point():
        return value.to(device=device, dtype=dtype)
    return value.to(device)


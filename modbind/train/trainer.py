"""The alignment loop: data → device featurize/augment → encoder+head → InfoNCE vs cached captions → step.

Generic over modalities: it sees the encoder only through :class:`modbind.contracts.EncoderPlugin`.
The frozen anchor only supplies cached caption embeddings, its dimension, its logit scale (the initial
temperature) and a fingerprint checked before and after training; it never enters the engine. When the
caption cache already holds every caption (and records dim and logit scale), the anchor is not loaded at
all: that saves the open_clip/transformers imports and the tower build at start-up (~3 s on 2 cores).
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from modbind.atomic import atomic_write
from modbind.contracts import Batch, ItemRandomness
from modbind.errors import ConfigError, DataError, NonFiniteError
from modbind.model import AlignedEncoder, AlignedModel, make_card
from modbind.model.card import encoder_init
from modbind.recipes import ResolvedRecipe, dump_recipe
from modbind.train.checkpoints import checkpoint_tag, latest_tag, tag_step
from modbind.train.data import (
    AlignmentDataset,
    RankBatchSampler,
    SkipCounter,
    SourceExamples,
    TrainBatch,
    all_captions,
    make_loader,
    mix_seed,
    read_sources,
)
from modbind.train.engine import Engine, init_distributed, micro_batch_size
from modbind.train.finetune import apply_finetune, random_init_warning
from modbind.train.loss import symmetric_info_nce
from modbind.train.threads import ThreadChoice, choose_threads, intra_op_threads

_AUGMENT_STREAM = 0xA06
"""Mixed into an item's seed for its augmentation stream (the dataset's stream, for crops, has no tag)."""
_SHARED_STREAM = 0x5A7E
"""Mixed into a micro-step's seed for the choices every rank shares (:meth:`ModalityEncoder.set_step_seed`)."""

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


@dataclass(frozen=True)
class TrainingSnapshot:
    """The run as a periodic callback sees it: the step just taken and the model being trained."""

    step: int
    epoch: int
    model: AlignedModel
    """The live weights on the training device, in eval mode: read them during the call only, never train them."""
    out_dir: Path


@dataclass(frozen=True)
class Periodic:
    """Work that runs on rank 0 every ``every`` optimizer steps with the model being trained (e.g. evaluation).

    ``run`` gets a :class:`TrainingSnapshot` and returns scalar metrics (or None). They are logged to
    metrics.jsonl as event ``name`` (``{"event": name, "step", "metrics": {...}}``) and to TensorBoard as
    ``<name>/<key>``. The call runs without gradients, with the model in eval mode and torch's random state
    saved and restored, so training takes exactly the steps it would take without it; the other ranks wait.
    """

    every: int
    run: Callable[[TrainingSnapshot], Mapping[str, float] | None]
    name: str = "periodic"


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
    extend: bool = False,
    progress: bool = True,
    on_step: Callable[[StepReport], None] | None = None,
    callbacks: Sequence[Periodic] = (),
) -> RunResult:
    """Train the recipe's plugin against its anchor; writes checkpoints, metrics and the export.

    ``callbacks`` run on rank 0 every so many steps with the model being trained (see :class:`Periodic`);
    ``on_step`` runs on every rank after every optimizer step.

    ``extend`` (with ``resume``) lets the recipe raise ``train.epochs``/``train.max_steps`` to train a run
    further; the learning-rate schedule stays the one planned for the run's first length, so the added
    steps run at ``min_lr`` (see docs/recipes.md).
    """
    recipe = resolved.recipe
    train = recipe.train
    out = Path(recipe.output.dir)
    checkpoints = out / CHECKPOINT_DIR
    if extend and not resume:
        raise ConfigError("--extend trains an existing run further: use it together with --resume")
    if not resume and latest_tag(checkpoints) is not None:
        raise ConfigError(f"{out} already holds a run; pass --resume to continue it or --out to start a new one")
    saved_train = _check_same_recipe(out / RECIPE_FILE, resolved, extend=extend) if resume else {}
    # manifests and lengths are checked before DeepSpeed starts: a bad one fails fast and leaves nothing behind
    language, modality = recipe.data.caption_language, resolved.plugin.modality
    sources = read_sources(recipe.data.train, language, modality)
    val_sources = read_sources(recipe.data.val, language, modality, section="data.val") if recipe.data.val else []
    steps_per_epoch = sum(len(source.examples) for source in sources) // train.batch_size
    if steps_per_epoch == 0:
        raise ConfigError(f"the training data has {sum(len(s.examples) for s in sources)} items, fewer than "
                          f"train.batch_size {train.batch_size}; lower the batch size or add data")
    total_steps = _total_steps(train.max_steps, train.epochs, steps_per_epoch)
    if extend:
        _check_extends(checkpoints, total_steps)
    plan = _Plan(sources, val_sources, steps_per_epoch, total_steps, saved_train)
    rank, world, device = init_distributed()
    threads = choose_threads(train.threads, device=device, workers=recipe.data.num_workers)
    with intra_op_threads(threads):
        return _train_and_export(resolved, plan, rank, world, device, threads, resume=resume, progress=progress,
                                 on_step=on_step, callbacks=callbacks)


@dataclass(frozen=True)
class _Plan:
    """What :func:`run_alignment` settles before DeepSpeed starts, so a bad manifest or length fails in seconds."""

    sources: list[SourceExamples]
    val_sources: list[SourceExamples]
    steps_per_epoch: int
    total_steps: int
    saved_train: dict[str, Any]
    """The ``train`` section of the run's saved recipe (on resume), whose length planned the LR schedule."""


def _train_and_export(resolved: ResolvedRecipe, plan: _Plan, rank: int, world: int, device: torch.device,
                      threads: ThreadChoice | None, *, resume: bool, progress: bool,
                      on_step: Callable[[StepReport], None] | None, callbacks: Sequence[Periodic]) -> RunResult:
    recipe, plugin, options = resolved.recipe, resolved.plugin, resolved.options
    train = recipe.train
    out = Path(recipe.output.dir)
    checkpoints = out / CHECKPOINT_DIR
    sources, val_sources, steps_per_epoch, total_steps = (plan.sources, plan.val_sources, plan.steps_per_epoch,
                                                          plan.total_steps)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        checkpoints.mkdir(exist_ok=True)
        atomic_write(out / RECIPE_FILE, dump_recipe(recipe))

    anchor, captions = _prepare_captions(resolved, all_captions(sources + val_sources), rank, progress)
    dim, logit_scale = captions.dim, captions.logit_scale
    if dim is None or logit_scale is None:  # a cache written before it recorded the logit scale
        anchor = anchor or _load_anchor(resolved)
        dim, logit_scale = anchor.dim, anchor.logit_scale
    if anchor is not None:
        anchor.assert_unchanged()  # frozen as loaded (no gradients, weights as on disk)
    fingerprint = anchor.fingerprint() if anchor is not None else None

    torch.manual_seed(train.seed)
    model = AlignedEncoder(plugin.build_encoder(options), dim, head=train.head,
                           logit_scale=train.logit_scale or logit_scale)
    summary = apply_finetune(model, plugin, options, train)
    dataset = AlignmentDataset(sources, plugin, options, seed=train.seed)
    val_dataset = AlignmentDataset(val_sources, plugin, options, seed=train.seed, train=False) if val_sources else None
    engine = Engine(model, train, world, total_steps)
    micro = micro_batch_size(train, world)
    state = engine.load(checkpoints) if resume else {}
    # the LR schedule keeps the length the run was first planned for (later --extend steps run at min_lr)
    schedule_steps = int(state.get("schedule_steps") or _total_steps(
        plan.saved_train.get("max_steps", train.max_steps), plan.saved_train.get("epochs", train.epochs),
        steps_per_epoch))
    engine.plan_schedule(schedule_steps)
    log = MetricsLog(out / METRICS_FILE, enabled=rank == 0, resume_step=engine.global_step if resume else None,
                     tensorboard=recipe.output.tensorboard)
    if rank == 0:
        tqdm.write(summary.describe())
        if threads is not None:
            tqdm.write(threads.describe())
        untrained = random_init_warning(plugin, options)
        if untrained:
            tqdm.write(untrained, file=sys.stderr)
        for source in sources + val_sources:
            left_out = source.describe_left_out(recipe.data.caption_language)
            if left_out:
                tqdm.write(f"warning: {left_out}", file=sys.stderr)
        log.write({"event": "start", "step": engine.global_step, "world_size": world, "device": str(device),
                   "threads": torch.get_num_threads(), "threads_from": threads.source if threads else "torch default",
                   "precision": recipe.train.precision, "micro_batch": micro,
                   "trainable_parameters": summary.trainable, "total_parameters": summary.total,
                   "steps_per_epoch": steps_per_epoch, "total_steps": total_steps, "schedule_steps": schedule_steps,
                   "encoder_init": encoder_init(options),
                   "without_caption": {s.where: s.without_captions for s in sources + val_sources}})

    def snapshot(step: int, epoch: int) -> TrainingSnapshot:
        nonlocal anchor
        anchor = anchor or _load_anchor(resolved)  # once, the first time a periodic evaluation needs texts
        card = make_card(plugin, options, recipe.anchor, captions.anchor_identity, engine.module,
                         anchor_provider=resolved.anchor_provider, recipe=recipe.model_dump(mode="json"),
                         metrics={"steps": step, "trained": True, "during_training": True})
        view = AlignedModel(plugin, options, engine.module, card, anchor=anchor,
                            anchor_provider=resolved.anchor_provider, device=str(device))
        return TrainingSnapshot(step, epoch, view, out)

    loop = TrainLoop(resolved, engine, captions, device, rank, world, log, on_step, val_dataset,
                     schedule_steps=schedule_steps, periodic=callbacks, snapshot=snapshot)
    history = loop.run(dataset, micro, steps_per_epoch, total_steps, state, progress and rank == 0)

    if anchor is not None:
        anchor.assert_unchanged(fingerprint)
    export_dir = out / EXPORT_DIR
    exported = None
    if rank == 0:
        metrics = {"steps": engine.global_step, "final_loss": history[-1] if history else None,
                   "skipped_items": loop.total_skipped, "trainable_parameters": summary.trainable}
        card = make_card(plugin, options, recipe.anchor, captions.anchor_identity, engine.module,
                         anchor_provider=resolved.anchor_provider,
                         recipe=recipe.model_dump(mode="json"), metrics=metrics)
        exported = AlignedModel(plugin, options, engine.module, card, anchor=anchor,
                                anchor_provider=resolved.anchor_provider)
        exported.save(export_dir)
        log.write({"event": "export", "step": engine.global_step, "path": str(export_dir)})
    dist.barrier()
    return RunResult(out, export_dir, engine.global_step, history[-1] if history else math.nan,
                     loop.total_skipped, history, exported)


def read_step(loss: torch.Tensor, module: AlignedEncoder,
              trained: list[torch.Tensor]) -> tuple[float, float, str | None]:
    """The step's loss, ``module``'s temperature, and the name of a trained weight that is NaN or infinite
    (None: all finite): the step's one host transfer while all is well.

    The 2-norm of the trained weights (NaN or inf if any weight is) travels with the loss and the
    temperature the step report needs anyway. It is one fused kernel per dtype/device group (what
    ``clip_grad_norm_`` uses); on a CPU it reads BEATs-base in 34 ms where the max-norm took 250 ms. Finite
    weights too large to square in float32 (|w| > 1e19) also give inf, so a weight-by-weight scan then names
    the culprit, or finds none.
    """
    scale = module.logit_scale().detach().float().reshape(())
    norm = torch.stack(torch._foreach_norm(trained, 2.0)).float().norm().to(scale.device)
    loss_value, scale_value, norm_value = torch.stack([loss.detach().float().reshape(()).to(scale.device), scale,
                                                       norm]).tolist()
    if math.isfinite(norm_value):
        return loss_value, scale_value, None
    culprit = next((n for n, p in module.named_parameters() if p.requires_grad and not p.isfinite().all()), None)
    return loss_value, scale_value, culprit


class TrainLoop:
    """The epoch/step loop with its counters; split out so :func:`run_alignment` reads as the recipe."""

    def __init__(self, resolved: ResolvedRecipe, engine: Engine, captions: Any, device: torch.device, rank: int,
                 world: int, log: "MetricsLog", on_step: Callable[[StepReport], None] | None,
                 val_dataset: AlignmentDataset | None = None, *, schedule_steps: int = 0,
                 periodic: Sequence[Periodic] = (), snapshot: Callable[[int, int], TrainingSnapshot] | None = None):
        self.recipe, self.plugin, self.options = resolved.recipe, resolved.plugin, resolved.options
        self.extra_augmentations = resolved.augmentations
        self.engine, self.captions, self.device, self.rank, self.world, self.log = engine, captions, device, rank, world, log
        self.on_step = on_step
        self.val_dataset = val_dataset
        self.validated_step: int | None = None
        self.total_skipped = 0
        self.total_used = 0
        """Items the run trained on (readable ones), over every epoch and resume."""
        self.skip_examples: list[str] = []
        self.trained = [p for p in engine.module.parameters() if p.requires_grad]
        self.schedule_steps = schedule_steps
        """The length the LR schedule was planned for; checkpoints keep it for --resume --extend."""
        self.periodic = tuple(periodic)
        self.snapshot = snapshot
        """Builds the :class:`TrainingSnapshot` the ``periodic`` callbacks get (rank 0)."""

    def run(self, dataset: AlignmentDataset, micro: int, steps_per_epoch: int, total_steps: int,
            state: dict[str, Any], progress: bool) -> list[float]:
        train = self.recipe.train
        accumulation = train.gradient_accumulation
        micro_steps = steps_per_epoch * accumulation
        epoch, start_micro = int(state.get("epoch", 0)), int(state.get("micro_step", 0))
        self.total_skipped = int(state.get("total_skipped", 0))
        self.total_used = int(state.get("total_used", 0))
        epoch_items = steps_per_epoch * train.batch_size
        skips = SkipCounter(self.recipe.data.max_skip_fraction, epoch_items, int(state.get("epoch_seen", 0)),
                            int(state.get("epoch_skipped", 0)), repaired=int(state.get("epoch_repaired", 0)))
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
                loss, seen, skipped, repaired = self.micro_step(batch, epoch, micro_index)
                skips.add(seen, skipped, [s.reason for s in batch.skipped], repaired=repaired, repairs=batch.repaired)
                self.skip_examples.extend(s.reason for s in batch.skipped[: max(0, 3 - len(self.skip_examples))])
                self.total_skipped += skipped
                self.total_used += seen - skipped
                skips.check()
                step_loss += loss / accumulation
                step_samples += seen - skipped
                if not self.engine.step():
                    continue
                loss_value, scale = self.checked_step(step_loss)
                history.append(loss_value)
                window_samples += step_samples
                report = StepReport(self.engine.global_step, epoch, loss_value, self.engine.lr, scale, step_samples)
                step_loss, step_samples = 0.0, 0
                elapsed = time.perf_counter() - window_start
                rate = window_samples / elapsed if elapsed > 0 else 0.0
                bar.update(1)
                bar.set_postfix(loss=f"{report.loss:.3f}", samples_s=f"{rate:.1f}", refresh=False)
                if report.step % train.log_every == 0 or report.step == total_steps:
                    self.log.write({"event": "step", "step": report.step, "epoch": epoch, "loss": report.loss,
                                    "lr": report.lr, "logit_scale": report.logit_scale, "samples_per_s": rate,
                                    "skipped_epoch": skips.skipped})
                    window_start, window_samples = time.perf_counter(), 0
                next_state = {"epoch": epoch, "micro_step": micro_index + 1, "total_skipped": self.total_skipped,
                              "total_used": self.total_used, "epoch_seen": skips.seen, "epoch_skipped": skips.skipped,
                              "epoch_repaired": skips.repaired, "schedule_steps": self.schedule_steps}
                if micro_index + 1 == micro_steps:
                    next_state.update(epoch=epoch + 1, micro_step=0, epoch_seen=0, epoch_skipped=0, epoch_repaired=0)
                if report.step % train.checkpoint_every == 0 or report.step == total_steps:
                    self.engine.save(self.recipe.output.dir / CHECKPOINT_DIR, checkpoint_tag(report.step), next_state)
                if train.val_every is not None and report.step % train.val_every == 0:
                    self.validate()
                for callback in self.periodic:
                    if report.step % callback.every == 0:
                        self._run_periodic(callback, report)
                if self.on_step is not None:
                    self.on_step(report)
                if report.step >= total_steps and micro_index + 1 < micro_steps:
                    skips.check(final=True)  # stopped mid-epoch (max_steps): judge the items it saw
                    break
            else:  # the epoch ran to its end
                self._end_epoch(epoch, skips)
                epoch, start_micro = epoch + 1, 0
                skips = SkipCounter(self.recipe.data.max_skip_fraction, epoch_items)
                continue
            break
        bar.close()
        if self.total_used == 0:
            self._refuse_untrained()
        if self.validated_step != self.engine.global_step:
            self.validate()  # the end of the run, unless an epoch just ended here
        return history

    def _refuse_untrained(self) -> None:
        """A run that could read no item trained nothing: fail rather than export a random model as a result."""
        shown = f" (e.g. {'; '.join(self.skip_examples)})" if self.skip_examples else ""
        raise DataError(f"no training item could be read in {self.engine.global_step} steps: all "
                        f"{self.total_skipped} items drawn were skipped{shown}; nothing was trained and nothing is "
                        "exported. Check that the manifest's paths exist (data.train[].root)")

    def micro_step(self, batch: TrainBatch, epoch: int, micro_index: int) -> tuple[torch.Tensor, int, int, int]:
        """Forward + backward of one micro-batch; returns the global loss (on the device: :meth:`checked_step`
        reads it) and the global counts of items seen, skipped (unreadable) and repaired."""
        seed = self.recipe.train.seed
        module = self.engine.module
        # dropout masks (LoRA, encoders) come from torch's generator, per rank on purpose: ranks sharing one
        # stream would drop the same units of different items. They repeat exactly on resume.
        torch.manual_seed(mix_seed(seed, epoch, micro_index, self.rank))
        # whole-batch choices (layerdrop) and each item's augmentation never depend on the rank or world size
        module.encoder.set_step_seed(mix_seed(seed, epoch, micro_index, _SHARED_STREAM))
        per_item = ItemRandomness([mix_seed(seed, epoch, position, _AUGMENT_STREAM) for position in batch.positions])
        embeddings, text = self._embed(batch, per_item, augment=True)
        loss = symmetric_info_nce(embeddings, text, module.logit_scale())
        if not len(batch):
            loss = loss + sum((p.float() * 0).sum() for p in module.parameters() if p.requires_grad)
        self.engine.backward(loss * self.world)
        seen, skipped, repaired = len(batch) + len(batch.skipped), len(batch.skipped), len(batch.repaired)
        if self.world > 1:  # one rank knows its counts without a device round trip (a host sync each)
            counts = torch.tensor([seen, skipped, repaired], dtype=torch.long, device=self.device)
            dist.all_reduce(counts)
            seen, skipped, repaired = counts.tolist()
        return loss.detach(), seen, skipped, repaired

    def checked_step(self, loss: torch.Tensor) -> tuple[float, float]:
        """After an optimizer step: its loss (the micro-steps' mean) and the temperature, read in one host
        transfer together with proof that the loss and every trained weight are finite.

        A non-finite gradient makes Adam's update (and so the weights) NaN, so this also catches gradients;
        ZeRO instead skips such an update, which the engine reports. Either way the run stops before this
        step's checkpoint, so the newest one stays good.
        """
        step = self.engine.global_step
        loss_value, scale, name = read_step(loss, self.engine.module, self.trained)
        if not math.isfinite(loss_value):  # the same global loss on every rank: all of them stop here
            raise NonFiniteError(f"step {step}: the loss is {loss_value}; training diverged ({self._divergence_hint()}); "
                                 f"{self._last_good_checkpoint()}")
        if self.engine.step_skipped and self.recipe.train.precision != "fp16":  # fp16 skips on loss-scale overflow
            raise NonFiniteError(f"step {step}: the gradient is NaN or infinite (the update was skipped); training "
                                 f"diverged ({self._divergence_hint()}); {self._last_good_checkpoint()}")
        if name is not None:
            raise NonFiniteError(f"step {step}: the update made parameter '{name}' NaN or infinite (a NaN/inf gradient "
                                 f"or a step too large for its dtype); training diverged ({self._divergence_hint()}); "
                                 f"{self._last_good_checkpoint()}")
        return loss_value, scale

    def _divergence_hint(self) -> str:
        return f"e.g. train.optimizer.lr {self.recipe.train.optimizer.lr:g} is too high, or an input holds NaN/inf"

    def _last_good_checkpoint(self) -> str:
        directory = Path(self.recipe.output.dir) / CHECKPOINT_DIR
        tag = latest_tag(directory)
        return (f"the newest checkpoint, {directory / tag}, was written before it and is kept" if tag
                else "no checkpoint was written before it")

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

    def _embed(self, batch: TrainBatch, generator: ItemRandomness | None,
               *, augment: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(modality, caption) embeddings of this rank's batch; empty ones still join the loss's collectives."""
        if not len(batch):  # every item of this rank's batch was unreadable (or none was assigned)
            empty = torch.zeros(0, self.engine.module.dim, device=self.device)
            return empty, empty.clone()
        embeddings = self.engine.forward(self._features(batch, generator, augment=augment))
        return embeddings, self.captions.get(batch.captions).to(self.device, torch.float32)

    def _features(self, batch: TrainBatch, generator: ItemRandomness | None, *, augment: bool) -> Batch:
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
            if skips.repaired:
                tqdm.write(f"epoch {epoch}: {skips.repaired} of {skips.seen} items repaired while decoding; "
                           f"e.g. {skips.repaired_examples[0]}")
            self.log.write({"event": "epoch_end", "epoch": epoch, "step": self.engine.global_step,
                            "seen": skips.seen, "skipped": skips.skipped, "skip_fraction": skips.fraction,
                            "skipped_examples": skips.examples, "repaired": skips.repaired,
                            "repaired_examples": skips.repaired_examples})
        if self.recipe.train.val_every is None:
            self.validate()

    def _run_periodic(self, callback: Periodic, report: StepReport) -> None:
        """One callback on rank 0, leaving no trace in training: no gradients, RNG state restored, train mode back."""
        if self.rank == 0 and self.snapshot is not None:
            devices = [self.device] if self.device.type == "cuda" else []
            self.engine.train(False)
            try:
                with torch.random.fork_rng(devices=devices), torch.no_grad():
                    metrics = callback.run(self.snapshot(report.step, report.epoch))
            finally:
                self.engine.train()
            self.log.write({"event": callback.name, "step": report.step, "epoch": report.epoch,
                            "metrics": dict(metrics or {})})
        if self.world > 1:
            dist.barrier()  # the other ranks wait here rather than inside the next step's collectives


class MetricsLog:
    """Append-only JSONL metrics; on resume, lines past the checkpoint's step are dropped first.

    A line that is not a JSON record (the torn end of an append cut short by a crash or a full disk) is
    dropped on resume with a warning: it holds nothing the resumed run cannot log again.
    """

    def __init__(self, path: Path, *, enabled: bool, resume_step: int | None = None, tensorboard: bool = False):
        self.path = path
        self.enabled = enabled
        self.board = _tensorboard_writer(path.parent / "tensorboard") if enabled and tensorboard else None
        if enabled and resume_step is not None and path.is_file():
            kept, torn = [], []
            for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
                if not line.strip():
                    continue
                record = _json_record(line)
                if record is None:
                    torn.append(number)
                elif record.get("step", 0) <= resume_step:
                    kept.append(line)
            if torn:
                tqdm.write(f"warning: {path}: dropped {len(torn)} unreadable line(s) ({', '.join(map(str, torn))}), "
                           "the end of a write cut short", file=sys.stderr)
            atomic_write(path, "".join(line + "\n" for line in kept))
            self.write({"event": "resume", "step": resume_step})

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = {"time": round(time.time(), 3), **record}
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, default=str) + "\n")
        if self.board is not None:
            scalars = _board_scalars(record)
            for tag, value in scalars.items():
                self.board.add_scalar(tag, value, record["step"])
            if scalars:
                self.board.flush()


def _board_scalars(record: dict[str, Any]) -> dict[str, float]:
    """What TensorBoard shows of a metrics line: the training curves, the validation loss, callback metrics."""
    event = record.get("event")
    if event == "step":
        return {f"train/{key}": record[key] for key in ("loss", "lr", "logit_scale", "samples_per_s")}
    if event == "val":
        return {"val/loss": record["val_loss"]}
    metrics = record.get("metrics")
    if isinstance(metrics, dict):
        return {f"{event}/{key}": float(value) for key, value in metrics.items() if isinstance(value, (int, float))}
    return {}


def _json_record(line: str) -> dict[str, Any] | None:
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    return record if isinstance(record, dict) else None


def _tensorboard_writer(folder: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError("output.tensorboard is true but the 'tensorboard' package is not installed; "
                          "pip install tensorboard, or set output.tensorboard=false") from None
    return SummaryWriter(str(folder))


def _prepare_captions(resolved: ResolvedRecipe, captions: list[str], rank: int, progress: bool) -> tuple[Any, Any]:
    """A caption cache holding every training caption (rank 0 fills it first), and the frozen anchor if
    filling it needed the text tower (None when the cache was warm: the anchor is then never loaded)."""
    from modbind.anchor import CaptionCache, anchor_identity

    recipe = resolved.recipe
    root = recipe.caption_cache_dir
    identity = anchor_identity(recipe.anchor, resolved.anchor_provider)  # hashes the weight files; builds nothing
    cache = CaptionCache(root, identity)
    loaded: list[Any] = []

    def load() -> Any:  # called only when a caption is missing
        loaded.append(_load_anchor(resolved))
        return loaded[-1]

    if rank == 0:
        cache.ensure(captions, load, progress=progress)
    dist.barrier()
    if rank != 0:
        cache = CaptionCache(root, identity)
    return (loaded[0] if loaded else None), cache


def _load_anchor(resolved: ResolvedRecipe) -> Any:
    """The frozen anchor on ``anchor.device`` (where missing captions are embedded)."""
    from modbind.anchor import load_anchor

    return load_anchor(resolved.recipe.anchor, resolved.anchor_provider)


EXTENSION_KEYS = ("train.epochs", "train.max_steps")
"""What ``--resume --extend`` may change: how long the run trains, nothing about how."""
MACHINE_KEYS = ("train.threads",)
"""What ``--resume`` accepts changed without a flag: settings of the machine the run continues on."""


def _check_same_recipe(saved: Path, resolved: ResolvedRecipe, *, extend: bool = False) -> dict[str, Any]:
    """Resuming with other data, plugin, anchor or training settings would not continue the same run.

    With ``extend``, :data:`EXTENSION_KEYS` may change. Returns the saved recipe's ``train`` section.
    """
    import yaml

    if not saved.is_file():
        return {}
    before = yaml.safe_load(saved.read_text(encoding="utf-8")) or {}
    anchor = before.get("anchor") or {}
    if "model" in anchor:  # runs saved before tags ignored by the anchor were dropped from recipe.yaml
        anchor["pretrained"] = resolved.anchor_provider.pretrained_in_use(anchor["model"], anchor.get("pretrained"))
    now = resolved.recipe.model_dump(mode="json")
    changed = [f"{section}.{key}" for section in ("anchor", "plugin", "data", "train")
               for key in sorted(set(before.get(section, {})) | set(now.get(section, {})))
               if before.get(section, {}).get(key) != now.get(section, {}).get(key)]
    refused = [key for key in changed if key not in MACHINE_KEYS and not (extend and key in EXTENSION_KEYS)]
    if refused:
        hint = ("; to train a finished run further, add --extend (it accepts changes to "
                f"{' and '.join(EXTENSION_KEYS)} only)") if set(refused) <= set(EXTENSION_KEYS) else ""
        raise ConfigError(f"--resume with a recipe that differs from {saved} in {', '.join(refused)}; resume with the "
                          f"same recipe (or start a new run with --out){hint}")
    return dict(before.get("train") or {})


def _total_steps(max_steps: int | None, epochs: int, steps_per_epoch: int) -> int:
    return max_steps or epochs * steps_per_epoch


def _check_extends(checkpoints: Path, total_steps: int) -> None:
    """--extend needs a recipe that reaches past the step the run's newest checkpoint is at."""
    tag = latest_tag(checkpoints)
    done = tag_step(tag) if tag else 0
    if total_steps <= done:
        raise ConfigError(f"--extend: the recipe trains {total_steps} steps, but the run in {checkpoints.parent} "
                          f"already has {done}; raise train.max_steps or train.epochs above it "
                          "(e.g. --set train.max_steps=...)")


def _to_device(value: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    if value.is_floating_point():
        return value.to(device=device, dtype=dtype)
    return value.to(device)


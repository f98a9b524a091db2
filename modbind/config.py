"""The recipe: every setting of a run as pydantic models whose defaults are the paper's basic recipe.

Paper (CACARA): Adam(β 0.9/0.98, ε 1e-8), weight decay 1e-6, cosine schedule with warm-up from 5e-5 down
to 1e-5, batch 64 for the basic setting (110 and 10 epochs for the expanded one), 10 s audio, SpecAugment
(F=48, T=96) and random truncation. Recipes are YAML files validated against :class:`Recipe`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator


FLOAT32_MAX = 3.4028234663852886e38
"""The largest float32: no learning rate beyond it can update float32 weights."""


class Section(BaseModel):
    """Base of every recipe section: unknown keys are errors, never silently ignored."""

    model_config = ConfigDict(extra="forbid")


class AnchorConfig(Section):
    """The frozen text-image space the new modality is aligned to."""

    model: str = "xlm-roberta-base-ViT-B-32"
    """An open_clip model name, ``hf-hub:org/repo``, ``local-dir:/path`` or anything a provider handles."""
    pretrained: str | None = "laion5b_s13b_b90k"
    """open_clip pretrained tag, or a local weights file (which also overrides a ``local-dir:`` model's
    weights); a tag is ignored for ``hf-hub:``/``local-dir:`` models."""
    cache_dir: Path | None = None
    """Where downloaded weights live (default: open_clip's/HF's cache)."""
    device: str = "cpu"
    """Device used to embed captions while building the caption cache."""
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"


def anchor_config(model: str, pretrained: str | None = None) -> AnchorConfig:
    """An anchor given as a model string (``--anchor``): an open_clip name takes the default tag unless one is
    given; ``local-dir:``/``hf-hub:`` take no tag, but a weights file in ``pretrained`` overrides theirs."""
    if model.startswith(("local-dir:", "hf-hub:")):
        return AnchorConfig(model=model, pretrained=pretrained)
    return AnchorConfig(model=model, pretrained=pretrained or AnchorConfig().pretrained)


class PluginConfig(Section):
    """Which modality encoder plugin to align and its options (validated by the plugin's own model)."""

    name: str = "audio_beats"
    options: dict[str, Any] = Field(default_factory=dict)


class DataSource(Section):
    """One manifest (JSONL) or shard set to read, with its sampling weight when mixing."""

    manifest: Path
    root: Path | None = None
    """Folder that relative item paths are resolved against (default: the manifest's folder); no path in
    the manifest may leave it."""
    weight: float = Field(1.0, gt=0)
    allow_absolute_paths: bool = False
    """Accept absolute item paths in this manifest (refused by default: see :mod:`modbind.data.paths`)."""


class DataConfig(Section):
    train: list[DataSource] = Field(default_factory=list)
    val: list[DataSource] = Field(default_factory=list)
    caption_language: str = "en"
    """Only captions in this language train the encoder (the paper trains on English only)."""
    num_workers: int = Field(4, ge=0)
    max_skip_fraction: float = Field(0.05, ge=0, le=1)
    """Stop the run with a clear message when more than this share of items cannot be read."""
    caption_cache: Path | None = None
    """Folder of the caption-embedding cache (default: ``caption-cache`` beside the output folder, see
    :attr:`Recipe.caption_cache_dir`)."""


class OptimizerConfig(Section):
    """Adam with warm-up and a cosine decay from ``lr`` to ``min_lr``; values Adam cannot use are refused here."""

    lr: float = Field(5e-5, gt=0, allow_inf_nan=False)
    """Peak learning rate; finite and > 0, and small enough that Adam's largest step, ``lr / (1 - beta1)``, fits
    float32 (the weights' type), which torch's Adam needs."""
    min_lr: float = Field(1e-5, ge=0, allow_inf_nan=False)
    """The floor of the cosine schedule; at most ``lr`` (a higher floor would make the schedule climb)."""
    betas: tuple[float, float] = (0.9, 0.98)
    """Adam's moment decay rates, each in [0, 1)."""
    eps: float = Field(1e-8, gt=0, allow_inf_nan=False)
    weight_decay: float = Field(1e-6, ge=0, allow_inf_nan=False)
    warmup_steps: int = Field(500, ge=0)
    grad_clip: float | None = Field(1.0, gt=0, allow_inf_nan=False)
    """Clip the global gradient norm to this (None: no clipping)."""

    @field_validator("betas")
    @classmethod
    def _betas_below_one(cls, betas: tuple[float, float]) -> tuple[float, float]:
        for name, beta in zip(("beta1", "beta2"), betas):
            if not 0.0 <= beta < 1.0:  # NaN fails too
                raise ValueError(f"{name} {beta} is not in [0, 1): Adam's moment averages would not decay")
        return betas

    @field_validator("min_lr")
    @classmethod
    def _floor_below_lr(cls, min_lr: float, info: ValidationInfo) -> float:
        lr = info.data.get("lr")  # absent when lr itself was invalid
        if lr is not None and min_lr > lr:
            raise ValueError(f"min_lr {min_lr} is above lr {lr}: the schedule would climb instead of decay; "
                             "set min_lr <= lr")
        return min_lr


    @model_validator(mode="after")
    def _step_fits_float32(self) -> "OptimizerConfig":
        largest_step = self.lr / (1.0 - self.betas[0])  # Adam's bias correction divides the first step by 1 - beta1
        if largest_step > FLOAT32_MAX:
            raise ValueError(f"lr {self.lr:g} makes Adam's first step lr / (1 - beta1) = {largest_step:.3g}, beyond "
                             f"float32's range ({FLOAT32_MAX:.4g}), the type of the weights; use a learning rate "
                             "near the paper's 5e-5")
        return self


class LoraConfig(Section):
    r: int = Field(8, ge=1)
    alpha: int = Field(16, ge=1)
    dropout: float = Field(0.05, ge=0, lt=1)
    targets: list[str] | None = None
    """Module-name patterns; None uses the plugin's declared targets."""


class AugmentationEntry(Section):
    """An extra registered augmentation (``modbind plugins`` lists them) and its parameters."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class TrainConfig(Section):
    batch_size: int = Field(64, ge=2)
    """Global batch: per-device batch × devices × gradient accumulation. At least 2: InfoNCE contrasts each
    item with the rest of the global batch, so a batch of one has no negatives and its loss is always 0."""
    epochs: int = Field(5, ge=1)
    max_steps: int | None = Field(None, ge=1)
    """Stop after this many optimizer steps (overrides epochs when set)."""
    gradient_accumulation: int = Field(1, ge=1)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    zero_stage: Literal[0, 1, 2] = 0
    finetune: Literal["full", "partial", "lora"] = "full"
    partial_top_k: int = Field(2, ge=0)
    """With ``finetune: partial``: how many of the encoder's last layers train (the head always trains)."""
    lora: LoraConfig = Field(default_factory=LoraConfig)
    head: Literal["linear", "mlp"] = "linear"
    logit_scale: float | None = Field(None, gt=0, le=100)
    """Starting InfoNCE logit scale (1 / temperature); None: the anchor's own, as in the paper."""
    learn_logit_scale: bool = True
    """Train the logit scale (the paper). False keeps it fixed: at a low fixed scale (e.g. 7) the loss keeps
    pulling each item towards its captions' embedding instead of stopping at the margin a batch needs, so
    two modalities aligned separately to one anchor retrieve each other better (docs/bundles.md)."""
    augmentations: list[AugmentationEntry] = Field(default_factory=list)
    seed: int = 0
    log_every: int = Field(10, ge=1)
    checkpoint_every: int = Field(500, ge=1)
    """Optimizer steps between resumable checkpoints (one is always written at the end)."""
    val_every: int | None = Field(None, ge=1)
    """Optimizer steps between validation losses on ``data.val``; None: after every epoch. Either way one
    runs at the end of the run."""
    keep_checkpoints: int = Field(3, ge=1)
    """How many of the newest checkpoints to keep (older ones are deleted after each save); keep 2 or more
    so that a checkpoint damaged by a crash leaves one to resume from."""
    threads: int | None = Field(None, ge=1)
    """Intra-op CPU threads per process (``align --threads``). None: on a CPU, ``OMP_NUM_THREADS`` if set, else
    the cores ÷ the ranks on this machine − ``data.num_workers``, at least 1; on a GPU, torch's default."""
    compile: bool | Literal["auto"] = "auto"
    """torch.compile the trainable model (DeepSpeed's ``engine.compile``); the first steps pay the compile
    time. ``auto``: on CUDA devices only (on the CPU inductor's compile takes longer than it saves in a
    short run: see benchmarks/README.md)."""
    compile_backend: str = "inductor"
    """torch.compile backend; ``eager`` only captures the graphs (a quick check that a model compiles)."""
    compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = "default"
    """torch.compile mode: ``reduce-overhead`` replays CUDA graphs (static shapes: fixed crops, fixed batch),
    ``max-autotune`` also searches kernel configurations (longer compile)."""
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)

    @field_validator("batch_size", mode="before")
    @classmethod
    def _batch_has_negatives(cls, batch_size: Any) -> Any:
        if batch_size == 1:  # the bound below would only say "should be >= 2"; say why
            raise ValueError("a global batch of 1 gives InfoNCE no negatives (the loss is always 0 and nothing "
                             "is learned); use 2 or more (the paper uses 64)")
        return batch_size

    @model_validator(mode="after")
    def _batch_divides(self) -> "TrainConfig":
        if self.batch_size % self.gradient_accumulation:
            raise ValueError(
                f"batch_size {self.batch_size} is not divisible by gradient_accumulation {self.gradient_accumulation}"
            )
        return self


class EvalConfig(Section):
    suite: Path | None = None
    """A suite YAML run after training (``modbind eval --suite``); None skips evaluation."""
    languages: list[str] = Field(
        default_factory=lambda: ["en", "pt", "es", "fr", "de", "zh", "ja", "ru", "tr", "hi", "ar", "sw"]
    )
    batch_size: int = Field(64, ge=1)
    data_root: Path | None = None
    """What ``${DATA_ROOT}`` in the suite's paths stands for (default: ``$MODBIND_DATA_ROOT``, else ``data``
    in the current folder)."""
    every_steps: int | None = Field(None, ge=1)
    """Also evaluate the model being trained every this many optimizer steps (rank 0; logged to metrics.jsonl
    and TensorBoard), with ``during_training_suite``; None: only after training."""
    during_training_suite: Path | None = None
    """The suite for ``every_steps`` (keep it small: training waits for it); None: ``suite``."""

    @model_validator(mode="after")
    def _periodic_needs_a_suite(self) -> "EvalConfig":
        if self.every_steps is not None and self.during_training_suite is None and self.suite is None:
            raise ValueError("every_steps is set but there is no suite to run: set eval.during_training_suite "
                             "(or eval.suite)")
        return self

    @property
    def periodic_suite(self) -> Path | None:
        """The suite to run every ``every_steps`` steps, or None when nothing runs during training."""
        if self.every_steps is None:
            return None
        return self.during_training_suite or self.suite


class OutputConfig(Section):
    dir: Path = Path("runs/modbind")
    tensorboard: bool = False


class Recipe(Section):
    """A whole alignment run."""

    anchor: AnchorConfig = Field(default_factory=AnchorConfig)
    plugin: PluginConfig = Field(default_factory=PluginConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)

    @property
    def caption_cache_dir(self) -> Path:
        """``data.caption_cache``, else ``caption-cache`` beside ``output.dir``: the one folder a run reads its
        caption embeddings from and ``modbind data embed-text`` fills, so runs under one parent share it."""
        return Path(self.data.caption_cache) if self.data.caption_cache else Path(self.output.dir).parent / "caption-cache"

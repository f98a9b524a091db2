"""The recipe: every setting of a run as pydantic models whose defaults are the paper's basic recipe.

Paper (CACARA): Adam(β 0.9/0.98, ε 1e-8), weight decay 1e-6, cosine schedule with warm-up from 5e-5 down
to 1e-5, batch 64 for the basic setting (110 and 10 epochs for the expanded one), 10 s audio, SpecAugment
(F=48, T=96) and random truncation. Recipes are YAML files validated against :class:`Recipe`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


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


class PluginConfig(Section):
    """Which modality encoder plugin to align and its options (validated by the plugin's own model)."""

    name: str = "audio_beats"
    options: dict[str, Any] = Field(default_factory=dict)


class DataSource(Section):
    """One manifest (JSONL) or shard set to read, with its sampling weight when mixing."""

    manifest: Path
    root: Path | None = None
    """Folder that relative item paths are resolved against (default: the manifest's folder)."""
    weight: float = Field(1.0, gt=0)


class DataConfig(Section):
    train: list[DataSource] = Field(default_factory=list)
    val: list[DataSource] = Field(default_factory=list)
    caption_language: str = "en"
    """Only captions in this language train the encoder (the paper trains on English only)."""
    num_workers: int = Field(4, ge=0)
    max_skip_fraction: float = Field(0.05, ge=0, le=1)
    """Stop the run with a clear message when more than this share of items cannot be read."""
    caption_cache: Path | None = None
    """Folder of the caption-embedding cache (default: inside the output folder's parent cache)."""


class OptimizerConfig(Section):
    lr: float = Field(5e-5, gt=0)
    min_lr: float = Field(1e-5, ge=0)
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-8
    weight_decay: float = 1e-6
    warmup_steps: int = Field(500, ge=0)
    grad_clip: float | None = Field(1.0, gt=0)


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
    batch_size: int = Field(64, ge=1)
    """Global batch: per-device batch × devices × gradient accumulation."""
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
    compile: bool = False
    """torch.compile the trainable model (DeepSpeed's ``engine.compile``): faster steps on GPUs for long
    runs; the first steps pay the compile time. Off by default, as in the paper's runs."""
    compile_backend: str = "inductor"
    """torch.compile backend; ``eager`` only captures the graphs (a quick check that a model compiles)."""
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)

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

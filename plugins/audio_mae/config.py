"""AudioMAE architecture settings: the official ViT-B/16 on a 1024 x 128 fbank, and a tiny test variant.

The names follow the constructor arguments of the official ``models_vit.VisionTransformer`` as used by
``main_finetune_as.py`` (patch embedding on a (1024, 128) one-channel "image", stride 16, mean pooling of
the patch tokens through ``fc_norm``). ``num_classes`` is 0 for an alignment encoder (no classifier);
527 keeps the AudioSet classifier of the fine-tuned checkpoints.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class AudioMAEConfig:
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    patch_size: int = 16
    num_frames: int = 1024
    """Time axis of the input fbank (10.24 s at a 10 ms hop)."""
    num_mel_bins: int = 128
    num_classes: int = 0
    """0: no classifier head (alignment); 527: the AudioSet head of the official fine-tuned model."""
    drop_path_rate: float = 0.1
    """Stochastic depth of the official AudioSet fine-tuning recipe."""
    layer_norm_eps: float = 1e-6

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "AudioMAEConfig":
        """Build from a dict of known fields; raises ValueError naming unknown or inconsistent ones."""
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown AudioMAE settings {unknown}; known: {sorted(known)}")
        config = cls(**values)
        config.validate()
        return config

    def replace(self, **changes: Any) -> "AudioMAEConfig":
        return AudioMAEConfig.from_dict({**dataclasses.asdict(self), **changes})

    def validate(self) -> None:
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if self.embed_dim % 4:
            raise ValueError(f"embed_dim {self.embed_dim} must be a multiple of 4 (2-D sin-cos positions)")
        if self.num_frames % self.patch_size or self.num_mel_bins % self.patch_size:
            raise ValueError(
                f"the fbank ({self.num_frames} x {self.num_mel_bins}) must tile into {self.patch_size}-wide patches")
        if self.num_classes < 0 or self.depth < 1:
            raise ValueError(f"depth must be >= 1 and num_classes >= 0 (got {self.depth}, {self.num_classes})")

    @property
    def patch_grid(self) -> tuple[int, int]:
        """(time patches, frequency patches); token index = t * frequency_patches + f."""
        return self.num_frames // self.patch_size, self.num_mel_bins // self.patch_size


BASE = AudioMAEConfig()
"""ViT-B/16: the released pre-trained and AudioSet fine-tuned AudioMAE models."""

TINY = BASE.replace(embed_dim=64, depth=2, num_heads=4)
"""Width 64, two blocks: the conformance fixture's architecture, for tests and demos."""

PRESETS = {"base": BASE, "tiny": TINY}

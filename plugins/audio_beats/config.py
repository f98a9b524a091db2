"""BEATs architecture settings, named and defaulted exactly like the official ``BEATsConfig``.

Official checkpoints carry their settings under ``cfg``; :meth:`BeatsConfig.from_dict` reads that dict.
``BASE`` is the cfg stored in the released iter3/iter3+ checkpoints; ``TINY`` is the small variant the
conformance fixture uses (fast enough for tests and demos).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from modbind.errors import CheckpointError


@dataclass(frozen=True)
class BeatsConfig:
    """Field names and defaults follow the official ``BEATsConfig`` (defaults apply to keys a cfg omits)."""

    input_patch_size: int = -1
    embed_dim: int = 512
    conv_bias: bool = False
    encoder_layers: int = 12
    encoder_embed_dim: int = 768
    encoder_ffn_embed_dim: int = 3072
    encoder_attention_heads: int = 12
    activation_fn: str = "gelu"
    layer_wise_gradient_decay_ratio: float = 1.0
    layer_norm_first: bool = False
    deep_norm: bool = False
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0
    encoder_layerdrop: float = 0.0
    dropout_input: float = 0.0
    conv_pos: int = 128
    conv_pos_groups: int = 16
    relative_position_embedding: bool = False
    num_buckets: int = 320
    max_distance: int = 1280
    gru_rel_pos: bool = False
    finetuned_model: bool = False
    predictor_dropout: float = 0.1
    predictor_class: int = 527

    @classmethod
    def from_dict(cls, cfg: dict[str, Any], *, where: str = "BEATs cfg") -> "BeatsConfig":
        """Official cfg dict -> config; unknown keys are an error (they would change the architecture)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise CheckpointError(f"{where} has settings this BEATs implementation does not know: {', '.join(unknown)}")
        config = cls(**cfg)
        config.validate(where)
        return config

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> "BeatsConfig":
        return BeatsConfig.from_dict({**self.to_dict(), **changes})

    def validate(self, where: str = "BEATs cfg") -> None:
        if self.input_patch_size <= 0:
            raise CheckpointError(f"{where}: input_patch_size must be positive (got {self.input_patch_size})")
        if self.encoder_embed_dim % self.encoder_attention_heads:
            raise CheckpointError(
                f"{where}: encoder_embed_dim {self.encoder_embed_dim} is not divisible by "
                f"encoder_attention_heads {self.encoder_attention_heads}"
            )
        if self.deep_norm and self.layer_norm_first:
            raise CheckpointError(f"{where}: deep_norm and layer_norm_first cannot both be set")
        if self.activation_fn not in ("gelu", "relu"):
            raise CheckpointError(f"{where}: activation_fn '{self.activation_fn}' is not supported (gelu, relu)")


BASE = BeatsConfig(
    input_patch_size=16,
    embed_dim=512,
    encoder_layers=12,
    encoder_embed_dim=768,
    encoder_ffn_embed_dim=3072,
    encoder_attention_heads=12,
    dropout=0.0,
    attention_dropout=0.0,
    activation_dropout=0.0,
    encoder_layerdrop=0.05,
    conv_pos=128,
    conv_pos_groups=16,
    relative_position_embedding=True,
    num_buckets=320,
    max_distance=800,
    gru_rel_pos=True,
    deep_norm=True,
    layer_wise_gradient_decay_ratio=0.6,
)
"""The cfg of the released BEATs_iter3 / iter3+ pre-trained checkpoints (90.3 M parameters)."""

TINY = BASE.replace(
    encoder_layers=2,
    encoder_embed_dim=64,
    encoder_ffn_embed_dim=128,
    encoder_attention_heads=4,
    embed_dim=32,
    conv_pos=16,
    conv_pos_groups=4,
)
"""Two layers, width 64: the conformance fixture's architecture, for tests and the demo."""

PRESETS = {"base": BASE, "tiny": TINY}

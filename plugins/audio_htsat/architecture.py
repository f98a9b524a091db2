"""HTS-AT sizes: named presets, inference from a checkpoint's tensor shapes, and the transformers config.

The Swin-T body itself is transformers' ``ClapAudioModel`` (the same code LAION-CLAP and the official
HTS-AT run); this module only decides its sizes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from torch import Tensor

from modbind.errors import CheckpointError

PresetName = Literal["audioset", "base", "tiny"]


@dataclass(frozen=True)
class HtsatArchitecture:
    """The constructor arguments of ``HTSAT_Swin_Transformer`` that shape the state dict."""

    embed_dim: int = 96
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (4, 8, 16, 32)
    window_size: int = 8
    spec_size: int = 256
    patch_size: int = 4
    mel_bins: int = 64
    mlp_ratio: float = 4.0
    qkv_bias: bool = True

    @property
    def width(self) -> int:
        """Channels of the final stage, i.e. of the pooled ``latent_output``."""
        return self.embed_dim * 2 ** (len(self.depths) - 1)

    @property
    def target_frames(self) -> int:
        """Frames the model stretches every log-mel to (spec_size * freq_ratio, 1024 for the official model)."""
        return self.spec_size * (self.spec_size // self.mel_bins)

    @property
    def time_steps(self) -> int:
        """Time steps of the feature map: the final grid's width times the 4 folded quarters (32)."""
        final_grid = self.spec_size // self.patch_size // 2 ** (len(self.depths) - 1)
        return final_grid * (self.spec_size // self.mel_bins)

    def to_clap_config(self, *, drop_path_rate: float = 0.0):  # -> transformers.ClapAudioConfig
        """The matching ``ClapAudioConfig``: no fusion, exact GELU, LayerNorm eps 1e-5, no dropout."""
        from transformers import ClapAudioConfig

        return ClapAudioConfig(
            window_size=self.window_size,
            num_mel_bins=self.mel_bins,
            spec_size=self.spec_size,
            patch_size=self.patch_size,
            patch_stride=[self.patch_size, self.patch_size],
            patch_embeds_hidden_size=self.embed_dim,
            depths=list(self.depths),
            num_attention_heads=list(self.num_heads),
            num_hidden_layers=len(self.depths),
            hidden_size=self.width,
            mlp_ratio=self.mlp_ratio,
            qkv_bias=self.qkv_bias,
            hidden_act="gelu",
            layer_norm_eps=1e-5,
            enable_fusion=False,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
            drop_path_rate=drop_path_rate,
        )


PRESETS: dict[str, HtsatArchitecture] = {
    # Official AudioSet model (config.py): Swin-T, 30.2 M trainable parameters with the tagging head.
    "audioset": HtsatArchitecture(),
    # LAION-CLAP's HTSAT-base (htsat.py create_htsat_model "base"): the audio tower of its music checkpoints.
    "base": HtsatArchitecture(embed_dim=128, depths=(2, 2, 12, 2)),
    # The conformance fixture's tiny model (tiny_htsat_config.json): every code path, a few MB.
    "tiny": HtsatArchitecture(embed_dim=12, depths=(2, 2, 2, 2), num_heads=(2, 4, 8, 16)),
}

_BLOCK_KEY = re.compile(r"^audio_encoder\.layers\.(\d+)\.blocks\.(\d+)\.")


def infer_architecture(state: Mapping[str, Tensor], source: str, spec_size: int = 256) -> HtsatArchitecture:
    """Read the sizes off a ``ClapAudioModel`` state dict (what the converters produce).

    ``spec_size`` leaves no trace in the weights; every released HTS-AT / CLAP model uses 256.
    """
    try:
        proj = state["audio_encoder.patch_embed.proj.weight"]
        mel_bins = state["audio_encoder.batch_norm.weight"].shape[0]
    except KeyError as missing:
        raise CheckpointError(f"{source}: no HTS-AT patch embedding / bn0 found (missing {missing}); "
                              "is this an HTS-AT or CLAP audio checkpoint?") from None
    if proj.shape[1] != 1:
        raise CheckpointError(f"{source}: patch_embed.proj takes {proj.shape[1]} input channels; only the "
                              "single-channel HTS-AT (no 'channel_map' fusion) is supported")
    blocks: dict[int, int] = {}
    for key in state:
        match = _BLOCK_KEY.match(key)
        if match:
            stage, block = int(match.group(1)), int(match.group(2))
            blocks[stage] = max(blocks.get(stage, 0), block + 1)
    if not blocks or sorted(blocks) != list(range(len(blocks))):
        raise CheckpointError(f"{source}: Swin stages are missing or not numbered 0..n-1 (found {sorted(blocks)})")
    depths = tuple(blocks[s] for s in range(len(blocks)))
    tables = [state[f"audio_encoder.layers.{s}.blocks.0.attention.self.relative_position_bias_table"]
              for s in range(len(depths))]
    window = (int(round(math.sqrt(tables[0].shape[0]))) + 1) // 2
    embed_dim = proj.shape[0]
    hidden = state["audio_encoder.layers.0.blocks.0.intermediate.dense.weight"].shape[0]
    arch = HtsatArchitecture(
        embed_dim=embed_dim,
        depths=depths,
        num_heads=tuple(int(t.shape[1]) for t in tables),
        window_size=window,
        spec_size=spec_size,
        patch_size=int(proj.shape[-1]),
        mel_bins=int(mel_bins),
        mlp_ratio=hidden / embed_dim,
        qkv_bias="audio_encoder.layers.0.blocks.0.attention.self.query.bias" in state,
    )
    return arch


ShortClipPolicy = Literal["stretch", "pad", "repeatpad"]
"""How clips shorter than the model's 10 s are fitted: stretched in time (official HTS-AT), zero-padded
(official AudioSet training data) or repeated then zero-padded (LAION-CLAP)."""

LAION_CLAP_SAMPLE_RATE = 48000
"""Every LAION-CLAP HTS-AT tower was trained on 48 kHz audio (hop 480)."""

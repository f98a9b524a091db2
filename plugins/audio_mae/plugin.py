"""The ``audio_mae`` encoder plugin: AudioMAE (ViT-B/16) on the AudioMAE Kaldi fbank of 16 kHz audio.

Decoding, cropping and SpecAugment come from :class:`modbind.audio.base.AudioEncoderPlugin`; the fbank
(mean removal, hanning window, 1024 frames, AudioSet normalisation) from :mod:`modbind_audio_mae.frontend`.
This module adds only the AudioMAE-specific parts: featurize, the encoder, its checkpoint loader.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, model_validator

import modbind
from modbind.audio.base import AudioEncoderOptions, AudioEncoderPlugin, preset_with_overrides
from modbind.contracts import Batch, EncoderOptions, EncoderPlugin
from modbind.pretrained import PretrainedCheckpoint
from modbind_audio_mae.config import PRESETS, AudioMAEConfig
from modbind_audio_mae.frontend import AUDIOMAE_FBANK, SAMPLE_RATE, audiomae_features, max_clip_seconds
from modbind_audio_mae.pretrained import CHECKPOINTS

if TYPE_CHECKING:  # timm loads on first use, so listing plugins stays fast
    from modbind_audio_mae.model import AudioMAEEncoder


class AudioMAEOptions(AudioEncoderOptions):
    """AudioMAE options. The architecture comes from ``size``/``config``; a checkpoint must match it, and
    its head count comes from the file's stored config or, when it has none, from ``num_heads``."""

    size: Literal["base", "tiny"] = "base"
    """'base': ViT-B/16 of the released checkpoints; 'tiny': width 64, 2 blocks (tests, demos)."""
    config: dict[str, Any] | None = None
    """AudioMAEConfig fields overriding ``size``, e.g. ``{"num_classes": 527}`` to keep the AudioSet head."""
    num_heads: int | None = Field(None, gt=0)
    """Attention heads per block. The weights do not record it, so with a checkpoint that stores no config
    it is required (12 for the official ViT-B/16 checkpoints); one that contradicts the file's stored
    config is an error. Without a checkpoint it overrides the ``size`` preset (None: the preset's)."""
    pretrained_pool_norm: Literal["copy", "fresh"] = "copy"
    """With the pre-trained MAE checkpoint (no ``fc_norm``): start the pooling norm from the MAE's final
    ``norm`` ('copy') or at identity like the official fine-tuning ('fresh')."""

    @model_validator(mode="after")
    def _fits_audiomae_input(self) -> "AudioMAEOptions":
        if self.sample_rate != SAMPLE_RATE:
            raise ValueError(f"AudioMAE works on {SAMPLE_RATE} Hz audio; "
                             f"sample_rate {self.sample_rate} is not supported")
        longest = max_clip_seconds()
        if self.clip_seconds > longest:
            raise ValueError(f"AudioMAE sees {AUDIOMAE_FBANK.target_frames} fbank frames ({longest:.3f} s); "
                             f"clip_seconds {self.clip_seconds} would be cut silently, use at most {longest:.3f}")
        return self

    @model_validator(mode="after")
    def _heads_fit_the_width(self) -> "AudioMAEOptions":
        overrides = self.config or {}
        in_config = overrides.get("num_heads")
        if self.num_heads is not None and in_config is not None and in_config != self.num_heads:
            raise ValueError(f"num_heads {self.num_heads} contradicts config.num_heads {in_config}; set only one")
        width = overrides.get("embed_dim", PRESETS[self.size].embed_dim)
        if self.num_heads is not None and isinstance(width, int) and width % self.num_heads:
            raise ValueError(f"num_heads {self.num_heads} does not divide embed_dim {width} "
                             f"(size '{self.size}'{' and config' if 'embed_dim' in overrides else ''})")
        return self

    def requested_num_heads(self) -> int | None:
        """The head count the user gave (``num_heads`` or ``config.num_heads``), None when neither is set."""
        return self.num_heads if self.num_heads is not None else (self.config or {}).get("num_heads")

    def architecture(self) -> AudioMAEConfig:
        """The config ``size`` names, with ``config`` and ``num_heads`` applied (ConfigError when invalid)."""
        overrides = {**(self.config or {}), **({"num_heads": self.num_heads} if self.num_heads is not None else {})}
        return preset_with_overrides(PRESETS[self.size], overrides, AudioMAEPlugin.name)


class AudioMAEPlugin(AudioEncoderPlugin["AudioMAEOptions"]):
    """AudioMAE (pre-trained MAE encoder or AudioSet fine-tuned) as a modbind audio encoder."""

    name: ClassVar[str] = "audio_mae"
    Options: ClassVar[type[EncoderOptions]] = AudioMAEOptions
    default_lora_targets: ClassVar[tuple[str, ...]] = ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")
    """Attention and MLP linears of every block (``attn.proj``, so the patch-embedding conv is not hit)."""
    pretrained: ClassVar[Mapping[str, PretrainedCheckpoint]] = CHECKPOINTS

    def featurize(self, batch: Batch, options: AudioMAEOptions) -> Batch:
        """Official AudioMAE fbank (B, 1024, 128) and its frame padding mask (B, 1024), True = padding."""
        return audiomae_features(batch, options.sample_rate)

    def new_encoder(self, options: AudioMAEOptions) -> AudioMAEEncoder:
        from modbind_audio_mae.model import AudioMAEEncoder

        return AudioMAEEncoder(options.architecture())

    def export_options(self, options: AudioMAEOptions, encoder: AudioMAEEncoder) -> AudioMAEOptions:
        """The head count a checkpoint stored leaves no trace in the weights: the card must carry it."""
        if encoder.config.num_heads == options.architecture().num_heads:
            return options
        return options.model_copy(update={"num_heads": encoder.config.num_heads})

    def load_checkpoint(self, path: Path, options: AudioMAEOptions) -> AudioMAEEncoder:
        from modbind_audio_mae.checkpoint import load_audiomae_checkpoint

        return load_audiomae_checkpoint(Path(path), options.architecture(), num_heads=options.requested_num_heads(),
                                        pool_norm=options.pretrained_pool_norm)


@modbind.hookimpl
def register_encoders(register: Callable[[EncoderPlugin[Any]], None]) -> None:
    register(AudioMAEPlugin())

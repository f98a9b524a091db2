"""The ``audio_mae`` encoder plugin: AudioMAE (ViT-B/16) on the AudioMAE Kaldi fbank of 16 kHz audio.

Decoding, cropping and SpecAugment come from :class:`modbind.audio.base.AudioEncoderPlugin`; the fbank
(mean removal, hanning window, 1024 frames, AudioSet normalisation) from :mod:`modbind_audio_mae.frontend`.
This module adds only the AudioMAE-specific parts: featurize, the encoder, its checkpoint loader.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import model_validator

import modbind
from modbind.audio.base import AudioEncoderOptions, AudioEncoderPlugin, preset_with_overrides
from modbind.contracts import Batch, EncoderOptions, EncoderPlugin
from modbind.pretrained import PretrainedCheckpoint, options_supported_by
from modbind_audio_mae.config import PRESETS, AudioMAEConfig
from modbind_audio_mae.frontend import AUDIOMAE_FBANK, SAMPLE_RATE, audiomae_features, max_clip_seconds
from modbind_audio_mae.pretrained import CHECKPOINTS

if TYPE_CHECKING:  # timm loads on first use, so listing plugins stays fast
    from modbind_audio_mae.model import AudioMAEEncoder


class AudioMAEOptions(AudioEncoderOptions):
    """AudioMAE options. The architecture comes from ``size``/``config``; a checkpoint must match it."""

    size: Literal["base", "tiny"] = "base"
    """'base': ViT-B/16 of the released checkpoints; 'tiny': width 64, 2 blocks (tests, demos)."""
    config: dict[str, Any] | None = None
    """AudioMAEConfig fields overriding ``size``, e.g. ``{"num_classes": 527}`` to keep the AudioSet head."""
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

    def architecture(self) -> AudioMAEConfig:
        """The config ``size`` names, with ``config`` overrides applied (ConfigError when they are invalid)."""
        return preset_with_overrides(PRESETS[self.size], self.config, AudioMAEPlugin.name)


class AudioMAEPlugin(AudioEncoderPlugin["AudioMAEOptions"]):
    """AudioMAE (pre-trained MAE encoder or AudioSet fine-tuned) as a modbind audio encoder."""

    name: ClassVar[str] = "audio_mae"
    Options: ClassVar[type[EncoderOptions]] = AudioMAEOptions
    default_lora_targets: ClassVar[tuple[str, ...]] = ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")
    """Attention and MLP linears of every block (``attn.proj``, so the patch-embedding conv is not hit)."""
    pretrained: ClassVar[Mapping[str, PretrainedCheckpoint]] = options_supported_by(CHECKPOINTS, AudioMAEOptions)
    """Until the ``num_heads`` option exists, the entries' ``num_heads: 12`` is the ``base`` preset's own."""

    def featurize(self, batch: Batch, options: AudioMAEOptions) -> Batch:
        """Official AudioMAE fbank (B, 1024, 128) and its frame padding mask (B, 1024), True = padding."""
        return audiomae_features(batch, options.sample_rate)

    def new_encoder(self, options: AudioMAEOptions) -> AudioMAEEncoder:
        from modbind_audio_mae.model import AudioMAEEncoder

        return AudioMAEEncoder(options.architecture())

    def load_checkpoint(self, path: Path, options: AudioMAEOptions) -> AudioMAEEncoder:
        from modbind_audio_mae.checkpoint import load_audiomae_checkpoint

        return load_audiomae_checkpoint(Path(path), options.architecture(), pool_norm=options.pretrained_pool_norm)


@modbind.hookimpl
def register_encoders(register: Callable[[EncoderPlugin[Any]], None]) -> None:
    register(AudioMAEPlugin())
